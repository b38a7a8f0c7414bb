"""Bounded memory on legal inputs (issue 11.4): the upload handler's peak RSS, the coprime-rate resampler, batches by bytes.

The handler runs in a fresh process (its own VmHWM) against the loopback S3 server of this session,
on a 120 s, 96 kHz, 16-bit stereo WAV: structurally the 595 s / 218 MiB case of bench/memory_peaks.py
(same decoder path: stereo mix-down, 6:1 polyphase resampling, windowed scoring), small enough for a
test. The code before issue 11 held the whole object, a float copy at 96 kHz and the resampled
signal: 419 MiB peak here (+235 MiB over a 10 s clip); streaming keeps it within +60 MiB.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from handler_env import configure_handlers

from signalcraft_core.io.audio import decode_wav, encode_wav
from signalcraft_core.local.sample_events import generate_event

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

#: Peak RSS above the runtime's own (a 10 s clip through the same handler in a fresh process).
MAX_OVER_FLOOR_MIB = 100
GOAL_MIB = 300

CHILD = """
import json, sys
sys.path.insert(0, {root!r}); sys.path.insert(0, {bench!r})
from handlers import score_upload
from procstat import peak_rss_mib
result = score_upload.handler(json.loads(sys.stdin.read()))
print(json.dumps({{"result": {{k: result[k] for k in ("records", "grades", "errors")}}, "peak": peak_rss_mib()}}))
"""


def _peak_through_handler(s3, bucket: str, key: str, data: bytes, env: dict[str, str]) -> tuple[float, dict]:
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    head = s3.head_object(Bucket=bucket, Key=key)
    event = generate_event("s3-put", bucket, key, size=head["ContentLength"], etag=head["ETag"].strip('"'))
    code = CHILD.format(root=str(ROOT), bench=str(ROOT / "bench"))
    proc = subprocess.run([sys.executable, "-c", code], input=json.dumps(event), capture_output=True, text=True,
                          env=env, cwd=str(ROOT), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return out["peak"], out["result"]


@pytest.mark.slow
def test_upload_handler_peak_on_a_long_96k_stereo_file(s3_server, s3, make_bucket, monkeypatch):
    import os

    from memory_peaks import wav_bytes

    recordings, grades = make_bucket(), make_bucket()
    configure_handlers(monkeypatch, s3_server.endpoint_url, grades)
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    floor, small = _peak_through_handler(s3, recordings, "site-a/pump/id_00/short.wav", wav_bytes(10, 16000, 1), env)
    big_data = wav_bytes(120, 96000, 2)
    assert len(big_data) > 43 * 2**20
    peak, big = _peak_through_handler(s3, recordings, "site-a/pump/id_00/long.wav", big_data, env)
    assert small["records"] == 1 and big["records"] == 1 and not big["errors"], big
    assert peak - floor < MAX_OVER_FLOOR_MIB, f"peak {peak:.0f} MiB, {peak - floor:.0f} over the {floor:.0f} MiB floor"
    assert peak < GOAL_MIB


@pytest.mark.slow
def test_coprime_rate_decodes_in_bounded_time_and_memory():
    """383,999 Hz: resample_poly would design a 7.7 M-tap filter (466 MiB, 2.7 s); ours stays bounded."""
    rate = 383_999
    t = np.arange(rate * 2) / rate
    data = encode_wav(0.3 * np.sin(2 * np.pi * 440.0 * t), rate, "pcm16")
    decode_wav(encode_wav(0.3 * np.sin(np.arange(48000) * 0.1), 48000))  # first call (lazy imports) outside the measure
    tracemalloc.start()
    try:
        cpu = time.process_time()
        audio = decode_wav(data)
        cpu = time.process_time() - cpu
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(audio.samples) == 32_000
    assert cpu < 0.5, f"{cpu:.2f} s CPU"
    assert peak < 16 * 2**20, f"{peak / 2**20:.0f} MiB"  # the input is 1.5 MiB; the output 125 KiB


@pytest.mark.slow
def test_batches_are_sized_by_decoded_bytes(s3_server, s3, make_bucket, monkeypatch):
    """Long recordings are not all held at once; short clips still share one batch of BATCH_SIZE."""
    from signalcraft_core.config import Settings
    from signalcraft_core.io.events import ObjectRef
    from signalcraft_core.models.model_store import ModelStore
    from signalcraft_core.pipeline import grade

    bucket = make_bucket()
    batches: list[tuple[int, int]] = []
    real = grade.score_decoded

    def spy(model_set, items, preference=None):
        batches.append((len(items), sum(getattr(a, "samples", np.empty(0)).nbytes for a in items)))
        return real(model_set, items, preference)

    monkeypatch.setattr(grade, "score_decoded", spy)  # our own function, observed; nothing is faked
    monkeypatch.setattr(grade, "MAX_DECODED_BYTES", 12 * 2**20)
    rng = np.random.default_rng(3)
    long_clip = encode_wav(0.1 * rng.standard_normal(16000 * 90), 16000)  # 5.5 MiB decoded
    short_clip = encode_wav(0.1 * rng.standard_normal(16000 * 10), 16000)
    refs = []
    for i in range(6):
        key = f"pump/id_00/long-{i}.wav"
        s3.put_object(Bucket=bucket, Key=key, Body=long_clip)
        refs.append(ObjectRef(bucket=bucket, key=key))
    settings = Settings(output_bucket=bucket, batch_size=16, io_threads=8)
    store = ModelStore()
    records = grade.grade_objects(refs, s3, store, settings)
    assert [r.status for r in records] == ["ok"] * 6 and [r.key for r in records] == [r.key for r in refs]
    assert sum(n for n, _ in batches) == 6 and len(batches) >= 3
    assert all(nbytes <= 12 * 2**20 for _, nbytes in batches), batches
    batches.clear()
    short = []
    for i in range(16):
        key = f"pump/id_00/short-{i}.wav"
        s3.put_object(Bucket=bucket, Key=key, Body=short_clip)
        short.append(ObjectRef(bucket=bucket, key=key))
    monkeypatch.setattr(grade, "MAX_DECODED_BYTES", 40 * 2**20)
    assert len(grade.grade_objects(short, s3, store, settings)) == 16
    assert batches == [(16, 16 * 160_000 * 4)]
