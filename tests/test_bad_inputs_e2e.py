"""Why: "nothing lost, nothing let in" end to end - every odd or hostile upload becomes exactly one record.

A generated corpus of >= 500 objects (tiny clips and broken files, all named *.wav), each with the ONE
outcome it must produce, uploaded to the loopback S3 server; the handlers reach it through a counting proxy. The nightly
sweep runs once over all of them, and the upload handler sees a quarter of them (every outcome, every
over-limit object) in SQS-delivered S3 events: one record per object, the expected code for each, no
exception, bounded memory (tracemalloc), and objects over MAX_OBJECT_BYTES are never GET-ed (the size
limit is enforced before download, from the listing, the event or a HEAD).
"""

from __future__ import annotations

import json
import re
import struct
import time
import tracemalloc
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import quote_plus

import numpy as np
import pytest
from faultproxy import FaultProxy

from handlers import fleet_sweep, score_upload
from signalcraft_core.errors import ErrorCode
from signalcraft_core.io.audio import encode_wav
from signalcraft_core.pipeline import runtime
from signalcraft_core.pipeline.records import GRADE_SCHEMA, GRADES
from signalcraft_core.pipeline.sinks import read_grades

E = ErrorCode
OK = "ok"
MAX_OBJECT_BYTES = 1_000_000
MAX_SECONDS = 2.0
BIG_BYTES = 64 * 2**20  # one object far over the limit: downloading it would blow the memory budget
MEMORY_LIMIT = 48 * 2**20  # tracemalloc peak of the whole sweep over the corpus, compaction of the partitions it touched included (measured ~45 MiB; ~22 MiB before the sweep compacted them)
DAY = "2024-05-07"
PREFIX = "corpus/"
MACHINES = ("pump", "fan", "slider", "valve", "compressor")  # compressor: no set -> the default model
GUID_TAIL = b"\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    expected: str  # "ok" or one ErrorCode value: the single allowed outcome


# ------------------------------------------------------------------------------------------- builders


def _chunk(ckid: bytes, body: bytes, size: int | None = None) -> bytes:
    pad = b"\x00" if len(body) % 2 else b""
    return ckid + struct.pack("<I", len(body) if size is None else size) + body + pad


def _riff(*chunks: bytes, riff_size: int | None = None) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body) if riff_size is None else riff_size) + body


def _fmt(tag: int = 1, channels: int = 1, rate: int = 8000, bits: int = 16, block_align: int | None = None) -> bytes:
    ba = channels * bits // 8 if block_align is None else block_align
    return struct.pack("<HHIIHH", tag, channels, rate, (rate * ba) & 0xFFFFFFFF, ba & 0xFFFF, bits)


def _ext(subformat: int, bits: int = 16, valid: int = 16) -> bytes:
    ba = bits // 8
    return struct.pack("<HHIIHHHHI", 0xFFFE, 1, 8000, 8000 * ba, ba, bits, 22, valid, 0) + \
        struct.pack("<I", subformat) + GUID_TAIL


def _machine(rate: int = 8000, seconds: float = 1.2, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A machine-like clip: a hum with harmonics and broadband noise, in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(rate * seconds))) / rate
    hum = sum(0.2 / k * np.sin(2 * np.pi * 120 * k * t + k) for k in range(1, 5))
    x = hum + 0.05 * rng.standard_normal(len(t))
    return np.stack([x * (1 - 0.1 * c) for c in range(channels)], 1) if channels > 1 else x


PCM16 = np.rint(_machine() * 32767).astype("<i2").tobytes()  # 1.2 s, 8 kHz, mono
FMT16 = _chunk(b"fmt ", _fmt())


def _wav16(*extra_before: bytes, after: bytes = b"") -> bytes:
    return _riff(*extra_before, FMT16, _chunk(b"data", PCM16)) + after


