"""Why: every recording enters through one decoder that yields mono 16 kHz float32 or a typed AudioError.

Any RIFF/WAVE a user will meet (PCM 8/16/24/32, IEEE float 32/64, WAVE_FORMAT_EXTENSIBLE such as the
8-channel MIMII files) is parsed chunk by chunk with struct + numpy (Python's `wave` rejects EXTENSIBLE).
Whatever the bytes, `decode_wav` returns an `Audio` or raises `AudioError` with a stable `ErrorCode`.
One rule picks the chunks, wherever they are: the first fmt chunk and the first data chunk are used and
any later fmt or data chunk is skipped like an unknown one (a data chunk may come before fmt). At most
`MAX_CHUNKS` chunks are walked to find them.

The decoder reads front to back (`decode_stream`: an HTTP body, a file, bytes in memory) and converts,
mixes down and resamples one block at a time with a bounded polyphase filter, so its memory is the
float32 output plus fixed-size blocks, whatever the input's rate, width or channel count.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from signalcraft_core.errors import AudioError, ErrorCode, SignalcraftError

__all__ = [
    "DEFAULT_AUDIO_CONFIG",
    "MAX_CHUNKS",
    "MAX_RESAMPLE_FACTOR",
    "MAX_SAMPLE_MAGNITUDE",
    "SAMPLE_FORMATS",
    "Audio",
    "AudioConfig",
    "decode_stream",
    "decode_wav",
    "encode_wav",
    "max_decoded_bytes",
    "read_wav",
]

WAVE_FORMAT_PCM = 0x0001
WAVE_FORMAT_IEEE_FLOAT = 0x0003
WAVE_FORMAT_EXTENSIBLE = 0xFFFE
# KSDATAFORMAT_SUBTYPE_* GUIDs are <format tag as uint32 LE> + this fixed tail.
_GUID_TAIL = b"\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"

# name -> (format tag, container bits)
SAMPLE_FORMATS: dict[str, tuple[int, int]] = {
    "pcm8": (WAVE_FORMAT_PCM, 8),
    "pcm16": (WAVE_FORMAT_PCM, 16),
    "pcm24": (WAVE_FORMAT_PCM, 24),
    "pcm32": (WAVE_FORMAT_PCM, 32),
    "float32": (WAVE_FORMAT_IEEE_FLOAT, 32),
    "float64": (WAVE_FORMAT_IEEE_FLOAT, 64),
}


@dataclass(frozen=True)
class AudioConfig:
    """Limits and output shape of decoding; the defaults suit 10 s machine clips."""

    target_rate: int = 16000
    channel: int | None = None  # None: mean over channels; else keep only this channel index
    min_seconds: float = 1.0
    max_seconds: float = 600.0
    max_bytes: int = 256 * 1024 * 1024  # callers check before download; the decoder re-checks the size
    min_rate: int = 4000
    max_rate: int = 384000
    max_channels: int = 64
    silence_peak: float = 2.0**-15  # peak |x| below one 16-bit LSB is digital silence

    def __post_init__(self) -> None:
        """A nonsensical config is a programming error, not a bad recording: fail at construction."""
        if self.target_rate <= 0 or not 0 < self.min_rate <= self.max_rate:
            raise ValueError(f"invalid rates in {self}")
        if self.max_channels < 1 or self.max_bytes < 0 or self.min_seconds > self.max_seconds:
            raise ValueError(f"invalid limits in {self}")
        if self.channel is not None and self.channel < 0:
            raise ValueError(f"channel must be >= 0 or None, got {self.channel}")


DEFAULT_AUDIO_CONFIG = AudioConfig()


@dataclass(frozen=True)
class Audio:
    """A decoded recording: mono float32 at the target rate, plus what the original was."""

    samples: np.ndarray  # float32, mono, at target_rate, full scale [-1, 1]
    sample_rate: int  # == config.target_rate
    sample_rate_in: int
    channels_in: int
    duration_s: float  # duration of the original recording
    format: str  # "pcm8", "pcm16", "pcm24", "pcm32", "float32" or "float64"


# --------------------------------------------------------------------------------------------- writer


def encode_wav(
    samples: np.ndarray, rate: int, sample_format: str = "pcm16", extensible: bool = False
) -> bytes:
    """Write a WAV so tests and the synthetic generator produce exactly what real recorders do.

    `samples` has shape (n,) or (n, channels), floats in [-1, 1]. PCM formats clip to full scale
    (pcm8 is unsigned, offset 128); float formats are written as given, so NaN/inf/over-range
    values can be produced on purpose. `extensible=True` writes WAVE_FORMAT_EXTENSIBLE
    (tag 0xFFFE, cbSize 22, PCM or IEEE-float subformat GUID) like the MIMII files.
    """
    if sample_format not in SAMPLE_FORMATS:
        raise ValueError(f"unknown sample_format {sample_format!r}; use one of {sorted(SAMPLE_FORMATS)}")
    rate = int(rate)
    if not 0 < rate < 2**32:
        raise ValueError(f"sample rate must be a positive 32-bit integer, got {rate}")
    x = np.asarray(samples)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[1] < 1:
        raise ValueError(f"samples must have shape (n,) or (n, channels), got {np.shape(samples)}")
    tag, bits = SAMPLE_FORMATS[sample_format]
    channels = int(x.shape[1])
    payload = _to_container(x, sample_format)
    block_align = channels * bits // 8
    if extensible:
        mask = (1 << channels) - 1 if channels <= 18 else 0
        guid = struct.pack("<I", tag) + _GUID_TAIL
        fmt = struct.pack(
            "<HHIIHHHHI",
            WAVE_FORMAT_EXTENSIBLE, channels, rate, rate * block_align, block_align, bits, 22, bits, mask,
        ) + guid
    else:
        fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block_align, block_align, bits)
    chunks = _chunk(b"fmt ", fmt) + _chunk(b"data", payload)
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def _chunk(ckid: bytes, body: bytes) -> bytes:
    pad = b"\x00" if len(body) % 2 else b""
    return ckid + struct.pack("<I", len(body)) + body + pad


def _to_container(x: np.ndarray, sample_format: str) -> bytes:
    """Interleaved little-endian sample bytes; PCM scaling is the inverse of the decoder's."""
    if sample_format == "float32":
        return np.ascontiguousarray(x, dtype="<f4").tobytes()
    if sample_format == "float64":
        return np.ascontiguousarray(x, dtype="<f8").tobytes()
    xf = np.asarray(x, dtype=np.float64)
    if sample_format == "pcm8":
        return np.clip(np.rint(xf * 128.0 + 128.0), 0, 255).astype(np.uint8).tobytes()
    if sample_format == "pcm16":
        return np.clip(np.rint(xf * 2.0**15), -(2**15), 2**15 - 1).astype("<i2").tobytes()
    if sample_format == "pcm32":
        return np.clip(np.rint(xf * 2.0**31), -(2**31), 2**31 - 1).astype("<i4").tobytes()
    # pcm24: the low three bytes of each little-endian int32.
    v = np.clip(np.rint(xf * 2.0**23), -(2**23), 2**23 - 1).astype("<i4")
    return np.ascontiguousarray(v.reshape(-1, 1).view(np.uint8)[:, :3]).tobytes()


