"""Why: "nothing lost" - every odd or hostile input must end as an Audio or a typed AudioError, fast and small.

A generated corpus of >= 500 bad/odd files, each with the set of outcomes allowed for it (the exact code
where it is determined), plus hypothesis fuzzing of arbitrary and mutated WAV bytes.
"""

from __future__ import annotations

import struct
import time
import tracemalloc
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signalcraft_core.errors import AudioError, ErrorCode
from signalcraft_core.io.audio import (
    DEFAULT_AUDIO_CONFIG,
    Audio,
    AudioConfig,
    decode_wav,
    encode_wav,
)

OK = "ok"  # outcome: an Audio came back
E = ErrorCode
RECORDING_CODES = frozenset(
    {
        E.NOT_WAV, E.BAD_HEADER, E.TRUNCATED, E.UNSUPPORTED_FORMAT, E.UNSUPPORTED_RATE, E.EMPTY,
        E.TOO_SHORT, E.TOO_LONG, E.TOO_LARGE, E.NON_FINITE, E.OUT_OF_RANGE, E.SILENT,
    }
)
ANY = frozenset(RECORDING_CODES | {OK})
GUID_TAIL = b"\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
MAX_CASE_BYTES = 300 * 2**20  # "a few hundred MB" at most for any case
MAX_CASE_SECONDS = 3.0


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    expected: frozenset  # of ErrorCode and/or OK
    config: AudioConfig = DEFAULT_AUDIO_CONFIG


def _exp(*outcomes: object) -> frozenset:
    return frozenset(outcomes)


def _chunk(ckid: bytes, body: bytes, size: int | None = None, pad: bool = True) -> bytes:
    tail = b"\x00" if pad and len(body) % 2 else b""
    return ckid + struct.pack("<I", len(body) if size is None else size) + body + tail


def _riff(*chunks: bytes, riff_size: int | None = None) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body) if riff_size is None else riff_size) + body


def _fmt_body(
    tag: int = 1, channels: int = 1, rate: int = 8000, bits: int = 16, block_align: int | None = None
) -> bytes:
    ba = channels * bits // 8 if block_align is None else block_align
    return struct.pack("<HHIIHH", tag, channels, rate, (rate * ba) & 0xFFFFFFFF, ba & 0xFFFF, bits)


def _ext_body(subformat: int | bytes, channels: int = 1, bits: int = 16, valid: int = 16, cb: int = 22) -> bytes:
    guid = subformat if isinstance(subformat, bytes) else struct.pack("<I", subformat) + GUID_TAIL
    ba = channels * bits // 8
    return struct.pack("<HHIIHHHHI", 0xFFFE, channels, 8000, 8000 * ba, ba, bits, cb, valid, 0) + guid


def _wav(fmt_body: bytes, data: bytes | None = None) -> bytes:
    """A file with this fmt body and the 1.2 s tone (or `data`) as samples."""
    return _riff(_chunk(b"fmt ", fmt_body), _chunk(b"data", PCM if data is None else data))


def _lying_fmt(size: int) -> bytes:
    """A valid 16-bit fmt body whose chunk header declares `size` bytes."""
    return _riff(_chunk(b"fmt ", _fmt_body(), size=size), _chunk(b"data", PCM))


def _tone(rate: int = 8000, seconds: float = 1.2, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(rate * seconds))) / rate
    return amp * np.sin(2 * np.pi * freq * t)


PCM = np.rint(_tone() * 32767).astype("<i2").tobytes()  # 1.2 s, 8 kHz, mono 16-bit
BASES = {
    "mono16": encode_wav(_tone(), 8000, "pcm16"),
    "ext24x3": encode_wav(np.stack([_tone(), -_tone(), _tone(freq=300)], 1), 8000, "pcm24", extensible=True),
    "list8": _riff(_chunk(b"LIST", b"INFOISFT" + b"x" * 13), _chunk(b"fmt ", _fmt_body(bits=8)),
                   _chunk(b"data", encode_wav(_tone(), 8000, "pcm8")[44:])),
    "float32x2": encode_wav(np.stack([_tone(), _tone(freq=900)], 1), 8000, "float32"),
}


