"""Training side of Level 1: fit StandardScaler + IsolationForest, and hand back the engine production scores with.

scikit-learn's estimator contract: parameters in __init__, `fit`; the fitted scaler + forest is one
Pipeline, saved with joblib by training and scored in production by models/forest.py's numpy walk
of the same trees (`production_forest`), loaded only after its SHA-256 matched the manifest.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from signalcraft_core.models.forest import CompiledForest, load_forest


@dataclass
class Level1Model:
    """StandardScaler + IsolationForest, fitted on normal descriptors."""

    n_estimators: int = 200
    max_samples: str | int = "auto"
    random_state: int = 0

    def fit(self, descriptors: np.ndarray) -> "Level1Model":
        from sklearn.ensemble import IsolationForest
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.pipeline_ = make_pipeline(
            StandardScaler(),
            IsolationForest(n_estimators=self.n_estimators, max_samples=self.max_samples,
                            random_state=self.random_state),
        ).fit(np.asarray(descriptors, dtype=np.float64))
        return self

    def save(self, path: str | Path) -> None:
        import joblib

        joblib.dump(self.pipeline_, path, compress=3)

    def production_forest(self) -> CompiledForest:
        """The fitted pipeline as the scoring path loads it from level1.joblib (the numpy engine)."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "level1.joblib"
            self.save(path)
            forest = load_forest(path)
        if forest is None:  # training only ever exports the layout the numpy engine reads
            raise RuntimeError("the fitted Level-1 pipeline is not readable by the numpy forest")
        return forest
