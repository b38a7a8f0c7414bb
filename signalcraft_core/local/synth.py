"""Synthetic machine sounds, so tests and the demo run in milliseconds without real recordings.

Never use these clips for accuracy claims: they are plausible, not real. Each machine type has a
small physical recipe (shaft harmonics, blade pass, travel noise, valve clicks) plus factory
background; each anomaly kind adds or alters one mechanism while keeping the overall level within
a few dB of normal, so a loudness rule alone cannot catch everything. numpy only.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from signalcraft_core.io.keys import KNOWN_MACHINE_TYPES

MACHINE_TYPES: tuple[str, ...] = KNOWN_MACHINE_TYPES  # one synthetic sound per type the key parser knows

ANOMALY_KINDS: dict[str, tuple[str, ...]] = {
    "pump": ("bearing_fault", "imbalance", "cavitation", "clogging", "leak"),
    "fan": ("bearing_fault", "imbalance", "clogging", "rattle"),
    "slider": ("bearing_fault", "timing_fault", "rattle"),
    "valve": ("timing_fault", "leak", "rattle"),
}

SAMPLE_RATE = 16000  # the rate of MIMII / DCASE and of every file write_dataset produces

# Machine loudness (dBFS RMS) before the per-machine and per-clip offsets.
_TYPE_LEVEL_DB = {"pump": -32.0, "fan": -30.0, "slider": -34.0, "valve": -36.0}  # near MIMII
# Level of each additive anomaly component relative to the normal machine sound (dB range).
_ANOMALY_DB = {
    "bearing_fault": (-7.0, -3.0),
    "imbalance": (-4.0, -1.5),
    "cavitation": (-9.0, -5.0),
    "clogging": (-8.0, -4.0),
    "leak": (-12.0, -7.0),
    "rattle": (-9.0, -5.0),
}
_CLIP_LEVEL_DB = 2.0       # normal clips vary uniformly by +-this much in level
_TAIL_S = 0.125            # FFT padding so ringing events do not wrap around


@dataclass(frozen=True)
class MachineProfile:
    """Fixed traits of one synthetic machine (type + id); its clips vary around these."""

    machine_type: str
    machine_id: str
    shaft_hz: float                   # pump/fan shaft rate, slider motor rate (valve: unused)
    blades: int                       # pump impeller vanes / fan blades
    harmonic_amps: tuple[float, ...]  # relative amplitudes of the tonal series
    period_s: float                   # slider travel / valve actuation period (rotating: unused)
    duty: float                       # fraction of the period spent travelling / open
    modes_hz: tuple[float, ...]       # structural resonances excited by clicks and clunks
    noise_hz: float                   # centre of the broadband (flow / aerodynamic) noise
    noise_db: float                   # broadband noise relative to the tonal / click part
    bearing_hz: float                 # resonance a bearing defect excites (2-6 kHz)
    defect_ratio: float               # bearing defect impulse rate / shaft rate
    level_db: float                   # loudness offset of this machine


@lru_cache(maxsize=64)
def machine_profile(machine_type: str, machine_id: str = "id_00") -> MachineProfile:
    """Derive a machine's traits from its type and id only, so train and test sets share a machine."""
    _check_type(machine_type)
    r = np.random.default_rng([zlib.crc32(machine_type.encode()), zlib.crc32(machine_id.encode())])
    modes = (r.uniform(150, 400), r.uniform(900, 1800), r.uniform(2200, 3800))
    common: dict[str, Any] = dict(
        machine_type=machine_type, machine_id=machine_id,
        bearing_hz=float(r.uniform(2000, 6000)), level_db=float(r.uniform(-2, 2)),
    )
    if machine_type == "pump":
        amps = np.arange(1, 9) ** -0.8 * r.lognormal(0, 0.5, 8)
        amps[0] *= 0.5  # a healthy pump is well balanced: modest 1x
        return MachineProfile(
            shaft_hz=float(r.uniform(25, 50)), blades=int(r.integers(5, 8)),
            harmonic_amps=_tup(amps), period_s=0.0, duty=0.0, modes_hz=_tup(modes),
            noise_hz=float(r.uniform(300, 800)), noise_db=float(r.uniform(-3, 3)),
            defect_ratio=float(r.uniform(3.0, 5.5)), **common)
    if machine_type == "fan":
        amps = np.arange(1, 5) ** -1.0 * r.lognormal(0, 0.4, 4)
        return MachineProfile(
            shaft_hz=float(r.uniform(15, 25)), blades=int(r.integers(5, 10)),
            harmonic_amps=_tup(amps), period_s=0.0, duty=0.0, modes_hz=_tup(modes),
            noise_hz=float(r.uniform(300, 800)), noise_db=float(r.uniform(4, 8)),
            defect_ratio=float(r.uniform(3.0, 5.5)), **common)
    if machine_type == "slider":
        amps = np.arange(1, 6) ** -0.7 * r.lognormal(0, 0.5, 5)
        return MachineProfile(
            shaft_hz=float(r.uniform(80, 160)), blades=1, harmonic_amps=_tup(amps),
            period_s=float(r.uniform(1.0, 2.0)), duty=float(r.uniform(0.35, 0.55)),
            modes_hz=_tup(modes), noise_hz=float(r.uniform(800, 2000)),
            noise_db=float(r.uniform(0, 4)), defect_ratio=float(r.uniform(0.3, 0.6)), **common)
    click_modes = (r.uniform(1500, 2500), r.uniform(2800, 4200), r.uniform(180, 400))
    return MachineProfile(
        shaft_hz=0.0, blades=1, harmonic_amps=(1.0,), period_s=float(r.uniform(0.5, 1.4)),
        duty=float(r.uniform(0.25, 0.55)), modes_hz=_tup(click_modes),
        noise_hz=float(r.uniform(800, 1500)), noise_db=float(r.uniform(-18, -12)),
        defect_ratio=0.0, **common)