# --------------------------------------------------------------------------------------------- reader

_PLACEHOLDER = 0xFFFFFFFF  # streaming writers leave 0 or 0xFFFFFFFF when they never seek back

_TAG_NAMES = {
    0x0000: "unknown",
    0x0002: "Microsoft ADPCM",
    0x0006: "A-law",
    0x0007: "mu-law",
    0x0011: "IMA ADPCM",
    0x0022: "TrueSpeech",
    0x0031: "GSM 6.10",
    0x0040: "G.721 ADPCM",
    0x0050: "MPEG audio",
    0x0055: "MP3",
    0x00FF: "AAC",
    0x0160: "WMA v1",
    0x0161: "WMA",
    0x0162: "WMA Pro",
    0x0163: "WMA Lossless",
    0x1610: "AAC (ADTS)",
    0x2000: "AC-3",
    0x2001: "DTS",
    0xF1AC: "FLAC",
}

_MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "it starts like a JPEG image"),
    (b"\x89PNG\r\n\x1a\n", "it starts like a PNG image"),
    (b"GIF8", "it starts like a GIF image"),
    (b"ID3", "it starts like an MP3 file"),
    (b"fLaC", "it starts like a FLAC file"),
    (b"OggS", "it starts like an Ogg file"),
    (b"FORM", "it starts like an AIFF file"),
    (b".snd", "it starts like a Sun/NeXT AU file"),
    (b"%PDF", "it starts like a PDF document"),
    (b"PK\x03\x04", "it starts like a ZIP archive"),
    (b"\x1f\x8b", "it starts like a gzip archive"),
    (b"\x1aE\xdf\xa3", "it starts like a Matroska/WebM file"),
    (b"caff", "it starts like a CAF file"),
)

_DTYPES = {"pcm8": "u1", "pcm16": "<i2", "pcm32": "<i4", "float32": "<f4", "float64": "<f8"}
_BLOCK_SAMPLES = 1 << 20  # samples converted per step: bounds the temporaries of reading, mixing and resampling
_SCALES = {"pcm8": 2.0**-7, "pcm16": 2.0**-15, "pcm24": 2.0**-23, "pcm32": 2.0**-31, "float32": 1.0, "float64": 1.0}
_READ_AHEAD = 64 * 1024  # header bytes asked of the source at a time
_SPOOL_IN_MEMORY = 8 * 1024 * 1024  # a data chunk before its fmt chunk goes to a temporary file beyond this
#: Most chunks the walk reads before it has both fmt and data. Real recorders write a handful (fmt, fact,
#: LIST, bext, cue, JUNK ...); without a bound, 256 MiB of empty 8-byte chunks is 33 M steps of the walk
#: (measured 78 s for 25 M, past the 60 s Lambda timeout). 10,000 takes milliseconds.
MAX_CHUNKS = 10_000
#: Largest header rate an AudioError reports: grade records hold sample_rate_in as an int32, and a rate
#: beyond it (a garbage 0xFFFFFFFF) says nothing about the recording but would fail the batch's write.
_REPORTABLE_RATE = 2**31 - 1

#: Largest |sample| (after scaling, full scale = 1) a float WAV may hold: 60 dB over full scale. Beyond
#: it the file is garbage or a wrong scale (e.g. 1e20), and every feature would overflow.
MAX_SAMPLE_MAGNITUDE = 1e3
#: Largest up or down factor of the polyphase resampler: its filter has 20 * factor + 1 taps (at most
#: 1.6 MB; designing it takes ~35 ms and ~6 MiB of temporaries). Every rate below 16 kHz and every
#: common one above (22.05 ... 384 kHz, 44.1 kHz: 160/441) reduces to factors within it and is resampled
#: as scipy's resample_poly does (its taps and lengths; its sums to float32 rounding, in numpy). A rate
#: like 383,999 Hz (coprime with 16 kHz: 7.7 M taps for resample_poly) uses the nearest ratio with
#: factors <= this (relative error at most 2.5e-5 over every integer rate 4 k ... 384 kHz, 2.6e-6 for
#: 383,999 Hz: a pitch shift far below one STFT bin) and keeps the exact ratio's output length.
MAX_RESAMPLE_FACTOR = 20000

