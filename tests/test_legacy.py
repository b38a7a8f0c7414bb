"""Importing the earlier app's autoencoders: same MSE as the state dict run by plain torch, old or new scale."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from signalcraft_core.dsp.features import clip_features, get_profile
from signalcraft_core.io.audio import decode_wav, encode_wav
from signalcraft_core.local.cli.app import cli
from signalcraft_core.local.synth import synthesize_clip
from signalcraft_core.models.grading import grade
from signalcraft_core.models.manifest import sha256_file
from signalcraft_core.models.model_set import load_model_set
from signalcraft_core.pipeline.score import score_payloads

#: (state dict file, machine type the import infers, a real normal clip of that machine)
LEGACY = {
    "valve_autoencoder_v1.pth": ("valve", "dcase-valve-sec00/normal"),
    "autoencoder.pth": ("pump", "mimii-0dB-types/pump/id_00/normal"),
}


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def plain_autoencoder(pth: Path):
    """The old architecture rebuilt by hand from the README, with no signalcraft code involved."""
    import torch
    from torch import nn

    state = torch.load(str(pth), map_location="cpu", weights_only=True)
    encoder = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 16))
    decoder = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64))
    encoder.load_state_dict({k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")})
    decoder.load_state_dict({k[len("decoder."):]: v for k, v in state.items() if k.startswith("decoder.")})
    return nn.Sequential(encoder, decoder).eval()


def direct_mse(pth: Path, payload: bytes) -> float:
    import torch

    x = torch.from_numpy(clip_features([decode_wav(payload).samples], get_profile("seed")))
    with torch.no_grad():
        return float(((plain_autoencoder(pth)(x) - x) ** 2).mean())


@pytest.fixture(scope="module", params=sorted(LEGACY))
def imported(request, legacy_dir, tmp_path_factory):
    pth = legacy_dir / request.param
    if not pth.is_file():
        pytest.skip(f"{pth} is absent")
    out = tmp_path_factory.mktemp("legacy") / pth.stem
    result = run("import-legacy", str(pth), "--out", str(out), "--quiet")
    assert result.exit_code == 0, result.output
    return pth, out


def clip_payloads(pth: Path, shared_data: Path) -> list[bytes]:
    machine, folder = LEGACY[pth.name]
    real = sorted((shared_data / folder).glob("*.wav"))[0]
    synthetic = synthesize_clip(machine, None, np.random.default_rng(0), 2.0)
    return [real.read_bytes(), encode_wav(synthetic, 16000)]


@pytest.mark.realdata
def test_imported_mse_equals_the_state_dict_run_directly(imported, shared_data):
    pth, out = imported
    model_set = load_model_set(out)
    payloads = clip_payloads(pth, shared_data)
    results = score_payloads(model_set, payloads)
    assert [r.status for r in results] == ["ok", "ok"]
    for payload, result in zip(payloads, results):
        assert result.level2_mse == pytest.approx(direct_mse(pth, payload), abs=1e-6)
    assert results[0].level2_mse != pytest.approx(results[1].level2_mse, abs=1e-6)


def test_imported_manifest_describes_the_source(imported):
    pth, out = imported
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["machine_type"] == LEGACY[pth.name][0]
    assert manifest["name"] == f"legacy-{pth.stem}" and manifest["preference"] == "level2"
    assert manifest["profile"] == get_profile("seed").to_dict()
    assert set(manifest["artifacts"]) == {"autoencoder"} and manifest["level1"] is None
    assert manifest["training"]["imported_from"] == pth.name
    assert manifest["training"]["source_sha256"] == sha256_file(pth)
    model_set = load_model_set(out)
    assert model_set.has_level2 and not model_set.has_level1


def test_default_calibration_is_the_old_mapping(imported):
    _, out = imported
    cal = load_model_set(out).level2_calibration
    assert cal.method == "linear"
    mse = np.array([0.0, 0.005, 0.02, 0.0249, 0.0251, 0.039, 0.041, 0.05, 0.2])
    old_score = np.minimum(1.0, 20.0 * mse)
    np.testing.assert_allclose(cal.score(mse), 100.0 * old_score, atol=1e-9)
    old_grade = ["CRITICAL" if s > 0.8 else "WARNING" if s > 0.5 else "NORMAL" for s in old_score]
    assert [grade(float(s)).value for s in cal.score(mse)] == old_grade


@pytest.mark.realdata
def test_graded_clips_follow_the_old_score(imported, shared_data):
    pth, out = imported
    for r in score_payloads(load_model_set(out), clip_payloads(pth, shared_data)):
        assert r.score == pytest.approx(100.0 * min(1.0, 20.0 * r.level2_mse), abs=1e-3)
        assert r.level1_score is None and r.level1_rules == ()


def test_calibrate_fits_a_gamma_mapping_on_the_given_normals(imported, tmp_path):
    from signalcraft_core.local.synth import write_dataset

    pth, plain = imported
    machine = LEGACY[pth.name][0]
    write_dataset(tmp_path / "data", machine, 8, 2, seed=3, duration_s=2.0)
    out = tmp_path / "calibrated"
    result = run("import-legacy", str(pth), "--out", str(out), "--calibrate", str(tmp_path / "data"))
    assert result.exit_code == 0, result.output
    assert "calibration: gamma" in result.output
    calibrated, uncalibrated = load_model_set(out), load_model_set(plain)
    cal = calibrated.level2_calibration
    assert cal.method == "gamma" and cal.n_clips == 8  # the 2 abnormal clips are left out
    assert calibrated.manifest["training"]["calibration_clips"] == 8
    assert float(cal.score(cal.warning_raw)) == pytest.approx(50.0, abs=1e-3)
    # Same network, new scale: the MSE is unchanged, the score is not the old one.
    payload = encode_wav(synthesize_clip(machine, None, np.random.default_rng(9), 2.0), 16000)
    new, old = score_payloads(calibrated, [payload])[0], score_payloads(uncalibrated, [payload])[0]
    assert new.level2_mse == pytest.approx(old.level2_mse, rel=1e-9)
    assert new.score == pytest.approx(float(cal.score(new.level2_mse)), abs=1e-3)
    assert new.score != pytest.approx(old.score, abs=0.1)


def test_machine_type_override_and_bad_inputs(legacy_dir, tmp_path):
    pth = legacy_dir / "autoencoder.pth"
    result = run("import-legacy", str(pth), "--out", str(tmp_path / "m"), "-m", "fan", "-q")
    assert result.exit_code == 0 and result.output == ""
    assert load_model_set(tmp_path / "m").machine_type == "fan"
    # Too few clips to calibrate on.
    (tmp_path / "few").mkdir()
    (tmp_path / "few" / "a.wav").write_bytes(encode_wav(np.full(16000, 0.1, np.float32), 16000))
    result = CliRunner().invoke(cli, ["import-legacy", str(pth), "--out", str(tmp_path / "n"), "--calibrate", str(tmp_path / "few")])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit) and "at least 3" in result.output
    # Not a state dict of the old network.
    bogus = tmp_path / "bogus.pth"
    bogus.write_bytes(b"not a checkpoint")
    result = CliRunner().invoke(cli, ["import-legacy", str(bogus), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)  # a ClickException, not a crash
    assert "Error:" in result.output and "bogus.pth" in result.output and "Traceback" not in result.output
