"""Clips shorter than the model's window, graded on the same false-alarm scale as whole windows.

The models pool a whole clip's frames into one vector. A 2 s clip's vector is noisier than a 10 s
clip's, so normal machines score more widely spread; graded with the window's calibrations, 2 s cuts
of the DCASE valve test normals reached WARNING on 10 of 100 cuts where 1 % was promised
(bench/evaluate_real.py). So training also scores out-of-fold *cuts* of its normal clips at a few
shorter lengths (`cut_lengths`: 1, 2 and 5 s for a 10 s window; at most MAX_CUTS_PER_CLIP cuts of a
clip, spread evenly over it: a cyclic machine's cuts see every phase of its cycle), fits each level's calibration
on them and learns the rules' ranges from them: the manifest's `short_clips` section, one entry per
length.

Serving (models/decision.py) grades a clip shorter than FULL_WINDOW_FROM windows with the entry of
the longest cut length it reaches, or the shortest entry when it is shorter than all of them. A clip
between two lengths takes the shorter length's wider spread: it errs towards fewer false alarms. The
ranking of clips of one length is the same either way (the calibrations are monotone); what changes
is that 50 and 80 mean the configured rates at that length too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from signalcraft_core.io.audio import DEFAULT_AUDIO_CONFIG
from signalcraft_core.models.calibration import Calibration, HybridCalibration
from signalcraft_core.models.rules import RuleSet

#: The model's clip length when neither the manifest's `training.clip_seconds` nor the profile says.
DEFAULT_WINDOW_SECONDS = 10.0
#: Cut lengths that get calibrations of their own: these seconds, and these fractions of the window, each
#: at least the decoder's shortest recording (1 s) and under FULL_WINDOW_FROM windows (1, 2 and 5 s for a
#: 10 s window; 1, 2, 5, 12 and 30 s for 60 s; 1 s for 2 s).
SHORT_CLIP_SECONDS = (1.0, 2.0, 5.0)
SHORT_CLIP_FRACTIONS = (0.2, 0.5)
#: Clips of at least this many windows are graded with the window's own calibrations.
FULL_WINDOW_FROM = 0.75
#: Cuts taken from one training clip per length, spread evenly over it (side by side when they tile it).
MAX_CUTS_PER_CLIP = 5
#: Fewer out-of-fold cuts than this and the length gets no calibration (fit_calibration needs 3).
MIN_CUTS = 3


@dataclass(frozen=True)
class LengthCalibrations:
    """The calibrations for clips of about `seconds`, fitted on out-of-fold cuts of that length, and the rule
    ranges learned from those cuts (a 1 s cut's band shares spread wider than a 10 s clip's)."""

    seconds: float
    level1: Calibration | None = None
    level2: Calibration | None = None
    hybrid: HybridCalibration | None = None
    rules: RuleSet | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.seconds) and self.seconds > 0):
            raise ValueError(f"short-clip length must be a positive number of seconds, not {self.seconds!r}")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"seconds": float(self.seconds)}
        for name in ("level1", "level2", "hybrid", "rules"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LengthCalibrations:
        return cls(seconds=float(d["seconds"]),
                   level1=Calibration.from_dict(d["level1"]) if d.get("level1") else None,
                   level2=Calibration.from_dict(d["level2"]) if d.get("level2") else None,
                   hybrid=HybridCalibration.from_dict(d["hybrid"]) if d.get("hybrid") else None,
                   rules=RuleSet.from_dict(d["rules"]) if d.get("rules") else None)


def window_seconds(model_set: Any) -> float:
    """The clip length a model set was trained on: manifest `training.clip_seconds` (a set fitted in memory:
    its `clip_seconds`), the profile's, else 10 s."""
    manifest = getattr(model_set, "manifest", None)
    training = manifest.get("training") if isinstance(manifest, dict) else None
    for value in ((training or {}).get("clip_seconds"), getattr(model_set, "clip_seconds", None),
                  getattr(getattr(model_set, "profile", None), "clip_seconds", None)):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
            return float(value)
    return DEFAULT_WINDOW_SECONDS


def cut_lengths(window_s: float, shortest_s: float = DEFAULT_AUDIO_CONFIG.min_seconds) -> tuple[float, ...]:
    """The short lengths (seconds) training calibrates for a model of this window: none a recording can be
    shorter than (`shortest_s`, the decoder's minimum), none graded on the window's own calibrations."""
    wanted = {*SHORT_CLIP_SECONDS, *(round(f * window_s, 3) for f in SHORT_CLIP_FRACTIONS)}
    return tuple(sorted(s for s in wanted if shortest_s <= s < FULL_WINDOW_FROM * window_s))


def cuts(n_samples: int, cut: int) -> list[slice]:
    """Non-overlapping cuts of `cut` samples spread evenly over a clip, first at its start, last at its end
    (side by side when they tile it), at most MAX_CUTS_PER_CLIP."""
    count = min(n_samples // cut, MAX_CUTS_PER_CLIP) if cut > 0 else 0
    if count == 0:
        return []
    starts = [0] if count == 1 else [round(k * (n_samples - cut) / (count - 1)) for k in range(count)]
    return [slice(s, s + cut) for s in starts]


def choose(seconds: np.ndarray | None, window_s: float, lengths: Sequence[LengthCalibrations]) -> np.ndarray:
    """Per clip, the index into `lengths` whose calibrations grade it, or -1 for the window's own."""
    if seconds is None or not lengths:
        return np.full(0 if seconds is None else len(seconds), -1, dtype=np.intp)
    s = np.asarray(seconds, dtype=np.float64)
    order = np.argsort([entry.seconds for entry in lengths], kind="stable")
    sorted_s = np.array([lengths[i].seconds for i in order])
    reached = np.searchsorted(sorted_s, s, side="right") - 1       # longest length <= the clip, -1 if none
    picked = order[np.clip(reached, 0, len(order) - 1)]
    return np.where(np.isfinite(s) & (s < FULL_WINDOW_FROM * window_s), picked, -1).astype(np.intp)
