"""The process a batch measurement spawns: grade a list of real clips, or time each stage of our path.

    python bench/batch_child.py ours       LIST THREADS BATCH   read + decode + both levels + Parquet bytes, batches of BATCH
    python bench/batch_child.py reference  LIST                 bench/reference.py score_file, one clip at a time
    python bench/batch_child.py breakdown  LIST BATCH           our stages one after the other on one thread (CPU per stage)
    python bench/batch_child.py featurise  LIST THREADS         dsp.inputs.featurise of the first 16 clips: time and peak RSS

LIST is a file with one WAV path per line. Prints one JSON line (wall and CPU seconds, clips, peak RSS).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from procstat import peak_rss_mib  # noqa: E402


def _paths(list_file: str) -> list[Path]:
    return [Path(line) for line in Path(list_file).read_text().splitlines() if line.strip()]


def _set_threads(threads: int) -> None:
    from signalcraft_core.dsp import inputs

    inputs.default_threads = lambda: threads  # the pipeline calls featurise without `threads`


def _parquet(model_set, paths, results) -> bytes:
    from signalcraft_core.io.events import ObjectRef
    from signalcraft_core.pipeline.grade import to_record
    from signalcraft_core.pipeline.records import parquet_bytes, records_to_file_table

    now = dt.datetime.now(dt.timezone.utc)
    records = [to_record(ObjectRef("bench", p.as_posix(), etag=f"{i:032x}"), r, model_set, None, now)
               for i, (p, r) in enumerate(zip(paths, results))]
    return parquet_bytes(records_to_file_table(records))


def _ours(paths: list[Path], threads: int, batch: int) -> dict:
    from signalcraft_core.models.model_store import ModelStore
    from signalcraft_core.pipeline.score import score_payloads

    _set_threads(threads)
    model_set = ModelStore().get("default")
    warm = [paths[0]]
    _parquet(model_set, warm, score_payloads(model_set, [warm[0].read_bytes()]))   # warm: caches, pools, pyarrow.parquet
    c0, t0 = time.process_time(), time.perf_counter()
    graded = 0
    for start in range(0, len(paths), batch):
        chunk = paths[start:start + batch]
        results = score_payloads(model_set, [p.read_bytes() for p in chunk])
        graded += sum(r.status == "ok" for r in results)
        _parquet(model_set, chunk, results)
    return {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "clips": len(paths), "graded": graded}


def _reference(paths: list[Path]) -> dict:
    import reference

    model = reference.load_model()
    reference.score_file(model, paths[0])
    c0, t0 = time.process_time(), time.perf_counter()
    for p in paths:
        reference.score_file(model, p)
    return {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "clips": len(paths), "graded": len(paths)}


def _breakdown(paths: list[Path], batch: int) -> dict:
    """CPU seconds per stage, all on this thread (numpy's FFT is single-threaded), so each stage's time is its own."""
    import numpy as np

    from signalcraft_core.dsp.descriptors import HOP_LENGTH, N_FFT, descriptors_from_spectrum
    from signalcraft_core.dsp.features import features_from_spectrum, spectral_pass
    from signalcraft_core.dsp.signal_stats import MEASUREMENTS_V2, measurements_from_spectrum, signal_stats_batch
    from signalcraft_core.io.audio import decode_wav
    from signalcraft_core.models.decision import rule_measurements
    from signalcraft_core.models.level1 import iforest_raw_score
    from signalcraft_core.models.level2 import score_level2
    from signalcraft_core.models.model_store import ModelStore
    from signalcraft_core.pipeline.score import limit_blas_threads, score_audio, tune_malloc

    limit_blas_threads()
    tune_malloc()   # the stages' temporaries reused as in production (score_audio tunes it too, later)
    model_set = ModelStore().get("default")
    measurements = rule_measurements(model_set)
    stages = dict.fromkeys(("read", "decode", "stft", "log_mel", "descriptors", "rules", "forest", "autoencoder",
                            "decision_and_write"), 0.0)

    def tick(name: str, t: float) -> float:
        now = time.thread_time()
        stages[name] += now - t
        return now

    for rep in range(2):   # the first pass warms caches and is not counted
        if rep == 1:
            stages = dict.fromkeys(stages, 0.0)
        for start in range(0, len(paths), batch):
            t = time.thread_time()
            data = [p.read_bytes() for p in paths[start:start + batch]]
            t = tick("read", t)
            audios = [decode_wav(d) for d in data]
            t = tick("decode", t)
            by_len: dict[int, list] = {}
            for a in audios:
                by_len.setdefault(a.samples.size, []).append(a)
            for group in by_len.values():
                t = time.thread_time()
                clips = np.stack([a.samples for a in group])
                spectrum = spectral_pass(clips, N_FFT, HOP_LENGTH)
                t = tick("stft", t)
                l2 = features_from_spectrum(spectrum, model_set.profile)
                t = tick("log_mel", t)
                descriptors_from_spectrum(clips, spectrum, group[0].sample_rate)
                t = tick("descriptors", t)
                if measurements == MEASUREMENTS_V2:   # the rules read the same STFT
                    stats = measurements_from_spectrum(clips, spectrum, group[0].sample_rate)
                else:                                 # a v1 set: the clip's own FFTs
                    stats = signal_stats_batch(list(clips), group[0].sample_rate, measurements)
                del spectrum
                [model_set.rules.evaluate(s) for s in stats]
                t = tick("rules", t)
                iforest_raw_score(model_set.level1_pipeline, np.zeros((len(group), 37)))
                t = tick("forest", t)
                score_level2(model_set.level2_module, l2, model_set.profile.n_mels)
                t = tick("autoencoder", t)
    # The decision, records and Parquet bytes: the whole pipe minus its featurisation, measured the same way.
    from signalcraft_core.dsp import inputs

    _set_threads(1)
    t_pipe = 0.0
    t_feat = 0.0
    real_featurise = inputs.featurise

    def counted(*args, **kwargs):
        nonlocal t_feat
        t0 = time.thread_time()
        out = real_featurise(*args, **kwargs)
        t_feat += time.thread_time() - t0
        return out

    import signalcraft_core.pipeline.score as score_mod

    score_mod.featurise = counted
    _parquet(model_set, paths[:1], score_audio(model_set, [decode_wav(paths[0].read_bytes())]))  # warm pyarrow
    t_feat = 0.0
    for start in range(0, len(paths), batch):
        chunk = paths[start:start + batch]
        audios = [decode_wav(p.read_bytes()) for p in chunk]
        t0 = time.thread_time()
        results = score_audio(model_set, audios)
        _parquet(model_set, chunk, results)
        t_pipe += time.thread_time() - t0
    stages["decision_and_write"] = max(0.0, t_pipe - t_feat - stages["forest"] - stages["autoencoder"])
    return {"stages_cpu_s": stages, "clips": len(paths)}


def _featurise(paths: list[Path], threads: int) -> dict:
    from signalcraft_core.dsp.features import get_profile
    from signalcraft_core.dsp.inputs import featurise
    from signalcraft_core.io.audio import decode_wav
    from signalcraft_core.pipeline.score import limit_blas_threads, tune_malloc

    limit_blas_threads()
    tune_malloc()   # as score_audio does: untuned, both threads page-fault fresh temporaries and serialise there
    signals = [decode_wav(p.read_bytes()).samples for p in paths[:16]]
    profile = get_profile("default")
    before = peak_rss_mib()
    featurise(signals, profile, threads=threads)
    first_peak = peak_rss_mib()
    reps = 8
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(reps):
        featurise(signals, profile, threads=threads)
    return {"wall_s": (time.perf_counter() - t0) / reps, "cpu_s": (time.process_time() - c0) / reps,
            "clips": len(signals), "rss_before_mib": before, "peak_after_first_mib": first_peak}


def main(argv: list[str]) -> int:
    mode, paths = argv[0], _paths(argv[1])
    if mode == "ours":
        out = _ours(paths, int(argv[2]), int(argv[3]))
    elif mode == "reference":
        out = _reference(paths)
    elif mode == "breakdown":
        out = _breakdown(paths, int(argv[2]))
    elif mode == "featurise":
        out = _featurise(paths, int(argv[2]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print(json.dumps({"mode": mode, **out, "peak_rss_mib": peak_rss_mib()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
