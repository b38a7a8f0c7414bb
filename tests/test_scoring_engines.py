"""The torch-free, scikit-learn-free and scipy-free scoring paths give the libraries' numbers.

forest.py scores the Level-1 pipeline with numpy, level2_numpy.py runs the exported autoencoder
with numpy, signal_stats.py computes the v1 envelope spectrum with numpy's FFT: each is checked here
against the library it replaces (the engines fall back to theirs for anything they do not know),
and a fresh process that grades a clip imports none of torch, scikit-learn or scipy.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from signalcraft_core.dsp.signal_stats import (
    ENVELOPE_BAND_HZ,
    ENVELOPE_SEARCH_HZ,
    FLOOR_DB,
    MEASUREMENT_VERSIONS,
    MEASUREMENTS_V1,
    MEASUREMENTS_V2,
    signal_stats,
    signal_stats_batch,
)
from signalcraft_core.models.forest import CompiledForest, load_forest
from signalcraft_core.models.level2 import load_scoring_module, score_level2
from signalcraft_core.models.level2_numpy import NumpyScoringModule, load_numpy_module

ROOT = Path(__file__).resolve().parents[1]
MODEL_SETS = sorted(p.parent for p in (ROOT / "models").glob("*/manifest.json"))


# --- Level 1 forest ------------------------------------------------------------------------------

@pytest.mark.parametrize("model_dir", MODEL_SETS, ids=lambda p: p.name)
def test_numpy_forest_equals_sklearn_pipeline(model_dir: Path) -> None:
    import joblib

    path = model_dir / "level1.joblib"
    forest = load_forest(path)
    pipeline = joblib.load(path)
    assert isinstance(forest, CompiledForest)
    rng = np.random.default_rng(0)
    mean, scale = pipeline[0].mean_, pipeline[0].scale_
    x = mean + scale * rng.standard_normal((300, mean.size)) * rng.choice([0.3, 1.0, 4.0], size=(300, 1))
    x[0, 5] = np.nan                       # a missing value takes scikit-learn's side of the split
    x[1] = mean                             # the centre of the training data
    assert np.array_equal(forest.score_samples(x), pipeline.score_samples(x))


def test_forest_with_subsampled_features_and_no_scaler(tmp_path: Path) -> None:
    import joblib
    from sklearn.ensemble import IsolationForest

    rng = np.random.default_rng(1)
    model = IsolationForest(n_estimators=30, max_features=0.5, max_samples=50, random_state=3).fit(rng.normal(size=(80, 9)))
    joblib.dump(model, tmp_path / "f.joblib")
    forest = load_forest(tmp_path / "f.joblib")
    x = rng.normal(size=(40, 9)) * 3
    assert forest is not None and np.array_equal(forest.score_samples(x), model.score_samples(x))


def test_unknown_pipeline_falls_back_to_joblib(tmp_path: Path) -> None:
    import joblib
    from sklearn.ensemble import IsolationForest
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler

    rng = np.random.default_rng(2)
    joblib.dump(make_pipeline(MinMaxScaler(), IsolationForest(n_estimators=10, random_state=0)).fit(rng.normal(size=(50, 4))),
                tmp_path / "p.joblib")
    (tmp_path / "junk.joblib").write_bytes(b"not a pickle at all")
    assert load_forest(tmp_path / "p.joblib") is None
    assert load_forest(tmp_path / "junk.joblib") is None


# --- Level 2 autoencoder -------------------------------------------------------------------------

def _torch_errors(path: Path, x: np.ndarray) -> np.ndarray:
    import torch

    module = torch.jit.load(str(path), map_location="cpu").eval()
    with torch.inference_mode():
        return module(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("model_dir", MODEL_SETS, ids=lambda p: p.name)
def test_numpy_autoencoder_equals_torchscript(model_dir: Path) -> None:
    path = model_dir / "autoencoder.pt"
    module = load_numpy_module(path)
    assert isinstance(module, NumpyScoringModule)
    x = (module.mean + module.scale * np.random.default_rng(3).standard_normal((50, module.mean.size)) * 2).astype(np.float32)
    np.testing.assert_allclose(module.errors(x), _torch_errors(path, x), rtol=1e-5, atol=1e-7)


def test_numpy_autoencoder_reads_an_imported_legacy_model(legacy_dir: Path, tmp_path: Path) -> None:
    from signalcraft_core.training.legacy import import_legacy

    import_legacy(legacy_dir / "valve_autoencoder_v1.pth", tmp_path)
    module = load_numpy_module(tmp_path / "autoencoder.pt")
    assert isinstance(module, NumpyScoringModule)
    x = np.random.default_rng(4).random((20, 64)).astype(np.float32)
    np.testing.assert_allclose(module.errors(x), _torch_errors(tmp_path / "autoencoder.pt", x), rtol=1e-5, atol=1e-8)


def test_numpy_autoencoder_reads_renamed_classes(tmp_path: Path) -> None:
    """TorchScript renames classes compiled twice in one process (`___torch_mangle_N`), e.g. by a training run."""
    import zipfile

    from signalcraft_core.training.autoencoder import (
        Autoencoder,
        ScoringModule,
        export_torchscript,
    )

    for i, dropout in enumerate((0.2, 0.1, 0.3)):  # another Dropout constant is another TorchScript type
        module = ScoringModule(Autoencoder(8, dropout=dropout), np.zeros(8, np.float32), np.ones(8, np.float32)).eval()
        export_torchscript(module, tmp_path / f"m{i}.pt")
    assert any("___torch_mangle_" in n for n in zipfile.ZipFile(tmp_path / "m2.pt").namelist() if "signalcraft_core" in n)
    numpy_module = load_numpy_module(tmp_path / "m2.pt")
    assert isinstance(numpy_module, NumpyScoringModule)
    x = np.random.default_rng(5).random((6, 8)).astype(np.float32)
    np.testing.assert_allclose(numpy_module.errors(x), _torch_errors(tmp_path / "m2.pt", x), rtol=1e-5, atol=1e-7)


def test_other_torchscript_modules_run_on_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    class Doubling(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (2 * x) ** 2

    torch.jit.script(Doubling()).save(str(tmp_path / "other.pt"))
    (tmp_path / "broken.pt").write_bytes(b"PK\x03\x04 not really a zip")
    assert load_numpy_module(tmp_path / "other.pt") is None
    assert load_numpy_module(tmp_path / "broken.pt") is None
    module = load_scoring_module(tmp_path / "other.pt")
    assert not isinstance(module, NumpyScoringModule)
    result = score_level2(module, np.ones((3, 4), np.float32), n_mels=2)
    assert np.allclose(result.mse, 4.0) and result.band_errors.shape == (3, 2)
    monkeypatch.setenv("SIGNALCRAFT_LEVEL2_ENGINE", "torch")
    assert not isinstance(load_scoring_module(MODEL_SETS[0] / "autoencoder.pt"), NumpyScoringModule)


# --- rules: envelope spectrum --------------------------------------------------------------------

def _strongest_line(freqs: np.ndarray, psd: np.ndarray) -> tuple[float, float]:
    """(dB above the median, Hz) of the strongest envelope line in the search range, written plainly."""
    sel = (freqs >= ENVELOPE_SEARCH_HZ[0]) & (freqs <= ENVELOPE_SEARCH_HZ[1])
    if np.count_nonzero(sel) < 3:
        return 0.0, 0.0
    band, band_f = psd[sel], freqs[sel]
    i = int(np.argmax(band))
    if band[i] <= 0:
        return 0.0, 0.0
    median = max(float(np.median(band)), float(band[i]) * 10.0 ** (FLOOR_DB / 10.0))
    return 10.0 * math.log10(float(band[i]) / median), float(band_f[i])


def _scipy_envelope_peak(x: np.ndarray, sample_rate: int) -> tuple[float, float]:
    """The scipy.signal recipe rules.py replaced (butter + sosfilt, hilbert, welch)."""
    from scipy.fft import next_fast_len
    from scipy.signal import butter, hilbert, sosfilt, welch

    nyquist = sample_rate / 2.0
    lo, hi = ENVELOPE_BAND_HZ
    if hi < 0.95 * nyquist:
        y = sosfilt(butter(4, [lo, hi], btype="bandpass", fs=sample_rate, output="sos"), x)
    elif lo < 0.95 * nyquist:
        y = sosfilt(butter(4, lo, btype="highpass", fs=sample_rate, output="sos"), x)
    else:
        y = x
    envelope = np.abs(hilbert(y, N=next_fast_len(y.size)))[: y.size]
    freqs, psd = welch(envelope, fs=sample_rate, window="hann", nperseg=min(envelope.size, int(sample_rate)),
                       detrend="linear")
    return _strongest_line(freqs, psd)


def _impacts(n: int, sample_rate: int, rate_hz: float, rng: np.random.Generator) -> np.ndarray:
    x = rng.normal(0, 0.01, n)
    x[:: int(sample_rate / rate_hz)] += 0.5
    return x


@pytest.mark.parametrize("sample_rate", [8000, 16000, 22050, 44100, 48000])
@pytest.mark.parametrize("seconds", [0.005, 0.4, 1.0, 3.3])
def test_envelope_spectrum_matches_scipy_signal(sample_rate: int, seconds: float) -> None:
    """numpy's FFT on the clip's own grid (the filter applied circularly) against butter + sosfilt, hilbert, welch.

    Tolerance 0.01 dB: the circular filter lets the clip's last milliseconds ring into its first ones,
    which moves the spectrum of the shortest clips most (a 0.4 s clip of noise: below 0.005 dB).
    """
    rng = np.random.default_rng(sample_rate + int(seconds * 10))
    n = max(1, int(seconds * sample_rate))
    for x in (rng.normal(0, 0.1, n), _impacts(n, sample_rate, 37.0, rng), np.zeros(n)):
        stats = signal_stats(x.astype(np.float32), sample_rate, MEASUREMENTS_V1)
        db, hz = _scipy_envelope_peak(x.astype(np.float32).astype(np.float64), sample_rate)
        assert stats.envelope_peak_hz == hz
        assert stats.envelope_peak_db == pytest.approx(db, abs=0.01)


def _reference_v2_envelope_peak(x: np.ndarray, sample_rate: int) -> tuple[float, float]:
    """v2's envelope line written plainly: np.convolve with the 13-tap high-pass, |y|, block means, scipy's welch."""
    from scipy.signal import welch

    average = max(3, 2 * round((7 * sample_rate / 16000 - 1) / 2) + 1)
    block = max(1, round(8 * sample_rate / 16000))
    y = x
    if ENVELOPE_BAND_HZ[0] < 0.95 * sample_rate / 2:
        high_pass = -np.ones(average) / average
        high_pass[average // 2] += 1.0
        y = np.convolve(np.convolve(x, high_pass, "valid"), high_pass, "valid")
    count = y.size // block
    if count < 1:
        return 0.0, 0.0
    envelope = np.abs(y[:count * block]).reshape(count, block).mean(axis=1)
    rate = sample_rate / block
    freqs, psd = welch(envelope, fs=rate, window="hann", nperseg=min(count, int(rate)), detrend="linear")
    return _strongest_line(freqs, psd)


@pytest.mark.parametrize("sample_rate", [8000, 16000, 22050, 44100, 48000])
@pytest.mark.parametrize("seconds", [0.005, 0.4, 1.0, 3.3])
def test_v2_envelope_line_matches_its_plain_definition(sample_rate: int, seconds: float) -> None:
    """The shifted-add high-pass, float32 envelope and numpy Welch against convolve + scipy.signal.welch in float64."""
    rng = np.random.default_rng(sample_rate + int(seconds * 10) + 1)
    n = max(1, int(seconds * sample_rate))
    for x in (rng.normal(0, 0.1, n), _impacts(n, sample_rate, 37.0, rng), np.zeros(n)):
        stats = signal_stats(x.astype(np.float32), sample_rate, MEASUREMENTS_V2)
        db, hz = _reference_v2_envelope_peak(x.astype(np.float32).astype(np.float64), sample_rate)
        assert stats.envelope_peak_hz == pytest.approx(hz, abs=1e-9)
        assert stats.envelope_peak_db == pytest.approx(db, abs=0.01)


@pytest.mark.parametrize("measurements", MEASUREMENT_VERSIONS)
def test_batched_signal_stats_equal_one_by_one(measurements: int) -> None:
    rng = np.random.default_rng(11)
    clips = [rng.normal(0, 0.05, 16000).astype(np.float32), _impacts(16000, 16000, 50.0, rng).astype(np.float32),
             rng.normal(0, 0.2, 8000).astype(np.float32), np.clip(rng.normal(0, 0.8, 16000), -1, 1).astype(np.float32)]
    batched = signal_stats_batch(clips, 16000, measurements)
    single = [signal_stats(c, 16000, measurements) for c in clips]
    for b, s in zip(batched, single):
        assert b.band_share_db == pytest.approx(s.band_share_db, abs=1e-9)
        assert b.envelope_peak_db == pytest.approx(s.envelope_peak_db, abs=1e-9)
        assert (b.rms_dbfs, b.peak, b.clip_fraction, b.envelope_peak_hz) == (s.rms_dbfs, s.peak, s.clip_fraction, s.envelope_peak_hz)


# --- the cold path -------------------------------------------------------------------------------

def test_grading_a_clip_imports_no_torch_sklearn_or_scipy() -> None:
    script = """
import json, sys
import numpy as np
from signalcraft_core.io.audio import encode_wav
from signalcraft_core.models.model_store import ModelStore
from signalcraft_core.pipeline.score import score_payloads
from signalcraft_core.local.synth import synthesize_clip
clip = synthesize_clip("pump", "bearing_fault", np.random.default_rng(0), duration_s=2.0)
(result,) = score_payloads(ModelStore().get("pump"), [encode_wav(clip, 16000)])
heavy = sorted(m for m in ("torch", "sklearn", "scipy") if m in sys.modules)
print(json.dumps({"status": result.status, "l1": result.level1_score, "l2": result.level2_score, "heavy": heavy}))
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["status"] == "ok" and report["l1"] is not None and report["l2"] is not None
    assert report["heavy"] == []