def synthesize_clip(
    machine_type: str,
    anomaly: str | None,
    rng: np.random.Generator,
    duration_s: float = 10.0,
    sample_rate: int = SAMPLE_RATE,
    *,
    machine_id: str = "id_00",
) -> np.ndarray:
    """One clip of `machine_type` (normal when `anomaly` is None) as float32 mono in [-1, 1]."""
    _check_type(machine_type)
    if anomaly is not None and anomaly not in ANOMALY_KINDS[machine_type]:
        raise ValueError(f"{machine_type} has no anomaly {anomaly!r}; "
                         f"choose from {ANOMALY_KINDS[machine_type]}")
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"duration_s must be a finite number > 0, got {duration_s}")
    if int(sample_rate) < 8000:
        raise ValueError(f"sample_rate must be >= 8000, got {sample_rate}")
    sr = int(sample_rate)
    n = max(1, int(round(duration_s * sr)))
    g = _Grid(n, sr, _fast_len(n + int(_TAIL_S * sr)))
    p = machine_profile(machine_type, machine_id)

    body = _BODIES[machine_type](rng, g, p, anomaly)
    target = 10 ** ((_TYPE_LEVEL_DB[machine_type] + p.level_db
                     + rng.uniform(-_CLIP_LEVEL_DB, _CLIP_LEVEL_DB)) / 20)
    signal = body.signal
    extra: np.ndarray | None = None
    if anomaly == "imbalance":
        signal, extra = _imbalance(rng, body)
    elif anomaly in _ADDITIVE:
        extra = _ADDITIVE[anomaly](rng, g, p, body)
    x = _unit(signal) * target
    if extra is not None:
        lo, hi = _ANOMALY_DB[anomaly]  # type: ignore[index]
        x = x + _unit(extra) * target * 10 ** (rng.uniform(lo, hi) / 20)
    x = x + _factory(rng, g) * 10 ** (rng.uniform(-58, -52) / 20)
    peak = float(np.max(np.abs(x)))
    if peak > 0.98:  # rare: keep headroom rather than clip the waveform
        x = x * (0.98 / peak)
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def write_dataset(
    out_dir: str | Path,
    machine_type: str,
    n_normal: int,
    n_abnormal: int,
    seed: int = 0,
    machine_id: str = "id_00",
    duration_s: float = 10.0,
    channels: int = 1,
) -> list[Path]:
    """Write a MIMII-like tree OUT/<type>/<id>/{normal,abnormal}/NNNNNNNN.wav; returns the paths.

    Abnormal clips cycle through ANOMALY_KINDS[machine_type]. The same arguments give identical
    bytes; the machine's character depends on (type, id) only, so sets written with different
    seeds sound like the same machine.
    """
    from signalcraft_core.io.audio import (
        encode_wav,  # I/O helper; lazy so synthesis alone stays light
    )

    _check_type(machine_type)
    check_path_part(machine_id)
    if n_normal < 0 or n_abnormal < 0:
        raise ValueError("clip counts must be >= 0")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    kinds = ANOMALY_KINDS[machine_type]
    base = Path(out_dir) / machine_type / machine_id
    paths: list[Path] = []
    for label_no, (label, count) in enumerate((("normal", n_normal), ("abnormal", n_abnormal))):
        folder = base / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            rng = np.random.default_rng(np.random.SeedSequence(
                [seed, zlib.crc32(machine_type.encode()), zlib.crc32(machine_id.encode()),
                 label_no, i]))
            anomaly = None if label == "normal" else kinds[i % len(kinds)]
            x = synthesize_clip(machine_type, anomaly, rng, duration_s, SAMPLE_RATE,
                                machine_id=machine_id)
            samples = _spread_channels(rng, x, channels) if channels > 1 else x
            path = folder / f"{i:08d}.wav"
            path.write_bytes(encode_wav(samples, SAMPLE_RATE, sample_format="pcm16",
                                        extensible=channels > 2))
            paths.append(path)
    return paths


