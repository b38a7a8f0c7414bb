"""Scoring side of Level 2: run the exported TorchScript autoencoder on feature vectors.

Imports torch but none of the training code: the artifact is self-contained TorchScript.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass(frozen=True)
class Level2Result:
    mse: np.ndarray          # (n,) mean squared reconstruction error per clip
    band_errors: np.ndarray  # (n, n_mels) error per mel band, averaged over the pooled statistics


def load_scoring_module(path: str | Path) -> torch.jit.ScriptModule:
    module = torch.jit.load(str(path), map_location="cpu")
    module.eval()
    return module


def score_level2(module: torch.jit.ScriptModule, features: np.ndarray, n_mels: int) -> Level2Result:
    """Batched reconstruction error; `features` is (n_clips, dim) from features.clip_features."""
    with torch.inference_mode():
        errors = module(torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))).numpy()
    n, dim = errors.shape
    per_band = errors.reshape(n, dim // n_mels, n_mels).mean(axis=1) if dim % n_mels == 0 else errors
    # The row mean is accumulated in float64: a float32 sum of hundreds of errors loses ~1e-7 relative.
    mse = errors.astype(np.float64).mean(axis=1)
    return Level2Result(mse=mse, band_errors=per_band.astype(np.float32))
