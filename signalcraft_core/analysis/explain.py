"""Why one recording got its grade: the log-mel picture, per-band reconstruction error, rules and scores.

`explain_audio` grades a decoded clip through the same `score_audio` pipe as every front door and
keeps what a person needs to judge the verdict; `format_explanation` is the terminal text and
`render_png` the one-image version (matplotlib, the `plot` extra, imported lazily).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import numpy as np

from signalcraft_core.dsp.features import FeatureConfig, log_mel, mel_filterbank
from signalcraft_core.io.audio import Audio
from signalcraft_core.models.grading import CRITICAL_SCORE, WARNING_SCORE
from signalcraft_core.models.model_set import ModelSet
from signalcraft_core.pipeline.score import ClipScore, score_audio

TOP_BANDS = 3
"""How many mel bands with the largest reconstruction error are named."""


@dataclass(frozen=True)
class BandError:
    """One mel band's Level 2 reconstruction error and the frequencies the band covers."""

    band: int
    error: float
    low_hz: float
    high_hz: float

    @property
    def hz(self) -> str:
        if not np.isfinite(self.low_hz):
            return "? Hz"
        return f"{self.low_hz:.0f}-{self.high_hz:.0f} Hz"


@dataclass(frozen=True, eq=False)
class Explanation:
    """A graded clip with its picture: what `format_explanation` and `render_png` show."""

    source: str
    result: ClipScore
    model: str
    profile: FeatureConfig
    log_mel: np.ndarray          # (n_mels, frames), the features the model saw, before pooling
    band_ranges_hz: np.ndarray   # (n_mels, 2): lowest and highest FFT bin frequency of each band
    top_bands: tuple[BandError, ...]

    @property
    def band_errors(self) -> np.ndarray:
        """Per-band errors when Level 2 ran (one per mel band), else empty."""
        return _band_errors(self.result, self.profile.n_mels)

    @property
    def seconds_per_frame(self) -> float:
        return self.profile.hop_length / self.profile.sample_rate


def mel_band_ranges(config: FeatureConfig) -> np.ndarray:
    """(n_mels, 2) Hz span of the FFT bins each mel band sums (NaN for a band that covers no bin)."""
    weights = mel_filterbank(config)
    freqs = np.fft.rfftfreq(config.n_fft, d=1.0 / config.sample_rate)
    out = np.full((config.n_mels, 2), np.nan)
    for i, row in enumerate(weights):
        bins = np.flatnonzero(row > 0)
        if bins.size:
            out[i] = freqs[bins[0]], freqs[bins[-1]]
    return out


def explain_audio(model_set: ModelSet, audio: Audio, source: str = "", preference: str | None = None,
                  top: int = TOP_BANDS) -> Explanation:
    """Grade one decoded clip and keep its log-mel picture and its `top` worst mel bands."""
    result = score_audio(model_set, [audio], preference)[0]
    ranges = mel_band_ranges(model_set.profile)
    errors = _band_errors(result, model_set.profile.n_mels)
    order = np.argsort(-errors, kind="stable")[:top] if errors.size else []
    return Explanation(
        source=source, result=result, model=f"{model_set.name} v{model_set.version}", profile=model_set.profile,
        log_mel=log_mel(audio.samples, model_set.profile), band_ranges_hz=ranges,
        top_bands=tuple(BandError(int(i), float(errors[i]), float(ranges[i, 0]), float(ranges[i, 1])) for i in order),
    )


def _band_errors(result: ClipScore, n_mels: int) -> np.ndarray:
    errors = np.asarray(result.band_errors, dtype=np.float64)
    return errors if errors.size == n_mels else np.empty(0)