#: A source of bytes: `read(n)` returns up to n bytes (fewer only at the end), b"" at the end.
Read = Callable[[int], Any]


@dataclass(frozen=True)
class _Fmt:
    """The parts of a fmt chunk that decide how samples are read."""

    tag: int  # WAVE_FORMAT_PCM or WAVE_FORMAT_IEEE_FLOAT (the subformat for EXTENSIBLE)
    channels: int
    rate: int
    bits: int  # container bits
    block_align: int

    @property
    def name(self) -> str:
        return ("pcm" if self.tag == WAVE_FORMAT_PCM else "float") + str(self.bits)

    def describe(self) -> str:
        kind = "PCM" if self.tag == WAVE_FORMAT_PCM else "float"
        return f"{self.bits}-bit {kind}, {self.channels} channel{'s' if self.channels != 1 else ''}, {self.rate} Hz"


@dataclass
class _Layout:
    """Where the fmt and data chunks are, found by walking the RIFF chunk list."""

    fmt: tuple[int, int] | None  # (body offset, size)
    data: tuple[int, int] | None  # (body offset, declared size)
    cut: str | None  # why the walk hit the end of the file inside a chunk, if it did
    fmt_body: bytes = b""  # the first (up to 40) bytes of the fmt chunk
    spool: Any = None  # the data body, when it came before the fmt chunk (a file object at 0)


class _Stream:
    """A forward-only view of `n` bytes: small look-ahead for the chunk walk, then blocks of samples.

    Bytes [base, base + len(buf)) are buffered; everything before `base` is gone. The walk keeps one
    byte of look-back (the odd-size padding check), so memory is bounded by the read-ahead and one
    block whatever the file holds.
    """

    def __init__(self, read: Read, n: int) -> None:
        self._read = read
        self.n = n
        self._buf = bytearray()
        self._base = 0
        self._eof = False

    @property
    def _end(self) -> int:
        return self._base + len(self._buf)

    def _pull(self, k: int) -> Any:
        chunk = self._read(k) if k > 0 else b""
        if not chunk:
            self._eof = True
        return chunk

    def _fill(self, upto: int) -> None:
        upto = min(upto, self.n)
        while self._end < upto and not self._eof:
            chunk = self._pull(min(max(upto - self._end, _READ_AHEAD), self.n - self._end))
            self._buf += chunk

    def peek(self, pos: int, k: int) -> bytes:
        """Bytes [pos, pos + k) (fewer at the end of the file); pos must not be before `base`."""
        self._fill(pos + k)
        lo = pos - self._base
        return bytes(self._buf[lo : lo + k])

    def release(self, upto: int) -> None:
        """Forget everything before `upto`, reading forward (and dropping) up to it if needed."""
        if upto <= self._base:
            return
        if upto <= self._end:
            del self._buf[: upto - self._base]
        else:
            need = min(upto, self.n) - self._end
            self._buf.clear()
            while need > 0 and not self._eof:
                need -= len(self._pull(min(need, 1 << 20)))
        self._base = upto

    def take(self, k: int) -> Any:
        """The next k bytes (from `base`) as one buffer; AudioError(TRUNCATED) if the source ends first."""
        if len(self._buf) >= k:
            out = bytes(self._buf[:k])
            del self._buf[:k]
        else:
            parts: list[Any] = [bytes(self._buf)] if self._buf else []
            need = k - len(self._buf)
            self._buf.clear()
            while need > 0:
                chunk = self._pull(need)
                if not chunk:
                    raise AudioError(
                        ErrorCode.TRUNCATED,
                        f"the file ended at byte {self._base + k - need} of the {self.n} announced (file truncated)",
                    )
                parts.append(chunk)
                need -= len(chunk)
            out = parts[0] if len(parts) == 1 else b"".join(parts)
        self._base += k
        return out

    def spool(self, start: int, size: int) -> Any:
        """Copy bytes [start, start + size) to a temporary file (a data chunk met before its fmt chunk)."""
        import tempfile

        self.release(start)
        spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)
        left = size
        while left > 0:
            block = self.take(min(left, 1 << 20))
            spool.write(block)
            left -= len(block)
        spool.seek(0)
        return spool


class _MemoryReader:
    """`read(n)` over bytes already in memory: zero-copy slices."""

    def __init__(self, mv: memoryview) -> None:
        self._mv, self._pos = mv, 0

    def read(self, k: int) -> memoryview:
        out = self._mv[self._pos : self._pos + k]
        self._pos += len(out)
        return out


def max_decoded_bytes(size: int, config: AudioConfig = DEFAULT_AUDIO_CONFIG) -> int:
    """An upper bound of the float32 output of a file of `size` bytes, known before reading it.

    A frame is at least one byte at `min_rate`, and no output is longer than `max_seconds`; callers
    reserve this much before a download and learn the exact figure from the header (`on_header`).
    """
    per_byte = config.target_rate / config.min_rate
    frames_out = min(size * per_byte, config.max_seconds * config.target_rate)
    return 4 * (int(frames_out) + 2)


def decode_wav(data: bytes | bytearray | memoryview, config: AudioConfig = DEFAULT_AUDIO_CONFIG) -> Audio:
    """Decode WAV bytes to mono float32 at `config.target_rate`; any bad input raises AudioError.

    Header limits (size, rate, channels, duration) are checked before any sample is converted,
    so a lying header never causes a large allocation.
    """
    mv = memoryview(data)
    if mv.ndim != 1 or mv.format not in ("B", "b", "c"):
        mv = memoryview(mv.tobytes())
    mv = mv.cast("B") if mv.format != "B" else mv
    return decode_stream(_MemoryReader(mv).read, mv.nbytes, config)


