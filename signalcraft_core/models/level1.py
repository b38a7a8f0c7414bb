"""Level 1's raw score: the IsolationForest (scaler + forest) on the descriptor vector (dsp/descriptors.py).

The forest is the numpy engine (forest.py) in production, evaluation and calibration alike; a
pipeline only scikit-learn can read (an unusual export) is scored by its own `score_samples`.
Training lives in training/level1.py; the Level-1 decision (forest + rules) in decision.py.
"""

from __future__ import annotations

import numpy as np


def iforest_raw_score(forest, descriptors: np.ndarray) -> np.ndarray:
    """Raw Level-1 score: minus the forest's score_samples, so higher = more anomalous."""
    x = np.nan_to_num(np.asarray(descriptors, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    return -forest.score_samples(x)