# --------------------------------------------------------------------------- building blocks


@dataclass(frozen=True)
class _Grid:
    """Sample count, rate and FFT size shared by every component of one clip."""

    n: int
    sr: int
    nfft: int

    @property
    def duration(self) -> float:
        return self.n / self.sr

    @property
    def f(self) -> np.ndarray:
        return _freqs(self.nfft, self.sr)



@dataclass(frozen=True)
class _Body:
    """The machine's own sound plus what anomaly mechanisms need to hook into it."""

    signal: np.ndarray
    shaft_hz: float                 # nominal shaft / motor rate of this clip
    defect_hz: float                # impulse rate of a bearing defect, if one develops
    phase: np.ndarray | None        # shaft phase (rad) of rotating machines
    activity: np.ndarray | None     # 0..1 where the machine moves; None: always
    events: np.ndarray              # times (s) of mechanical events (clicks, starts, stops)


def check_path_part(name: str) -> str:
    """`name` if it is one plain folder name: the machine id becomes OUT/<type>/<id>/, and `../x`,
    `a/b` or an absolute path would write outside OUT."""
    if name in ("", ".", "..") or any(c in name for c in "/\\\0"):
        raise ValueError(f"{name!r} is not one folder name (no /, \\, . or ..)")
    return name


def _check_type(machine_type: str) -> None:
    if machine_type not in MACHINE_TYPES:
        raise ValueError(f"unknown machine type {machine_type!r}; choose from {MACHINE_TYPES}")


def _tup(a: np.ndarray | tuple[float, ...]) -> tuple[float, ...]:
    return tuple(float(v) for v in a)


