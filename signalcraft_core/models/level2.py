"""Scoring side of Level 2: run the exported TorchScript autoencoder on feature vectors.

None of the training code: the artifact is self-contained TorchScript. The exported ScoringModule
runs on numpy (level2_numpy.py, same numbers, no 1.5 s / 200 MiB torch import on a cold start);
any other TorchScript module runs on torch, imported only then. SIGNALCRAFT_LEVEL2_ENGINE=torch
forces torch. The model set passes the artifact's verified bytes, so what runs is what was hashed.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from signalcraft_core.config import level2_engine
from signalcraft_core.models.level2_numpy import NumpyScoringModule, load_numpy_module


@dataclass(frozen=True)
class Level2Result:
    mse: np.ndarray          # (n,) mean squared reconstruction error per clip
    band_errors: np.ndarray  # (n, n_mels) error per mel band, averaged over the pooled statistics


def load_scoring_module(source: str | Path | bytes) -> Any:
    """A NumpyScoringModule when the artifact (verified bytes, or a file) is the exported ScoringModule,
    else the torch.jit module."""
    if level2_engine() != "torch":
        module = load_numpy_module(source)
        if module is not None:
            return module
    import torch

    module = torch.jit.load(io.BytesIO(source) if isinstance(source, bytes) else str(source), map_location="cpu")
    module.eval()
    return module


def score_level2(module: Any, features: np.ndarray, n_mels: int) -> Level2Result:
    """Batched reconstruction error; `features` is (n_clips, dim) from features.clip_features."""
    x = np.ascontiguousarray(features, dtype=np.float32)
    if isinstance(module, NumpyScoringModule):
        errors = module.errors(x)
    else:
        import torch

        with torch.inference_mode():
            errors = module(torch.from_numpy(x)).numpy()
    n, dim = errors.shape
    per_band = errors.reshape(n, dim // n_mels, n_mels).mean(axis=1) if dim % n_mels == 0 else errors
    # The row mean is accumulated in float64: a float32 sum of hundreds of errors loses ~1e-7 relative.
    mse = errors.astype(np.float64).mean(axis=1)
    return Level2Result(mse=mse, band_errors=per_band.astype(np.float32))