def _n(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def _score_line(r: ClipScore) -> str:
    level1 = f"level 1 {_n(r.level1_score)}" + (f" (forest {_n(r.iforest_calibrated)})" if r.iforest_calibrated is not None else "")
    level2 = f"level 2 {_n(r.level2_score)}" + (f" (MSE {_n(r.level2_mse, '.4g')})" if r.level2_mse is not None else "")
    return f"score {_n(r.score)}: {level1}, {level2}"


def format_explanation(e: Explanation) -> str:
    """The terminal text: grade and scores, each rule with its message, the worst mel bands in Hz."""
    r = e.result
    lines = [f"{e.source or 'recording'}: {r.grade}  ({_score_line(r)})",
             f"model {e.model}; WARNING >= {WARNING_SCORE:g}, CRITICAL >= {CRITICAL_SCORE:g}"]
    if r.level1_rules:
        lines.append("rules that fired:")
        lines += [f"  {rule}: {message}" for rule, message in zip(r.level1_rules, r.rule_messages)]
    else:
        lines.append("rules that fired: none")
    if e.top_bands:
        median = float(np.median(e.band_errors)) if e.band_errors.size else 0.0
        lines.append(f"mel bands with the largest reconstruction error (median over bands {median:.3f}):")
        for b in e.top_bands:
            ratio = f"  ({b.error / median:.1f}x median)" if median > 0 else ""
            lines.append(f"  band {b.band:>3}  {b.hz:<14} error {b.error:.3f}{ratio}")
    else:
        lines.append("mel band errors: none (this model set has no Level 2)")
    return "\n".join(lines) + "\n"


def render_png(e: Explanation, width: float = 12.0, height: float = 7.5) -> bytes:
    """One image: log-mel picture, per-band error bars on the same mel axis, grade, scores and rules."""
    from signalcraft_core.analysis.report import GRADE_COLORS, figure_png, new_figure

    r = e.result
    n_mels, frames = e.log_mel.shape
    duration = frames * e.seconds_per_frame
    fig = new_figure(width, height)
    grid = fig.add_gridspec(2, 2, width_ratios=(3.2, 1), height_ratios=(3, 1.25))
    ax_spec = fig.add_subplot(grid[0, 0])
    ax_bars = fig.add_subplot(grid[0, 1], sharey=ax_spec)
    ax_text = fig.add_subplot(grid[1, :])
    color = GRADE_COLORS.get(r.grade or "", "#333333")
    fig.suptitle(f"{e.source or 'recording'}  —  {r.grade}  (score {_n(r.score)})", color=color,
                 fontsize=14, fontweight="bold")

    in_db = e.profile.clip_scaling == "none"
    vmax = float(np.max(e.log_mel))
    vmin = max(float(np.min(e.log_mel)), vmax - 80.0) if in_db else float(np.min(e.log_mel))
    image = ax_spec.imshow(e.log_mel, origin="lower", aspect="auto", cmap="magma", vmin=vmin, vmax=vmax,
                           extent=(0.0, duration, -0.5, n_mels - 0.5), interpolation="nearest")
    fig.colorbar(image, ax=ax_spec, pad=0.01, fraction=0.04, label="dB" if in_db else "scaled level")
    ax_spec.set_xlabel("time (s)")
    ax_spec.set_title(f"log-mel spectrogram ({e.profile.name} profile)", loc="left", fontsize=10)
    ticks = list(range(0, n_mels, max(1, n_mels // 8)))
    centres = e.band_ranges_hz.mean(axis=1)
    ax_spec.set_yticks(ticks, [f"{centres[t]:.0f}" if np.isfinite(centres[t]) else "?" for t in ticks])
    ax_spec.set_ylabel("mel band centre (Hz)")

    errors = e.band_errors
    if errors.size:
        worst = {b.band for b in e.top_bands}
        colors = [color if i in worst else "#8a94a6" for i in range(n_mels)]
        ax_bars.barh(np.arange(n_mels), errors, height=0.85, color=colors)
        labelled: list[int] = []
        for b in e.top_bands:  # label the worst band of each cluster of neighbours, mark all on the picture
            ax_spec.axhspan(b.band - 0.5, b.band + 0.5, xmin=0.985, xmax=1.0, color="#4fc3f7")
            if all(abs(b.band - other) > 2 for other in labelled):
                labelled.append(b.band)
                ax_bars.annotate(b.hz, (b.error, b.band), xytext=(3, 0), textcoords="offset points",
                                 va="center", fontsize=8, color=color)
        ax_bars.set_xlim(0, float(errors.max()) * 1.45 or 1.0)
        ax_bars.set_xlabel("reconstruction error")
    else:
        ax_bars.text(0.5, 0.5, "no Level 2 model", ha="center", va="center", transform=ax_bars.transAxes)
    ax_bars.set_title("Level 2 error per mel band", loc="left", fontsize=10)
    ax_bars.tick_params(axis="y", labelleft=False)

    ax_text.axis("off")
    lines = [(f"{r.grade}   {_score_line(r)}", color, "bold"),
             (f"model {e.model} · WARNING ≥ {WARNING_SCORE:g} · CRITICAL ≥ {CRITICAL_SCORE:g}", "#555555", "normal")]
    if r.level1_rules:
        for rule, message in zip(r.level1_rules, r.rule_messages):
            wrapped = textwrap.shorten(f"{rule}: {message}", width=150, placeholder=" …")
            lines.append((f"• {wrapped}", "#222222", "normal"))
    else:
        lines.append(("• no Level 1 rule fired", "#222222", "normal"))
    if e.top_bands:
        worst_text = ", ".join(f"band {b.band} ({b.hz})" for b in e.top_bands)
        lines.append((f"• largest reconstruction error: {worst_text}", "#222222", "normal"))
    step = 1.0 / max(len(lines), 5)
    for i, (text, text_color, weight) in enumerate(lines):
        ax_text.text(0.0, 1.0 - i * step, text, transform=ax_text.transAxes, va="top", fontsize=10,
                     color=text_color, fontweight=weight)
    return figure_png(fig)
