"""Explainable Level-1 rules: cheap checks a person can read, with normal ranges learned from normal sound.

Every clip is reduced to a few measurements (`signal_stats` -> `SignalStats`); a `RuleSet` learns the
normal range of each measurement from normal clips (`fit`) and reports the rules a new clip breaks
(`evaluate`), each as a `RuleHit` with a 0-100 score on the product scale (>= 50 WARNING, >= 80
CRITICAL) and a one-line message that states the measured value and the normal range. All bands lie
below 8 kHz, so every rule can fire on 16 kHz audio.

Scores. A rule that fires maps its excess over the normal range piecewise linearly: excess equal to
the rule's margin -> 50, equal to its critical excess -> 80, and on with the same slope up to a cap
of 100. Below the margin the rule does not fire.

Rules (stable names):

- ``clipping``: fraction of clipped samples - |x| >= 0.999, plus flat tops (runs of >= 3 equal samples
  at the clip's maximum or minimum value, when that value is at least 0.25 in magnitude, i.e. clipped
  integer data that never reaches full scale). Fixed thresholds, not learned: >= ``clip_warning``
  (1e-4) -> 50, >= ``clip_critical`` (1e-2) -> 80, on a log scale between them (100 at 100 %).
- ``dead_sensor``: the level (RMS with the DC offset removed) is more than ``dead_margin_db`` (30 dB)
  below the lowest normal level. Covers a flat line at zero and a sensor stuck at a constant value
  (near-constant signal: tiny standard deviation relative to normal). Scored like ``level_low`` but
  never below 80, so the score keeps growing as the level falls; when it fires, ``level_low`` is not
  reported again.
- ``level_high`` / ``level_low``: the level (RMS with the DC offset removed, dBFS) is above the
  highest / below the lowest normal level by >= ``level_margin_db`` (6 dB) -> 50; by
  ``level_critical_db`` (12 dB) -> 80.
- ``band_energy``: the share of the clip's energy in a frequency band (10*log10(E_band/E_total), bands
  0-250, 250-1000, 1000-2000, 2000-4000, 4000-8000 Hz, DC removed; in v2 measurements the lowest band,
  and the total, start at 15.6 Hz, above the DC offset's leakage into the STFT's lowest bins) leaves the normal range of that
  share by >= ``band_margin_db`` (6 dB) -> 50; by ``band_critical_db`` (12 dB) -> 80. Shares are
  independent of loudness, so this catches a changed sound (new hiss, whine, lost harmonic) at
  the same level. One hit for the worst band; the message counts the other bands out of range.
- ``bearing_peaks``: the strongest line of the envelope spectrum (v1: |Hilbert| of the 2-8 kHz band, or
  2 kHz high-pass at 16 kHz; v2: |y| of a 2 kHz FIR high-pass, averaged down to a 2 kHz envelope; Welch
  spectrum with 1 Hz resolution between 5 and 500 Hz) stands above
  the median of that spectrum by >= ``envelope_margin_db`` (6 dB) more than the highest normal clip
  -> 50; by ``envelope_critical_db`` (12 dB) -> 80. Repeating impacts (bearing defects, loose parts)
  modulate high-frequency noise at their repetition rate and show up as such a line; the message
  gives its frequency.
- ``dc_offset``: |mean| >= ``dc_warning`` (0.05 of full scale) -> 50, rising to 80 at 4 x
  ``dc_warning``. Fixed threshold, not learned: a DC offset is a sensor or converter fault.

`evaluate` returns the hits sorted by score, highest first (ties in the order above).

Measurement versions. The band shares and the envelope line have two recipes (dsp/signal_stats.py):
v1, from the clip's own full-length FFT, and v2, from the descriptors' STFT (the lowest band then
starts at 15.6 Hz, above the frames' DC leakage) and a time-domain envelope. Their numbers differ, so
a rule set learns its ranges from one recipe, records it (`measurements_`, the state's
``measurements``; a document without it is v1, as every set written before v2), and judges only
clips measured the same way: scoring measures each set's clips with its recipe (`featurise(...,
measurements=...)`), and `evaluate` refuses the other's numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from signalcraft_core.dsp.signal_stats import (
    BANDS_HZ,
    DC_CRITICAL_FACTOR,
    MEASUREMENT_VERSIONS,
    MEASUREMENTS_V1,
    SignalStats,
)
from signalcraft_core.errors import ModelError

RULE_NAMES: tuple[str, ...] = (
    "clipping", "dead_sensor", "level_high", "level_low", "band_energy", "bearing_peaks", "dc_offset",
)
_FORMAT = "signalcraft.rules.RuleSet"
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class RuleHit:
    """One rule that fired: stable name, 0-100 score, one line for a person."""

    rule: str
    score: float
    message: str


def _ramp(value: float, warning: float, critical: float) -> float:
    """value == warning -> 50, value == critical -> 80, same slope beyond, capped at 100."""
    return float(min(100.0, 50.0 + 30.0 * (value - warning) / (critical - warning)))


def _band_name(lo: float, hi: float) -> str:
    return f"{lo:g}-{hi:g} Hz"


class RuleSet:
    """Learns normal ranges from normal clips' `SignalStats` and reports the rules a clip breaks.

    scikit-learn estimator style: parameters in __init__ (validated in `fit`), learned state in
    attributes ending with `_`, no I/O; `to_dict`/`from_dict` carry both for the model manifest.
    """

    def __init__(
        self,
        level_margin_db: float = 6.0,
        level_critical_db: float = 12.0,
        band_margin_db: float = 6.0,
        band_critical_db: float = 12.0,
        envelope_margin_db: float = 6.0,
        envelope_critical_db: float = 12.0,
        dead_margin_db: float = 30.0,
        clip_warning: float = 1e-4,
        clip_critical: float = 1e-2,
        dc_warning: float = 0.05,
    ) -> None:
        self.level_margin_db = level_margin_db
        self.level_critical_db = level_critical_db
        self.band_margin_db = band_margin_db
        self.band_critical_db = band_critical_db
        self.envelope_margin_db = envelope_margin_db
        self.envelope_critical_db = envelope_critical_db
        self.dead_margin_db = dead_margin_db
        self.clip_warning = clip_warning
        self.clip_critical = clip_critical
        self.dc_warning = dc_warning

    _PARAMS: tuple[str, ...] = (
        "level_margin_db", "level_critical_db", "band_margin_db", "band_critical_db", "envelope_margin_db",
        "envelope_critical_db", "dead_margin_db", "clip_warning", "clip_critical", "dc_warning",
    )

    def get_params(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in self._PARAMS}

    def __repr__(self) -> str:
        changed = {k: v for k, v in self.get_params().items() if v != float(_DEFAULTS[k])}
        return f"RuleSet({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    def _check_params(self) -> None:
        p = self.get_params()
        for name, value in p.items():
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"RuleSet.{name} must be a positive number, got {value!r}")
        for warn, crit in (("level_margin_db", "level_critical_db"), ("band_margin_db", "band_critical_db"),
                           ("envelope_margin_db", "envelope_critical_db"), ("clip_warning", "clip_critical")):
            if not p[warn] < p[crit]:
                raise ValueError(f"RuleSet.{warn} ({p[warn]}) must be below {crit} ({p[crit]})")
        if p["clip_critical"] >= 1.0:
            raise ValueError(f"RuleSet.clip_critical must be below 1, got {p['clip_critical']}")

    def fit(self, stats: Sequence[SignalStats]) -> "RuleSet":
        """Learns the normal ranges (min/max over the clips; the margins absorb what few clips miss)."""
        self._check_params()
        stats = list(stats)
        if not stats:
            raise ValueError("RuleSet.fit needs at least one normal clip")
        for s in stats:
            _check_bands(s)
        levels = np.array([s.ac_dbfs for s in stats])
        bands = np.array([s.band_share_db for s in stats], dtype=np.float64)
        self.level_min_ = float(levels.min())
        self.level_max_ = float(levels.max())
        self.band_min_ = tuple(float(v) for v in bands.min(axis=0))
        self.band_max_ = tuple(float(v) for v in bands.max(axis=0))
        self.envelope_max_ = float(max(s.envelope_peak_db for s in stats))
        self.n_clips_ = len(stats)
        self.measurements_ = _one_recipe(stats)
        return self

    def _fitted(self) -> bool:
        return hasattr(self, "level_min_")

    def evaluate(self, stats: SignalStats) -> list[RuleHit]:
        """The rules this clip breaks, highest score first; an empty list means nothing unusual."""
        if not self._fitted():
            raise ModelError("RuleSet is not fitted: call fit() on normal clips or load it with from_dict()")
        _check_bands(stats)
        if stats.measurements != self.measurements_:
            raise ModelError(f"rule ranges were learned from v{self.measurements_} measurements; this clip was "
                             f"measured with v{stats.measurements}")
        hits = [
            *self._clipping(stats), *self._level(stats), *self._bands(stats),
            *self._envelope(stats), *self._dc(stats),
        ]
        order = {name: i for i, name in enumerate(RULE_NAMES)}
        return sorted(hits, key=lambda h: (-h.score, order[h.rule]))

    def _clipping(self, s: SignalStats) -> list[RuleHit]:
        f = s.clip_fraction
        if not f >= self.clip_warning:
            return []
        score = _ramp(math.log10(f), math.log10(self.clip_warning), math.log10(self.clip_critical))
        return [RuleHit("clipping", score,
                        f"clipped samples {100 * f:.3g} % (warning at {100 * self.clip_warning:g} %, "
                        f"critical at {100 * self.clip_critical:g} %); peak {s.peak:.3f}")]

    def _level(self, s: SignalStats) -> list[RuleHit]:
        level = s.ac_dbfs
        lo, hi = self.level_min_, self.level_max_
        rng = f"[{lo:.1f}, {hi:.1f}] dBFS"
        deficit = lo - level
        if deficit >= self.dead_margin_db:
            score = max(80.0, _ramp(deficit, self.level_margin_db, self.level_critical_db))
            return [RuleHit("dead_sensor", score,
                            f"level {level:.1f} dBFS is {deficit:.1f} dB below normal range {rng} "
                            f"(dead at {self.dead_margin_db:g} dB below): no signal or stuck sensor")]
        if deficit >= self.level_margin_db:
            return [RuleHit("level_low", _ramp(deficit, self.level_margin_db, self.level_critical_db),
                            f"level {level:.1f} dBFS below normal range {rng} by {deficit:.1f} dB")]
        excess = level - hi
        if excess >= self.level_margin_db:
            return [RuleHit("level_high", _ramp(excess, self.level_margin_db, self.level_critical_db),
                            f"level {level:.1f} dBFS above normal range {rng} by {excess:.1f} dB")]
        return []

    def _bands(self, s: SignalStats) -> list[RuleHit]:
        out_of_range = []
        for (lo_hz, hi_hz), share, lo, hi in zip(BANDS_HZ, s.band_share_db, self.band_min_, self.band_max_):
            if share - hi >= self.band_margin_db:
                out_of_range.append((share - hi, "above", _band_name(lo_hz, hi_hz), share, lo, hi))
            elif lo - share >= self.band_margin_db:
                out_of_range.append((lo - share, "below", _band_name(lo_hz, hi_hz), share, lo, hi))
        if not out_of_range:
            return []
        out_of_range.sort(key=lambda t: -t[0])
        excess, side, name, share, lo, hi = out_of_range[0]
        more = f" (+{len(out_of_range) - 1} more band(s) out of range)" if len(out_of_range) > 1 else ""
        return [RuleHit("band_energy", _ramp(excess, self.band_margin_db, self.band_critical_db),
                        f"energy share of {name} {share:.1f} dB {side} normal range [{lo:.1f}, {hi:.1f}] dB "
                        f"by {excess:.1f} dB{more}")]

    def _envelope(self, s: SignalStats) -> list[RuleHit]:
        excess = s.envelope_peak_db - self.envelope_max_
        if not excess >= self.envelope_margin_db:
            return []
        return [RuleHit("bearing_peaks", _ramp(excess, self.envelope_margin_db, self.envelope_critical_db),
                        f"envelope peak {s.envelope_peak_db:.1f} dB at {s.envelope_peak_hz:.1f} Hz above normal "
                        f"maximum {self.envelope_max_:.1f} dB by {excess:.1f} dB: repeating impacts "
                        f"(bearing defect, looseness)")]

    def _dc(self, s: SignalStats) -> list[RuleHit]:
        dc = abs(s.dc_offset)
        if not dc >= self.dc_warning:
            return []
        return [RuleHit("dc_offset", _ramp(dc, self.dc_warning, DC_CRITICAL_FACTOR * self.dc_warning),
                        f"DC offset {s.dc_offset:+.3f} of full scale (warning at +/-{self.dc_warning:g}): "
                        f"sensor or converter bias")]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe parameters + learned state (state is None before fit)."""
        state = None
        if self._fitted():
            state = {
                "level_min_db": self.level_min_, "level_max_db": self.level_max_,
                "band_min_db": list(self.band_min_), "band_max_db": list(self.band_max_),
                "envelope_max_db": self.envelope_max_, "n_clips": self.n_clips_,
                "measurements": self.measurements_,
            }
        return {
            "format": _FORMAT, "version": _FORMAT_VERSION, "params": self.get_params(),
            "bands_hz": [[float(lo), float(hi)] for lo, hi in BANDS_HZ], "state": state,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RuleSet":
        """Rebuilds a RuleSet from `to_dict` output; ModelError when it is not one or does not fit this code."""
        try:
            if d.get("format") != _FORMAT or d.get("version") != _FORMAT_VERSION:
                raise ModelError(f"not a {_FORMAT} v{_FORMAT_VERSION} document "
                                 f"(format={d.get('format')!r}, version={d.get('version')!r})")
            bands = tuple((float(lo), float(hi)) for lo, hi in d["bands_hz"])
            if bands != tuple((float(lo), float(hi)) for lo, hi in BANDS_HZ):
                raise ModelError(f"rule set was fitted on bands {bands}, this code measures {BANDS_HZ}")
            params = dict(d["params"])
            unknown = set(params) - set(cls._PARAMS)
            if unknown:
                raise ModelError(f"unknown rule parameters {sorted(unknown)}")
            rules = cls(**{k: float(v) for k, v in params.items()})
            rules._check_params()
            state = d["state"]
            if state is not None:
                rules.level_min_ = float(state["level_min_db"])
                rules.level_max_ = float(state["level_max_db"])
                rules.band_min_ = tuple(float(v) for v in state["band_min_db"])
                rules.band_max_ = tuple(float(v) for v in state["band_max_db"])
                rules.envelope_max_ = float(state["envelope_max_db"])
                rules.n_clips_ = int(state["n_clips"])
                rules.measurements_ = int(state.get("measurements", MEASUREMENTS_V1))
                if rules.measurements_ not in MEASUREMENT_VERSIONS:
                    raise ModelError(f"rule set was learned from v{rules.measurements_} measurements; this code "
                                     f"measures {', '.join(f'v{v}' for v in MEASUREMENT_VERSIONS)}")
                if not (len(rules.band_min_) == len(rules.band_max_) == len(BANDS_HZ)):
                    raise ModelError("rule set state has the wrong number of bands")
        except ModelError:
            raise
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"malformed rule set: {type(exc).__name__}: {exc}") from exc
        return rules


_DEFAULTS: dict[str, float] = RuleSet().get_params()


def _one_recipe(stats: Sequence[SignalStats]) -> int:
    """The measurement version all `stats` share; ranges learned from a mix would fit neither recipe."""
    versions = {s.measurements for s in stats}
    if len(versions) != 1:
        raise ValueError(f"RuleSet.fit needs clips measured with one recipe, got versions {sorted(versions)}")
    return versions.pop()


def _check_bands(s: SignalStats) -> None:
    if len(s.band_share_db) != len(BANDS_HZ):
        raise ValueError(f"SignalStats has {len(s.band_share_db)} band shares, expected {len(BANDS_HZ)}")


__all__ = ["RULE_NAMES", "RuleHit", "RuleSet"]
