"""Scores of the packaged model sets on a fixed, sorted sample of the real recordings."""

from __future__ import annotations

from pathlib import Path

#: Every STRIDE-th recording (sorted by path) of ../shared/data: all sets and both labels, a few seconds.
STRIDE = 7
FIELDS = ("status", "grade", "score", "level1_score", "level1_rules", "iforest_raw", "iforest_calibrated", "level2_mse", "level2_score")


def sample_files(data: Path) -> list[Path]:
    return sorted(data.rglob("*.wav"))[::STRIDE]


def packaged_scores(models: Path, data: Path) -> dict[str, dict[str, list]]:
    from signalcraft_core.models.model_store import ModelStore
    from signalcraft_core.pipeline.score import score_payloads

    files = sample_files(data)
    payloads = [f.read_bytes() for f in files]
    store = ModelStore(models)
    out: dict[str, dict[str, list]] = {}
    for name in store.set_names():
        results = score_payloads(store.get(name), payloads)
        out[name] = {str(f.relative_to(data)): [list(v) if isinstance(v, tuple) else v for v in (getattr(r, k) for k in FIELDS)] for f, r in zip(files, results)}
    return out
