"""`signalcraft explain`: the grade, rules and worst mel bands of one clip, as text and as one PNG."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from signalcraft_core.analysis.explain import (
    explain_audio,
    format_explanation,
    mel_band_ranges,
    render_png,
)
from signalcraft_core.dsp.features import get_profile, mel_filterbank
from signalcraft_core.io.audio import read_wav
from signalcraft_core.local.cli.app import cli
from signalcraft_core.local.synth import write_dataset
from signalcraft_core.models.model_set import load_model_set
from signalcraft_core.pipeline.score import score_payloads

PUMP_MODELS = Path(__file__).resolve().parents[1] / "models" / "pump"


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """One normal and one abnormal (bearing fault) synthetic pump clip, 10 s like the training clips."""
    files = write_dataset(tmp_path_factory.mktemp("clips"), "pump", 1, 1, seed=3)
    return {path.parent.name: path for path in files}


@pytest.fixture(scope="module")
def pump():
    if not (PUMP_MODELS / "manifest.json").is_file():
        pytest.skip("packaged pump models are absent")
    return load_model_set(PUMP_MODELS)


def _run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_mel_band_ranges_follow_the_filterbank():
    profile = get_profile("default")
    ranges = mel_band_ranges(profile)
    assert ranges.shape == (profile.n_mels, 2)
    assert np.all(ranges[:, 0] < ranges[:, 1])
    assert np.all(np.diff(ranges[:, 0]) > 0) and ranges[-1, 1] <= profile.sample_rate / 2
    peaks = np.fft.rfftfreq(profile.n_fft, 1 / profile.sample_rate)[mel_filterbank(profile).argmax(axis=1)]
    assert np.all((ranges[:, 0] <= peaks) & (peaks <= ranges[:, 1]))


def test_explain_text_names_grade_rules_and_worst_bands(clips, pump):
    path = clips["abnormal"]
    expected = score_payloads(pump, [path.read_bytes()])[0]
    result = _run("explain", str(path), "--models", str(PUMP_MODELS))
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert first.startswith(f"{path.name}: {expected.grade} ")
    assert f"score {expected.score:.1f}" in first
    for rule, message in zip(expected.level1_rules, expected.rule_messages):
        assert f"{rule}: {message}" in result.output
    bands = re.findall(r"band\s+(\d+)\s+(\d+)-(\d+) Hz\s+error ([0-9.e+-]+)", result.output)
    assert len(bands) == 3
    worst = np.argsort(-np.asarray(expected.band_errors))[:3]
    assert [int(b[0]) for b in bands] == list(worst)
    ranges = mel_band_ranges(pump.profile)
    for band, low, high, _ in bands:
        assert (int(low), int(high)) == tuple(int(round(v)) for v in ranges[int(band)])


def test_explain_png_is_one_readable_image(clips, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "why.png"
    result = _run("explain", str(clips["abnormal"]), "--models", str(PUMP_MODELS), "--png", str(out), "--quiet")
    assert result.exit_code == 0, result.output
    assert result.output == ""
    data = out.read_bytes()
    width, height = _png_size(data)
    assert width >= 1000 and height >= 600
    assert 20_000 < len(data) < 300_000


def test_model_sets_without_rules_or_level2(clips, pump):
    no_rules = dataclasses.replace(pump, rules=None)
    explanation = explain_audio(no_rules, read_wav(clips["normal"]), source="normal.wav")
    assert explanation.result.level1_rules == ()
    text = format_explanation(explanation)
    assert text.startswith(f"normal.wav: {explanation.result.grade} ") and "rules that fired: none" in text
    level1_only = dataclasses.replace(pump, level2_module=None, level2_calibration=None)
    bare = explain_audio(level1_only, read_wav(clips["abnormal"]), source="abnormal.wav")
    assert bare.top_bands == () and bare.result.level2_score is None
    assert "none (this model set has no Level 2)" in format_explanation(bare)
    if importlib.util.find_spec("matplotlib") is not None:
        assert _png_size(render_png(bare)) == _png_size(render_png(explanation))


def test_errors_are_one_line(clips, tmp_path, monkeypatch):
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all\n")
    result = _run("explain", str(text), "--models", str(PUMP_MODELS))
    assert result.exit_code == 1 and "not_wav" in result.output
    assert len(result.output.strip().splitlines()) == 1
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = _run("explain", str(clips["normal"]), "--models", str(PUMP_MODELS), "--png", str(tmp_path / "x.png"))
    assert result.exit_code == 1 and "signalcraft-scoring[plot]" in result.output
    assert not (tmp_path / "x.png").exists()