def decode_stream(
    read: Read,
    size: int,
    config: AudioConfig = DEFAULT_AUDIO_CONFIG,
    on_header: Callable[[int], None] | None = None,
) -> Audio:
    """Decode a WAV of `size` bytes read front to back by `read(n)` (an HTTP body, a file), in blocks.

    Never more than the header look-ahead, one block of raw samples and the output is held: samples
    are mixed down and resampled block by block (`_to_mono`), so memory does not grow with the input
    rate, channel count or sample width. `on_header(nbytes)` is told the exact size of the float32
    output once the header is read, before it is allocated. Errors of `read` itself (a StorageError
    from a cut download) pass through unchanged; everything else is an AudioError with a stable code.
    """
    try:
        return _decode(_Stream(read, int(size)), config, on_header)
    except SignalcraftError:
        raise
    except MemoryError as exc:
        raise AudioError(ErrorCode.TOO_LARGE, "not enough memory to decode this recording") from exc
    except struct.error as exc:  # guarded against below; kept so no input can escape as a traceback
        raise AudioError(ErrorCode.TRUNCATED, f"unexpected decoder error (header cut short?): {exc}") from exc
    except (ValueError, IndexError, ArithmeticError, TypeError) as exc:
        raise AudioError(ErrorCode.BAD_HEADER, f"unexpected decoder error: {exc}") from exc
    except Exception as exc:  # pragma: no cover - a bug; still one typed record
        raise AudioError(ErrorCode.INTERNAL_ERROR, f"unexpected decoder error: {exc!r}") from exc


