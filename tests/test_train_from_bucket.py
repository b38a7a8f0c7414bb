"""`signalcraft train` learns a machine's set from its bucket and publishes it where the handlers find it."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from signalcraft_core.io.audio import encode_wav
from signalcraft_core.io.objects import clean_etag, s3_client
from signalcraft_core.local.cli.app import cli
from signalcraft_core.local.sample_events import generate_event
from signalcraft_core.local.synth import synthesize_clip
from signalcraft_core.pipeline import runtime
from signalcraft_core.pipeline.sinks import read_grades
from tests.handler_env import configure_handlers


def test_train_reads_normals_from_s3_and_publishes_artifacts_before_the_manifest(s3_server, s3, make_bucket,
                                                                                  monkeypatch, tmp_path):
    recordings, models, grades = make_bucket(), make_bucket(), make_bucket()
    rng = np.random.default_rng(0)
    machine = "site-a/pump/id_00"
    for i in range(6):
        s3.put_object(Bucket=recordings, Key=f"{machine}/normal/{i:03d}.wav",
                      Body=encode_wav(synthesize_clip("pump", None, rng, 2.0), 16000))
    s3.put_object(Bucket=recordings, Key=f"{machine}/abnormal/000.wav",
                  Body=encode_wav(synthesize_clip("pump", "bearing_fault", rng, 2.0), 16000))
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    puts: list[str] = []
    client = s3_client(s3_server.endpoint_url)  # the CLI's own client (cached per endpoint)
    hook = lambda params, **_: puts.append(params["Key"])  # noqa: E731 - observed, nothing patched
    client.meta.events.register("before-parameter-build.s3.PutObject", hook)
    result = CliRunner().invoke(cli, ["train", f"s3://{recordings}/{machine}/", "--out", f"s3://{models}/{machine}/",
                                      "-m", "pump", "--epochs", "5", "-q"])
    assert result.exit_code == 0, result.output
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=models)["Contents"]]
    assert sorted(keys) == sorted(f"{machine}/{n}" for n in ("autoencoder.pt", "level1.joblib", "manifest.json"))
    client.meta.events.unregister("before-parameter-build.s3.PutObject", hook)
    # artifacts first, manifest last: nobody reading the manifest finds an artifact missing
    assert [k.rsplit("/", 1)[1] for k in puts] == ["autoencoder.pt", "level1.joblib", "manifest.json"]
    manifest = json.loads(s3.get_object(Bucket=models, Key=f"{machine}/manifest.json")["Body"].read())
    assert manifest["training"]["clips"] == 6  # the abnormal clip was left out

    # the upload handler now grades that machine with its own set, other machines with the packaged ones
    configure_handlers(monkeypatch, s3_server.endpoint_url, grades, log_level="CRITICAL")
    monkeypatch.setenv("MODEL_URI", f"s3://{models}/")
    monkeypatch.setenv("SIGNALCRAFT_CACHE_DIR", str(tmp_path / "cache"))
    runtime.reset()
    from handlers import score_upload

    data = encode_wav(synthesize_clip("pump", None, rng, 2.0), 16000)
    key = f"{machine}/new/001.wav"
    etag = clean_etag(s3.put_object(Bucket=recordings, Key=key, Body=data)["ETag"])
    score_upload.handler(generate_event("s3-put", recordings, key, size=len(data), etag=etag))
    (row,) = read_grades(f"s3://{grades}/grades/", s3).to_pylist()
    assert (row["model_name"], row["model_version"], row["model_scope"]) == \
        (manifest["name"], manifest["version"], "machine")
    runtime.reset()


def test_download_normals_never_writes_outside_its_folder(s3_server, s3, make_bucket, tmp_path):
    """Keys are the uploader's: `a//abs/x.wav` or `..` parts would put a file anywhere; they are skipped, named."""
    from signalcraft_core.training.sources import download_normals

    recordings = make_bucket()
    outside = tmp_path / "outside"
    hostile = [f"m/{outside}/planted.wav", "m/./dot.wav", "m/a/../../up.wav"]
    assert hostile[0].startswith("m//")  # the absolute path under the prefix
    for key in [*hostile, "m/normal/ok.wav"]:
        s3.put_object(Bucket=recordings, Key=key, Body=b"RIFF")
    dest = tmp_path / "dest"
    files, refused = download_normals(f"s3://{recordings}/m/", dest, s3_client(s3_server.endpoint_url), 1 << 20)
    assert files == [dest / "normal" / "ok.wav"]
    assert sorted(refused) == sorted(hostile)
    assert not outside.exists() and not (tmp_path / "up.wav").exists()