def build_corpus() -> list[Case]:
    """>= 500 objects, each with the one outcome the pipeline must give it (decided here, not measured)."""
    cases: list[Case] = []

    def add(name: str, data: bytes, expected: ErrorCode | str) -> None:
        cases.append(Case(name, data, expected.value if isinstance(expected, ErrorCode) else expected))

    rng = np.random.default_rng(6)
    bases = {
        "mono16": encode_wav(_machine(), 8000, "pcm16"),
        "stereo24ext": encode_wav(_machine(channels=2), 8000, "pcm24", extensible=True),
        "float32": encode_wav(_machine(seconds=1.1), 8000, "float32"),
        "list8": _riff(_chunk(b"LIST", b"INFOISFT" + b"x" * 13), _chunk(b"fmt ", _fmt(bits=8)),
                       _chunk(b"data", encode_wav(_machine(), 8000, "pcm8")[44:])),
    }

    # zero bytes; every header cut point and cuts inside the samples of four valid files
    add("zero bytes", b"", E.EMPTY)
    for base_name, base in bases.items():
        add(f"{base_name} intact", base, OK)
        header = base.index(b"data") + 8
        cuts = set(range(1, header + 1)) | {int(c) for c in np.linspace(header + 1, len(base) - 1, 16)}
        for cut in sorted(cuts):
            add(f"{base_name} cut at {cut}", base[:cut], E.TRUNCATED)

    # chunk sizes that lie
    for size in (len(PCM16) + 2, len(PCM16) + 1000, 2**31, 2**32 - 2):
        add(f"data size {size} beyond the file", _riff(FMT16, _chunk(b"data", PCM16, size=size)), E.TRUNCATED)
    for size in (0, 8, 14):
        add(f"fmt size {size}", _riff(_chunk(b"fmt ", _fmt(), size=size), _chunk(b"data", PCM16)), E.BAD_HEADER)
    for size in (2**20, 2**31, 0xFFFFFFFF):
        add(f"fmt size {size}", _riff(_chunk(b"fmt ", _fmt(), size=size), _chunk(b"data", PCM16)), E.TRUNCATED)
    for size in (2**16, 2**31, 0xFFFFFFFF):
        add(f"LIST size {size} before fmt",
            _riff(_chunk(b"LIST", b"INFO", size=size), FMT16, _chunk(b"data", PCM16)), E.TRUNCATED)
    add("header claims 2**31 frames", _riff(FMT16, _chunk(b"data", PCM16[:100], size=2**32 - 2)), E.TRUNCATED)
    for riff_size in (0, 36, 0xFFFFFFFF):
        add(f"riff size {riff_size} (ignored)", _riff(FMT16, _chunk(b"data", PCM16), riff_size=riff_size), OK)

    # fmt or data missing
    add("no fmt", _riff(_chunk(b"data", PCM16)), E.BAD_HEADER)
    add("no fmt, LIST only", _riff(_chunk(b"LIST", b"INFO")), E.BAD_HEADER)
    add("no data", _riff(FMT16), E.BAD_HEADER)
    add("no data, LIST after fmt", _riff(FMT16, _chunk(b"LIST", b"INFO")), E.BAD_HEADER)
    add("no chunks", _riff(), E.BAD_HEADER)
    add("empty data", _riff(FMT16, _chunk(b"data", b"")), E.EMPTY)
    add("empty data then LIST", _riff(FMT16, _chunk(b"data", b""), _chunk(b"LIST", b"INFO")), E.EMPTY)

    # not WAV at all, named .wav
    texts = [b"hello world\n", b"<html><body>404 Not Found</body></html>", b'{"error": "nope"}',
             "Größe: 12 µs\n".encode(), b"id,value\n1,2\n" * 50, b"#!/bin/sh\necho hi\n", b" " * 64,
             b"ftp://example.com/pump.wav\n"]
    for i, text in enumerate(texts):
        add(f"text {i}", text, E.NOT_WAV)
    magics = {
        "jpeg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "png": b"\x89PNG\r\n\x1a\n", "mp3-id3": b"ID3\x04\x00\x00",
        "mp3-frame": b"\xff\xfb\x90\x64", "flac": b"fLaC\x00\x00\x00\x22", "ogg": b"OggS\x00\x02",
        "gif": b"GIF89a", "zip": b"PK\x03\x04", "aiff": b"FORM\x00\x00\x10\x00AIFF", "pdf": b"%PDF-1.7",
        "mp4": b"\x00\x00\x00\x20ftypM4A ", "gzip": b"\x1f\x8b\x08",
    }
    for kind, magic in magics.items():
        for length in (0, 1, 50, 500, 3000):
            add(f"{kind} + {length} random bytes", magic + rng.bytes(length), E.NOT_WAV)
    for i in range(20):
        add(f"random bytes {i}", b"\x00" + rng.bytes(int(rng.integers(0, 4000))), E.NOT_WAV)
    for form in (b"AVI ", b"RMID", b"WEBP", b"wave"):
        add(f"RIFF {form.decode()}", b"RIFF" + struct.pack("<I", 100) + form + bytes(100), E.NOT_WAV)
    for magic in (b"RF64", b"RIFX"):
        add(f"{magic.decode()} container", magic + b"\xff\xff\xff\xffWAVE" + bytes(60), E.UNSUPPORTED_FORMAT)

    # channels
    add("0 channels", _riff(_chunk(b"fmt ", _fmt(channels=0, block_align=2)), _chunk(b"data", PCM16)),
        E.BAD_HEADER)
    for ch in (65, 1000, 65535):
        add(f"{ch} channels", _riff(_chunk(b"fmt ", _fmt(channels=ch)), _chunk(b"data", PCM16)), E.BAD_HEADER)
    for ch in (2, 5, 64):
        seconds = 1.2 if ch < 64 else 1.0
        add(f"{ch} channels", encode_wav(_machine(rate=8000 if ch < 64 else 4000, seconds=seconds, channels=ch),
                                         8000 if ch < 64 else 4000, "pcm16"), OK)
    for ba in (0, 1, 3):
        add(f"block align {ba}", _riff(_chunk(b"fmt ", _fmt(block_align=ba)), _chunk(b"data", PCM16)),
            E.BAD_HEADER)

    # bit depths and codecs
    for bits in (0, 4, 12, 20, 40, 64):
        add(f"{bits}-bit PCM", _riff(_chunk(b"fmt ", _fmt(bits=bits, block_align=max(bits // 8, 1))),
                                     _chunk(b"data", PCM16)), E.UNSUPPORTED_FORMAT)
    for bits in (8, 16, 24):
        add(f"{bits}-bit float", _riff(_chunk(b"fmt ", _fmt(tag=3, bits=bits)), _chunk(b"data", PCM16)),
            E.UNSUPPORTED_FORMAT)
    for tag in (0x0002, 0x0006, 0x0007, 0x0011, 0x0050, 0x0055, 0x00FF, 0x0161, 0x2000, 0xF1AC):
        add(f"codec 0x{tag:04x}", _riff(_chunk(b"fmt ", _fmt(tag=tag, bits=4, block_align=512)),
                                        _chunk(b"data", PCM16)), E.UNSUPPORTED_FORMAT)
    for sub in (2, 6, 7, 0x55):
        add(f"extensible subformat {sub:#x}", _riff(_chunk(b"fmt ", _ext(sub)), _chunk(b"data", PCM16)),
            E.UNSUPPORTED_FORMAT)
    add("extensible 17 of 16 bits", _riff(_chunk(b"fmt ", _ext(1, valid=17)), _chunk(b"data", PCM16)),
        E.BAD_HEADER)
    for fmt_name in ("pcm8", "pcm24", "pcm32", "float64"):
        add(f"{fmt_name} extensible", encode_wav(_machine(), 8000, fmt_name, extensible=True), OK)

    # NaN / inf, silence, DC offset, clipping
    for fmt_name in ("float32", "float64"):
        for bad in (np.nan, np.inf, -np.inf):
            for where in (0, 4000, -1):
                x = _machine()
                x[where] = bad
                add(f"{fmt_name} {bad} at {where}", encode_wav(x, 8000, fmt_name), E.NON_FINITE)
    # finite but beyond float32: judged on the float64 samples, not on their float32 cast (inf)
    add("float64 beyond float32 range", encode_wav(np.r_[_machine(), 1e300], 8000, "float64"), E.OUT_OF_RANGE)
    for fmt_name in ("float32", "float64"):  # finite but absurd: 1e20..1e30 once gave internal_error or null levels
        for big in (1e20, -1e25, 1e30):
            add(f"{fmt_name} sample {big:g}", encode_wav(np.r_[_machine(), big], 8000, fmt_name), E.OUT_OF_RANGE)
    for fmt_name in ("pcm8", "pcm16", "pcm24", "pcm32", "float32", "float64"):
        for ch in (1, 2):
            add(f"silence {fmt_name} x{ch}", encode_wav(np.zeros((9600, ch)), 8000, fmt_name), E.SILENT)
        add(f"DC offset {fmt_name}", encode_wav(0.4 + 0.3 * _machine(), 8000, fmt_name), OK)
        add(f"clipped {fmt_name}", encode_wav(np.clip(4 * _machine(), -1, 1), 8000, fmt_name), OK)
    add("float32 1e-7 is silent", encode_wav(1e-7 * _machine(), 8000, "float32"), E.SILENT)

    # sample rates and durations
    for rate in (8000, 11025, 16000, 22050, 44100, 48000, 96000):
        for fmt_name in ("pcm16", "float32"):
            add(f"{rate} Hz {fmt_name}", encode_wav(_machine(rate, 1.05, seed=rate), rate, fmt_name), OK)
    add("96000 Hz float32 stereo", encode_wav(_machine(96000, 1.05, channels=2), 96000, "float32"), OK)
    for rate in (1, 3999, 384001, 0xFFFFFFFF):
        add(f"{rate} Hz", _riff(_chunk(b"fmt ", _fmt(rate=rate)), _chunk(b"data", PCM16)), E.UNSUPPORTED_RATE)
    add("0 Hz", _riff(_chunk(b"fmt ", _fmt(rate=0)), _chunk(b"data", PCM16)), E.BAD_HEADER)
    for seconds in (0.001, 0.5, 0.99):
        add(f"{seconds} s", encode_wav(_machine(seconds=seconds), 8000), E.TOO_SHORT)
    add(f"{MAX_SECONDS + 0.5} s (over MAX_SECONDS)", encode_wav(_machine(4000, MAX_SECONDS + 0.5), 4000, "pcm8"),
        E.TOO_LONG)
    add("placeholder data size, 3 s", _riff(_chunk(b"fmt ", _fmt(rate=4000, bits=8)),
                                            _chunk(b"data", bytes(range(256)) * 47, size=0xFFFFFFFF)), E.TOO_LONG)

    # harmless oddities
    add("junk and fact chunks", _wav16(_chunk(b"JUNK", bytes(28)), after=_chunk(b"fact", b"\x00\x25\x00\x00")), OK)
    add("data before fmt", _riff(_chunk(b"data", PCM16), FMT16), OK)
    add("trailing garbage", _wav16(after=rng.bytes(77)), OK)
    add("odd LIST unpadded", _riff(_chunk(b"LIST", b"abc")[:-1], FMT16, _chunk(b"data", PCM16)), OK)

    # over MAX_OBJECT_BYTES: refused from the listed / announced size, never downloaded
    over = MAX_OBJECT_BYTES + 1
    add("valid WAV 1 byte over the limit", _wav16(after=bytes(over - len(_wav16()))), E.TOO_LARGE)
    add("48 kHz stereo 6 s", encode_wav(_machine(48000, 6.0, channels=2), 48000, "pcm16"), E.TOO_LARGE)
    add("junk over the limit", rng.bytes(over + 12345), E.TOO_LARGE)
    add("lying header over the limit", _riff(FMT16, _chunk(b"data", bytes(over), size=2**32 - 2)), E.TOO_LARGE)
    add("text over the limit", b"not audio\n" * (over // 10 + 1), E.TOO_LARGE)
    add("big object (40 MiB)", b"RIFF" + bytes(BIG_BYTES), E.TOO_LARGE)
    return cases


CORPUS = build_corpus()


def key_for(index: int, case: Case) -> str:
    """Keys in the `<site>/<type>/<id>/<file>.wav` layout; names keep spaces and odd characters."""
    slug = re.sub(r"[^A-Za-z0-9 .+_-]", "_", case.name)[:60]
    machine = MACHINES[index % len(MACHINES)]
    suffix = ".WAV" if index % 11 == 0 else ".wav"  # suffixes match in any case
    return f"{PREFIX}site-{index % 3}/{machine}/id_0{index % 2}/{index:04d} {slug}{suffix}"


# -------------------------------------------------------------------------------------------- fixture


@dataclass
class World:
    s3: object
    proxy: FaultProxy
    recordings: str
    grades: str
    keys: dict[str, Case]
    etags: dict[str, str]


@pytest.fixture(scope="module")
def world(s3_server):
    """The corpus uploaded once (directly); the handlers talk to the server through a counting proxy."""
    import uuid

    from signalcraft_core.io.objects import s3_client

    s3 = s3_client(endpoint_url=s3_server.endpoint_url)
    recordings, grades = f"sc-corpus-{uuid.uuid4().hex[:12]}", f"sc-grades-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=recordings)
    s3.create_bucket(Bucket=grades)
    keys = {key_for(i, c): c for i, c in enumerate(CORPUS)}

    def put(item: tuple[str, Case]) -> tuple[str, str]:
        key, case = item
        return key, s3.put_object(Bucket=recordings, Key=key, Body=case.data)["ETag"].strip('"')

    with ThreadPoolExecutor(8) as pool:
        etags = dict(pool.map(put, keys.items()))
    with FaultProxy(s3_server.endpoint_url) as proxy:
        yield World(s3, proxy, recordings, grades, keys, etags)


@pytest.fixture
def handler_env(world, monkeypatch):
    """The handlers' environment (template.yaml's variables) with the proxy as the S3 endpoint; a cold start."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", world.proxy.url)
    monkeypatch.setenv("OUTPUT_BUCKET", world.grades)
    monkeypatch.setenv("MAX_OBJECT_BYTES", str(MAX_OBJECT_BYTES))
    monkeypatch.setenv("MAX_SECONDS", str(MAX_SECONDS))
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    for name in ("MODEL_URI", "MODEL_PREFERENCE", "BATCH_SIZE", "KEY_PATTERN", "SUFFIXES", "OUTPUT_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    runtime.reset()
    yield monkeypatch
    runtime.reset()


#: Codes raised once a valid fmt chunk was read (the rate is checked before the data chunk's size).
HEADER_READ = {c.value for c in (E.TOO_SHORT, E.TOO_LONG, E.SILENT, E.NON_FINITE, E.OUT_OF_RANGE, E.UNSUPPORTED_RATE)}


def _outcomes(rows: list[dict]) -> dict[str, str]:
    return {r["key"]: (OK if r["status"] == "ok" else r["error_code"]) for r in rows}


def _check_rows(world: World, rows: list[dict], label: str, objects: dict[str, Case] | None = None) -> Counter:
    """Exactly one row per object, each with its expected outcome and a consistent shape."""
    objects = world.keys if objects is None else objects
    keys = [r["key"] for r in rows]
    dupes = [k for k, n in Counter(keys).items() if n > 1]
    assert not dupes, f"{label}: {len(dupes)} objects have more than one record, e.g. {dupes[:3]}"
    assert set(keys) == set(objects), f"{label}: missing {sorted(set(objects) - set(keys))[:5]}"
    wrong = []
    for r in rows:
        case = world.keys[r["key"]]
        got = OK if r["status"] == "ok" else r["error_code"]
        if got != case.expected:
            wrong.append(f"{case.name!r}: got {got} ({r['error_message']}), expected {case.expected}")
        if r["status"] == "ok":
            assert r["grade"] in GRADES and 0.0 <= r["score"] <= 100.0, r
        else:
            assert r["grade"] is None and r["score"] is None and r["error_message"], r
            assert "\n" not in r["error_message"] and len(r["error_message"]) <= 400, r["error_message"]
            if got in HEADER_READ:  # refused after the header was read: the row still says what the recording is
                assert r["channels_in"], r  # a rate past int32 (0xFFFFFFFF Hz) is not reported, nor its duration
                assert (r["sample_rate_in"] and r["duration_s"] is not None) or got == E.UNSUPPORTED_RATE.value, r
        assert r["bucket"] == world.recordings and r["etag"] == world.etags[r["key"]], r
        assert r["size_bytes"] == len(case.data), r
    assert not wrong, f"{label}: {len(wrong)} of {len(rows)} objects got the wrong outcome:\n" + "\n".join(wrong[:40])
    return Counter(_outcomes(rows).values())


# ---------------------------------------------------------------------------------------------- tests


def test_corpus_is_large_and_specific():
    assert len(CORPUS) >= 500
    assert len({c.name for c in CORPUS}) == len(CORPUS), "case names must be unique"
    assert len({key_for(i, c) for i, c in enumerate(CORPUS)}) == len(CORPUS)
    codes = Counter(c.expected for c in CORPUS)
    recording_codes = {E.NOT_WAV, E.BAD_HEADER, E.TRUNCATED, E.UNSUPPORTED_FORMAT, E.UNSUPPORTED_RATE, E.EMPTY,
                       E.TOO_SHORT, E.TOO_LONG, E.TOO_LARGE, E.NON_FINITE, E.OUT_OF_RANGE, E.SILENT}
    assert set(codes) == {c.value for c in recording_codes} | {OK}, codes
    small = [c for c in CORPUS if c.expected != E.TOO_LARGE.value]
    assert max(len(c.data) for c in small) <= MAX_OBJECT_BYTES
    assert all(len(c.data) > MAX_OBJECT_BYTES for c in CORPUS if c.expected == E.TOO_LARGE.value)


def _warm_up(world: World) -> None:
    """Load every model set and the scoring code once, as a warm function has (imports are not the budget)."""
    from signalcraft_core.io.events import ObjectRef
    from signalcraft_core.pipeline.grade import grade_objects

    rt = runtime.get_runtime()
    ok_key = next(k for k, c in world.keys.items() if c.expected == OK)
    for name in rt.store.set_names():
        rt.store.get(name)
    grade_objects([ObjectRef(bucket=world.recordings, key=ok_key)], rt.client, rt.store, rt.config)


def test_sweep_once_over_the_corpus(world, handler_env):
    """One sweep: one record per object with its expected code, bounded memory, over-limit objects never GET-ed."""
    world.proxy.clear()
    _warm_up(world)
    before = len(world.proxy.log)
    start = time.perf_counter()
    tracemalloc.start()
    try:
        result = fleet_sweep.handler({"bucket": world.recordings, "prefix": PREFIX, "date": DAY})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - start

    assert result["complete"] and result["records"] == len(CORPUS), result
    rows = read_grades(f"s3://{world.grades}/grades/", world.s3).to_pylist()
    raw = read_grades(f"s3://{world.grades}/grades/", world.s3, dedupe=False)
    assert raw.schema.equals(GRADE_SCHEMA, check_metadata=False)
    assert raw.num_rows == len(CORPUS), "one sweep writes each record exactly once"
    seen = _check_rows(world, rows, "sweep")
    assert seen == Counter(c.expected for c in CORPUS)

    requests = world.proxy.log[before:]
    gets = Counter(e.path for e in requests if e.method == "GET")
    over = [k for k, c in world.keys.items() if c.expected == E.TOO_LARGE.value]
    assert over and all(gets[f"/{world.recordings}/{k}"] == 0 for k in over), "an over-limit object was GET-ed"
    assert all(gets[f"/{world.recordings}/{k}"] == 1 for k in world.keys if k not in over)
    assert peak < MEMORY_LIMIT < BIG_BYTES, f"tracemalloc peak {peak / 2**20:.1f} MiB"
    print(f"\nsweep: {len(CORPUS)} objects -> {len(rows)} records in {elapsed:.1f} s, "
          f"peak {peak / 2**20:.1f} MiB, {sum(gets.values())} GETs, 0 GETs of {len(over)} over-limit objects; "
          f"outcomes {dict(sorted(seen.items()))}")


def _s3_put_event(bucket: str, key: str, size: int | None, etag: str) -> dict:
    obj = {"key": quote_plus(key), "eTag": etag, "sequencer": "0A1B2C3D4E5F678901"}
    if size is not None:
        obj["size"] = size
    return {"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
                         "eventTime": f"{DAY}T12:00:00.000Z", "eventName": "ObjectCreated:Put",
                         "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket}, "object": obj}}]}


def upload_subset(world: World) -> dict[str, Case]:
    """Every 4th object of each outcome (at least two each), and every over-limit one: a quarter of the cost."""
    rank: Counter = Counter()
    chosen = {}
    for key, case in world.keys.items():
        n = rank[case.expected]
        rank[case.expected] += 1
        if n % 4 == 0 or n < 2 or case.expected == E.TOO_LARGE.value:
            chosen[key] = case
    return chosen


def test_upload_handler_over_the_corpus_in_sqs_batches(world, handler_env):
    """A quarter of the corpus through the upload handler, 10 SQS messages per invocation: same outcomes.

    Every third event carries no size (like a hand-made event): the handler HEADs first and still
    never GETs an object over the limit.
    """
    handler_env.setenv("OUTPUT_PREFIX", "uploads/")
    world.proxy.clear()
    _warm_up(world)
    before = len(world.proxy.log)
    subset = upload_subset(world)
    assert min(Counter(c.expected for c in subset.values()).values()) >= 2
    assert set(c.expected for c in subset.values()) == set(c.expected for c in CORPUS)
    items = list(subset.items())
    failures, records = [], 0
    for start in range(0, len(items), 10):
        messages = []
        for i, (key, case) in enumerate(items[start:start + 10], start):
            size = None if i % 3 == 0 else len(case.data)
            body = json.dumps(_s3_put_event(world.recordings, key, size, world.etags[key]))
            messages.append({"messageId": f"m-{i}", "receiptHandle": "h", "eventSource": "aws:sqs",
                             "awsRegion": "us-east-1", "body": body, "attributes": {}, "messageAttributes": {}})
        result = score_upload.handler({"Records": messages})
        failures += result["batchItemFailures"]
        records += result["records"]
    assert failures == [] and records == len(subset)

    rows = read_grades(f"s3://{world.grades}/uploads/", world.s3).to_pylist()
    _check_rows(world, rows, "upload", subset)
    requests = world.proxy.log[before:]
    gets = Counter(e.path for e in requests if e.method == "GET")
    heads = Counter(e.path for e in requests if e.method == "HEAD")
    over = [k for k, c in world.keys.items() if c.expected == E.TOO_LARGE.value]
    assert all(gets[f"/{world.recordings}/{k}"] == 0 for k in over), "an over-limit object was GET-ed"
    assert any(heads[f"/{world.recordings}/{k}"] for k in over), "events without a size must HEAD first"
    sweep_rows = {r["key"]: r for r in read_grades(f"s3://{world.grades}/grades/", world.s3).to_pylist()}
    if sweep_rows:  # the sweep test ran first: same record ids (same object version, same model)
        assert {r["key"]: r["record_id"] for r in rows} == {k: sweep_rows[k]["record_id"] for k in subset}
    print(f"\nupload handler: {len(subset)} objects in {len(items) // 10 + 1} SQS batches -> {len(rows)} records, "
          f"0 GETs of {len(over)} over-limit objects")
