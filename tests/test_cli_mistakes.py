"""User mistakes end in one `Error:` line and the README's exit code, before any work starts, never a traceback.

Each test names the mistake an audit of the CLI found (files for folders, bare `s3://`, binary events,
templates that are not YAML, parameters CloudFormation refuses, folders with nothing to grade ...).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from signalcraft_core.io.audio import encode_wav
from signalcraft_core.local.cli.app import FriendlyGroup, cli

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "template.yaml"


def run(*args, **kwargs):
    return CliRunner().invoke(cli, [str(a) for a in args], **kwargs)


def error_line(result, exit_code: int, *needles: str) -> str:
    """The one `Error:` line of a failed command (click's usage lines may come before it), checked."""
    assert result.exit_code == exit_code, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # not an uncaught exception
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and errors[0] == result.output.strip().splitlines()[-1], result.output
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def wav_bytes(seconds: float = 1.0, seed: int = 0) -> bytes:
    from signalcraft_core.local.synth import synthesize_clip

    return encode_wav(synthesize_clip("pump", None, np.random.default_rng(seed), seconds), 16000)


@pytest.fixture
def clips(tmp_path) -> Path:
    """A folder of six short normal clips."""
    folder = tmp_path / "data" / "normal"
    folder.mkdir(parents=True)
    for i in range(6):
        (folder / f"{i}.wav").write_bytes(wav_bytes(1.0, i))
    return tmp_path / "data"


# ------------------------------------------------------------------ #2 file-system errors


def test_train_refuses_an_out_that_is_a_file_before_training(clips, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a folder")
    error_line(run("train", clips, "--out", notes, "-m", "pump"), 2, "--out", "notes.txt is not a folder")
    error_line(run("train", clips, "--out", notes / "model", "-m", "pump"), 2, "--out", "notes.txt is not a folder")


def test_import_legacy_refuses_an_out_below_a_file(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a folder")
    error_line(run("import-legacy", notes, "--out", notes / "model"), 2, "--out", "notes.txt is not a folder")


def test_synth_under_a_file_is_one_os_error_line(tmp_path):
    (tmp_path / "pump").mkdir()
    (tmp_path / "pump" / "id_00").write_text("a file where synth makes a folder")
    error_line(run("synth", tmp_path, "-m", "pump", "--normal", "1", "--abnormal", "0", "--duration", "1"), 1,
               "Not a directory", "id_00")


@pytest.mark.parametrize("exc, line", [
    (FileExistsError(17, "File exists", "models/pump"), "Error: File exists: models/pump"),
    (OSError(28, "No space left on device"), "Error: No space left on device"),
    (OSError("socket closed"), "Error: socket closed"),
])
def test_any_os_error_is_one_line(exc, line):
    import click

    group = FriendlyGroup()

    @group.command()
    def fail() -> None:
        raise exc

    result = CliRunner().invoke(group, ["fail"])
    assert result.exit_code == 1 and result.output.strip() == line


# ------------------------------------------------------------------ #3 s3:// without a bucket


@pytest.mark.parametrize("where", ["data", "out"])
def test_a_bare_s3_uri_is_a_usage_error(clips, tmp_path, where):
    data, out = ("s3://", tmp_path / "m") if where == "data" else (clips, "s3://")
    error_line(run("train", data, "--out", out, "-m", "pump"), 2, "'s3://' names no bucket")


def test_report_and_explain_check_their_locations_first(tmp_path):
    error_line(run("report", "--grades", "s3://"), 2, "'s3://' names no bucket")
    wav = tmp_path / "a.wav"
    wav.write_bytes(wav_bytes())
    error_line(run("explain", wav, "--models", "s3://b/models/"), 2, "explain reads local model folders only")


def test_train_data_that_does_not_exist_is_a_usage_error(tmp_path):
    error_line(run("train", tmp_path / "nope", "--out", tmp_path / "m", "-m", "pump"), 2, "DATA", "nope does not exist")


# ------------------------------------------------------------------ #5 local invoke


def test_a_binary_event_is_one_line(tmp_path):
    event = tmp_path / "some.wav"
    event.write_bytes(wav_bytes())
    error_line(run("local", "invoke", "ScoreUploadFunction", "-t", TEMPLATE, "-e", event), 1,
               f"event {event} is not UTF-8 JSON")


def test_a_template_that_is_not_yaml_names_the_line(tmp_path):
    template = tmp_path / "template.yaml"
    template.write_text("Resources:\n  a: [unclosed\n")
    error_line(run("local", "invoke", "ScoreUploadFunction", "-t", template), 1,
               "not valid YAML", "line 3", "flow sequence on line 2")


@pytest.mark.parametrize("override, needle", [
    ("LogLevel=bogus", "LogLevel: 'bogus' is not one of DEBUG, INFO, WARNING, ERROR"),
    ("UploadMemoryMB=abc", "UploadMemoryMB is a Number: 'abc' is not a number"),
    ("UploadMemoryMB=100", "UploadMemoryMB: 100 is outside 384..10240"),
    ("UploadMemoryMB=nan", "is not a number"),
])
def test_parameters_cloudformation_refuses_are_refused(override, needle):
    error_line(run("local", "invoke", "ScoreUploadFunction", "-t", TEMPLATE, "--parameter-overrides", override),
               1, needle)


def test_parameter_values_are_checked_against_the_template():
    from signalcraft_core.local.sam_template import check_parameter_values, load_template

    template = load_template(TEMPLATE)
    check_parameter_values(template, {"LogLevel": "DEBUG", "UploadMemoryMB": "1024", "LogRetentionDays": "14"})
    with pytest.raises(ValueError, match="LogRetentionDays"):
        check_parameter_values(template, {"LogRetentionDays": "13"})


def test_a_bad_log_level_from_the_shell_is_one_line(monkeypatch):
    monkeypatch.setenv("LOG_LEVEL", "bogus")
    error_line(run("sweep", "--bucket", "recordings"), 1, "LOG_LEVEL 'bogus' is not a log level")


# ------------------------------------------------------------------ #7 folders with nothing to grade


def test_a_folder_without_wavs_is_a_usage_error_naming_it(tmp_path):
    (tmp_path / "empty").mkdir()
    error_line(run("score", tmp_path / "empty"), 2, "PATHS", f"folder {tmp_path / 'empty'} holds no .wav files")


def test_folders_named_wav_are_not_inputs(tmp_path):
    (tmp_path / "recordings" / "looks-like.wav").mkdir(parents=True)
    error_line(run("score", tmp_path / "recordings"), 2, "holds no .wav files")


# ------------------------------------------------------------------ #8 a bad --models


def test_bad_models_are_usage_errors(tmp_path):
    clip = tmp_path / "a.wav"
    clip.write_bytes(wav_bytes())
    error_line(run("score", clip, "--models", tmp_path / "nope"), 2, "--models", "nope does not exist")
    error_line(run("score", clip, "--models", clip), 2, "--models", "a.wav is not a folder")
    line = error_line(run("score", clip, "--models", "s3://models/pump/"), 2, "s3://models/pump/",
                      "score reads local model folders only")
    assert "s3:/models" not in line
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "manifest.json").write_text("{ not json")
    result = run("score", clip, "--models", corrupt)
    error_line(result, 2, "--models")
    assert not [line for line in result.output.splitlines() if line.startswith("{")]  # no records: exit 1 is wrong


# ------------------------------------------------------------------ #9 / #10 legacy sets


@pytest.fixture
def legacy_set(tmp_path) -> Path:
    """An imported earlier-app state dict: a model set with level 2 only."""
    import torch

    from signalcraft_core.training.autoencoder import Autoencoder

    torch.manual_seed(0)
    torch.save(Autoencoder(64).state_dict(), tmp_path / "pump_autoencoder.pth")
    result = run("import-legacy", tmp_path / "pump_autoencoder.pth", "--out", tmp_path / "legacy", "-q")
    assert result.exit_code == 0, result.output
    return tmp_path / "legacy"


def test_asking_for_a_level_the_set_lacks_is_refused(legacy_set, tmp_path):
    clip = tmp_path / "a.wav"
    clip.write_bytes(wav_bytes())
    error_line(run("score", clip, "--models", legacy_set, "--level", "level1"), 2,
               "Error: model set legacy-pump_autoencoder has no level1")
    assert run("score", clip, "--models", legacy_set, "--level", "level2").exit_code == 0
    error_line(run("explain", clip, "--models", legacy_set, "--level", "level1"), 2,  # the same check as score's
               "Error: model set legacy-pump_autoencoder has no level1")
    assert run("explain", clip, "--models", legacy_set, "--level", "level2").exit_code == 0


def test_a_torchscript_file_is_named_and_torch_advice_is_not_passed_on(tmp_path):
    import torch

    from signalcraft_core.training.autoencoder import Autoencoder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's own deprecation notes
        torch.jit.save(torch.jit.script(Autoencoder(64).eval()), str(tmp_path / "model.pt"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run("import-legacy", tmp_path / "model.pt", "--out", tmp_path / "out")
    error_line(result, 1, "this is a TorchScript model, not a legacy state dict")
    assert "weights_only" not in result.output
    assert not [w for w in caught if "TorchScript" in str(w.message)]


class Payload:
    """Not a tensor: unpickling it means importing and running code named by the file."""


def test_a_pickle_with_objects_is_refused_without_torch_advice(tmp_path):
    import torch

    torch.save({"encoder.0.weight": Payload()}, tmp_path / "evil.pth")
    result = run("import-legacy", tmp_path / "evil.pth", "--out", tmp_path / "out")
    error_line(result, 1, "holds Python objects besides tensors")
    assert "weights_only" not in result.output


# ------------------------------------------------------------------ #11 train from / to s3://


def test_train_from_s3_names_skipped_clips_by_their_uri(s3_server, s3, make_bucket, monkeypatch):
    recordings = make_bucket()
    for i in range(6):
        s3.put_object(Bucket=recordings, Key=f"pump/id_00/normal/{i}.wav", Body=wav_bytes(1.0, i))
    s3.put_object(Bucket=recordings, Key="pump/id_00/normal/notes from the field.wav", Body=b"not audio")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    out = f"s3://{make_bucket()}/pump/"
    result = run("train", f"s3://{recordings}/pump/id_00", "--out", out, "-m", "pump", "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert f"skipped s3://{recordings}/pump/id_00/normal/notes from the field.wav:" in result.output
    assert "signalcraft-train-" not in result.output


def test_an_unreachable_s3_out_fails_before_training(s3_server, clips, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    result = run("train", clips, "--out", "s3://no-such-bucket-signalcraft/pump/", "-m", "pump", "--epochs", "2")
    error_line(result, 1, "--out s3://no-such-bucket-signalcraft/pump/ is not reachable", "NoSuchBucket")
    assert "trained" not in result.output


# ------------------------------------------------------------------ #12 synth --machine-id


@pytest.mark.parametrize("machine_id", ["../../escape", "a/b", "..", "", "/abs"])
def test_machine_id_is_one_folder_name(tmp_path, machine_id):
    out = tmp_path / "deep" / "out"
    error_line(run("synth", out, "-m", "pump", "--normal", "1", "--abnormal", "0", "--machine-id", machine_id), 2,
               "--machine-id", "is not one folder name")
    assert not any(tmp_path.rglob("*.wav"))


def test_write_dataset_refuses_a_machine_id_that_leaves_out(tmp_path):
    from signalcraft_core.local.synth import write_dataset

    with pytest.raises(ValueError, match="not one folder name"):
        write_dataset(tmp_path / "out", "pump", 1, 0, machine_id="../../escape", duration_s=1.0)
    assert not any(tmp_path.rglob("*.wav"))


# ------------------------------------------------------------------ #13 smaller ones


def test_quiet_sweep_hides_the_handlers_info_logs(s3_server, s3, make_bucket):
    bucket = make_bucket()
    s3.put_object(Bucket=bucket, Key="site-a/pump/id_00/a.wav", Body=b"not a wav: an error record, quickly")
    common = ["sweep", "--bucket", bucket, "--output-bucket", make_bucket(), "--endpoint-url", s3_server.endpoint_url,
              "--mode", "backfill"]
    loud = run(*common)
    assert loud.exit_code == 0, loud.output
    assert '"level":"INFO"' in loud.stderr  # the handlers do log at INFO here: the -q run below means something
    quiet = run(*common, "-q")
    assert quiet.exit_code == 0, quiet.output
    assert '"level":"INFO"' not in quiet.stderr
    assert json.loads(quiet.stdout)["records"] == 1  # the result itself is still printed
    watch = run("watch", *common[1:-2], "--once", "-q")
    assert watch.exit_code == 0 and watch.output == "", watch.output


def test_generate_event_mistakes_are_usage_errors():
    error_line(run("local", "generate-event", "s3", "schedule", "--date", "notadate"), 2, "'--date'", "notadate")
    error_line(run("local", "generate-event", "sns", "put"), 2, "Invalid value for 'SERVICE'")
    error_line(run("local", "generate-event", "s3", "put", "--key", ""), 2, "'--key'", "must not be empty")


def test_the_local_group_help_has_an_example():
    result = run("local", "--help")
    assert result.exit_code == 0
    assert "Example" in result.output and "signalcraft local " in result.output.split("Example", 1)[1]


def test_score_warns_when_no_set_is_for_the_machine_type(tmp_path):
    clip = tmp_path / "a.wav"
    clip.write_bytes(wav_bytes())
    result = run("score", clip, "-m", "nosuchtype")
    assert result.exit_code == 0, result.output
    warning = [line for line in result.stderr.splitlines() if line.startswith("Warning:")]
    assert len(warning) == 1 and "no model set for machine type 'nosuchtype'" in warning[0]
    result = run("score", clip, "-m", "pump")
    assert result.exit_code == 0 and "Warning:" not in result.stderr
