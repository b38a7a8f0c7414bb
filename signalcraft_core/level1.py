"""Level 1: a fast IsolationForest screen on the descriptor vector (descriptors.py).

scikit-learn's estimator contract: parameters in __init__, `fit`, `score_samples`; the fitted
scaler + forest is one Pipeline, saved with joblib by training and loaded only after its SHA-256
matched the manifest (model_set.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Level1Model:
    """StandardScaler + IsolationForest; `score_samples` is higher for MORE anomalous clips."""

    n_estimators: int = 200
    max_samples: str | int = "auto"
    random_state: int = 0

    def fit(self, descriptors: np.ndarray) -> "Level1Model":
        from sklearn.ensemble import IsolationForest
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.pipeline_ = make_pipeline(
            StandardScaler(),
            IsolationForest(
                n_estimators=self.n_estimators,
                max_samples=self.max_samples,
                random_state=self.random_state,
            ),
        ).fit(np.asarray(descriptors, dtype=np.float64))
        return self

    def score_samples(self, descriptors: np.ndarray) -> np.ndarray:
        return iforest_raw_score(self.pipeline_, descriptors)


def iforest_raw_score(pipeline, descriptors: np.ndarray) -> np.ndarray:
    """Raw Level-1 score of a fitted pipeline: minus sklearn's score_samples, so higher = more anomalous."""
    x = np.nan_to_num(np.asarray(descriptors, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    return -pipeline.score_samples(x)
