"""The Level-2 autoencoder run with numpy straight from its TorchScript file, so scoring never imports torch.

`import torch` is ~1.5 s of CPU and ~200 MiB of memory on every cold start, for six small matrix
products. The TorchScript file stays the artifact; `load_numpy_module` reads its zip (data.pkl and
the tensor storages) with an unpickler that knows only the few globals a TorchScript module pickle
uses, and accepts exactly what training exports: ScoringModule(mean, scale, Autoencoder(encoder,
decoder)) whose halves are Sequentials of Linear / ReLU / Dropout in eval mode, and whose own
forward code is the exported code of today (checked line by line). Anything else returns None and
level2.py loads the file with torch as before. Results equal torch's up to float32 rounding of the
matrix products (relative differences ~1e-6 in the MSE).
"""

from __future__ import annotations

import io
import pickle
import re
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: The exported forward code of signalcraft_core.training.autoencoder's modules (TorchScript's printout).
_EXPECTED_FORWARD = {
    "ScoringModule": (
        "mean = self.mean",
        "_0 = torch.sub(x, mean)",
        "scale = self.scale",
        "z = torch.div(_0, scale)",
        "autoencoder = self.autoencoder",
        "_1 = torch.sub((autoencoder).forward(z, ), z)",
        "return torch.pow(_1, 2)",
    ),
    "Autoencoder": (
        "decoder = self.decoder",
        "encoder = self.encoder",
        "_2 = (decoder).forward((encoder).forward(x, ), )",
        "return _2",
    ),
}
#: The exported classes, under the module path training has today or had when older sets were exported
#: (`signalcraft_core.autoencoder` before the package was layered). TorchScript renames a class compiled
#: twice in one process with other types: `<module>.___torch_mangle_N.<class>`.
_OWN_CLASS = re.compile(
    r"^__torch__\.signalcraft_core\.(?:training\.)?autoencoder(?:\.___torch_mangle_\d+)?\.(\w+)$")
_NN = "__torch__.torch.nn.modules."
_STORAGE_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16}


class UnsupportedModule(ValueError):
    """Not the exported ScoringModule: only torch can run it."""


class _Obj:
    """A TorchScript object from data.pkl: its class name and attributes, nothing else."""

    qualname = ""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise UnsupportedModule(f"{self.qualname}: unexpected state {type(state).__name__}")
        self.__dict__.update(state)


def _rebuild_tensor(storage: np.ndarray, offset: int, size: tuple, stride: tuple, *_: Any) -> np.ndarray:
    itemsize = storage.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride))
    return np.array(view, copy=True)


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(io.BytesIO(data))
        self._archive, self._prefix = archive, prefix
        self._classes: dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("__torch__."):
            qualname = f"{module}.{name}"
            if qualname not in self._classes:
                self._classes[qualname] = type(name, (_Obj,), {"qualname": qualname})
            return self._classes[qualname]
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        raise UnsupportedModule(f"data.pkl refers to {module}.{name}")

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and pid[1] in _STORAGE_DTYPES):
            raise UnsupportedModule(f"unknown storage reference {pid!r}")
        _, kind, key, _location, numel = pid
        raw = self._archive.read(f"{self._prefix}data/{key}")
        out = np.frombuffer(raw, dtype=np.dtype(_STORAGE_DTYPES[kind]).newbyteorder("<"))
        if out.size < int(numel):
            raise UnsupportedModule(f"storage {key} is shorter than its {numel} elements")
        return out.astype(out.dtype.newbyteorder("="), copy=False)


def _forward_lines(code: str, class_name: str) -> tuple[str, ...]:
    """The statements of `class_name.forward` in a TorchScript code file."""
    match = re.search(rf"^class {class_name}\(Module\):\n(.*?)(?=^class |\Z)", code, re.S | re.M)
    if not match:
        raise UnsupportedModule(f"no code for {class_name}")
    body = match.group(1)
    forward = re.search(r"^  def forward\(.*?\) -> Tensor:\n(.*?)(?=^  def |\Z)", body, re.S | re.M)
    if not forward:
        raise UnsupportedModule(f"{class_name} has no forward(x) -> Tensor")
    return _canonical(line.strip() for line in forward.group(1).splitlines() if line.strip())


def _canonical(lines: Any) -> tuple[str, ...]:
    """Temporaries renamed in order of appearance: the printer numbers them per file (_0 here, _2 there)."""
    names: dict[str, str] = {}
    rename = lambda m: names.setdefault(m.group(0), f"_t{len(names)}")  # noqa: E731
    return tuple(re.sub(r"\b_\d+\b", rename, line) for line in lines)


