"""Level-1 IsolationForest scored with numpy, so the scoring path never imports scikit-learn (1-3 s of a cold start).

The artifact stays the fitted scikit-learn Pipeline (StandardScaler + IsolationForest) saved with joblib
by training. `read_level1` (serving, from the verified bytes) and `load_forest` (training and tests)
read it with joblib's unpickler, but map scikit-learn's classes to
plain stand-ins that only hold their pickled state (nothing of scikit-learn is imported or run), then
`CompiledForest` flattens the trees into one node table and walks it level by level for all clips
and trees at once. The numbers are scikit-learn's: features compared as float32 against float64
thresholds like its trees, per-tree path lengths summed in tree order, the same normalisation.
The unpickler resolves only scikit-learn class names (to stand-ins), a short allow-list of numpy and
joblib globals, and nothing else: a pickle naming `os.system` or `builtins.eval` is refused, not run.
A pipeline of scikit-learn classes it cannot score exactly (other steps, another layout of a future
scikit-learn) is the one case that still needs scikit-learn: `read_level1` then loads those same
bytes with the real classes (same allow-list, logged as a warning), never with a plain joblib.load.
Only call it on bytes whose SHA-256 matched the manifest: the allow-listed globals still run.
"""

from __future__ import annotations

import io
import logging
import math
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class UnsupportedModel(ValueError):
    """The pickled pipeline is not one this module can score exactly."""


class DisallowedGlobal(pickle.UnpicklingError):
    """The pickle names a global no Level-1 pipeline needs (os.system, builtins.eval ...): never resolved."""


#: Globals a joblib-saved [StandardScaler +] IsolationForest pipeline refers to besides scikit-learn's
#: classes: arrays, dtypes and scalars (numpy 1 and 2 spell the module differently), a pickled
#: RandomState, and joblib's array wrapper. Everything else is refused before it is looked up.
_ALLOWED_GLOBALS = frozenset({
    ("numpy", "dtype"), ("numpy", "ndarray"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.random._pickle", "__randomstate_ctor"), ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._pickle", "__generator_ctor"), ("numpy.random._mt19937", "MT19937"),
    ("numpy.random._pcg64", "PCG64"),
    ("joblib.numpy_pickle", "NumpyArrayWrapper"),
})


class _Stub:
    """Stand-in for a scikit-learn class: keeps the pickled constructor args and state, nothing else."""

    _sk_module = ""

    def __init__(self, *args: Any) -> None:
        self._args = args

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self._state = state


_STUBS: dict[tuple[str, str], type] = {}


def _stub(module: str, name: str) -> type:
    key = (module, name)
    if key not in _STUBS:
        _STUBS[key] = type(name, (_Stub,), {"_sk_module": module})
    return _STUBS[key]


def _sklearn_class(module: str, name: str) -> type:
    """The real scikit-learn class (imports scikit-learn): only a class defined in scikit-learn, never a
    function to call or something a scikit-learn module merely imported (subprocess.Popen ...)."""
    import importlib

    obj = getattr(importlib.import_module(module), name)
    defined_in = getattr(obj, "__module__", "") or ""
    if not isinstance(obj, type) or not (defined_in == "sklearn" or defined_in.startswith("sklearn.")):
        raise DisallowedGlobal(f"the pickle refers to {module}.{name}, which is not a scikit-learn class")
    return obj


def _unpickle(data: bytes, sklearn: Callable[[str, str], type]) -> Any:
    """joblib.load of these bytes with an allow-list: scikit-learn names resolved by `sklearn`, the
    globals in _ALLOWED_GLOBALS, DisallowedGlobal for anything else (joblib internals; may raise)."""
    from joblib import numpy_pickle

    class _Unpickler(numpy_pickle.NumpyUnpickler):
        def find_class(self, module: str, name: str) -> Any:
            if (module == "sklearn" or module.startswith("sklearn.")) and name.isidentifier():
                return sklearn(module, name)
            if (module, name) in _ALLOWED_GLOBALS:
                return super().find_class(module, name)
            raise DisallowedGlobal(f"the pickle refers to {module}.{name}, which no Level-1 pipeline needs")

    with numpy_pickle._validate_fileobject_and_memmap(io.BytesIO(data), "level1.joblib", None) as (fobj, _):
        return _Unpickler("level1.joblib", fobj, ensure_native_byte_order=True, mmap_mode=None).load()