def _header_len(data: bytes) -> int:
    return data.index(b"data") + 8


def build_corpus() -> list[Case]:
    cases: list[Case] = []
    add = cases.append
    rng = np.random.default_rng(20240601)

    # --- empty, truncation at many cut points ---------------------------------------------------
    add(Case("zero bytes", b"", _exp(E.EMPTY)))
    for base_name, base in BASES.items():
        add(Case(f"{base_name} intact", base, _exp(OK)))
        cuts = set(range(1, _header_len(base) + 1))
        cuts |= {int(c) for c in np.linspace(_header_len(base) + 1, len(base) - 1, 30)}
        for cut in sorted(cuts):
            add(Case(f"{base_name} cut at {cut}", base[:cut], _exp(E.TRUNCATED)))

    # --- chunk sizes that lie -------------------------------------------------------------------
    fmt = _chunk(b"fmt ", _fmt_body())
    for size in (len(PCM) + 1, len(PCM) + 2, len(PCM) + 1000, 2**31, 2**32 - 2):
        add(Case(f"data size {size} > file", _riff(fmt, _chunk(b"data", PCM, size=size)), _exp(E.TRUNCATED)))
    for size in (0, 0xFFFFFFFF):
        add(Case(f"placeholder data size {size:#x}", _riff(fmt, _chunk(b"data", PCM, size=size)), _exp(OK)))
    for size in (len(PCM) - 1, len(PCM) - 3, 16001):
        add(Case(f"odd data size {size}", _riff(fmt, _chunk(b"data", PCM, size=size)), _exp(OK)))
    add(Case("data size 1", _riff(fmt, _chunk(b"data", PCM, size=1)), _exp(E.EMPTY, E.BAD_HEADER)))
    for riff_size in (0, 4, 36, 2**31, 0xFFFFFFFF):
        add(Case(f"riff size {riff_size}", _riff(fmt, _chunk(b"data", PCM), riff_size=riff_size), _exp(OK)))
    for size in (0, 8, 14, 15):
        add(Case(f"fmt size {size}", _lying_fmt(size),
                 _exp(E.BAD_HEADER)))
    for size in (17, 18, 40):
        add(Case(f"fmt size {size} (reads into data)", _lying_fmt(size),
                 _exp(E.BAD_HEADER, E.TRUNCATED, E.UNSUPPORTED_FORMAT)))
    for size in (2**20, 2**31, 0xFFFFFFFF):
        add(Case(f"fmt size {size}", _lying_fmt(size),
                 _exp(E.TRUNCATED)))
    for size in (1, 3, 7, 101):
        add(Case(f"odd LIST {size} padded", _riff(_chunk(b"LIST", b"i" * size), fmt, _chunk(b"data", PCM)), _exp(OK)))
        add(Case(f"odd LIST {size} unpadded", _riff(_chunk(b"LIST", b"i" * size, pad=False), fmt, _chunk(b"data", PCM)),
                 _exp(OK)))
    for size in (2**16, 2**31, 0xFFFFFFFF):
        add(Case(f"LIST size {size} before fmt", _riff(_chunk(b"LIST", b"INFO", size=size), fmt, _chunk(b"data", PCM)),
                 _exp(E.TRUNCATED)))
    for delta in (-3, -2, 2, 6):
        lying = _chunk(b"LIST", b"INFOabcd", size=8 + delta)
        add(Case(f"LIST size off by {delta}", _riff(fmt, lying, _chunk(b"data", PCM)),
                 _exp(E.BAD_HEADER, E.TRUNCATED)))
    add(Case("junk and fact chunks", _riff(_chunk(b"JUNK", bytes(28)), fmt, _chunk(b"fact", b"\x00\x25\x00\x00"),
                                           _chunk(b"data", PCM)), _exp(OK)))
    add(Case("data before fmt", _riff(_chunk(b"data", PCM), fmt), _exp(OK)))
    add(Case("trailing garbage", _riff(fmt, _chunk(b"data", PCM)) + rng.bytes(77), _exp(OK)))
    for k in range(1, 8):
        add(Case(f"{k} trailing bytes", _riff(fmt, _chunk(b"data", PCM)) + b"\x00" * k, _exp(OK)))
    add(Case("non-ascii chunk id", _riff(b"\x00\xff\x10\x01" + bytes(4), fmt, _chunk(b"data", PCM)),
             _exp(E.BAD_HEADER)))

    # --- missing fmt or data ----------------------------------------------------------------------
    add(Case("no fmt", _riff(_chunk(b"data", PCM)), _exp(E.BAD_HEADER)))
    add(Case("no fmt, LIST only", _riff(_chunk(b"LIST", b"INFO")), _exp(E.BAD_HEADER)))
    add(Case("no data", _riff(fmt), _exp(E.BAD_HEADER)))
    add(Case("no data, LIST", _riff(fmt, _chunk(b"LIST", b"INFO")), _exp(E.BAD_HEADER)))
    add(Case("no chunks", _riff(), _exp(E.BAD_HEADER)))
    add(Case("no data, riff says more", _riff(fmt, riff_size=4000), _exp(E.TRUNCATED)))
    add(Case("empty data then LIST", _riff(fmt, _chunk(b"data", b""), _chunk(b"LIST", b"INFO")), _exp(E.EMPTY)))
    add(Case("empty data at end", _riff(fmt, _chunk(b"data", b"")), _exp(E.EMPTY)))

    # --- not WAV at all ---------------------------------------------------------------------------
    texts = [b"hello world\n", b"<html><body>404</body></html>", b'{"error": "nope"}', b"RIFF is a format\n" * 3,
             "Größe: 12 µs\n".encode(), b"id,value\n1,2\n" * 50, b"#!/bin/sh\necho hi\n", b" " * 64]
    for i, text in enumerate(texts):
        expected = _exp(E.NOT_WAV, E.TRUNCATED) if text.startswith(b"RIFF") else _exp(E.NOT_WAV)
        add(Case(f"text {i}", text, expected))
    magics = {
        "jpeg": b"\xff\xd8\xff\xe0\x00\x10JFIF", "png": b"\x89PNG\r\n\x1a\n", "mp3-id3": b"ID3\x04\x00",
        "mp3-frame": b"\xff\xfb\x90\x64", "flac": b"fLaC\x00\x00\x00\x22", "ogg": b"OggS\x00\x02",
        "gif": b"GIF89a", "zip": b"PK\x03\x04", "aiff": b"FORM\x00\x00\x10\x00AIFF", "mp4": b"\x00\x00\x00\x20ftypM4A ",
        "pdf": b"%PDF-1.7", "gzip": b"\x1f\x8b\x08",
    }
    for kind, magic in magics.items():
        for length in (0, 1, 100, 5000):
            add(Case(f"{kind} + {length} random", magic + rng.bytes(length), _exp(E.NOT_WAV)))
    for i in range(20):
        junk = b"\x00" + rng.bytes(int(rng.integers(0, 3000)))  # a leading NUL: never RIFF/RF64/RIFX
        add(Case(f"random bytes {i}", junk, _exp(E.NOT_WAV)))
    for form in (b"AVI ", b"RMID", b"WEBP", b"wave", b"CDDA"):
        add(Case(f"RIFF {form!r}", b"RIFF" + struct.pack("<I", 100) + form + bytes(100), _exp(E.NOT_WAV)))
    for magic in (b"RF64", b"BW64", b"RIFX"):
        add(Case(f"{magic!r}", magic + b"\xff\xff\xff\xffWAVE" + bytes(60), _exp(E.UNSUPPORTED_FORMAT)))
    add(Case("RIFF wav-header-only prefix", b"RIFF\x00\x00\x00\x00WAV", _exp(E.TRUNCATED)))

    # --- channels -----------------------------------------------------------------------------------
    add(Case("0 channels", _wav(_fmt_body(channels=0, block_align=2)),
             _exp(E.BAD_HEADER)))
    for ch in (65, 100, 1000, 65535):
        add(Case(f"{ch} channels", _wav(_fmt_body(channels=ch)),
                 _exp(E.BAD_HEADER)))
    for ch in (3, 5, 64):
        data = encode_wav(np.repeat(_tone()[:, None], ch, axis=1), 8000, "pcm16")
        add(Case(f"{ch} channels ok", data, _exp(OK)))
    add(Case("channel 7 of 2", BASES["float32x2"], _exp(E.BAD_HEADER), AudioConfig(channel=7)))
    add(Case("channel 1 of 2", BASES["float32x2"], _exp(OK), AudioConfig(channel=1)))
    for ba in (0, 1, 3, 4, 65535):
        add(Case(f"block align {ba}", _wav(_fmt_body(block_align=ba)),
                 _exp(E.BAD_HEADER)))

    # --- bit depths and codecs -------------------------------------------------------------------------
    for bits in (0, 1, 4, 12, 20, 40, 48, 64):
        add(Case(f"{bits}-bit PCM", _riff(_chunk(b"fmt ", _fmt_body(bits=bits, block_align=max(bits // 8, 1))),
                                            _chunk(b"data", PCM)), _exp(E.UNSUPPORTED_FORMAT)))
    for bits in (8, 16, 24, 128):
        add(Case(f"{bits}-bit float", _wav(_fmt_body(tag=3, bits=bits)),
                 _exp(E.UNSUPPORTED_FORMAT)))
    for tag in (0x0000, 0x0002, 0x0006, 0x0007, 0x0011, 0x0031, 0x0050, 0x0055, 0x00FF, 0x0161, 0x2000, 0xF1AC, 0x1234):
        add(Case(f"codec 0x{tag:04x}", _riff(_chunk(b"fmt ", _fmt_body(tag=tag, bits=4, block_align=512)),
                                              _chunk(b"data", PCM)), _exp(E.UNSUPPORTED_FORMAT)))
    for sub in (2, 6, 7, 0x55, 0x161):
        add(Case(f"extensible subformat {sub:#x}", _wav(_ext_body(sub)),
                 _exp(E.UNSUPPORTED_FORMAT)))
    add(Case("extensible odd GUID", _wav(_ext_body(rng.bytes(16))),
             _exp(E.UNSUPPORTED_FORMAT)))
    add(Case("extensible 12 of 16 bits", _wav(_ext_body(1, valid=12)), _exp(OK)))
    add(Case("extensible 0 valid bits", _wav(_ext_body(1, valid=0)), _exp(OK)))
    add(Case("extensible 17 of 16 bits", _wav(_ext_body(1, valid=17)),
             _exp(E.BAD_HEADER)))
    add(Case("extensible cbSize 0", _wav(_ext_body(1, cb=0)), _exp(E.BAD_HEADER)))
    add(Case("extensible fmt 18 bytes", _wav(_ext_body(1)[:18]),
             _exp(E.BAD_HEADER)))
    add(Case("extensible float 64", encode_wav(_tone(), 8000, "float64", extensible=True), _exp(OK)))
    add(Case("extensible pcm8", encode_wav(_tone(), 8000, "pcm8", extensible=True), _exp(OK)))

    # --- non-finite, silence, DC, clipping -------------------------------------------------------------
    for fmt_name in ("float32", "float64"):
        for bad in (np.nan, np.inf, -np.inf):
            for where in (0, 4000, -1):
                x = _tone()
                x[where] = bad
                add(Case(f"{fmt_name} {bad} at {where}", encode_wav(x, 8000, fmt_name), _exp(E.NON_FINITE)))
        x2 = np.stack([_tone(), _tone()], 1)
        x2[100, 1] = np.nan
        add(Case(f"{fmt_name} NaN in one channel", encode_wav(x2, 8000, fmt_name, extensible=True), _exp(E.NON_FINITE)))
        add(Case(f"{fmt_name} over full scale", encode_wav(_tone() * 4, 8000, fmt_name), _exp(OK)))
    # finite but beyond float32: judged on the float64 samples (out of range), not on their float32 cast (inf)
    add(Case("float64 beyond float32 range", encode_wav(np.r_[_tone(), 1e300], 8000, "float64"), _exp(E.OUT_OF_RANGE)))
    for fmt_name in ("float32", "float64"):
        for magnitude in (1e20, -1e25, 1e30, 1e4):
            for ch in (1, 3):
                x = np.repeat(_tone()[:, None], ch, axis=1)
                x[4321, ch - 1] = magnitude
                add(Case(f"{fmt_name} x{ch} sample {magnitude:g}", encode_wav(x, 8000, fmt_name, extensible=ch > 1),
                         _exp(E.OUT_OF_RANGE)))
        add(Case(f"{fmt_name} 1000x full scale", encode_wav(_tone(amp=1000.0), 8000, fmt_name), _exp(OK)))
    for fmt_name in ("pcm8", "pcm16", "pcm24", "pcm32", "float32", "float64"):
        for ch in (1, 2):
            add(Case(f"silence {fmt_name} x{ch}", encode_wav(np.zeros((9600, ch)), 8000, fmt_name), _exp(E.SILENT)))
        add(Case(f"DC offset {fmt_name}", encode_wav(np.full(9600, 0.3), 8000, fmt_name), _exp(OK)))
        add(Case(f"clipped {fmt_name}", encode_wav(np.clip(_tone(amp=3.0), -1, 1), 8000, fmt_name), _exp(OK)))
        add(Case(f"square {fmt_name}", encode_wav(np.sign(_tone()) , 8000, fmt_name), _exp(OK)))
    add(Case("float32 1e-7 noise is silent", encode_wav(_tone(amp=1e-7), 8000, "float32"), _exp(E.SILENT)))
    one_lsb = np.zeros(9600)
    one_lsb[5] = 2.0**-15
    add(Case("16-bit single LSB is not silent", encode_wav(one_lsb, 8000, "pcm16"), _exp(OK)))

    # --- rates and durations --------------------------------------------------------------------------
    for rate in (4000, 8000, 11025, 16000, 22050, 32000, 44100, 48000, 88200, 96000, 192000):
        for fmt_name in ("pcm16", "pcm24", "float32"):
            add(Case(f"{rate} Hz {fmt_name}", encode_wav(_tone(rate, 1.1), rate, fmt_name), _exp(OK)))
    for rate in (1, 3999, 384001, 10**6, 0xFFFFFFFF):
        add(Case(f"{rate} Hz", _wav(_fmt_body(rate=rate)),
                 _exp(E.UNSUPPORTED_RATE)))
    add(Case("0 Hz", _wav(_fmt_body(rate=0)), _exp(E.BAD_HEADER)))
    for seconds in (0.001, 0.5, 0.999):
        add(Case(f"{seconds} s", encode_wav(_tone(seconds=seconds), 8000), _exp(E.TOO_SHORT)))
    add(Case("exactly 1 s", encode_wav(_tone(seconds=1.0), 8000), _exp(OK)))
    add(Case("3 s over a 2 s limit", encode_wav(_tone(seconds=3.0), 8000), _exp(E.TOO_LONG),
             AudioConfig(max_seconds=2)))
    add(Case("file over max_bytes", BASES["mono16"], _exp(E.TOO_LARGE), AudioConfig(max_bytes=1024)))
    add(Case("garbage over max_bytes", rng.bytes(2048), _exp(E.TOO_LARGE), AudioConfig(max_bytes=1024)))
    add(Case("header claims 2**31 frames", _riff(fmt, _chunk(b"data", PCM[:100], size=2**32 - 2)), _exp(E.TRUNCATED)))
    add(Case("placeholder, 11 min at 4 kHz 8-bit", _riff(_chunk(b"fmt ", _fmt_body(rate=4000, bits=8)),
                                                        _chunk(b"data", bytes(4000 * 660), size=0xFFFFFFFF)),
             _exp(E.TOO_LONG)))

    # --- deterministic mutations of valid files: anything typed is allowed -------------------------------
    for i in range(80):
        base = list(BASES.values())[i % len(BASES)]
        buf = bytearray(base)
        for _ in range(1 + i % 4):
            pos = int(rng.integers(0, min(len(buf), 80)))
            buf[pos] ^= 1 << int(rng.integers(0, 8))
        add(Case(f"header bit flips {i}", bytes(buf), ANY))
    return cases


CORPUS = build_corpus()


def _outcome(case: Case) -> object:
    try:
        result = decode_wav(case.data, case.config)
    except AudioError as exc:
        assert exc.message and "\n" not in exc.message, f"{case.name}: message {exc.message!r}"
        assert "unexpected decoder error" not in exc.message, f"{case.name}: fell through to {exc.message!r}"
        return exc.code
    assert isinstance(result, Audio)
    y = result.samples
    assert y.dtype == np.float32 and y.ndim == 1 and len(y) > 0, case.name
    assert np.isfinite(y).all(), case.name
    assert result.sample_rate == case.config.target_rate
    assert abs(len(y) - result.duration_s * case.config.target_rate) <= 1, case.name
    return OK


def test_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 500
    assert len({c.name for c in CORPUS}) == len(CORPUS), "case names must be unique"
    determined = [c for c in CORPUS if len(c.expected) == 1]
    assert len(determined) >= 400  # most cases assert one specific outcome


def test_corpus_outcomes_time_and_memory() -> None:
    """Each case: an allowed outcome, within a time and memory budget (numpy allocations are traced)."""
    failures: list[str] = []
    seen: dict[object, int] = {}
    decode_wav(BASES["mono16"])  # import scipy.signal outside the timed, traced loop
    tracemalloc.start()
    try:
        for case in CORPUS:
            tracemalloc.reset_peak()
            start = time.perf_counter()
            try:
                outcome = _outcome(case)
            except Exception as exc:  # anything but AudioError is a failure of the contract
                failures.append(f"{case.name}: raised {type(exc).__name__}: {exc}")
                continue
            elapsed = time.perf_counter() - start
            peak = tracemalloc.get_traced_memory()[1]
            seen[outcome] = seen.get(outcome, 0) + 1
            if outcome not in case.expected:
                failures.append(f"{case.name}: got {outcome}, expected one of {sorted(map(str, case.expected))}")
            if elapsed > MAX_CASE_SECONDS:
                failures.append(f"{case.name}: took {elapsed:.2f} s")
            if peak > MAX_CASE_BYTES:
                failures.append(f"{case.name}: peak memory {peak / 2**20:.0f} MiB")
    finally:
        tracemalloc.stop()
    assert not failures, f"{len(failures)} of {len(CORPUS)} cases failed:\n" + "\n".join(failures[:50])
    assert seen.keys() >= RECORDING_CODES | {OK}, "every outcome must occur somewhere in the corpus"


def test_lying_header_fails_fast_without_allocation() -> None:
    data = _riff(_chunk(b"fmt ", _fmt_body(channels=64, rate=384000, bits=64, tag=3)),
                 _chunk(b"data", bytes(1024), size=2**32 - 8))
    tracemalloc.start()
    try:
        start = time.perf_counter()
        with pytest.raises(AudioError) as info:
            decode_wav(data)
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.code is E.TRUNCATED
    assert elapsed < 0.1 and peak < 1 * 2**20


# ------------------------------------------------------------------------------------------------ fuzzing

FUZZ = settings(max_examples=300, deadline=2000, database=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ_BASES = [
    encode_wav(_tone(seconds=1.05), 8000, "pcm16"),
    encode_wav(np.stack([_tone(seconds=1.05)] * 2, 1), 8000, "pcm24", extensible=True),
    encode_wav(_tone(seconds=1.05), 8000, "float32"),
    encode_wav(_tone(seconds=1.05), 8000, "pcm8", extensible=True),
    _riff(_chunk(b"LIST", b"INFOabc"), _chunk(b"fmt ", _fmt_body()), _chunk(b"data", PCM[:16800])),
]


def _check_typed(data: bytes, config: AudioConfig = DEFAULT_AUDIO_CONFIG) -> None:
    try:
        result = decode_wav(data, config)
    except AudioError as exc:
        assert exc.code in RECORDING_CODES, exc
        assert exc.message and "\n" not in exc.message
        assert "unexpected decoder error" not in exc.message, exc.message
    else:
        assert isinstance(result, Audio) and result.samples.dtype == np.float32
        assert np.isfinite(result.samples).all()


@FUZZ
@given(st.binary(max_size=4096))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    _check_typed(data)


@FUZZ
@given(st.binary(max_size=512), st.integers(0, 2**32 - 1))
def test_fuzz_bytes_behind_a_riff_header(tail: bytes, riff_size: int) -> None:
    _check_typed(b"RIFF" + struct.pack("<I", riff_size) + b"WAVE" + tail)


@st.composite
def mutated_wavs(draw: st.DrawFn) -> bytes:
    buf = bytearray(draw(st.sampled_from(FUZZ_BASES)))
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["flip", "u32", "u16", "truncate", "insert", "delete"]))
        if not buf:
            break
        pos = draw(st.integers(0, min(len(buf) - 1, 120)))  # headers are where the decisions are made
        if kind == "flip":
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind in ("u32", "u16"):
            width = 4 if kind == "u32" else 2
            value = draw(st.integers(0, 2 ** (8 * width) - 1))
            buf[pos : pos + width] = value.to_bytes(width, "little")
        elif kind == "truncate":
            del buf[draw(st.integers(0, len(buf))) :]
        elif kind == "insert":
            ckid = draw(st.sampled_from([b"LIST", b"JUNK", b"fmt ", b"data", b"\x00\x00\x00\x00", b"fact"]))
            body = draw(st.binary(max_size=40))
            size = draw(st.one_of(st.just(len(body)), st.integers(0, 2**32 - 1)))
            at = draw(st.sampled_from([12, 36, pos]))
            buf[at:at] = ckid + size.to_bytes(4, "little") + body
        else:
            del buf[pos : pos + draw(st.integers(1, 16))]
    return bytes(buf)


@FUZZ
@given(mutated_wavs(), st.sampled_from([None, 0, 1]))
def test_fuzz_mutated_wavs(data: bytes, channel: int | None) -> None:
    _check_typed(data, AudioConfig(channel=channel))


@FUZZ
@given(
    tag=st.sampled_from([1, 3, 0xFFFE, 2, 7]),
    channels=st.integers(0, 70),
    rate=st.sampled_from([0, 3999, 4000, 8000, 11025, 16000, 22050, 48000, 96000]),
    bits=st.sampled_from([0, 8, 12, 16, 24, 32, 64]),
    align_delta=st.sampled_from([0, 0, 0, 1, -1]),
    sub=st.sampled_from([1, 3, 2]),
    payload=st.binary(min_size=0, max_size=3000),
    size_mode=st.sampled_from(["exact", "short", "long", "zero", "ffff"]),
)
def test_fuzz_structured_fmt_fields(
    tag: int, channels: int, rate: int, bits: int, align_delta: int, sub: int, payload: bytes, size_mode: str
) -> None:
    """Plausible-looking headers with random fields reach the sample conversion paths too."""
    align = (channels * bits // 8 + align_delta) & 0xFFFF
    if tag == 0xFFFE:
        body = struct.pack("<HHIIHHHHI", tag, channels, rate, (rate * align) & 0xFFFFFFFF, align, bits, 22, bits, 0)
        body += struct.pack("<I", sub) + GUID_TAIL
    else:
        body = struct.pack("<HHIIHH", tag, channels, rate, (rate * align) & 0xFFFFFFFF, align, bits)
    size = {"exact": len(payload), "short": len(payload) // 2, "long": len(payload) + 7, "zero": 0, "ffff": 2**32 - 1}
    data = _riff(_chunk(b"fmt ", body), _chunk(b"data", payload, size=size[size_mode]))
    _check_typed(data, AudioConfig(min_seconds=0.0))