def _check_own_class(archive: zipfile.ZipFile, prefix: str, obj: Any, class_name: str) -> None:
    """`obj` is signalcraft_core.training.autoencoder's `class_name` (maybe mangled) and its forward is the exported one."""
    qualname = getattr(type(obj), "qualname", "")
    match = _OWN_CLASS.match(qualname)
    if not match or match.group(1) != class_name:
        raise UnsupportedModule(f"expected {class_name}, got {qualname or type(obj).__name__}")
    code_name = f"{prefix}code/{qualname.rsplit('.', 1)[0].replace('.', '/')}.py"
    try:
        code = archive.read(code_name).decode("utf-8")
    except KeyError:
        raise UnsupportedModule(f"no code for {qualname}") from None
    if _forward_lines(code, class_name) != _canonical(_EXPECTED_FORWARD[class_name]):
        raise UnsupportedModule(f"{qualname}.forward is not the exported one")


def _layers(seq: Any) -> list[tuple[str, np.ndarray | None, np.ndarray | None]]:
    if not type(seq).__dict__.get("qualname", "").startswith(_NN + "container") or type(seq).__name__ != "Sequential":
        raise UnsupportedModule(f"expected a Sequential, got {getattr(type(seq), 'qualname', type(seq).__name__)}")
    layers = []
    for i in range(len(seq.__dict__)):
        child = seq.__dict__.get(str(i))
        if child is None:
            break
        kind = type(child).__name__
        qual = getattr(type(child), "qualname", "")
        if kind == "Linear" and qual.startswith(_NN + "linear"):
            w, b = child.weight, child.bias
            if w.ndim != 2 or b is None or b.shape != (w.shape[0],):
                raise UnsupportedModule("Linear layer with unexpected weight/bias shapes")
            layers.append(("linear", np.ascontiguousarray(w.T, dtype=np.float32), b.astype(np.float32)))
        elif kind == "ReLU" and qual.startswith(_NN + "activation"):
            layers.append(("relu", None, None))
        elif kind == "Dropout" and qual.startswith(_NN + "dropout"):
            if child.training:
                raise UnsupportedModule("Dropout in training mode")
        else:
            raise UnsupportedModule(f"layer {qual or kind} is not Linear / ReLU / Dropout")
    if not layers:
        raise UnsupportedModule("empty Sequential")
    return layers


@dataclass(frozen=True)
class NumpyScoringModule:
    """Raw features in, per-dimension squared reconstruction error out, like the TorchScript ScoringModule."""

    mean: np.ndarray
    scale: np.ndarray
    layers: tuple[tuple[str, np.ndarray | None, np.ndarray | None], ...]

    def errors(self, features: np.ndarray) -> np.ndarray:
        """(n, dim) float32 features -> (n, dim) float32 squared errors."""
        z = (np.asarray(features, dtype=np.float32) - self.mean) / self.scale
        h = z
        for kind, w, b in self.layers:
            if kind == "linear":
                h = h @ w
                h += b
            else:
                h = np.maximum(h, np.float32(0.0))
        diff = h - z
        return diff * diff

    def eval(self) -> "NumpyScoringModule":
        return self


def read_numpy_module(source: str | Path | bytes | io.BytesIO) -> NumpyScoringModule:
    """Parse the TorchScript zip (verified bytes, a buffer or a file); UnsupportedModule when it is not
    the exported ScoringModule."""
    with zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source) as archive:
        names = archive.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise UnsupportedModule("not a TorchScript archive")
        prefix = pkl[0][: -len("data.pkl")]
        byteorder = f"{prefix}byteorder"
        if byteorder in names and archive.read(byteorder).strip() != b"little":
            raise UnsupportedModule("big-endian tensors")
        root = _Unpickler(archive.read(pkl[0]), archive, prefix).load()
        if root.training:
            raise UnsupportedModule("the module is in training mode")
        _check_own_class(archive, prefix, root, "ScoringModule")
        ae = root.autoencoder
        _check_own_class(archive, prefix, ae, "Autoencoder")
    layers = _layers(ae.encoder) + _layers(ae.decoder)
    mean = np.asarray(root.mean, dtype=np.float32).reshape(-1)
    scale = np.asarray(root.scale, dtype=np.float32).reshape(-1)
    dim = mean.size
    width = dim
    for kind, w, _b in layers:
        if kind == "linear":
            if w.shape[0] != width:
                raise UnsupportedModule("layer sizes do not chain")
            width = w.shape[1]
    if width != dim or scale.size != dim:
        raise UnsupportedModule("output size differs from the input size")
    return NumpyScoringModule(mean=mean, scale=scale, layers=tuple(layers))


def load_numpy_module(source: str | Path | bytes) -> NumpyScoringModule | None:
    """The artifact as a NumpyScoringModule, or None when torch must run it."""
    try:
        return read_numpy_module(source)
    except (UnsupportedModule, KeyError, AttributeError, ValueError, TypeError, pickle.UnpicklingError,
            zipfile.BadZipFile, EOFError, OSError):
        return None
