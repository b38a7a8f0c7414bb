"""The `signalcraft` synth / train / score / import-legacy commands: output contract and exit codes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from signalcraft_core.io.audio import encode_wav, read_wav
from signalcraft_core.local.cli.app import cli

ROOT = Path(__file__).resolve().parents[1]
SIGNALCRAFT = ROOT / ".venv" / "bin" / "signalcraft"
RECORD_KEYS = {"source", "status", "error", "grade", "score", "level1", "level2", "model", "duration_s",
               "sample_rate_in", "channels_in"}


def run(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def records(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """`synth` then `train` through the CLI: (data root, model folder)."""
    root = tmp_path_factory.mktemp("cli")
    result = run("synth", root / "data", "-m", "pump", "--normal", "8", "--abnormal", "3", "--duration", "2", "-q")
    assert result.exit_code == 0, result.output
    result = run("train", root / "data" / "pump", "--out", root / "model", "-m", "pump", "--epochs", "3", "-q")
    assert result.exit_code == 0, result.output
    return root / "data", root / "model"


def test_synth_writes_the_mimii_tree(tmp_path):
    result = run("synth", tmp_path, "-m", "valve", "--normal", "3", "--abnormal", "2", "--duration", "1.5",
                 "--machine-id", "id_04", "--seed", "7")
    assert result.exit_code == 0, result.output
    base = tmp_path / "valve" / "id_04"
    assert sorted(p.name for p in (base / "normal").iterdir()) == ["00000000.wav", "00000001.wav", "00000002.wav"]
    assert sorted(p.name for p in (base / "abnormal").iterdir()) == ["00000000.wav", "00000001.wav"]
    audio = read_wav(base / "abnormal" / "00000001.wav")
    assert (audio.sample_rate_in, audio.channels_in, audio.duration_s) == (16000, 1, 1.5)
    assert "wrote 5 clips" in result.output
    assert run("synth", tmp_path, "-m", "compressor").exit_code == 2


def test_train_writes_a_model_from_normal_clips_only(trained):
    _, model = trained
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["machine_type"] == "pump" and manifest["name"] == "pump-default"
    assert manifest["training"]["clips"] == 8  # the 3 abnormal clips are left out
    assert manifest["training"]["command"].startswith("signalcraft ")
    assert manifest["level2"]["train"]["epochs"] == 3


def test_train_says_which_short_clip_lengths_it_calibrated(trained, tmp_path):
    """8 clips of 2 s: the window is 2 s; only 1 s is both shorter than 1.5 s and a length the decoder takes."""
    data, _ = trained
    result = run("train", data / "pump", "--out", tmp_path / "model", "-m", "pump", "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert "window 2 s; shorter clips calibrated at 1 s (16 cuts) (models/clip_length.py)" in result.output
    assert "note: training clips run from" not in result.output   # all 2 s: nothing to warn about


def test_train_notes_when_its_clips_differ_widely_in_length(tmp_path):
    for sub, seconds, seed in (("short", "1.5", "1"), ("long", "6", "2")):
        result = run("synth", tmp_path / sub, "-m", "fan", "--normal", "3", "--abnormal", "0", "--duration", seconds,
                     "--seed", seed, "-q")
        assert result.exit_code == 0, result.output
    result = run("train", tmp_path / "short", tmp_path / "long", "--out", tmp_path / "model", "-m", "fan",
                 "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert "note: training clips run from 1.5 to 6 s; the model's window is their median 3.75 s" in result.output


def test_score_prints_one_json_record_per_input(trained):
    data, model = trained
    normal = sorted((data / "pump/id_00/normal").glob("*.wav"))[:2]
    abnormal = sorted((data / "pump/id_00/abnormal").glob("*.wav"))
    result = run("score", *normal, *abnormal, "--models", model)
    assert result.exit_code == 0, result.output
    out = records(result.output)
    assert [r["source"] for r in out] == [str(p) for p in normal + abnormal]
    manifest = json.loads((model / "manifest.json").read_text())
    for r in out:
        assert set(r) == RECORD_KEYS
        assert r["status"] == "ok" and r["error"] is None
        assert r["grade"] in ("NORMAL", "WARNING", "CRITICAL") and 0 <= r["score"] <= 100
        assert set(r["level1"]) >= {"score", "iforest", "rules"} and isinstance(r["level1"]["rules"], list)
        assert set(r["level2"]) == {"mse", "score"} and r["level2"]["mse"] > 0
        assert r["model"] == {"name": manifest["name"], "version": manifest["version"], "scope": "default"}
        assert (r["duration_s"], r["sample_rate_in"], r["channels_in"]) == (2.0, 16000, 1)
    assert max(r["score"] for r in out[2:]) > max(r["score"] for r in out[:2])


def test_score_expands_folders_and_levels_choose_the_score(trained):
    data, model = trained
    result = run("score", data / "pump/id_00/abnormal", "--models", model, "--level", "level2")
    assert result.exit_code == 0, result.output
    out = records(result.output)
    assert len(out) == 3
    for r in out:
        assert r["score"] == pytest.approx(r["level2"]["score"], abs=1e-3) and r["level1"]["score"] is None


def test_an_error_record_makes_exit_1(trained, tmp_path):
    data, model = trained
    fake = tmp_path / "x.wav"
    fake.write_text("I am a text file with a .wav name\n")
    good = sorted((data / "pump/id_00/normal").glob("*.wav"))[0]
    result = run("score", good, fake, tmp_path / "missing.wav", "--models", model)
    assert result.exit_code == 1
    out = records(result.output)
    assert [r["status"] for r in out] == ["ok", "error", "error"]
    assert set(out[1]) == RECORD_KEYS
    assert out[1]["error"]["code"] == "not_wav" and out[1]["error"]["message"]
    assert out[2]["error"]["code"] == "not_found"
    assert out[1]["grade"] is None and out[1]["score"] is None


def test_table_format(trained, tmp_path):
    data, model = trained
    fake = tmp_path / "x.wav"
    fake.write_bytes(b"")
    good = sorted((data / "pump/id_00/normal").glob("*.wav"))[0]
    result = run("score", good, fake, "--models", model, "--format", "table")
    lines = result.output.splitlines()
    assert result.exit_code == 1 and lines[0].split()[:4] == ["grade", "score", "L1", "L2"]
    assert lines[1].split()[0] in ("NORMAL", "WARNING", "CRITICAL") and lines[1].endswith(str(good))
    assert lines[2].startswith("ERROR") and "empty" in lines[2]


@pytest.mark.parametrize("args", [["--level", "both"], ["--format", "xml"], []])
def test_usage_errors_exit_2(trained, args):
    data, model = trained
    paths = [str(data / "pump/id_00/normal/00000000.wav")] if args else []
    result = run("score", *paths, "--models", model, *args)
    assert result.exit_code == 2 and "Usage:" in result.output


def test_train_usage_errors(tmp_path):
    wav = tmp_path / "normal" / "a.wav"
    wav.parent.mkdir()
    wav.write_bytes(encode_wav(np.full(16000, 0.1, np.float32), 16000))
    result = run("train", tmp_path, "--out", tmp_path / "m", "-m", "pump", "--profile", "nope")
    assert result.exit_code == 2 and "unknown feature profile" in result.output
    result = run("train", tmp_path, "--out", tmp_path / "m", "-m", "pump", "--warning-rate", "0.001", "--critical-rate", "0.01")
    assert result.exit_code == 2 and "--critical-rate" in result.output
    result = run("train", tmp_path, "--out", tmp_path / "m", "-m", "pump", "-q")  # one clip only
    assert result.exit_code == 1 and "at least 5" in result.output and isinstance(result.exception, SystemExit)
    (tmp_path / "empty").mkdir()
    result = run("train", tmp_path / "empty", "--out", tmp_path / "m", "-m", "pump")
    assert result.exit_code == 1 and "no normal .wav files" in result.output


def test_a_missing_models_folder_is_a_usage_error_in_a_real_process(tmp_path):
    if not SIGNALCRAFT.exists():
        pytest.skip("the console script is not installed in .venv")
    proc = subprocess.run([str(SIGNALCRAFT), "score", str(tmp_path / "x.wav"), "--models", str(tmp_path / "no-models")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [proc.stderr.strip().splitlines()[-1]] and "no-models" in errors[0] and "--models" in errors[0]


def test_a_broken_or_missing_model_set_fails_before_any_output(trained, tmp_path):
    import shutil

    data, model = trained
    clip = data / "pump/id_00/normal/00000000.wav"
    broken = Path(shutil.copytree(model, tmp_path / "broken"))
    with open(broken / "level1.joblib", "ab") as handle:
        handle.write(b"x")
    result = run("score", clip, clip, "--models", broken)  # a usage error: exit 1 would promise error records
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert records(result.output) == [] and result.output.count("Error:") == 1 and "integrity" in result.output
    # A root of per-type sets without `default`, asked about another type.
    root = tmp_path / "root"
    shutil.copytree(model, root / "pump")
    result = run("score", clip, "--models", root, "--machine-type", "fan")
    assert result.exit_code == 2 and records(result.output) == [] and "no model set for fan" in result.output
    assert run("score", clip, "--models", root).exit_code == 0  # the path names the pump set


# -------------------------------------------------------------------------------- real recordings


def all_wavs(shared_data: Path) -> list[Path]:
    return sorted(shared_data.rglob("*.wav"))


@pytest.mark.realdata
@pytest.mark.slow
def test_every_real_recording_grades_with_the_packaged_models(shared_data):
    if not (ROOT / "models" / "default" / "manifest.json").is_file():
        pytest.skip("the packaged models are absent")
    result = run("score", shared_data)
    out = records(result.output)
    assert len(out) == len(all_wavs(shared_data)) > 100
    assert [r["source"] for r in out if r["status"] != "ok"] == []
    assert result.exit_code == 0
    # The per-type sets are chosen from the path; the DCASE valve folder has no type in it.
    by_source = {Path(r["source"]).relative_to(shared_data).parts[0]: r["model"]["name"] for r in out}
    assert by_source["dcase-valve-sec00"].startswith("default")
    pump = next(r for r in out if "mimii-0dB-types/pump/" in r["source"])  # 8-channel MIMII
    assert pump["model"]["name"].startswith("pump") and pump["channels_in"] == 8


@pytest.mark.realdata
@pytest.mark.slow
def test_every_real_recording_grades_with_an_imported_legacy_set(shared_data, legacy_dir, tmp_path):
    pth = legacy_dir / "valve_autoencoder_v1.pth"
    assert run("import-legacy", pth, "--out", tmp_path / "legacy", "-q").exit_code == 0
    result = run("score", shared_data, "--models", tmp_path / "legacy")
    out = records(result.output)
    assert len(out) == len(all_wavs(shared_data))
    assert [r["source"] for r in out if r["status"] != "ok"] == []
    assert result.exit_code == 0
    assert all(r["model"]["name"] == "legacy-valve_autoencoder_v1" and r["level1"]["score"] is None for r in out)
    assert all(r["score"] == pytest.approx(100 * min(1.0, 20 * r["level2"]["mse"]), abs=1e-3) for r in out)
