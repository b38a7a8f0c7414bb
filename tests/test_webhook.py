"""Why: the MinIO webhook listener lets in only MinIO (its token), only our buckets, and only what fits.

Each test talks to the real listener over loopback HTTP (raw sockets where a client misbehaves on
purpose) with the upload handler behind it and boto3 against the loopback S3 server, through a
fault proxy that logs every S3 request, so "never read" is observed, not assumed.
"""

from __future__ import annotations

import json
import os
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
from signalcraft_core.local import webhook
from signalcraft_core.local.webhook import ListenerRefused, json_depth_ok, make_server
from signalcraft_core.logs import printable
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


def test_no_address_is_served_without_a_token_not_even_loopback(env, s3):
    """Another local user reaches 127.0.0.1 as easily as MinIO does: loopback is no reason to skip the token."""
    for host in ("127.0.0.1", "localhost", "0.0.0.0", "", "::"):
        for token in (None, ""):
            with pytest.raises(ListenerRefused) as info:
                make_server(host, 0, token=token)
            assert "\n" not in str(info.value) and "--auth-token-file" in str(info.value)
    make_server("0.0.0.0", 0, token=TOKEN, buckets=["b"]).server_close()


@pytest.fixture
def cli_home(env, tmp_path, monkeypatch):
    """A home folder of its own, no token in the environment, and `serve` replaced by a recorder of its token."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    monkeypatch.setenv("HOME", str(home))
    for name in ("SIGNALCRAFT_WEBHOOK_TOKEN", "SIGNALCRAFT_WEBHOOK_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    served: list[str] = []
    monkeypatch.setattr(webhook, "serve", lambda host, port, say, *, token, buckets: served.append(token))
    return home, served


def listener_cli(*args: str):
    return CliRunner().invoke(cli, ["local", "minio-listener", "--port", "8765", *args])


def test_the_cli_makes_a_private_token_file_when_given_none(cli_home):
    home, served = cli_home
    result = listener_cli()
    assert result.exit_code == 0, result.output
    path = home / ".signalcraft" / "webhook-token"
    (token,) = served
    assert len(token) == 64 and path.read_text() == token + "\n"
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    (line,) = result.output.strip().splitlines()  # one line: where it is and what to tell MinIO, not the token
    assert token not in result.output
    assert str(path) in line and "mc admin config set" in line and f'auth_token="$(cat {path})"' in line
    assert "endpoint=http://127.0.0.1:8765/" in line
    assert listener_cli().exit_code == 0 and served == [token, token]  # kept: MinIO goes on sending it


def test_the_cli_reads_a_private_token_file(cli_home, tmp_path):
    _, served = cli_home
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    result = listener_cli("--auth-token-file", str(path))
    assert result.exit_code == 0 and served == [TOKEN], result.output
    assert result.output == "" and not (tmp_path / "home" / ".signalcraft").exists()  # nothing made, nothing said
    assert listener_cli("--auth-token", TOKEN).exit_code == 0 and served[-1] == TOKEN  # the flag still works


def _unsafe_token_files(tmp_path):
    good = tmp_path / "good"
    good.write_text(TOKEN)
    good.chmod(0o600)
    readable = tmp_path / "readable"
    readable.write_text(TOKEN)
    readable.chmod(0o640)
    link = tmp_path / "link"
    link.symlink_to(good)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    empty = tmp_path / "empty"
    empty.touch(0o600)
    files = {readable: "mode 0640", link: "symbolic link", tmp_path: "not a regular file",
             fifo: "not a regular file", empty: "one token", tmp_path / "absent": "cannot be read"}
    if os.geteuid() == 0:  # only root can give a file away
        theirs = tmp_path / "theirs"
        theirs.write_text(TOKEN)
        theirs.chmod(0o600)
        os.chown(theirs, 65534, 65534)
        files[theirs] = "owned by uid 65534"
    return files


def test_the_cli_refuses_a_token_file_others_can_read_or_swap(cli_home, tmp_path):
    _, served = cli_home
    for path, why in _unsafe_token_files(tmp_path).items():
        result = listener_cli("--auth-token-file", str(path))
        lines = result.output.strip().splitlines()
        assert result.exit_code != 0 and len(lines) == 1 and lines[0].startswith("Error: "), result.output
        assert why in lines[0] and str(path) in lines[0], (why, lines[0])
    both = listener_cli("--auth-token", TOKEN, "--auth-token-file", str(tmp_path / "good"))
    assert both.exit_code != 0 and "not both" in both.output
    assert served == []


def test_a_token_file_flag_beats_the_token_variable_the_minio_setup_exports(cli_home, tmp_path, monkeypatch):
    """README's MinIO steps export SIGNALCRAFT_WEBHOOK_TOKEN for compose, then pass --auth-token-file."""
    _, served = cli_home
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    monkeypatch.setenv("SIGNALCRAFT_WEBHOOK_TOKEN", "from-the-environment")
    result = listener_cli("--auth-token-file", str(path))
    assert result.exit_code == 0 and served == [TOKEN], result.output
    monkeypatch.setenv("SIGNALCRAFT_WEBHOOK_TOKEN_FILE", str(path))   # and the other way round
    assert listener_cli("--auth-token", "from-the-flag").exit_code == 0 and served[-1] == "from-the-flag"


