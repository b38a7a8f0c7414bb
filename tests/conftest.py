"""Shared fixtures: where the real recordings live, and skipping cleanly without them."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SHARED_DATA = SHARED / "data"
LEGACY_DIR = SHARED / "legacy" / "signalcraftapp"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real MIMII / DCASE recordings; tests that need them skip when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def legacy_dir() -> Path:
    if not LEGACY_DIR.is_dir():
        pytest.skip("../shared/legacy/signalcraftapp is absent")
    return LEGACY_DIR


# --- embedded S3 server (moto over real HTTP; boto3 is never patched) ---------------------------


@pytest.fixture(scope="session")
def s3_server():
    """One embedded S3-compatible server for the session; its own key is in os.environ while it runs."""
    from signalcraft_core.local.s3server import start_s3_server

    with start_s3_server(host="127.0.0.1", port=0) as server, server.environment():
        yield server


@pytest.fixture
def s3(s3_server):
    """A boto3 S3 client pointed at the embedded server."""
    from signalcraft_core.io.objects import s3_client

    return s3_client(endpoint_url=s3_server.endpoint_url)


@pytest.fixture
def make_bucket(s3):
    """Factory: `make_bucket(versioned=False) -> name` creates a uniquely named bucket for this test."""
    import uuid

    def _make(versioned: bool = False) -> str:
        name = f"sc-test-{uuid.uuid4().hex[:20]}"
        s3.create_bucket(Bucket=name)
        if versioned:
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        return name

    return _make


@pytest.fixture
def bucket(make_bucket) -> str:
    """One fresh bucket for tests that need just one."""
    return make_bucket()


@pytest.fixture
def fleet(s3_server, s3, make_bucket, monkeypatch):
    """(s3, recordings bucket, grades bucket) with the handlers configured against them, quiet logs."""
    from tests.handler_env import configure_handlers
    from signalcraft_core.pipeline import runtime

    recordings, grades = make_bucket(), make_bucket()
    configure_handlers(monkeypatch, s3_server.endpoint_url, grades, log_level="CRITICAL")
    yield s3, recordings, grades
    runtime.reset()