def _fast_len(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n: pocketfft is fast on these, slow on large primes."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


@lru_cache(maxsize=8)
def _freqs(nfft: int, sr: int) -> np.ndarray:
    f = np.fft.rfftfreq(nfft, 1.0 / sr).astype(np.float32)
    f[0] = 1.0  # avoid 0/0 in the shaping functions; DC is shaped to ~0 anyway
    f.setflags(write=False)
    return f


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0


def _unit(x: np.ndarray) -> np.ndarray:
    r = _rms(x)
    return x / r if r > 0 else x


def _band(f: np.ndarray, lo: float, hi: float, order: int = 2) -> np.ndarray:
    """Smooth Butterworth-like band-pass magnitude."""
    return 1.0 / np.sqrt((1.0 + (lo / f) ** (2 * order)) * (1.0 + (f / hi) ** (2 * order)))


def _reso(f: np.ndarray, fc: float, q: float) -> np.ndarray:
    """Complex response of a resonator: its impulse response is a causal decaying sinusoid."""
    return 1.0 / (1.0 + 1j * q * (f / fc - fc / f))


def _cap(g: _Grid, hz: float) -> float:
    return min(hz, 0.42 * g.sr)


def _noise(rng: np.random.Generator, g: _Grid, mag: np.ndarray) -> np.ndarray:
    """Unit-RMS Gaussian noise with magnitude spectrum `mag`, made directly in the FFT domain."""
    spec = rng.standard_normal(2 * g.f.size, dtype=np.float32).view(np.complex64) * mag
    return _unit(np.fft.irfft(spec, g.nfft)[: g.n])


def _slow(rng: np.random.Generator, g: _Grid, rate_hz: float, depth: float) -> np.ndarray:
    """Slowly wandering random curve (std `depth`), e.g. speed jitter or turbulence."""
    k = max(2, int(g.duration * rate_hz) + 2)
    v = rng.normal(0.0, depth, k).astype(np.float32)
    step = -(-g.n // (k - 1))  # samples per segment; linear ramps between knots
    ramp = np.arange(step, dtype=np.float32) / step
    return (v[:-1, None] + (v[1:] - v[:-1])[:, None] * ramp).ravel()[: g.n]


def _shaft_phase(rng: np.random.Generator, g: _Grid, hz: float, jitter: float,
                 rate_hz: float) -> np.ndarray:
    f_inst = hz * (1.0 + _slow(rng, g, rate_hz, jitter))
    return np.cumsum(f_inst) * (2 * np.pi / g.sr) + rng.uniform(0, 2 * np.pi)


def _wrap(phase: np.ndarray) -> np.ndarray:
    """Phase reduced to [0, 2pi) in float32: integer multiples stay exact and sin stays fast."""
    turns = phase * (1.0 / (2 * np.pi))
    return ((turns - np.floor(turns)) * (2 * np.pi)).astype(np.float32)


def _harmonics(rng: np.random.Generator, phase: np.ndarray, amps: tuple[float, ...] | np.ndarray,
               mult: int = 1) -> np.ndarray:
    """Sum of a_k sin(k * mult * phase + random phase): a tonal series on a wandering rate."""
    w = _wrap(phase)
    out = np.zeros(w.size, dtype=np.float32)
    for k, a in enumerate(amps, start=1):
        out += np.float32(a) * np.sin(np.float32(k * mult) * w + np.float32(rng.uniform(0, 2 * np.pi)))
    return out


def _tone(g: _Grid, hz: int, rng: np.random.Generator) -> np.ndarray:
    """A fixed integer-frequency sine (mains hum), exact via integer phase arithmetic."""
    cycles = (np.arange(g.n, dtype=np.int64) * hz % g.sr).astype(np.float32) / np.float32(g.sr)
    return np.sin(np.float32(2 * np.pi) * cycles + np.float32(rng.uniform(0, 2 * np.pi)))


def _vary(rng: np.random.Generator, amps: tuple[float, ...], db: float) -> np.ndarray:
    """Per-clip variation of a machine's fixed amplitudes by ~`db` dB."""
    return np.asarray(amps) * 10 ** (rng.normal(0.0, db, len(amps)) / 20)


def _render(g: _Grid, times: np.ndarray, amps: np.ndarray,
            response: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Impulses at `times` (s) with `amps`, each ringing with frequency `response` (of f in Hz).

    Sparse events are overlap-added as a short kernel; dense trains go through one FFT.
    """
    idx = np.round(np.asarray(times, dtype=np.float64) * g.sr).astype(np.int64)
    amps = np.asarray(amps, dtype=np.float32)
    span = _kernel_len(g.sr)
    if idx.size * span > g.n:
        ok = (idx >= 0) & (idx < g.n)
        e = np.zeros(g.n, dtype=np.float32)
        np.add.at(e, idx[ok], amps[ok])
        return np.fft.irfft(np.fft.rfft(e, g.nfft) * response(g.f), g.nfft)[: g.n]
    k = np.fft.irfft(response(_freqs(2 * span, g.sr)), 2 * span)
    kernel = np.concatenate([k[-_PRE:], k[: span - _PRE]]) * _fade(span)
    pos = idx[:, None] + (np.arange(span) - _PRE)
    keep = (pos >= 0) & (pos < g.n)
    w = amps[:, None] * kernel
    return np.bincount(pos[keep], weights=w[keep], minlength=g.n).astype(np.float32)


_PRE = 32  # kernel samples kept before each impulse (zero-phase filters ring both ways)


def _kernel_len(sr: int) -> int:
    return int(0.08 * sr)  # the slowest ringing here (Q 30 at 700 Hz) has died out by 80 ms


@lru_cache(maxsize=8)
def _fade(span: int) -> np.ndarray:
    """Half-cosine taper over the last fifth of a kernel so truncation does not click."""
    w = np.ones(span)
    tail = span // 5
    w[span - tail:] = 0.5 + 0.5 * np.cos(np.linspace(0.0, np.pi, tail))
    w.setflags(write=False)
    return w


def _gate(g: _Grid, segments: np.ndarray, ramp_s: float) -> np.ndarray:
    """0..1 envelope that is on during each [start, end) segment, with raised-cosine ramps."""
    env = np.zeros(g.n, dtype=np.float32)
    ramp = max(1, int(ramp_s * g.sr))
    for start, end in segments:
        a, b = int(round(start * g.sr)), int(round(end * g.sr))
        r = min(ramp, (b - a) // 2)  # very short segments get shorter ramps
        if r < 1:
            continue
        up = (0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, r))).astype(np.float32)
        shape = np.concatenate([up, np.ones(b - a - 2 * r, np.float32), up[::-1]])
        lo, hi = max(a, 0), min(b, g.n)
        if hi > lo:
            np.maximum(env[lo:hi], shape[lo - a: hi - a], out=env[lo:hi])
    return env


def _schedule(rng: np.random.Generator, g: _Grid, period: float, dur: float,
              faulty: bool) -> np.ndarray:
    """[start, end] rows of regular actuations; `faulty` drops, doubles and shifts some of them."""
    t0 = rng.uniform(-period, 0.0)
    k = int(np.ceil((g.duration - t0) / period)) + 1
    starts = t0 + np.arange(k) * period + rng.normal(0.0, 0.004 * period, k)
    ends = starts + dur * (1.0 + rng.normal(0.0, 0.01, k))
    rows = np.stack([starts, ends], axis=1)
    if faulty:
        # 0 fine, 1 missing, 2 doubled, 3 shifted; at least two faults among in-clip events.
        kind = rng.choice(4, size=k, p=[0.4, 0.2, 0.2, 0.2])
        inside = np.flatnonzero((starts >= 0) & (starts < g.duration))
        if inside.size and np.count_nonzero(kind[inside]) < min(2, inside.size):
            pick = rng.choice(inside, size=min(2, inside.size), replace=False)
            kind[pick] = rng.integers(1, 4, size=pick.size)
        missing = inside[kind[inside] == 1]
        kind[missing[inside.size // 2:]] = 2  # never silence the machine: keep half its events
        out = []
        for (s, e), kd in zip(rows, kind):
            if kd == 1:
                continue
            if kd == 3:
                shift = rng.choice([-1.0, 1.0]) * rng.uniform(0.15, 0.35) * period
                if 0.0 <= s < g.duration and not 0.0 <= s + shift < g.duration:
                    shift = -shift  # an in-clip event stays in the clip
                s, e = s + shift, e + shift
            out.append((s, e))
            if kd == 2:
                s2 = e + rng.uniform(0.05, 0.2) * period
                out.append((s2, s2 + dur * rng.uniform(0.3, 0.8)))
        rows = np.array(out, dtype=float).reshape(-1, 2)
    keep = (rows[:, 1] > 0) & (rows[:, 0] < g.duration)
    return rows[keep]


# --------------------------------------------------------------------------- machine bodies


def _running_shaft(rng: np.random.Generator, g: _Grid, p: MachineProfile, clog: bool,
                   slowdown: tuple[float, float], jitter: float, rate_hz: float) -> tuple[float, np.ndarray]:
    """This clip's shaft rate (a clog slows it by `slowdown` and makes it unsteady) and its phase."""
    f0 = p.shaft_hz * (1.0 + rng.normal(0.0, 0.008))
    if clog:
        f0 *= 1.0 - rng.uniform(*slowdown)
    return f0, _shaft_phase(rng, g, f0, 0.012 if clog else jitter, rate_hz)


def _pump(rng: np.random.Generator, g: _Grid, p: MachineProfile, anomaly: str | None) -> _Body:
    """Motor harmonics of the shaft rate, impeller vane pass, mains hum and flow noise."""
    clog = anomaly == "clogging"
    # Restricted flow: the shaft slows and surges.
    f0, phase = _running_shaft(rng, g, p, clog, slowdown=(0.06, 0.12), jitter=0.004, rate_hz=0.5)
    tonal = _unit(_harmonics(rng, phase, _vary(rng, p.harmonic_amps, 1.0)))
    vanes = _unit(_harmonics(rng, phase, (1.0, 0.4), p.blades))
    hum = _tone(g, 100, rng) * np.float32(np.sqrt(2))
    f = g.f
    centre = p.noise_hz * (0.7 if clog else 1.0) * (1.0 + rng.normal(0.0, 0.03))
    flow_mag = _band(f, 60.0, _cap(g, 3 * centre), 1) * (centre / np.maximum(f, centre)) ** 0.5
    mech_mag = 0.08 * _band(f, 1000.0, _cap(g, 6000.0), 2)
    noise = _noise(rng, g, np.hypot(flow_mag, mech_mag)) * (1.0 + _slow(rng, g, 1.5, 0.08))
    noise_db = p.noise_db + rng.normal(0.0, 1.0) - (4.0 if clog else 0.0)
    sig = tonal + 10 ** (-6 / 20) * vanes + 10 ** (-14 / 20) * hum + 10 ** (noise_db / 20) * noise
    return _Body(sig, f0, f0 * p.defect_ratio, phase, None, np.empty(0))


def _fan(rng: np.random.Generator, g: _Grid, p: MachineProfile, anomaly: str | None) -> _Body:
    """Blade-pass tone over broadband aerodynamic noise, with speed jitter."""
    clog = anomaly == "clogging"
    # Blocked intake: lower speed and air flow.
    f0, phase = _running_shaft(rng, g, p, clog, slowdown=(0.05, 0.1), jitter=0.005, rate_hz=0.8)
    bpf = _unit(_harmonics(rng, phase, _vary(rng, p.harmonic_amps, 1.0), p.blades))
    bpf *= 1.0 + _slow(rng, g, 2.0, 0.12)  # turbulence modulates the tone
    shaft = _unit(_harmonics(rng, phase, (1.0, 0.5)))
    fp = p.noise_hz * (0.8 if clog else 1.0) * (1.0 + rng.normal(0.0, 0.03))
    f = g.f
    aero_mag = (f / fp) / (1.0 + (f / fp) ** 2) ** 0.9 * _band(f, 30.0, _cap(g, 7500.0), 2)
    aero = _noise(rng, g, aero_mag)
    noise_db = p.noise_db + rng.normal(0.0, 1.0) - (3.0 if clog else 0.0)
    sig = bpf + 10 ** (-16 / 20) * shaft + 10 ** (noise_db / 20) * aero
    return _Body(sig, f0, f0 * p.defect_ratio, phase, None, np.empty(0))


def _slider(rng: np.random.Generator, g: _Grid, p: MachineProfile, anomaly: str | None) -> _Body:
    """Periodic travel (motor whine + friction) with clunks where travel starts and stops."""
    period = p.period_s * (1.0 + rng.normal(0.0, 0.004))
    rows = _schedule(rng, g, period, p.duty * period, anomaly == "timing_fault")
    env = _gate(g, rows, 0.04)
    f0 = p.shaft_hz * (1.0 + rng.normal(0.0, 0.006))
    phase = _shaft_phase(rng, g, f0, 0.004, 1.0)
    whine = _unit(_harmonics(rng, phase, _vary(rng, p.harmonic_amps, 1.0)))
    f = g.f
    fc = p.noise_hz * (1.0 + rng.normal(0.0, 0.03))
    friction = _noise(rng, g, _band(f, 0.3 * fc, _cap(g, 3 * fc), 1))
    noise_db = p.noise_db + rng.normal(0.0, 1.0)
    travel = (whine + 10 ** (noise_db / 20) * friction) * env
    m = p.modes_hz
    m2 = _cap(g, m[2])

    def response(f: np.ndarray) -> np.ndarray:
        return _reso(f, m[0], 6.0) + 0.5 * _reso(f, m[1], 15.0) + 0.25 * _reso(f, m2, 25.0)

    times = np.concatenate([rows[:, 0], rows[:, 1]])
    amps = np.concatenate([np.full(len(rows), 0.6), np.ones(len(rows))])
    amps = amps * rng.lognormal(0.0, 0.15, times.size)
    clunks = _render(g, times, amps, response)
    peak = float(np.max(np.abs(clunks))) if clunks.size else 0.0
    if not rows.size:
        sig = clunks
    else:  # clunks peak ~12 dB above the travel noise, as on a real rail
        sig = _unit(travel) + clunks * np.float32(10 ** (12 / 20) / max(peak, 1e-12))
    return _Body(sig, f0, f0 * p.defect_ratio, None, env, np.sort(times))


def _valve(rng: np.random.Generator, g: _Grid, p: MachineProfile, anomaly: str | None) -> _Body:
    """Short open/close clicks at regular intervals and faint flow while open, over quiet."""
    period = p.period_s * (1.0 + rng.normal(0.0, 0.004))
    rows = _schedule(rng, g, period, p.duty * period, anomaly == "timing_fault")
    f = g.f
    m1, m2, thump = (v * (1.0 + rng.normal(0.0, 0.01)) for v in p.modes_hz)
    m1, m2 = _cap(g, m1), _cap(g, m2)

    def h_open(f: np.ndarray) -> np.ndarray:  # bright snap of the armature
        return _reso(f, m1, 40.0) + 0.6 * _reso(f, m2, 60.0) + 0.3 * _reso(f, thump, 4.0) + 0.005

    def h_close(f: np.ndarray) -> np.ndarray:  # duller, with more body thump
        return (0.7 * _reso(f, 1.05 * m1, 40.0) + 0.4 * _reso(f, m2, 60.0)
                + 0.8 * _reso(f, thump, 4.0) + 0.005)

    k = len(rows)
    clicks = _unit(_render(g, rows[:, 0], rng.lognormal(0.0, 0.1, k), h_open)
                   + _render(g, rows[:, 1], 0.8 * rng.lognormal(0.0, 0.1, k), h_close))
    fc = p.noise_hz * (1.0 + rng.normal(0.0, 0.03))
    flow = _noise(rng, g, _band(f, 0.4 * fc, _cap(g, 2 * fc), 2)) * _gate(g, rows, 0.01)
    sig = clicks + 10 ** ((p.noise_db + rng.normal(0.0, 1.0)) / 20) * flow
    return _Body(sig, 0.0, 0.0, None, None, np.sort(rows.ravel()))


_BODIES = {"pump": _pump, "fan": _fan, "slider": _slider, "valve": _valve}


# --------------------------------------------------------------------------- anomaly mechanisms


def _bearing_fault(rng: np.random.Generator, g: _Grid, p: MachineProfile, body: _Body,
                   ) -> np.ndarray:
    """Impulse train at the bearing defect rate ringing a 2-6 kHz resonance."""
    rate = body.defect_hz * (1.0 + rng.normal(0.0, 0.01))
    k = int(g.duration * rate * 1.1) + 2
    gaps = (1.0 + rng.normal(0.0, 0.015, k)) / rate  # rolling elements slip a little
    times = rng.uniform(0.0, 1.0 / rate) + np.cumsum(gaps) - gaps[0]
    times = times[times < g.duration]
    idx = np.minimum((times * g.sr).astype(np.int64), g.n - 1)
    amps = rng.lognormal(0.0, 0.25, times.size)
    if body.phase is not None:  # load zone: impacts swell once per revolution
        amps *= 0.65 + 0.35 * np.sin(body.phase[idx] + rng.uniform(0, 2 * np.pi))
    if body.activity is not None:
        amps *= body.activity[idx]
    fc = _cap(g, p.bearing_hz * (1.0 + rng.normal(0.0, 0.02)))
    q1, q2 = rng.uniform(10, 25, 2)
    fc2 = _cap(g, fc * rng.uniform(1.3, 1.6))
    return _render(g, times, amps, lambda f: _reso(f, fc, q1) + 0.5 * _reso(f, fc2, q2))


def _imbalance(rng: np.random.Generator, body: _Body) -> tuple[np.ndarray, np.ndarray]:
    """Strong 1x shaft component, and the whole sound amplitude-modulated once per revolution."""
    assert body.phase is not None
    depth = rng.uniform(0.25, 0.45)
    modulated = body.signal * (1.0 + depth * _harmonics(rng, body.phase, (1.0,)))
    return modulated, _harmonics(rng, body.phase, (1.0,))


def _cavitation(rng: np.random.Generator, g: _Grid, p: MachineProfile, body: _Body,
                ) -> np.ndarray:
    """Bursts of broadband crackle (collapsing vapour bubbles) over a faint steady crackle."""
    n_bursts = rng.poisson(g.duration * rng.uniform(1.5, 4.0)) + 1
    parts_t = [rng.uniform(0.0, g.duration, rng.poisson(g.duration * 40) + 1)]
    parts_a = [0.3 * rng.lognormal(0.0, 0.5, parts_t[0].size)]
    for _ in range(n_bursts):
        start = rng.uniform(0.0, g.duration)
        length = rng.uniform(0.03, 0.25)
        t = start + rng.uniform(0.0, length, rng.poisson(length * rng.uniform(300, 1500)) + 1)
        parts_t.append(t)
        parts_a.append(rng.lognormal(0.0, 0.5, t.size))
    hi = _cap(g, 7500.0)
    return _render(g, np.concatenate(parts_t), np.concatenate(parts_a),
                   lambda f: _band(f, 1500.0, hi, 2))


def _clogging(rng: np.random.Generator, g: _Grid, p: MachineProfile, body: _Body) -> np.ndarray:
    """Low-frequency turbulent noise that surges (the slowdown itself is in the body)."""
    mag = _band(g.f, 20.0, 400.0, 2)
    return _noise(rng, g, mag) * np.maximum(0.0, 1.0 + _slow(rng, g, 3.0, 0.5))


def _leak(rng: np.random.Generator, g: _Grid, p: MachineProfile, body: _Body) -> np.ndarray:
    """Steady 3-7 kHz hiss of gas or liquid escaping."""
    hi = _cap(g, 7000.0)
    return _noise(rng, g, _band(g.f, min(3000.0, 0.6 * hi), hi, 4)) * (1.0 + _slow(rng, g, 1.0, 0.03))


def _rattle(rng: np.random.Generator, g: _Grid, p: MachineProfile, body: _Body) -> np.ndarray:
    """Impacts of a loose part: per revolution, during travel, or bouncing after each click."""
    if body.phase is not None:
        first = body.phase[0]
        offset = rng.uniform(0, 2 * np.pi)
        laps = np.arange(np.ceil((first - offset) / (2 * np.pi)),
                         np.floor((body.phase[-1] - offset) / (2 * np.pi)) + 1)
        idx = np.searchsorted(body.phase, offset + 2 * np.pi * laps)
        times = idx / g.sr
        times = times[rng.random(times.size) < rng.uniform(0.35, 0.65)]
        times = times + rng.normal(0.0, 0.03 / max(body.shaft_hz, 1.0), times.size)
    elif body.activity is not None:
        times = rng.uniform(0.0, g.duration, rng.poisson(g.duration * rng.uniform(10, 20)) + 1)
        idx = np.minimum((times * g.sr).astype(np.int64), g.n - 1)
        times = times[rng.random(times.size) < body.activity[idx]]
    else:
        bounces = []
        for ev in body.events:
            gap, t = rng.uniform(0.015, 0.04), ev
            for _ in range(int(rng.integers(2, 5))):
                t += gap
                gap *= 0.7
                bounces.append(t)
        times = np.array(bounces)
    amps = rng.lognormal(0.0, 0.4, times.size)
    m = rng.uniform(700, 1500)
    m2 = _cap(g, m * rng.uniform(1.6, 2.3))
    q1, q2 = rng.uniform(15, 30, 2)
    hi = _cap(g, 6000.0)

    def response(f: np.ndarray) -> np.ndarray:  # a tinny two-mode part plus a little click
        return _reso(f, m, q1) + 0.6 * _reso(f, m2, q2) + 0.01 * _band(f, 500.0, hi, 1)

    return _render(g, times, amps, response)


_ADDITIVE = {
    "bearing_fault": _bearing_fault,
    "cavitation": _cavitation,
    "clogging": _clogging,
    "leak": _leak,
    "rattle": _rattle,
}


# --------------------------------------------------------------------------- surroundings


def _factory(rng: np.random.Generator, g: _Grid) -> np.ndarray:
    """Unit-RMS background: pinkish distant machinery that swells slowly, plus faint mains hum."""
    f = g.f
    pink = _noise(rng, g, _band(f, 25.0, _cap(g, 7000.0), 1) / np.sqrt(np.maximum(f, 25.0) / 100.0))
    pink *= np.maximum(0.0, 1.0 + _slow(rng, g, 0.5, 0.25))
    hum = _tone(g, 50, rng) + 0.5 * _tone(g, 150, rng)
    return _unit(pink + 0.3 * _unit(hum))


def _spread_channels(rng: np.random.Generator, x: np.ndarray, channels: int) -> np.ndarray:
    """A microphone array's view: small per-channel delays and gains plus sensor noise."""
    n = x.size
    out = np.empty((n, channels), dtype=np.float64)
    for c in range(channels):
        d = int(rng.integers(0, 4))
        shifted = np.concatenate([np.zeros(d), x[: n - d]]) if d else x
        out[:, c] = shifted * 10 ** (rng.uniform(-0.5, 0.5) / 20) + rng.normal(0.0, 3e-4, n)
    return np.clip(out, -1.0, 1.0).astype(np.float32)
