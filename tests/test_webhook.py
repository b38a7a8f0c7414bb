"""Why: the MinIO webhook listener lets in only MinIO (its token), only our buckets, and only what fits.

Each test talks to the real listener over loopback HTTP (raw sockets where a client misbehaves on
purpose) with the upload handler behind it and boto3 against the loopback S3 server, through a
fault proxy that logs every S3 request, so "never read" is observed, not assumed.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import numpy as np
import pytest
from click.testing import CliRunner
from faultproxy import FaultProxy
from handler_env import configure_handlers

from signalcraft_core.io.audio import encode_wav
from signalcraft_core.io.objects import list_keys
from signalcraft_core.local.cli.app import cli
from signalcraft_core.local.sample_events import generate_event
from signalcraft_core.local.webhook import ListenerRefused, json_depth_ok, make_server
from signalcraft_core.pipeline import runtime
from signalcraft_core.pipeline.sinks import read_grades

TOKEN = "tok-" + "5a1f" * 8
KEY = "site-a/pump/id_00/00000001.wav"


def clip(seed: int = 0, seconds: float = 1.2, rate: int = 8000) -> bytes:
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    return encode_wav(0.3 * np.sin(2 * np.pi * 150 * t) + 0.05 * rng.standard_normal(len(t)), rate)


@dataclass
class Hook:
    url: str
    port: int
    s3: object
    proxy: FaultProxy
    recordings: str
    other: str
    grades: str
    said: list

    def notify(self, bucket: str, key: str, **record_fields) -> bytes:
        """A MinIO webhook body for `key`, with record fields (versionId, eventTime, size ...) as given."""
        event = generate_event("minio", bucket, key, size=record_fields.pop("size", 10), etag="0" * 32)
        record = event["Records"][0]
        record.update({k: v for k, v in record_fields.items() if k == "eventTime"})
        record["s3"]["object"].update({k: v for k, v in record_fields.items() if k != "eventTime"})
        return json.dumps(event).encode()

    def post(self, body: bytes, token: str | None = TOKEN, headers: dict | None = None) -> tuple[int, dict]:
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(self.url, data=body, headers=all_headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def raw(self, head: str, body: bytes = b"", wait: float = 10.0) -> tuple[bytes, float]:
        """Send exactly `head` + `body` on a new connection; what came back and how long it took."""
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", self.port), timeout=wait) as sock:
            sock.sendall(head.encode() + body)
            received = b""
            try:
                while chunk := sock.recv(65536):
                    received += chunk
            except (TimeoutError, ConnectionResetError):
                pass
        return received, time.monotonic() - started

    def rows(self) -> list[dict]:
        return read_grades(f"s3://{self.grades}/grades/", self.s3).to_pylist()

    def parquet_keys(self) -> list[str]:
        return [i.key for i in list_keys(self.s3, self.grades, "", (".parquet",))]


def start(server) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def env(s3, s3_server, make_bucket, monkeypatch):
    """Handler environment behind a fault proxy (an S3 request log); recordings bucket versioned."""
    recordings, other, grades = make_bucket(versioned=True), make_bucket(), make_bucket()
    with FaultProxy(s3_server.endpoint_url) as proxy:
        configure_handlers(monkeypatch, proxy.url, grades)
        try:
            yield recordings, other, grades, proxy
        finally:
            runtime.reset()


def listen(env, s3, **options) -> tuple[Hook, object]:
    recordings, other, grades, proxy = env
    said: list[str] = []
    options = {"token": TOKEN, "buckets": [recordings], **options}
    server = make_server("127.0.0.1", 0, said.append, **options)
    start(server)
    port = server.server_address[1]
    return Hook(f"http://127.0.0.1:{port}/", port, s3, proxy, recordings, other, grades, said), server


@pytest.fixture
def hook(env, s3):
    hook, server = listen(env, s3, read_timeout_s=2.0)
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()


def post_head(port: int, length: int, token: str | None = TOKEN) -> str:
    auth = f"Authorization: Bearer {token}\r\n" if token is not None else ""
    return (f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n{auth}"
            f"Content-Length: {length}\r\n\r\n")


# ---------------------------------------------------------------------------------------- who gets in


def test_a_notification_with_the_token_is_graded(hook):
    hook.s3.put_object(Bucket=hook.recordings, Key=KEY, Body=clip())
    status, body = hook.post(hook.notify(hook.recordings, KEY))
    assert status == 200 and body["records"] == 1 and body["errors"] == {}, body
    (row,) = hook.rows()
    assert row["key"] == KEY and row["status"] == "ok"
    assert any(KEY in line for line in hook.said)
    assert all(TOKEN not in line for line in hook.said)


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}",
                                           f"Basic {TOKEN}", TOKEN, "Bearer ", f"Bearer  {TOKEN} extra"])
def test_a_missing_or_wrong_token_is_401_before_the_body_is_read(hook, authorization):
    hook.s3.put_object(Bucket=hook.recordings, Key=KEY, Body=clip())
    auth = f"Authorization: {authorization}\r\n" if authorization is not None else ""
    head = (f"POST / HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n"
            "Content-Length: 1000\r\n\r\n")
    answer, took = hook.raw(head)  # the 1000 promised bytes never come: only an answer before reading returns
    assert answer.startswith(b"HTTP/1.0 401 "), answer[:80]
    assert b'WWW-Authenticate: Bearer' in answer
    assert took < 1.5, f"{took:.1f} s: the listener waited for the body"  # read timeout is 2 s
    assert hook.proxy.count() == 0 and hook.parquet_keys() == []  # nothing read, nothing graded


def test_the_token_is_compared_as_minio_sends_it(hook):
    hook.s3.put_object(Bucket=hook.recordings, Key=KEY, Body=clip())
    assert hook.post(hook.notify(hook.recordings, KEY), token=None,
                     headers={"Authorization": f"bearer {TOKEN}"})[0] == 200  # scheme is case-insensitive


def test_a_bucket_outside_the_allow_list_is_403_and_never_read(hook):
    hook.s3.put_object(Bucket=hook.other, Key=KEY, Body=b"an object that exists")
    hook.s3.put_object(Bucket=hook.recordings, Key=KEY, Body=clip())
    status, body = hook.post(hook.notify(hook.other, KEY))
    assert status == 403 and hook.other in body["error"]
    mixed = json.loads(hook.notify(hook.recordings, KEY))
    mixed["Records"].append(json.loads(hook.notify(hook.other, KEY))["Records"][0])
    assert hook.post(json.dumps(mixed).encode())[0] == 403  # one foreign record refuses the delivery
    assert hook.proxy.count(path=rf"^/{hook.other}/") == 0  # no existence oracle: not even a HEAD
    assert hook.parquet_keys() == []


def test_listening_beyond_loopback_needs_a_token(env, s3):
    for host in ("0.0.0.0", "", "::"):
        with pytest.raises(ListenerRefused) as info:
            make_server(host, 0)
        assert "\n" not in str(info.value) and "SIGNALCRAFT_WEBHOOK_TOKEN" in str(info.value)
    server = make_server("0.0.0.0", 0, token=TOKEN, buckets=["b"])
    server.server_close()
    for host in ("127.0.0.1", "localhost"):
        make_server(host, 0).server_close()  # loopback: a token is optional


def test_the_cli_refuses_a_public_address_without_a_token(env, monkeypatch):
    monkeypatch.delenv("SIGNALCRAFT_WEBHOOK_TOKEN", raising=False)
    result = CliRunner().invoke(cli, ["local", "minio-listener", "--host", "0.0.0.0", "--port", "1"])
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "--auth-token" in lines[0], result.output


# ---------------------------------------------------------------------------------------- what is trusted


def test_forged_version_size_and_event_time_are_replaced_by_the_objects_own(hook):
    """The sender names the object; its HEAD says which version, how big and which day."""
    first = hook.s3.put_object(Bucket=hook.recordings, Key=KEY, Body=clip(1))
    assert hook.post(hook.notify(hook.recordings, KEY))[0] == 200
    genuine = hook.rows()
    assert len(genuine) == 1 and genuine[0]["version_id"] == first["VersionId"]

    forged = hook.notify(hook.recordings, KEY, versionId="forged-version-id", size=1,
                         eventTime="1999-01-01T00:00:00.000Z")
    status, body = hook.post(forged)
    assert status == 200 and body["errors"] == {}, body  # not a not_found for an object that exists
    rows = hook.rows()
    assert len(rows) == 1 and rows[0]["status"] == "ok"  # the same record, not a second one
    head = hook.s3.head_object(Bucket=hook.recordings, Key=KEY)
    assert rows[0]["version_id"] == head["VersionId"] and rows[0]["size_bytes"] == head["ContentLength"]
    assert rows[0]["event_time"].date() == head["LastModified"].date()
    assert not any("dt=1999-01-01" in k for k in hook.parquet_keys()), hook.parquet_keys()
    assert hook.proxy.count("GET", query="forged") == 0 and hook.proxy.count("HEAD", query="forged") == 0


def test_a_notification_for_an_object_that_does_not_exist_writes_nothing(hook):
    status, body = hook.post(hook.notify(hook.recordings, "site-a/pump/id_00/never-uploaded.wav"))
    assert status == 200 and body["records"] == 0
    assert body["skipped"] == [{"key": "site-a/pump/id_00/never-uploaded.wav", "reason": "no such object"}]
    assert hook.parquet_keys() == []


def test_500_when_the_grade_cannot_be_recorded(hook, monkeypatch):
    monkeypatch.setenv("OUTPUT_BUCKET", "sc-test-no-such-grades-bucket")
    runtime.reset()
    hook.s3.put_object(Bucket=hook.recordings, Key=KEY, Body=clip())
    status, body = hook.post(hook.notify(hook.recordings, KEY))
    assert status == 500 and "sc-test-no-such-grades-bucket" in body["error"]


# ---------------------------------------------------------------------------------------- what fits


def test_a_body_over_the_limit_is_413_without_being_read(hook):
    answer, took = hook.raw(post_head(hook.port, 10 * 1024 * 1024))
    assert answer.startswith(b"HTTP/1.0 413 "), answer[:80]
    assert took < 1.5  # answered from the headers alone
    assert hook.post(b"[" + b" " * (300 * 1024) + b"]")[0] == 413


def test_a_stalled_body_is_cut_off_by_the_read_timeout(hook):
    """Promise 1000 bytes, send 1: the connection is closed after the read timeout (2 s here)."""
    answer, took = hook.raw(post_head(hook.port, 1000), b"{", wait=30.0)
    assert 1.5 <= took < 10.0, f"closed after {took:.1f} s"
    assert b" 200 " not in answer
    assert hook.parquet_keys() == []


@pytest.mark.parametrize("body", [
    b"this is not json", b'{"Records": [', b"\xff\xfe{}", json.dumps({"hello": "world"}).encode(), b"[1, 2, 3]",
    b"[" * 100_000 + b"]" * 100_000,  # 200 KB, 100,000 levels: a RecursionError without the depth check
    b'{"a":' * 20_000 + b"1" + b"}" * 20_000,
    json.dumps({"Records": [{"messageId": "m", "body": "{}", "eventSource": "aws:sqs"}]}).encode(),
])
def test_malformed_or_deep_json_is_400(hook, body):
    status, answer = hook.post(body)
    assert status == 400 and answer["error"] and "\n" not in answer["error"], answer
    hook.s3.put_object(Bucket=hook.recordings, Key=KEY, Body=clip())
    assert hook.post(hook.notify(hook.recordings, KEY))[0] == 200  # and the listener is still fine


def test_a_valid_notification_nested_past_the_limit_is_400_and_never_graded(hook):
    hook.s3.put_object(Bucket=hook.recordings, Key=KEY, Body=clip())
    event = json.loads(hook.notify(hook.recordings, KEY))
    event["Padding"] = json.loads("[" * 40 + "]" * 40)  # parse_event would ignore it: only the depth check refuses
    status, answer = hook.post(json.dumps(event).encode())
    assert status == 400 and "nested deeper than 32" in answer["error"]
    assert hook.parquet_keys() == []


def test_the_depth_limit_counts_brackets_outside_strings_only():
    assert json_depth_ok(b"[" * 32 + b"]" * 32) and not json_depth_ok(b"[" * 33 + b"]" * 33)
    assert json_depth_ok(json.dumps({"key": "[[[[" * 100}).encode())  # brackets inside a string do not nest
    assert json_depth_ok(json.dumps({"key": '\\"[[[[' * 100}).encode())


def test_a_bounded_pool_answers_503_instead_of_holding_a_thread_per_connection(env, s3):
    hook, server = listen(env, s3, workers=2, queue_size=2, read_timeout_s=20.0)
    stalled: list[socket.socket] = []
    try:
        threads_before = threading.active_count()
        for _ in range(60):  # connections that never send a byte
            stalled.append(socket.create_connection(("127.0.0.1", hook.port), timeout=10))
        time.sleep(0.5)
        assert threading.active_count() <= threads_before  # no thread per connection
        answer, took = hook.raw(post_head(hook.port, 2) + "{}")
        assert answer.startswith(b"HTTP/1.0 503 "), answer[:80]
        assert took < 2.0
        busy = 0
        for sock in stalled:
            sock.settimeout(0.2)
            try:
                busy += sock.recv(1024).startswith(b"HTTP/1.0 503 ")
            except TimeoutError:  # held by a worker or waiting in the queue
                pass
        assert busy == len(stalled) - 4  # 2 in the workers, 2 queued, every other one told to come back
    finally:
        for sock in stalled:
            sock.close()
    try:  # once the stalled clients are gone, the pool serves again
        hook.s3.put_object(Bucket=hook.recordings, Key=KEY, Body=clip())
        deadline = time.monotonic() + 10
        while (status := hook.post(hook.notify(hook.recordings, KEY))[0]) == 503 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert status == 200
    finally:
        server.shutdown()
        server.server_close()


def test_a_client_still_sending_when_told_503_reads_the_503_not_a_reset(env, s3):
    """The busy answer goes out at accept time; a body still arriving after it must not be met with a reset."""
    hook, server = listen(env, s3, workers=1, queue_size=1, read_timeout_s=20.0)
    stalled = []
    try:
        for _ in range(2):   # one held by the worker, then one waiting in the queue
            stalled.append(socket.create_connection(("127.0.0.1", hook.port), timeout=10))
            time.sleep(0.3)
        body = b" " * 200_000   # a big event arriving in pieces, after the server has answered
        answers = []
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", hook.port), timeout=10) as sock:
                time.sleep(0.2)   # the 503 is already written when the request starts to arrive
                try:
                    sock.sendall(post_head(hook.port, len(body)).encode())
                    for start in range(0, len(body), 20_000):
                        sock.sendall(body[start:start + 20_000])
                        time.sleep(0.01)
                    answers.append(sock.recv(1024))
                except (ConnectionResetError, BrokenPipeError) as exc:
                    answers.append(repr(exc).encode())
        assert all(a.startswith(b"HTTP/1.0 503 ") for a in answers), answers
    finally:
        for sock in stalled:
            sock.close()
        server.shutdown()
        server.server_close()