def _unpickle_without_sklearn(data: bytes) -> Any:
    """The pickled pipeline with scikit-learn classes as `_Stub`s: nothing of scikit-learn is imported."""
    return _unpickle(data, _stub)


def _average_path_length(n: np.ndarray) -> np.ndarray:
    """scikit-learn's `_average_path_length`: c(n) of an unsuccessful BST search, 0 for n <= 1, 1 for n == 2."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros(n.shape)
    big = n > 2
    out[n == 2] = 1.0
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


@dataclass(frozen=True)
class CompiledForest:
    """StandardScaler + IsolationForest as flat arrays; `score_samples` equals the Pipeline's."""

    mean: np.ndarray | None        # (d,) scaler mean, or None (with_mean=False)
    scale: np.ndarray | None       # (d,) scaler scale, or None (with_std=False)
    roots: np.ndarray              # (T,) index of each tree's root in the node table
    feature: np.ndarray            # (nodes,) column of X a split node reads (leaves: 0)
    threshold: np.ndarray          # (nodes,) float64 split threshold (leaves: 0)
    left: np.ndarray               # (nodes,) child when x <= threshold (leaves: themselves)
    right: np.ndarray              # (nodes,) child otherwise (leaves: themselves)
    nan_left: np.ndarray           # (nodes,) bool, where a NaN feature goes
    leaf_value: np.ndarray         # (nodes,) depth + c(samples in leaf) - 1 at leaves
    depth: int                     # longest root-to-leaf path over all trees
    denominator: float             # n_trees * c(max_samples)
    n_features: int

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        """Opposite of the anomaly score, as `Pipeline.score_samples` (lower = more anomalous)."""
        x = np.asarray(X, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected (n, {self.n_features}) descriptors, got shape {x.shape}")
        if self.mean is not None:
            x = x - self.mean
        if self.scale is not None:
            x = x / self.scale
        # scikit-learn's trees see float32 features and compare them with float64 thresholds.
        x = x.astype(np.float32).astype(np.float64)
        rows = np.arange(x.shape[0])[:, None]
        node = np.broadcast_to(self.roots, (x.shape[0], self.roots.size))
        for _ in range(self.depth):
            value = x[rows, self.feature[node]]
            go_left = (value <= self.threshold[node]) | (np.isnan(value) & self.nan_left[node])
            node = np.where(go_left, self.left[node], self.right[node])
        leaf = self.leaf_value[node]
        depths = np.zeros(x.shape[0])
        for t in range(leaf.shape[1]):  # tree by tree, the order scikit-learn adds them in
            depths += leaf[:, t]
        if self.denominator == 0:
            return -np.ones(x.shape[0])
        return -(2.0 ** (-(depths / self.denominator)))


def _name(obj: Any) -> str:
    return type(obj).__name__ if isinstance(obj, _Stub) else ""


def compile_pipeline(obj: Any) -> CompiledForest:
    """Flatten an unpickled (stand-in) Pipeline([StandardScaler,] IsolationForest); UnsupportedModel otherwise."""
    steps = [step for _, step in getattr(obj, "steps", [])] if _name(obj) == "Pipeline" else [obj]
    if not steps or _name(steps[-1]) != "IsolationForest" or any(_name(s) != "StandardScaler" for s in steps[:-1]):
        raise UnsupportedModel(f"not a [StandardScaler +] IsolationForest pipeline: {[_name(s) or type(s).__name__ for s in steps]}")
    if len(steps) > 2:
        raise UnsupportedModel("more than one scaler")
    mean = scale = None
    if len(steps) == 2:
        scaler = steps[0]
        mean = None if getattr(scaler, "mean_", None) is None or not scaler.with_mean else np.asarray(scaler.mean_, np.float64)
        scale = None if getattr(scaler, "scale_", None) is None or not scaler.with_std else np.asarray(scaler.scale_, np.float64)
    forest = steps[-1]
    try:
        estimators = list(forest.estimators_)
        features = list(forest.estimators_features_)
        path_lengths = list(forest._decision_path_lengths)
        avg_lengths = list(forest._average_path_length_per_tree)
        n_features = int(forest.n_features_in_)
        max_samples = forest._max_samples
        subsample = int(forest._max_features) != n_features
    except (AttributeError, TypeError, ValueError) as exc:
        raise UnsupportedModel(f"IsolationForest state not understood: {exc!r}") from None
    if not estimators or not (len(estimators) == len(features) == len(path_lengths) == len(avg_lengths)):
        raise UnsupportedModel("IsolationForest has no trees or inconsistent per-tree state")
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("feature", "threshold", "left", "right", "nan_left", "leaf")}
    roots, depth, offset = [], 0, 0
    for tree_est, feats, dpl, apl in zip(estimators, features, path_lengths, avg_lengths):
        state = getattr(getattr(tree_est, "tree_", None), "__dict__", {})
        nodes = state.get("nodes")
        if nodes is None or not {"left_child", "right_child", "feature", "threshold"} <= set(nodes.dtype.names or ()):
            raise UnsupportedModel("tree state has no node table")
        n = nodes.shape[0]
        left = nodes["left_child"].astype(np.int64)
        right = nodes["right_child"].astype(np.int64)
        is_leaf = left == -1
        own = np.arange(n, dtype=np.int64)
        feat = np.where(is_leaf, 0, nodes["feature"]).astype(np.int64)
        if subsample:
            feat = np.where(is_leaf, 0, np.asarray(feats, dtype=np.int64)[feat])
        if feat.size and (feat.min() < 0 or feat.max() >= n_features):
            raise UnsupportedModel("tree reads a feature outside the descriptor vector")
        parts["feature"].append(feat)
        parts["threshold"].append(np.where(is_leaf, 0.0, nodes["threshold"]).astype(np.float64))
        parts["left"].append(np.where(is_leaf, own, left) + offset)
        parts["right"].append(np.where(is_leaf, own, right) + offset)
        mgl = nodes["missing_go_to_left"].astype(bool) if "missing_go_to_left" in nodes.dtype.names else np.zeros(n, bool)
        parts["nan_left"].append(mgl & ~is_leaf)
        parts["leaf"].append(np.asarray(dpl, np.float64) + np.asarray(apl, np.float64) - 1.0)
        roots.append(offset)
        depth = max(depth, int(state.get("max_depth", 0)))
        offset += n
    denominator = float(len(estimators) * _average_path_length(np.array([max_samples]))[0])
    if not math.isfinite(denominator):
        raise UnsupportedModel("bad max_samples")
    return CompiledForest(
        mean=mean, scale=scale, roots=np.asarray(roots, np.int64),
        feature=np.concatenate(parts["feature"]), threshold=np.concatenate(parts["threshold"]),
        left=np.concatenate(parts["left"]), right=np.concatenate(parts["right"]),
        nan_left=np.concatenate(parts["nan_left"]), leaf_value=np.concatenate(parts["leaf"]),
        depth=depth, denominator=denominator, n_features=n_features,
    )


def read_level1(data: bytes) -> Any:
    """The verified level1 artifact's bytes as what scores them: a CompiledForest, or the scikit-learn
    pipeline itself when (and only when) it is made of scikit-learn classes this module cannot score.

    Raises DisallowedGlobal for a pickle naming anything else, and whatever the unpickler raises for
    bytes that are not a joblib pickle; the caller reports either as a model error.
    """
    try:
        return compile_pipeline(_unpickle_without_sklearn(data))
    except UnsupportedModel as exc:
        log.warning("level1 pipeline needs scikit-learn (%s); loading it with scikit-learn's classes", exc)
        return _unpickle(data, _sklearn_class)


def load_forest(source: str | Path | bytes) -> CompiledForest | None:
    """The pipeline (bytes, or a file of training's own) as a CompiledForest, or None when this module
    cannot score it. The scoring path uses `read_level1` on verified bytes instead."""
    try:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        return compile_pipeline(_unpickle_without_sklearn(data))
    except Exception:  # noqa: BLE001 - any surprise: not something the numpy engine scores
        return None