def test_the_cli_refuses_a_planted_default_token_file(cli_home, tmp_path):
    """A symlink or an open file where the token would go is refused, never followed or used."""
    home, served = cli_home
    folder = home / ".signalcraft"
    folder.mkdir(mode=0o700)
    target = tmp_path / "elsewhere"
    (folder / "webhook-token").symlink_to(target)
    result = listener_cli()
    assert result.exit_code != 0 and "symbolic link" in result.output and not target.exists()
    (folder / "webhook-token").unlink()
    (folder / "webhook-token").write_text(TOKEN)
    (folder / "webhook-token").chmod(0o644)
    assert "mode 0644" in listener_cli().output
    (folder / "webhook-token").unlink()
    folder.chmod(0o777)
    assert "not private" in listener_cli().output
    assert served == []


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


def test_a_key_cannot_forge_console_lines_or_send_terminal_escapes(hook):
    forged = ('nosuch.wav: {"grades": {}, "errors": {}}\nsignalcraft-recordings/site-a/pump/id_00/ALL-CLEAR.wav: '
              '{"grades": {"NORMAL": 1}}\x1b[2K\r\x9b\u2028\u202ex.wav')
    status, body = hook.post(hook.notify(hook.recordings, forged))
    assert status == 200 and body["skipped"][0]["key"] == forged  # the answer is JSON: escaped already
    (line,) = [line for line in hook.said if "ALL-CLEAR" in line]
    assert line.isprintable(), repr(line)
    assert "\\u000a" in line and "\\u001b[2K" in line and "\\u202e" in line
    assert printable("a\\b\x00\x7f\u00e9") == "a\\\\b\\u0000\\u007f\u00e9"  # backslash too; letters untouched


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


def test_clients_trickling_their_headers_are_cut_off_at_one_deadline(env, s3):
    """A byte every 0.5 s never trips a 2 s timeout per read; the deadline for the whole request does.

    Four such clients fill the 2 workers and the 2 queue slots; a real delivery must still get through
    once their deadline has passed, not be told 503 for as long as they keep trickling.
    """
    hook, server = listen(env, s3, workers=2, queue_size=2, read_timeout_s=2.0)
    slow = [socket.create_connection(("127.0.0.1", hook.port), timeout=10) for _ in range(4)]
    stop = threading.Event()

    def trickle() -> None:
        for sock in slow:
            sock.sendall(b"POST / HTTP/1.1\r\nX-Slow: ")
        while not stop.wait(0.5):
            for sock in slow:
                try:
                    sock.sendall(b"a")
                except OSError:  # cut off: what the fix does
                    pass

    threading.Thread(target=trickle, daemon=True).start()
    try:
        time.sleep(0.5)
        hook.s3.put_object(Bucket=hook.recordings, Key=KEY, Body=clip())
        started = time.monotonic()
        while (status := hook.post(hook.notify(hook.recordings, KEY))[0]) == 503 and time.monotonic() < started + 20:
            time.sleep(0.2)
        assert status == 200, "the trickling clients still hold every worker and queue slot"
        for sock in slow:  # and they were closed, not merely outlived
            sock.settimeout(5)
            try:
                while sock.recv(1024):  # a 503 at most, if the queue was full when it connected; then EOF
                    pass
            except ConnectionResetError:
                pass
    finally:
        stop.set()
        for sock in slow:
            sock.close()
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("body", [
    b"this is not json", b'{"Records": [', b"\xff\xfe{}", json.dumps({"hello": "world"}).encode(), b"[1, 2, 3]",
    b"[" * 100_000 + b"]" * 100_000,  # 200 KB, 100,000 levels: a RecursionError without the depth check
    b'{"a":' * 20_000 + b"1" + b"}" * 20_000,
    b'"' + b'\\"' * 65_536,  # 128 KiB unterminated string: 22 s in the regex pre-scan this replaced
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
    assert not json_depth_ok(b'["\\\\"' + b"[" * 32)  # an escaped backslash does not escape the closing quote
    assert json_depth_ok(b'["\\\\\\"' + b"[" * 32 + b'"]')  # but an escaped quote does not close it


def test_the_depth_scan_is_linear_whatever_the_strings_hold():
    """An unterminated string of escaped quotes costs what a terminated one does (the regex it replaced
    rescanned the rest from every quote: quadratic, GIL held, the whole listener frozen)."""
    def cost(body: bytes) -> float:
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            assert json_depth_ok(body)
            best = min(best, time.perf_counter() - started)
        return best

    closed = b'"' + b'\\"' * 16_384 + b'"'
    unterminated = b'"' + b'\\"' * 16_384
    assert cost(unterminated) < 20 * cost(closed) + 0.05  # quadratic: ~1000 times


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


def test_a_port_in_use_is_one_error_line(env, tmp_path, monkeypatch):
    """The bind's own OSError reaches the CLI (it used to be hidden by an AttributeError from the cleanup)."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        with pytest.raises(OSError):
            make_server("127.0.0.1", taken.getsockname()[1], token=TOKEN)
        monkeypatch.setenv("SIGNALCRAFT_WEBHOOK_TOKEN", TOKEN)
        result = CliRunner().invoke(cli, ["local", "minio-listener", "--port", str(taken.getsockname()[1])])
    finally:
        taken.close()
    assert result.exit_code == 1 and result.output.startswith("Error: ") and len(result.output.splitlines()) == 1, \
        result.output
    assert not isinstance(result.exception, AttributeError)
