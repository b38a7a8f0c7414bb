"""A warm function reuses its S3 connections: in AWS every new one is a TCP + TLS handshake per request.

The embedded server (werkzeug) closes every connection after one answer, so it cannot show this;
the fault proxy in front of it keeps client connections alive as S3 does and counts them. Nothing is
patched: the handlers talk to the proxy over real HTTP with their own cached client.
"""

from __future__ import annotations

import pytest
from faultproxy import FaultProxy
from handler_env import clip, configure_handlers

from handlers import fleet_sweep, score_upload
from signalcraft_core.io.objects import s3_client
from signalcraft_core.local.sample_events import generate_event
from signalcraft_core.pipeline import runtime


@pytest.fixture
def proxied(s3_server, make_bucket, monkeypatch):
    """(direct client, proxy, recordings bucket, grades bucket); the handlers go through the proxy."""
    s3 = s3_client(endpoint_url=s3_server.endpoint_url)
    recordings, grades = make_bucket(), make_bucket()
    with FaultProxy(s3_server.endpoint_url) as proxy:
        configure_handlers(monkeypatch, proxy.url, grades, log_level="CRITICAL")
        try:
            yield s3, proxy, recordings, grades
        finally:
            runtime.reset()


def test_warm_upload_events_reuse_one_connection(proxied) -> None:
    s3, proxy, recordings, _grades = proxied
    events = []
    for i in range(4):
        key, body = f"site-a/pump/id_00/{i:03d}.wav", clip(i)
        etag = s3.put_object(Bucket=recordings, Key=key, Body=body)["ETag"].strip('"')
        events.append(generate_event("s3-put", recordings, key, size=len(body), etag=etag))
    for event in events:
        result = score_upload.handler(event)
        assert result["records"] == 1 and result["written"], result
    assert proxy.count("GET") == 4 and proxy.count("PUT") >= 4   # grades (and alert state for CRITICAL ones)
    assert proxy.connections == 1   # every request over one pooled connection


def test_a_sweep_opens_at_most_one_connection_per_download_thread(proxied) -> None:
    s3, proxy, recordings, _grades = proxied
    for i in range(24):
        s3.put_object(Bucket=recordings, Key=f"site-a/fan/id_{i % 3:02d}/{i:03d}.wav", Body=clip(i))
    result = fleet_sweep.handler({"bucket": recordings, "prefix": "site-a/"})
    assert result["records"] == 24
    io_threads = runtime.get_runtime().config.io_threads
    assert proxy.requests > 24   # list, 24 GETs, index, writes, compaction, state
    assert proxy.connections <= io_threads + 1
    before = proxy.connections
    again = fleet_sweep.handler({"bucket": recordings, "prefix": "site-a/"})   # warm: nothing new to grade
    assert again["records"] == 0
    assert proxy.connections == before