def read_wav(path: str | os.PathLike[str], config: AudioConfig = DEFAULT_AUDIO_CONFIG) -> Audio:
    """Read and decode a WAV file in blocks; the size limit is checked before reading a single byte."""
    p = os.fspath(path)
    try:
        st = os.stat(p)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise AudioError(ErrorCode.NOT_FOUND, f"file not found: {p}") from exc
    except OSError as exc:
        raise AudioError(ErrorCode.STORAGE_ERROR, f"cannot stat {p}: {exc.strerror or exc}") from exc
    if not os.path.isfile(p):
        raise AudioError(ErrorCode.NOT_FOUND, f"not a regular file: {p}")
    if st.st_size > config.max_bytes:
        raise AudioError(ErrorCode.TOO_LARGE, f"file is {_size(st.st_size)}, over the {_size(config.max_bytes)} limit")
    try:
        with open(p, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size  # a file growing after stat is still caught in _decode
            return decode_stream(fh.read, size, config)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise AudioError(ErrorCode.NOT_FOUND, f"file vanished before it was read: {p}") from exc
    except OSError as exc:
        raise AudioError(ErrorCode.STORAGE_ERROR, f"cannot read {p}: {exc.strerror or exc}") from exc


def _decode(s: _Stream, cfg: AudioConfig, on_header: Callable[[int], None] | None) -> Audio:
    n = s.n
    if n == 0:
        raise AudioError(ErrorCode.EMPTY, "file is empty (0 bytes)")
    if n > cfg.max_bytes:
        raise AudioError(ErrorCode.TOO_LARGE, f"file is {_size(n)}, over the {_size(cfg.max_bytes)} limit")
    head = s.peek(0, 64)
    if len(head) < min(n, 64):
        raise AudioError(ErrorCode.TRUNCATED, f"the file ended at byte {len(head)} of the {n} announced (file truncated)")
    _check_riff(head, n)
    riff_end = 8 + struct.unpack_from("<I", head, 4)[0]
    layout = _walk(s)
    if layout.fmt is None or layout.data is None:
        missing = "fmt" if layout.fmt is None else "data"
        if layout.data is not None:  # data present, fmt absent: nothing tells us how to read it
            raise AudioError(ErrorCode.BAD_HEADER, "no fmt chunk: the sample format is unknown")
        if layout.cut is not None:
            raise AudioError(ErrorCode.TRUNCATED, f"no {missing} chunk: {layout.cut} (file truncated)")
        if riff_end > n:
            raise AudioError(
                ErrorCode.TRUNCATED,
                f"no {missing} chunk: the RIFF header declares {riff_end} bytes but the file has {n} (file truncated)",
            )
        raise AudioError(ErrorCode.BAD_HEADER, f"no {missing} chunk in this WAV file")
    fmt = _parse_fmt(layout.fmt_body, 0, layout.fmt[1], cfg)
    offset, declared = layout.data
    remaining = n - offset
    if declared > remaining and declared in (0, _PLACEHOLDER):
        declared = remaining  # placeholder size: the samples run to the end of the file
    frames = declared // fmt.block_align  # a trailing partial frame is dropped
    duration = frames / fmt.rate if declared <= remaining else None
    try:
        _check_limits(fmt, cfg)
        if duration is None:
            raise AudioError(
                ErrorCode.TRUNCATED,
                f"{fmt.describe()}: data chunk declares {declared} bytes but only {remaining} remain (file truncated)",
            )
        if frames == 0:
            raise AudioError(ErrorCode.EMPTY, f"{fmt.describe()}: the data chunk holds no complete sample frame")
        if duration < cfg.min_seconds:
            raise AudioError(ErrorCode.TOO_SHORT, f"recording is {_beyond(duration, cfg.min_seconds)} s long"
                             f" ({frames} frames at {fmt.rate} Hz), shorter than the {_seconds(cfg.min_seconds)} s minimum")
        if duration > cfg.max_seconds:
            raise AudioError(ErrorCode.TOO_LONG, f"recording is {_beyond(duration, cfg.max_seconds)} s long"
                             f" ({frames} frames at {fmt.rate} Hz), longer than the {_seconds(cfg.max_seconds)} s maximum")
        if layout.spool is not None:
            with layout.spool as spool:
                take = _Stream(spool.read, frames * fmt.block_align).take
                y = _to_mono(take, frames, fmt, cfg, on_header)
        else:
            s.release(offset)
            y = _to_mono(s.take, frames, fmt, cfg, on_header)
    except AudioError as exc:  # the header was read: the error record still says what the recording is
        reportable = fmt.rate <= _REPORTABLE_RATE
        exc.sample_rate_in, exc.channels_in = (fmt.rate if reportable else None), fmt.channels
        exc.duration_s = duration if reportable else None
        raise
    return Audio(
        samples=y,
        sample_rate=cfg.target_rate,
        sample_rate_in=fmt.rate,
        channels_in=fmt.channels,
        duration_s=duration,
        format=fmt.name,
    )


def _check_riff(head: bytes, n: int) -> None:
    """Reject anything that is not a little-endian RIFF/WAVE container, saying what it looks like."""
    magic = head[:4]
    if magic in (b"RF64", b"BW64"):
        raise AudioError(ErrorCode.UNSUPPORTED_FORMAT, f"{magic.decode()} (64-bit WAV) is not supported")
    if magic == b"RIFX":
        raise AudioError(ErrorCode.UNSUPPORTED_FORMAT, "big-endian WAV (RIFX) is not supported")
    if magic != b"RIFF" or (n > 8 and not b"WAVE".startswith(head[8:12])):
        if n < 4 and b"RIFF".startswith(magic):
            raise AudioError(ErrorCode.TRUNCATED, f"file is only {n} bytes: the WAV header is cut short")
        if magic == b"RIFF":
            form = head[8:12].decode("latin-1")
            raise AudioError(ErrorCode.NOT_WAV, f"not a WAV file: a RIFF file of type {form!r}, not 'WAVE'")
        raise AudioError(ErrorCode.NOT_WAV, f"not a WAV file: {_sniff(head)}")
    if n < 12:
        raise AudioError(ErrorCode.TRUNCATED, f"file is only {n} bytes: the WAV header is cut short")


def _sniff(head: bytes) -> str:
    """A short guess at what a non-WAV file is, for the error message."""
    for magic, what in _MAGICS:
        if head.startswith(magic):
            return what
    if head[4:8] == b"ftyp":
        return "it starts like an MP4/M4A file"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return "it starts like an MP3/AAC audio stream"
    texty = sum(1 for b in head if 32 <= b < 127 or b in (9, 10, 13) or b >= 0x80)
    if b"\x00" not in head and texty >= 0.95 * len(head):
        return "it looks like text"
    return f"it starts with bytes {head[:4].hex(' ')}"


def _is_fourcc(ckid: bytes) -> bool:
    return len(ckid) == 4 and all(32 <= b < 127 for b in ckid)



def _looks_like_chunk(s: _Stream, pos: int, n: int) -> bool:
    if n - pos < 8:
        return False
    head = s.peek(pos, 8)
    if len(head) < 8 or not _is_fourcc(head[:4]):
        return False
    return struct.unpack_from("<I", head, 4)[0] <= n - pos - 8


def _walk(s: _Stream) -> _Layout:
    """Find fmt and data, skipping any other chunk; odd sizes are word-padded (or not, if the writer forgot).

    The walk reads forward only: it stops at the data chunk once fmt is known (the samples follow),
    and a data chunk met before its fmt chunk is spooled aside while the walk goes on. Only the first
    fmt and the first data chunk count (the module's rule); a file of more than MAX_CHUNKS chunks is
    refused, so the walk's time is bounded whatever the file.
    """
    n = s.n
    pos = 12
    out = _Layout(None, None, None)
    walked = 0
    while pos < n and (out.fmt is None or out.data is None):
        walked += 1
        if walked > MAX_CHUNKS:
            raise AudioError(
                ErrorCode.BAD_HEADER,
                f"too many chunks: more than {MAX_CHUNKS} before the fmt and data chunks (at byte {pos})",
            )
        if n - pos < 8:
            out.cut = f"the file ends inside a chunk header at byte {pos}"
            return out
        head = s.peek(pos, 8)
        if len(head) < 8:
            raise AudioError(ErrorCode.TRUNCATED, f"the file ended at byte {pos + len(head)} of the {n} announced (file truncated)")
        ckid = head[:4]
        size = struct.unpack_from("<I", head, 4)[0]
        if not _is_fourcc(ckid):
            raise AudioError(
                ErrorCode.BAD_HEADER,
                f"unreadable chunk id {ckid!r} at byte {pos} (a previous chunk declares a wrong size)",
            )
        body = pos + 8
        if ckid == b"data" and out.data is None:  # a later data chunk is skipped like any other
            if size == 0 and body < n and not _looks_like_chunk(s, body, n):
                size = _PLACEHOLDER  # an unfinished streaming write: samples follow a 0 size
            out.data = (body, size)
            if size > n - body or out.fmt is not None:
                break  # the samples start here (a size past the end is judged once fmt is known)
            out.spool = s.spool(body, size)  # data before fmt: keep the samples aside
        elif size > n - body:
            out.cut = (
                f"the file ends inside the {ckid.decode()!r} chunk at byte {pos}"
                f" (declares {size} bytes, {n - body} remain)"
            )
            return out
        elif ckid == b"fmt " and out.fmt is None:  # the first fmt chunk rules, as the first data chunk does
            out.fmt = (body, size)
            out.fmt_body = s.peek(body, min(size, 40))
        pos = body + size + (size & 1)
        # Drop the body now, keeping one byte of look-back: the padding check below peeks at `pos`, and
        # peeking past a body still buffered would read all of it (a 268 MB odd chunk: 268 MB held).
        s.release(pos - 1)
        if size & 1 and pos < n and not _looks_like_chunk(s, pos, n) and _looks_like_chunk(s, pos - 1, n):
            pos -= 1
    return out


def _parse_fmt(mv: memoryview, offset: int, size: int, cfg: AudioConfig) -> _Fmt:
    """Validate the fmt chunk against what we decode and the configured limits."""
    if size < 16:
        raise AudioError(ErrorCode.BAD_HEADER, f"fmt chunk is {size} bytes, at least 16 are needed")
    tag, channels, rate, _byte_rate, block_align, bits = struct.unpack_from("<HHIIHH", mv, offset)
    valid_bits = bits
    what = f"format tag 0x{tag:04X}"
    if tag == WAVE_FORMAT_EXTENSIBLE:
        if size < 40:
            raise AudioError(
                ErrorCode.BAD_HEADER, f"WAVE_FORMAT_EXTENSIBLE fmt chunk is {size} bytes, 40 are needed"
            )
        cb_size, valid_bits, _mask = struct.unpack_from("<HHI", mv, offset + 16)
        guid = bytes(mv[offset + 24 : offset + 40])
        if cb_size < 22:
            raise AudioError(ErrorCode.BAD_HEADER, f"WAVE_FORMAT_EXTENSIBLE declares cbSize {cb_size}, 22 are needed")
        if guid[4:] != _GUID_TAIL:
            raise AudioError(
                ErrorCode.UNSUPPORTED_FORMAT, f"WAVE_FORMAT_EXTENSIBLE with unknown subformat GUID {guid.hex()}"
            )
        tag = struct.unpack_from("<I", guid)[0]
        what = f"WAVE_FORMAT_EXTENSIBLE subformat 0x{tag:04X}"
        valid_bits = valid_bits or bits
    if tag not in (WAVE_FORMAT_PCM, WAVE_FORMAT_IEEE_FLOAT):
        name = _TAG_NAMES.get(tag, "unknown codec")
        raise AudioError(
            ErrorCode.UNSUPPORTED_FORMAT,
            f"{what} ({name}) is not supported; only PCM and IEEE float WAV are decoded",
        )
    kind = "PCM" if tag == WAVE_FORMAT_PCM else "float"
    if channels == 0:
        raise AudioError(ErrorCode.BAD_HEADER, "fmt chunk declares 0 channels")
    if channels > cfg.max_channels:
        raise AudioError(ErrorCode.BAD_HEADER, f"fmt chunk declares {channels} channels (at most {cfg.max_channels})")
    if rate == 0:
        raise AudioError(ErrorCode.BAD_HEADER, "fmt chunk declares a sample rate of 0 Hz")
    allowed = (8, 16, 24, 32) if tag == WAVE_FORMAT_PCM else (32, 64)
    if bits not in allowed:
        raise AudioError(
            ErrorCode.UNSUPPORTED_FORMAT,
            f"{bits}-bit {kind} is not supported (only {', '.join(map(str, allowed))}-bit {kind})",
        )
    if valid_bits > bits:
        raise AudioError(ErrorCode.BAD_HEADER, f"{valid_bits} valid bits do not fit a {bits}-bit sample container")
    fmt = _Fmt(tag=tag, channels=channels, rate=rate, bits=bits, block_align=block_align)
    expected = channels * bits // 8
    if block_align != expected:
        raise AudioError(
            ErrorCode.BAD_HEADER, f"{fmt.describe()}: block align is {block_align} bytes, expected {expected}"
        )
    return fmt


def _check_limits(fmt: _Fmt, cfg: AudioConfig) -> None:
    """Refuse a well-formed fmt that the configuration rules out; apart from `_parse_fmt` because the
    header is trustworthy by now, so `_decode` gives these errors the header's rate and channels."""
    if not cfg.min_rate <= fmt.rate <= cfg.max_rate:
        raise AudioError(
            ErrorCode.UNSUPPORTED_RATE, f"sample rate {fmt.rate} Hz is outside {cfg.min_rate}-{cfg.max_rate} Hz"
        )
    if cfg.channel is not None and not 0 <= cfg.channel < fmt.channels:
        raise AudioError(
            ErrorCode.BAD_HEADER, f"channel {cfg.channel} was requested but the file has {fmt.channels} channel(s)"
        )



def _to_mono(
    take: Callable[[int], Any], frames: int, fmt: _Fmt, cfg: AudioConfig, on_header: Callable[[int], None] | None
) -> np.ndarray:
    """Samples as one owned float32 vector at the target rate: the mean over channels (float64 sum) or one channel.

    Raw samples are read, converted, mixed down and resampled one block at a time, so the only
    full-size allocation is the float32 result (its size is told to `on_header` first). Non-finite,
    over-range and silent recordings are refused once every block has been seen (NON_FINITE first).
    """
    name = fmt.name
    width = 1 if cfg.channel is not None else fmt.channels
    step = max(1, _BLOCK_SAMPLES // width)  # frames per block
    resampler = _Resampler(fmt.rate, cfg.target_rate, frames) if fmt.rate != cfg.target_rate else None
    n_out = resampler.n_out if resampler is not None else frames
    if on_header is not None:
        on_header(4 * n_out)
    out = np.empty(n_out, np.float32)
    mono = np.empty(min(step, frames), np.float32)
    is_float = fmt.tag == WAVE_FORMAT_IEEE_FLOAT
    hi, lo, bad, over, written = -np.inf, np.inf, 0, 0.0, 0
    with np.errstate(all="ignore"):
        for start in range(0, frames, step):
            k = min(step, frames - start)
            raw = take(k * fmt.block_align)
            if name == "pcm24":
                view = np.frombuffer(raw, np.uint8, k * fmt.channels * 3).reshape(k, fmt.channels, 3)
            else:
                view = np.frombuffer(raw, _DTYPES[name], k * fmt.channels).reshape(k, fmt.channels)
            if cfg.channel is not None:
                view = view[:, cfg.channel : cfg.channel + 1]
            if is_float:  # the raw samples, before mixing (opposite huge channels must not cancel out)
                # and before float32 (a finite 1e39 in a float64 file is out of range, not infinite)
                top, bottom = float(view.max()), float(view.min())
                if not (np.isfinite(top) and np.isfinite(bottom)):
                    bad += int(k - np.count_nonzero(np.isfinite(view).all(axis=1)))  # frames with a NaN/inf
                    continue
                over = max(over, top, -bottom)
            if bad or over > MAX_SAMPLE_MAGNITUDE:
                continue  # refused below: no point in converting or resampling
            y = mono[:k]
            _convert_block(view, name, y)  # finite: every raw sample is, and within float32's range
            del raw, view
            hi, lo = max(hi, float(y.max())), min(lo, float(y.min()))
            if resampler is None:
                out[start : start + k] = y
            else:
                written += resampler.push(y, out[written:])
    if bad:
        raise AudioError(ErrorCode.NON_FINITE, f"{fmt.describe()}: {bad} of {frames} samples are NaN or infinite")
    if over > MAX_SAMPLE_MAGNITUDE:
        raise AudioError(
            ErrorCode.OUT_OF_RANGE,
            f"{fmt.describe()}: a sample of magnitude {over:.3g} is beyond {MAX_SAMPLE_MAGNITUDE:g} x full scale",
        )
    peak = max(hi, -lo)
    if peak < cfg.silence_peak:
        raise AudioError(ErrorCode.SILENT, f"recording is digital silence (peak {peak:.3g} of full scale)")
    if resampler is not None:
        written += resampler.finish(out[written:])
        out[written:] = 0.0  # an approximated ratio may fall a few samples short of the exact length
    return out


def _convert_block(block: np.ndarray, name: str, out: np.ndarray) -> None:
    """Scale one block into `out`: x * 2**-(bits-1), pcm8 (x-128)/128, as soundfile/librosa do."""
    if name == "pcm24":
        wide = np.zeros(block.shape[:2] + (4,), np.uint8)
        wide[..., 1:] = block  # 24-bit value in the top three bytes of a little-endian int32
        block = wide.view("<i4")[..., 0]
        np.right_shift(block, 8, out=block)  # arithmetic shift sign-extends
    scale = _SCALES[name]
    width = block.shape[1]
    if width == 1:
        np.copyto(out, block[:, 0], casting="unsafe")  # int -> float32 (or float64 -> float32)
        if name == "pcm8":
            out -= np.float32(128.0)
        if scale != 1.0:
            out *= np.float32(scale)  # a power of two: exact
        return
    acc = block.sum(axis=1, dtype=np.float64)
    if name == "pcm8":
        acc -= 128.0 * width
    acc *= scale / width
    np.copyto(out, acc, casting="same_kind")



def _ratio(rate_in: int, rate_out: int) -> tuple[int, int]:
    """(up, down) of the resampler: the reduced ratio, or its nearest approximation with bounded factors."""
    from fractions import Fraction
    from math import gcd

    g = gcd(rate_in, rate_out)
    up, down = rate_out // g, rate_in // g
    if max(up, down) <= MAX_RESAMPLE_FACTOR:
        return up, down
    if up >= down:
        f = Fraction(down, up).limit_denominator(MAX_RESAMPLE_FACTOR)
        return f.denominator, max(1, f.numerator)
    f = Fraction(up, down).limit_denominator(MAX_RESAMPLE_FACTOR)
    return max(1, f.numerator), f.denominator


def _kaiser_lowpass(numtaps: int, cutoff: float, beta: float = 5.0) -> np.ndarray:
    """Kaiser-windowed sinc lowpass with unit DC gain, float64, shape (numtaps,); `cutoff` relative to Nyquist.

    scipy.signal.firwin(numtaps, cutoff, window=("kaiser", beta)) written out (sinc times the window of
    np.kaiser; scale=True divides a lowpass by its sum): the float32 taps are identical for every rate
    the decoder resamples. Evaluated in chunks: np.i0 holds a dozen temporaries of its argument.
    """
    alpha = 0.5 * (numtaps - 1)
    i0_beta = np.i0(float(beta))
    h = np.empty(numtaps, np.float64)
    for a in range(0, numtaps, 1 << 15):
        m = np.arange(a, min(a + (1 << 15), numtaps), dtype=np.float64) - alpha
        window = np.i0(beta * np.sqrt(1 - (m / alpha) ** 2.0)) / i0_beta  # np.kaiser's formula
        h[a : a + len(m)] = cutoff * np.sinc(cutoff * m) * window
    return h / h.sum()


class _Resampler:
    """resample_poly's filter (Kaiser-windowed sinc, beta 5, 10 zero crossings, float32), block by block.

    numpy only (no scipy.signal.firwin / upfirdn): scipy is 143 MiB of the scoring runtime's 435 MiB
    install, and the runtime image keeps to numpy. With i, p = divmod(q * down, up), output q of the
    up/down polyphase filter (upfirdn's index, before resample_poly drops the filter's delay) is phase p
    of the filter (taps p, p + up, ...) dotted with inputs i, i - 1, ...; outputs q, q + up, ... share
    the phase and their inputs are `down` apart, so each phase is one np.einsum over a strided view of
    input windows. Sums are float32 like upfirdn's, in another order (< 1e-6 apart at full scale).
    Inputs arrive in blocks; each call emits every output whose inputs have all arrived and keeps the
    inputs the next ones need. Memory: the filter (<= 20 * MAX_RESAMPLE_FACTOR + 1 taps) and two blocks.
    """

    def __init__(self, rate_in: int, rate_out: int, n_in: int) -> None:
        from math import gcd

        g = gcd(rate_in, rate_out)
        self.n_out = -(-(n_in * (rate_out // g)) // (rate_in // g))  # the exact ratio's length
        up, down = _ratio(rate_in, rate_out)
        max_rate = max(up, down)
        half_len = 10 * max_rate
        h = _kaiser_lowpass(2 * half_len + 1, 1.0 / max_rate).astype(np.float32)
        h *= up
        n_pre_pad = down - half_len % down  # resample_poly's: output n_pre_remove is centred on input 0
        n_pre_remove = (half_len + n_pre_pad) // down
        taps = -(-(n_pre_pad + len(h)) // up)  # per phase
        padded = np.zeros(taps * up, np.float32)
        padded[n_pre_pad : n_pre_pad + len(h)] = h
        # phases[p, t] = padded[p + (taps - 1 - t) * up]: phase p, oldest input first
        self.phases = np.ascontiguousarray(padded.reshape(taps, up).T[:, ::-1])
        self.up, self.down, self.taps = up, down, taps
        self.next_q = n_pre_remove  # next output (upfirdn's index) to emit
        self.end_q = n_pre_remove + min(-(-(n_in * up) // down), self.n_out)
        self.start = 1 - taps  # input index of buf[0]: the zeros before the signal
        self.buf = np.zeros(taps - 1, np.float32)
        self.unfiltered = 0  # inputs at the end of buf not yet filtered (fewer than _BLOCK_SAMPLES)

    def push(self, block: np.ndarray, out: np.ndarray) -> int:
        """Add input samples; write the outputs now complete into `out`; returns how many.

        Inputs are filtered _BLOCK_SAMPLES at a time whatever the caller's block: `_emit` loops once per
        phase (up to `up`, 16000 for 19,999 Hz), so a 64-channel file's 16,384-frame blocks would cost
        that loop every 16,384 samples (measured 20-40x slower). Waiting costs one block (4 MiB).
        """
        self.buf = np.concatenate([self.buf, block])
        self.unfiltered += len(block)
        return self._filter(out) if self.unfiltered >= _BLOCK_SAMPLES else 0

    def finish(self, out: np.ndarray) -> int:
        """The remaining outputs (the input has ended: zeros after it)."""
        done = self._filter(out) if self.unfiltered else 0  # first: it drops the inputs no longer needed
        last = (self.end_q - 1) * self.down // self.up  # newest input of the last output
        short = last + 1 - (self.start + len(self.buf))
        if short > 0:
            self.buf = np.concatenate([self.buf, np.zeros(short, np.float32)])
        return done + self._emit(self.end_q, out[done:], final=True)

    def _filter(self, out: np.ndarray) -> int:
        """Emit every output whose inputs have all arrived."""
        self.unfiltered = 0
        end = self.start + len(self.buf)
        ready = min(self.end_q, -(-(end * self.up) // self.down))  # outputs needing no input beyond `end`
        return self._emit(ready, out, final=False)

    def _emit(self, ready: int, out: np.ndarray, final: bool) -> int:
        from numpy.lib.stride_tricks import sliding_window_view

        q0, up, down, taps = self.next_q, self.up, self.down, self.taps
        count = min(ready - q0, len(out))
        if count <= 0:
            return 0
        windows = sliding_window_view(self.buf, taps)  # [s] = inputs start + s ... start + s + taps - 1
        for r in range(min(up, count)):  # outputs q0 + r, q0 + r + up, ...: one phase, inputs `down` apart
            i, p = divmod((q0 + r) * down, up)
            s = i + 1 - taps - self.start  # window of output q0 + r: inputs i - taps + 1 ... i
            n = (count - 1 - r) // up + 1
            rows = windows[s : s + (n - 1) * down + 1 : down]
            np.einsum("ij,j->i", rows, self.phases[p], out=out[r:count:up])
        self.next_q = q0 + count
        if not final:  # keep the inputs from the oldest one the next output needs
            keep_from = self.next_q * down // up + 1 - taps
            if keep_from > self.start:
                self.buf = self.buf[keep_from - self.start :].copy()
                self.start = keep_from
        return count


def _seconds(x: float) -> str:
    """A configured limit as written (1, 600, 0.25), or exactly when `:g` would round it."""
    text = f"{x:g}"
    return text if float(text) == x else repr(x)


def _beyond(duration: float, limit: float) -> str:
    """`duration` in as few digits (4 or more) as keep it on its side of `limit`, so a message never says
    "1.000 s long, shorter than the 1 s minimum" (15,999 frames at 16 kHz: 0.9999 s)."""
    for digits in range(4, 17):
        text = f"{duration:.{digits}g}"
        if float(text) != limit and (float(text) < limit) == (duration < limit):
            return text
    return repr(duration)


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} bytes"
