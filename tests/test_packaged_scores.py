"""The packaged model sets grade the real recordings exactly as pinned in tests/golden/packaged_scores.json.

A refactor of features, engines, calibration or the level combination that moves any number fails here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.golden.packaged import packaged_scores, sample_files  # noqa: E402

GOLDEN = json.loads((ROOT / "tests" / "golden" / "packaged_scores.json").read_text())


@pytest.mark.realdata
def test_packaged_models_score_real_recordings_as_pinned(shared_data: Path) -> None:
    assert len(sample_files(shared_data)) >= 20
    measured = packaged_scores(ROOT / "models", shared_data)
    assert sorted(measured) == sorted(GOLDEN)
    for name, clips in GOLDEN.items():
        assert sorted(measured[name]) == sorted(clips), name
        for clip, expected in clips.items():
            got = measured[name][clip]
            for field, want, have in zip(("status", "grade", "score", "level1_score", "rules", "iforest_raw",
                                          "iforest_calibrated", "level2_mse", "level2_score"), expected, got):
                if isinstance(want, float):
                    assert have == pytest.approx(want, rel=1e-6, abs=1e-9), (name, clip, field)
                else:
                    assert have == want, (name, clip, field)


def test_every_packaged_set_is_scored_by_the_numpy_engines():
    """A moved or renamed exported class must not make scoring fall back to torch / scikit-learn silently."""
    from signalcraft_core.models.forest import CompiledForest
    from signalcraft_core.models.level2_numpy import NumpyScoringModule
    from signalcraft_core.models.model_store import ModelStore

    store = ModelStore(ROOT / "models")
    assert store.set_names()
    for name in store.set_names():
        model_set = store.get(name)
        assert isinstance(model_set.level2_module, NumpyScoringModule), name
        assert isinstance(model_set.level1_pipeline, CompiledForest), name
