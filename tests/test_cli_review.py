"""What a black-box review of the CLI reproduced: lost records, tracebacks, and mistakes found after the work.

The promises checked: every recording that arrives yields exactly one record; a user's mistake is one
`Error: ...` line (exit 2 for usage mistakes), never a traceback, and is caught before any work starts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.test_cli_mistakes import TEMPLATE, error_line, run, wav_bytes

# ------------------------------------------------------------------ 1. every .wav entry of a folder is a record


@pytest.fixture
def odd_folder(tmp_path) -> Path:
    """A folder whose .wav entries are a file, one in a sub-folder, one behind a linked folder, a broken
    link, a FIFO, and a link back to the folder itself (a loop)."""
    root, outside = tmp_path / "sl", tmp_path / "elsewhere"
    (root / "real").mkdir(parents=True)
    outside.mkdir()
    for path in (root / "a.wav", root / "real" / "b.wav", outside / "c.wav"):
        path.write_bytes(wav_bytes())
    (root / "dangling.wav").symlink_to(tmp_path / "nowhere.wav")
    (root / "linked").symlink_to(outside, target_is_directory=True)
    (root / "real" / "loop").symlink_to(root, target_is_directory=True)
    os.mkfifo(root / "pipe.wav")
    return root


def records(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def test_score_gives_every_wav_entry_of_a_folder_one_record(odd_folder):
    result = run("score", odd_folder)
    assert result.exit_code == 1, result.output  # two entries cannot be read: error records, exit 1
    got = {Path(r["source"]).relative_to(odd_folder).as_posix(): r for r in records(result)}
    assert sorted(got) == ["a.wav", "dangling.wav", "linked/c.wav", "pipe.wav", "real/b.wav"]  # once each, no loop
    assert {k for k, r in got.items() if r["status"] == "ok"} == {"a.wav", "linked/c.wav", "real/b.wav"}
    for name in ("dangling.wav", "pipe.wav"):  # the same record as when the path is named
        (named,) = records(run("score", odd_folder / name))
        assert got[name]["error"] == named["error"] and named["error"]["code"] == "not_found"
    assert "not a regular file" in got["pipe.wav"]["error"]["message"]


def test_a_folder_that_cannot_be_listed_is_refused_before_any_record(odd_folder, monkeypatch):
    scandir = os.scandir

    def refuse(path):
        if Path(path) == odd_folder / "real":
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refuse)  # running as root, chmod would not stop the listing
    result = run("score", odd_folder)
    error_line(result, 2, "PATHS", f"cannot list folder {odd_folder / 'real'}: Permission denied")
    assert not records(result)


# ------------------------------------------------------------------ 2. --endpoint-url without a scheme


@pytest.mark.parametrize("command", [
    ["report", "--grades", "s3://grades-bucket/grades/"],
    ["train", "s3://recordings/pump/", "--out", "s3://models-bucket/pump/", "-m", "pump"],
    ["demo"],
    ["sweep", "--bucket", "recordings"],
    ["watch", "--bucket", "recordings", "--once"],
    ["local", "invoke", "ScoreUploadFunction", "-t", TEMPLATE],
    ["local", "minio-listener"],
], ids=lambda c: " ".join(map(str, c[:2])))
def test_an_endpoint_without_a_scheme_is_a_usage_error(command):
    error_line(run(*command, "--endpoint-url", "localhost:9000"), 2, "--endpoint-url",
               "'localhost:9000' is not an http(s):// URL")


def test_an_endpoint_from_the_environment_is_checked_and_named(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "localhost:9000")
    error_line(run("report", "--grades", "s3://grades-bucket/grades/"), 2, "'localhost:9000' (from AWS_ENDPOINT_URL)")
    error_line(run("sweep", "--bucket", "recordings", "--endpoint-url", "http://under_score:9000"), 2,
               "'under_score' is not a host name")


def test_a_good_endpoint_passes():
    from signalcraft_core.local.cli.params import Endpoint

    for url in ("http://localhost:9000", "https://s3.eu-west-1.amazonaws.com", "http://[::1]:9000", "http://10.0.0.2"):
        assert Endpoint().convert(url, None, None) == url
    assert Endpoint().convert("", None, None) is None  # no endpoint: boto3's chain, as before


# ------------------------------------------------------------------ 3. import-legacy on files that are no state dict


def _save(obj, path: Path, **kwargs) -> Path:
    import torch

    torch.save(obj, path, **kwargs)
    return path


def _legacy_cases(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    import torch

    from signalcraft_core.training.autoencoder import Autoencoder

    state = Autoencoder(64).state_dict()
    wav = tmp_path / "clip.wav"
    wav.write_bytes(wav_bytes())
    cut = _save(state, tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    cut.write_bytes(cut.read_bytes()[:3000])
    return {
        "wav": (wav, "not a file written by torch.save"),
        "list": (_save([1, 2], tmp_path / "list.pth"), "it holds a list, not a state dict"),
        "tensor": (_save(torch.zeros(3), tmp_path / "t.pth"), "it holds a Tensor, not a state dict"),
        "number": (_save({**state, "epoch": 3}, tmp_path / "n.pth"), "'epoch' is not a tensor (type int)"),
        "flat": (_save({"encoder.0.weight": torch.zeros(3)}, tmp_path / "f.pth"), "no 2-D tensor 'encoder.0.weight'"),
        "missing": (_save({k: v for k, v in state.items() if k != "decoder.5.bias"}, tmp_path / "m.pth"),
                    "missing decoder.5.bias"),
        "shape": (_save({**state, "decoder.5.bias": torch.zeros(3)}, tmp_path / "s.pth"),
                  "decoder.5.bias has shape (3,), expected (64,)"),
        "cut": (cut, "torch.load cannot read it"),
    }


@pytest.mark.parametrize("case", ["wav", "list", "tensor", "number", "flat", "missing", "shape", "cut"])
def test_import_legacy_names_what_is_not_a_state_dict(tmp_path, case):
    pth, needle = _legacy_cases(tmp_path)[case]
    error_line(run("import-legacy", pth, "--out", tmp_path / "out"), 1,
               f"{pth.name}: not an earlier-app autoencoder state dict", needle)
    assert not (tmp_path / "out").exists()


def test_import_legacy_reads_both_torch_save_formats(tmp_path):
    from signalcraft_core.training.autoencoder import Autoencoder

    for name, zipped in (("new.pth", True), ("old.pth", False)):
        pth = _save(Autoencoder(64).state_dict(), tmp_path / name, _use_new_zipfile_serialization=zipped)
        result = run("import-legacy", pth, "--out", tmp_path / name.replace(".", "-"), "-q")
        assert result.exit_code == 0, result.output


# ------------------------------------------------------------------ 4. local invoke templates of the wrong shape


@pytest.mark.parametrize("text, needle", [
    ("Resources: x\n", "Resources must be a mapping, not the text 'x'"),
    ("Resources:\n  ScoreUploadFunction: [1]\n", "resource ScoreUploadFunction must be a mapping"),
    ("Resources:\n  ScoreUploadFunction:\n    Properties: {}\n", "resource ScoreUploadFunction has no Type"),
    ("Resources:\n  ScoreUploadFunction:\n    Type: AWS::Serverless::Function\n    Properties: x\n",
     "ScoreUploadFunction.Properties must be a mapping"),
    ("Resources:\n  ScoreUploadFunction:\n    Type: AWS::Serverless::Function\n    Properties:\n"
     "      Handler: a.b\n      Environment: [x]\n", "ScoreUploadFunction.Properties.Environment must be a mapping"),
    ("Parameters:\n  LogLevel: x\n", "parameter LogLevel must be a mapping"),
    ("Globals:\n  Function: x\n", "Globals.Function must be a mapping"),
    ("Resources:\n  ScoreUploadFunction:\n    Type: AWS::Serverless::Function\n    Properties:\n"
     "      Handler: a.b\n      Environment:\n        Variables:\n          A: !Sub [x, y]\n", "Fn::Sub cannot take"),
    ("Resources:\n  Other:\n    Type: AWS::Serverless::Function\n", "no function 'ScoreUploadFunction'"),
], ids=["resources", "resource", "type", "properties", "environment", "parameter", "globals", "intrinsic", "absent"])
def test_a_template_of_the_wrong_shape_is_one_line_naming_it(tmp_path, text, needle):
    template = tmp_path / "bad.yaml"
    template.write_text(text)
    error_line(run("local", "invoke", "ScoreUploadFunction", "-t", template), 1, f"{template}: ", needle)


def test_binary_sam_inputs_are_named(tmp_path):
    binary = tmp_path / "clip.wav"
    binary.write_bytes(wav_bytes())
    error_line(run("local", "invoke", "ScoreUploadFunction", "-t", binary), 1, f"{binary}: not a UTF-8 text file")
    error_line(run("local", "invoke", "ScoreUploadFunction", "-t", TEMPLATE, "-n", binary), 1,
               f"{binary}: not a UTF-8 text file")
    (tmp_path / "template.yaml").write_text("Resources: {}\n")
    (tmp_path / "samconfig.toml").write_bytes(binary.read_bytes())
    error_line(run("local", "invoke", "ScoreUploadFunction", "-t", tmp_path / "template.yaml"), 1,
               f"{tmp_path / 'samconfig.toml'}: not a UTF-8 text file")


# ------------------------------------------------------------------ 5. bucket options take bucket names


@pytest.mark.parametrize("command, needle", [
    (["watch", "--bucket", "s3://rec", "--once", "--retries", "0"], "'s3://rec' is an s3:// URI, not a bucket name: "
                                                                    "write --bucket rec"),
    (["sweep", "--bucket", "s3://rec/site a/"], "write --bucket rec --prefix 'site a/'"),
    (["watch", "--bucket", "", "--once"], "'--bucket': '' is empty"),
    (["sweep", "--bucket", "ab"], "'ab' is not a bucket name"),
    (["sweep", "--bucket", "recordings", "--output-bucket", "s3://g-bucket/grades/"],
     "write --output-bucket g-bucket --output-prefix grades/"),
    (["local", "minio-listener", "--bucket", "s3://rec"], "write --bucket rec"),
    (["local", "generate-event", "s3", "put", "--bucket", "s3://rec/a.wav"], "write --bucket rec"),
    (["report", "--grades", "s3://Bad_/grades/"], "'Bad_' is not a bucket name"),
    (["train", "s3://rec..x/pump/", "--out", "m", "-m", "pump"], "'rec..x' is not a bucket name (two dots in a row)"),
], ids=["watch-uri", "sweep-uri", "empty", "short", "output", "listener", "event", "report", "train"])
def test_a_bucket_option_refuses_what_s3_would_before_any_request(command, needle):
    error_line(run(*command), 2, needle)


def test_bucket_names_s3_takes_pass():
    from signalcraft_core.local.cli.params import bucket_name_problem

    for name in ("signalcraft-recordings", "a.b.c", "sc-test-0123456789abcdef0123", "Legacy_Bucket", "x" * 255):
        assert bucket_name_problem(name) is None, name
    for name in ("", "ab", "-ab", "ab-", "a..b", "192.168.0.1", "x" * 256, "a/b", "arn:aws:s3:::b"):
        assert bucket_name_problem(name), name


# ------------------------------------------------------------------ 7. output files checked before the work


@pytest.fixture
def no_work(monkeypatch):
    """Evaluation and explanation fail the test if they start: the refusal must come first."""
    from signalcraft_core.analysis import evaluation, explain

    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the output was checked")

    monkeypatch.setattr(evaluation, "evaluate_signals", forbidden)
    monkeypatch.setattr(explain, "explain_audio", forbidden)


def test_an_output_below_a_file_is_refused_before_any_work(tmp_path, no_work):
    clip = tmp_path / "good1.wav"
    clip.write_bytes(wav_bytes())
    error_line(run("evaluate", "--normal", clip, "--anomalous", clip, "--json", clip / "x.json"), 2,
               "--json", f"{clip} is not a folder")
    error_line(run("explain", clip, "--png", clip / "x.png"), 2, "--png", f"{clip} is not a folder")
    error_line(run("report", "--grades", tmp_path, "--html", clip / "deeper" / "r.html"), 2, "--html",
               f"{clip} is not a folder")
    error_line(run("evaluate", "--normal", clip, "--anomalous", clip, "--json", tmp_path), 2, f"{tmp_path} is a folder")
    error_line(run("evaluate", "--normal", clip, "--anomalous", clip, "--json", "s3://b-bucket/r.json"), 2,
               "evaluate writes a local file only")


def test_outputs_make_missing_folders_like_train_out(tmp_path, monkeypatch):
    """train --out and synth make the folders they need; --json and --html do the same."""
    from signalcraft_core.analysis import evaluation

    clips = tmp_path / "clips"
    clips.mkdir()
    for i in range(2):
        (clips / f"{i}.wav").write_bytes(wav_bytes(seed=i))
    monkeypatch.setattr(evaluation, "evaluate_signals", lambda *a, **k: object())
    monkeypatch.setattr(evaluation, "report_json", lambda report, command: {"command": command})
    monkeypatch.setattr(evaluation, "format_table", lambda report: "table")
    out = tmp_path / "new" / "deeper" / "report.json"
    result = run("evaluate", "--normal", clips / "0.wav", "--anomalous", clips / "1.wav", "--json", out, "-q")
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["command"].startswith("signalcraft evaluate")
    pytest.importorskip("matplotlib")
    (tmp_path / "grades").mkdir()
    html = tmp_path / "made" / "for" / "report.html"
    result = run("report", "--grades", tmp_path / "grades", "--html", html, "-q")
    assert result.exit_code == 0, result.output
    assert html.is_file()


# ------------------------------------------------------------------ 8. one table line per input


def test_the_score_table_has_one_line_per_input(tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    (folder / "new\nline.wav").write_bytes(wav_bytes())
    result = run("score", folder, "--format", "table")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and lines[1].endswith("new\\u000aline.wav")
    result = run("score", tmp_path / "gone\x1b[2J.wav", "--format", "table")
    assert result.exit_code == 1
    (line,) = result.stdout.splitlines()[1:]
    assert "\x1b" not in line and "gone\\u001b[2J.wav: " in line
