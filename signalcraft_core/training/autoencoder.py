"""Training side of Level 2: the autoencoder module, its seeded training loop, TorchScript export.

Only `train` and `import-legacy` import this module. Scoring loads the exported TorchScript file
with `torch.jit.load` (level2.py) and never needs this code, so a model can be graded by a process
that has no idea how it was trained.
"""

from __future__ import annotations

import io
import pickle
import warnings
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from signalcraft_core.models.level2_numpy import NumpyScoringModule, read_numpy_module

HIDDEN_SIZES = (128, 64, 16)


class Autoencoder(nn.Module):
    """input -> 128 -> 64 -> 16 -> 64 -> 128 -> input with ReLU.

    The layer indices match the earlier app's state dicts (Dropout at index 2 of each half), so
    its `.pth` files load into this class unchanged.
    """

    def __init__(self, input_dim: int, dropout: float = 0.2) -> None:
        super().__init__()
        h1, h2, h3 = HIDDEN_SIZES
        self.encoder = nn.Sequential(
            nn.Linear(input_dim, h1), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(h1, h2), nn.ReLU(), nn.Linear(h2, h3),
        )
        self.decoder = nn.Sequential(
            nn.Linear(h3, h2), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(h2, h1), nn.ReLU(), nn.Linear(h1, input_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class ScoringModule(nn.Module):
    """What is exported: raw features in, per-dimension squared reconstruction error out.

    Standardisation by training statistics lives inside the module (as buffers), so the
    TorchScript file alone turns a feature vector into an error; the MSE is the row mean.
    """

    def __init__(self, autoencoder: Autoencoder, mean: np.ndarray, scale: np.ndarray) -> None:
        super().__init__()
        self.autoencoder = autoencoder
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean, dtype=np.float32)))
        self.register_buffer("scale", torch.as_tensor(np.asarray(scale, dtype=np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.mean) / self.scale
        return (self.autoencoder(z) - z) ** 2


@dataclass(frozen=True)
class TrainConfig:
    """Level-2 training recipe (the issue's defaults: MSE, Adam 1e-3, 50 epochs, batch 16)."""

    epochs: int = 50
    learning_rate: float = 1e-3
    batch_size: int = 16
    dropout: float = 0.2
    weight_decay: float = 0.0
    seed: int = 0
    min_scale: float = 1e-3


#: 1.4826 * MAD estimates the standard deviation of normally distributed values.
MAD_TO_STD = 1.4826


def standardisation(features: np.ndarray, min_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension centre and scale of the training features: median and 1.4826 * MAD, floored.

    Robust on purpose: a type's set often trains on one machine's clips plus a few of other machines
    (the packaged valve set: 20 of one valve, 5 of others). Those few inflate a standard deviation
    (1.6x at the median dimension, up to 3.7x), which squashes the main machine's own variation;
    the median and MAD ignore them. Measured on the real valve split, dev part (10 normal / 24
    anomalous clips): hybrid AUC 0.96 / 0.89 / 0.79 at 10 / 5 / 2 s with mean / std, 1.00 / 0.97 / 0.84
    with median / MAD. The floor keeps a dimension that barely varies from blowing up.
    """
    centre = np.median(features, axis=0)
    mad = np.median(np.abs(features - centre), axis=0)
    scale = np.maximum(MAD_TO_STD * mad, min_scale)
    return centre.astype(np.float32), scale.astype(np.float32)


def train_autoencoder(
    features: np.ndarray,
    config: TrainConfig = TrainConfig(),
    on_epoch: Callable[[int, float], None] | None = None,
) -> tuple[ScoringModule, list[float]]:
    """Fit the autoencoder on normal feature vectors; seeded, so the same data gives the same weights."""
    with _torch_threads(1):
        return _train(np.asarray(features, dtype=np.float32), config, on_epoch)


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Run torch on `n` intra-op threads, then restore the setting.

    The model is tiny (batches of 16 x ~64 values): with more threads, torch's thread hand-offs cost
    far more than the arithmetic (measured 8x slower training on 2 busy cores).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train(
    x_np: np.ndarray, config: TrainConfig, on_epoch: Callable[[int, float], None] | None
) -> tuple[ScoringModule, list[float]]:
    mean, scale = standardisation(x_np, config.min_scale)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model = Autoencoder(x_np.shape[1], dropout=config.dropout)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    loss_fn = nn.MSELoss()
    x = (torch.from_numpy(x_np) - torch.from_numpy(mean)) / torch.from_numpy(scale)
    losses: list[float] = []
    model.train()
    for epoch in range(config.epochs):
        order = torch.randperm(x.shape[0], generator=generator)
        total = 0.0
        for start in range(0, x.shape[0], config.batch_size):
            batch = x[order[start:start + config.batch_size]]
            optimiser.zero_grad()
            loss = loss_fn(model(batch), batch)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * batch.shape[0]
        losses.append(total / x.shape[0])
        if on_epoch is not None:
            on_epoch(epoch, losses[-1])
    model.eval()
    return ScoringModule(model, mean, scale).eval(), losses


def export_torchscript(module: ScoringModule, path: str | Path | io.BytesIO) -> None:
    """Write the scoring module as TorchScript (scripted, so no Python class is needed to load it)."""
    scripted = torch.jit.script(module.eval())
    torch.jit.save(scripted, path if isinstance(path, io.BytesIO) else str(path))


def production_engine(module: ScoringModule) -> NumpyScoringModule:
    """The module as the scoring path runs it: exported to TorchScript, read back by the numpy engine."""
    buffer = io.BytesIO()
    export_torchscript(module, buffer)
    buffer.seek(0)
    return read_numpy_module(buffer)


def is_torchscript_archive(path: str | Path) -> bool:
    """Whether `path` is a zip written by torch.jit.save (it carries code/ and constants.pkl; a state
    dict saved by torch.save has neither)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def load_legacy_state_dict(path: str | Path) -> Autoencoder:
    """Load an earlier-app `.pth` state dict (64-dim seed features) into the autoencoder.

    Only tensors are ever unpickled (weights_only). A TorchScript archive is named as such up front:
    torch.load would warn, then fail advising weights_only=False, i.e. running the file's code, which
    is never the fix for a file someone handed over. Other refusals are worded here for the same reason.
    """
    if is_torchscript_archive(path):
        raise ValueError("this is a TorchScript model, not a legacy state dict")
    if not _is_torch_save_file(path):
        raise ValueError("not a file written by torch.save (neither its zip archive nor its pickle format)")
    try:
        with warnings.catch_warnings():  # torch's hints suggest loading untrusted code
            warnings.simplefilter("ignore")
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError("it holds Python objects besides tensors; refused, since loading them could run "
                         "code from the file") from None
    except Exception as exc:  # noqa: BLE001 - in torch.save's format, yet its reader trips: a damaged file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ValueError(f"torch.load cannot read it: damaged or cut short? ({type(exc).__name__}: {first})") from None
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    model = Autoencoder(_legacy_input_dim(state))
    model.load_state_dict(state)
    return model.eval()


def _is_torch_save_file(path: str | Path) -> bool:
    """Whether `path` is in one of torch.save's formats: a zip archive (torch >= 1.6) or the older pickle
    stream (protocol 2: it starts with the PROTO opcode). torch.load reads anything else - a WAV handed
    over by mistake - as a pickle and fails with whatever its unpickler trips on (IndexError ...)."""
    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as f:
        return f.read(1) == pickle.PROTO


def _legacy_input_dim(state: object) -> int:
    """The input width of the autoencoder `state` is a state dict of, after checking it is one: a mapping
    of tensors with exactly the keys and shapes of `Autoencoder(width)`. ValueError says what it holds
    instead (a list, a lone tensor, a missing or mis-shaped layer), where load_state_dict or indexing
    would fail with a TypeError or IndexError that names nothing."""
    if not isinstance(state, Mapping):
        raise ValueError(f"it holds a {type(state).__name__}, not a state dict (a mapping of layer names to tensors)")
    others = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if others:
        raise ValueError(f"{others[0]!r} is not a tensor (type {type(state[others[0]]).__name__})")
    first = state.get("encoder.0.weight")
    if first is None or first.dim() != 2 or first.shape[1] < 1:
        raise ValueError("it has no 2-D tensor 'encoder.0.weight' (the first layer of the autoencoder)")
    input_dim = int(first.shape[1])
    expected = {k: tuple(v.shape) for k, v in Autoencoder(input_dim).state_dict().items()}
    missing = [k for k in expected if k not in state]
    unexpected = [str(k) for k in state if k not in expected]
    if missing or unexpected:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + \
                ([f"unexpected {', '.join(unexpected[:3])}{' ...' if len(unexpected) > 3 else ''}"] if unexpected else [])
        raise ValueError(f"not the layers of the {'-'.join(map(str, HIDDEN_SIZES))} autoencoder: {'; '.join(parts)}")
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape:
            raise ValueError(f"{key} has shape {tuple(state[key].shape)}, expected {shape} for {input_dim} inputs")
    return input_dim
