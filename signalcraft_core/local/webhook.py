"""A small HTTP receiver for MinIO bucket notifications that runs the upload handler on each, safely.

MinIO's webhook target POSTs the notification JSON (`{"EventName", "Key", "Records"}`) with
`Authorization: Bearer <auth_token>` when the target has an auth_token. The receiver:

- answers 401 to a missing or wrong token before reading the body (compared in constant time), and
  refuses to listen on a non-loopback address without a token;
- answers 403 for a bucket outside its allow-list, 413 for a body over `max_body_bytes` (unread),
  400 for malformed or too deeply nested JSON or a payload that is no bucket notification;
- serves from a fixed pool of workers with a short queue (503 when full) and a socket read timeout,
  so stalled or slow clients cannot pile up threads or memory;
- trusts the notification for *which* object only: every object is HEAD-ed and the upload event
  is rebuilt from its own ETag, version id, size and LastModified (the sender's versionId,
  eventTime and size are dropped), so a forged field cannot write a not_found record for an
  object that exists or refile a recording under another day;
- answers 200 when every recording got its record and 500 when grading could not be recorded
  (MinIO delivers it again later).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import queue
import re
import select
import socket
import socketserver
import threading
import time
from datetime import timezone
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable, Iterable
from urllib.parse import quote_plus

MAX_BODY_BYTES = 256 * 1024  # a MinIO notification is a few KiB
MAX_JSON_DEPTH = 32  # a notification nests 5 levels
READ_TIMEOUT_S = 10.0
WORKERS = 4
QUEUE_SIZE = 8
_DRAIN_LIMIT = 1 << 20  # bytes discarded (without waiting) before closing, so the client sees our answer


class ListenerRefused(ValueError):
    """The listener would be unsafe as configured (one line, for the CLI's `Error:`)."""


class BadNotification(ValueError):
    """A body that is not a usable notification: 400, MinIO redelivering it would not help."""


# ----------------------------------------------------------------------------------------- policy


def is_loopback(host: str) -> bool:
    """True when every address `host` names is a loopback address ('' and 0.0.0.0 are not)."""
    name = host.strip().strip("[]")
    if not name:
        return False
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(name, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


_JSON_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def json_depth_ok(data: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether arrays/objects in `data` nest at most `limit` deep (strings skipped); checked before json.loads."""
    depth = 0
    for match in _JSON_TOKEN.finditer(data):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return False
        elif token in (b"]", b"}"):
            depth -= 1
    return True


def parse_notification(data: bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The JSON of a body; BadNotification for invalid UTF-8/JSON or nesting deeper than `max_depth`."""
    if not json_depth_ok(data, max_depth):
        raise BadNotification(f"JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadNotification("body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise BadNotification(f"body is not JSON ({exc.msg} at char {exc.pos})") from None
    except RecursionError:  # the pre-scan makes this unreachable; never let it escape as a crash
        raise BadNotification(f"JSON nested deeper than {max_depth} levels") from None


def _record(bucket: str, key: str, etag: str | None = None, version_id: str | None = None,
            size: int | None = None, event_time: str | None = None) -> dict[str, Any]:
    """One MinIO-style notification record, naming only what we vouch for."""
    obj: dict[str, Any] = {"key": quote_plus(key, safe="")}
    if etag:
        obj["eTag"] = etag
    if version_id:
        obj["versionId"] = version_id
    if size is not None:
        obj["size"] = size
    record: dict[str, Any] = {"eventVersion": "2.0", "eventSource": "minio:s3", "eventName": "s3:ObjectCreated:Put",
                              "s3": {"bucket": {"name": bucket}, "object": obj}}
    if event_time:
        record["eventTime"] = event_time
    return record


# ----------------------------------------------------------------------------------------- server


class ListenerServer(socketserver.TCPServer):
    """A TCP server with a fixed worker pool and a bounded queue: a full queue is answered 503 at once."""

    allow_reuse_address = True
    request_queue_size = 128  # the kernel's accept backlog; the worker queue below is what bounds the work

    def __init__(self, address: tuple[str, int], handler: type, workers: int = WORKERS,
                 queue_size: int = QUEUE_SIZE) -> None:
        super().__init__(address, handler)
        self._closer = _LingeringCloser()
        self._pending: queue.Queue = queue.Queue(maxsize=max(0, queue_size) or 1)
        self._threads = [threading.Thread(target=self._work, name=f"minio-listener-{i}", daemon=True)
                         for i in range(max(1, workers))]
        for thread in self._threads:
            thread.start()

    def process_request(self, request: socket.socket, client_address: Any) -> None:  # accept thread
        try:
            self._pending.put_nowait((request, client_address))
        except queue.Full:
            self._busy(request)

    def _busy(self, request: socket.socket) -> None:
        body = b'{"error": "busy, try again later"}'
        head = ("HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
                f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        try:
            request.settimeout(1.0)
            _drain(request)
            request.sendall(head + body)
            request.shutdown(socket.SHUT_WR)
        except OSError:
            self.shutdown_request(request)
            return
        self._closer.linger(request)

    def _work(self) -> None:
        while True:
            item = self._pending.get()
            if item is None:
                return
            request, client_address = item
            try:
                self.finish_request(request, client_address)
            except Exception:  # noqa: BLE001 - one broken connection never stops a worker
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)

    def shutdown_request(self, request: socket.socket) -> None:
        _drain(request)  # unread bytes would turn our close into a reset that can swallow the answer
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:  # quiet: no tracebacks on stderr
        pass

    def server_close(self) -> None:
        super().server_close()
        self._closer.stop()
        while True:  # connections still queued are closed, then each worker gets its stop sentinel
            try:
                item = self._pending.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                super().shutdown_request(item[0])
        for _ in self._threads:
            self._pending.put(None)


class _LingeringCloser:
    """Keeps answered-503 sockets open a moment, reading what their clients still send, then closes them.

    Closing a socket while the client's request is still arriving makes the kernel answer those bytes
    with a reset: a client still sending its event gets a broken pipe instead of reading the 503. One
    thread waits on all of them at once, each at most LINGER_S, at most MAX_LINGERING at a time (beyond
    that, closed at once), so a flood of stalled connections costs the accept loop nothing.
    """

    LINGER_S = 1.0
    MAX_LINGERING = 256

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sockets: dict[socket.socket, float] = {}
        self._wake = threading.Event()
        self._stopped = False
        threading.Thread(target=self._run, name="minio-listener-closer", daemon=True).start()

    def stop(self) -> None:
        """Close what still lingers and end the thread (the server is closing)."""
        with self._lock:
            self._stopped = True
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()
        self._wake.set()

    def linger(self, sock: socket.socket) -> None:
        with self._lock:
            if self._stopped or len(self._sockets) >= self.MAX_LINGERING:
                sock.close()
                return
            sock.setblocking(False)
            self._sockets[sock] = time.monotonic() + self.LINGER_S
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            with self._lock:
                if self._stopped:
                    return
                watched = list(self._sockets)
                if not watched:
                    self._wake.clear()   # under the lock: a socket added after this sets it again
            if not watched:
                continue
            try:
                readable, _, _ = select.select(watched, [], [], 0.05)
            except (OSError, ValueError):   # a socket closed under us by stop()
                continue
            now = time.monotonic()
            with self._lock:
                if self._stopped:
                    return
                for sock in watched:
                    done = now >= self._sockets[sock]
                    if sock in readable:
                        try:
                            done = done or not sock.recv(65536)   # EOF: the client has read and closed
                        except OSError:
                            done = True
                    if done:
                        del self._sockets[sock]
                        sock.close()


def _drain(sock: socket.socket) -> None:
    """Discard what the client already sent, without waiting for more."""
    try:
        sock.setblocking(False)
        total = 0
        while total < _DRAIN_LIMIT:
            chunk = sock.recv(65536)
            if not chunk:
                break
            total += len(chunk)
    except OSError:  # BlockingIOError: nothing more has arrived; or the socket is gone
        pass


def make_server(host: str, port: int, say: Callable[[str], None] = lambda _m: None, *, token: str | None = None,
                buckets: Iterable[str] | None = None, workers: int = WORKERS, queue_size: int = QUEUE_SIZE,
                read_timeout_s: float = READ_TIMEOUT_S, max_body_bytes: int = MAX_BODY_BYTES,
                max_depth: int = MAX_JSON_DEPTH) -> ListenerServer:
    """The receiver, bound and ready for `serve_forever`.

    `token`: the shared secret (MinIO's auth_token); required unless `host` is a loopback address.
    `buckets`: the allow-list (None: any bucket the credentials can read; the CLI always passes one).
    """
    from signalcraft_core.errors import ErrorCode, SignalcraftError
    from signalcraft_core.io.events import parse_event
    from signalcraft_core.io.objects import head
    from signalcraft_core.local.invoke import FUNCTIONS, load_handler
    from signalcraft_core.logs import one_line
    from signalcraft_core.pipeline.grade import refusal
    from signalcraft_core.pipeline.runtime import get_runtime

    token = token or None
    if token is None and not is_loopback(host):
        raise ListenerRefused(
            f"refusing to listen on {host or 'all addresses'} (not a loopback address) without a token: pass "
            "--auth-token or set SIGNALCRAFT_WEBHOOK_TOKEN to the auth_token MinIO's webhook target sends")
    expected = token.encode("utf-8") if token else None
    allowed = frozenset(buckets) if buckets is not None else None
    handler = load_handler(FUNCTIONS["ScoreUploadFunction"])

    class Receiver(BaseHTTPRequestHandler):
        timeout = read_timeout_s  # every recv on the connection: a stalled client is cut off
        server_version = "signalcraft-minio-listener"
        sys_version = ""

        def log_message(self, *_args) -> None:  # quiet: we report per event instead
            pass

        def _reply(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body, default=str).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def do_GET(self) -> None:  # MinIO probes the endpoint when the target is configured
            self._reply(200, {"status": "ready"})

        do_HEAD = do_GET  # newer MinIO releases probe with HEAD

        def _authorized(self) -> bool:
            if expected is None:
                return True
            scheme, _, credential = (self.headers.get("Authorization") or "").strip().partition(" ")
            given = credential.strip().encode("utf-8", "surrogateescape")
            return hmac.compare_digest(given, expected) and scheme.lower() == "bearer"

        def _body(self) -> bytes | None:
            """The body, or None once an error was answered; never reads more than max_body_bytes."""
            if self.headers.get("Transfer-Encoding"):
                self._reply(411, {"error": "send the notification with a Content-Length"})
                return None
            declared = self.headers.get("Content-Length")
            if declared is None:
                self._reply(411, {"error": "send the notification with a Content-Length"})
                return None
            try:
                length = int(declared)
            except ValueError:
                length = -1
            if length <= 0:
                self._reply(400, {"error": "expected a JSON notification body"})
                return None
            if length > max_body_bytes:
                self._reply(413, {"error": f"body of {length} bytes is over the {max_body_bytes}-byte limit"})
                return None
            try:
                data = self.rfile.read(length)
            except OSError:  # TimeoutError: the client stopped sending; the connection is closed
                self.close_connection = True
                return None
            if len(data) < length:
                self.close_connection = True
                return None
            return data

        def do_POST(self) -> None:
            if not self._authorized():  # before reading a byte of the body
                self._reply(401, {"error": "missing or wrong bearer token"},
                            {"WWW-Authenticate": 'Bearer realm="signalcraft"'})
                return
            data = self._body()
            if data is None:
                return
            try:
                items = parse_event(parse_notification(data, max_depth))
            except ValueError as exc:  # also BadNotification
                self._reply(400, {"error": one_line(str(exc))})
                return
            problems = [item.error for item in items if item.error]
            if problems or any(item.message_id is not None for item in items):
                self._reply(400, {"error": one_line("; ".join(problems) or "an SQS batch is not a bucket notification")})
                return
            refs = [ref for item in items for ref in item.refs]
            refused = sorted({ref.bucket for ref in refs} - allowed) if allowed is not None else []
            if refused:
                self._reply(403, {"error": one_line(f"bucket(s) not allowed here: {', '.join(refused)}")})
                return
            skipped: list[dict[str, str]] = [{"reason": item.skipped} for item in items if item.skipped]
            try:
                runtime = get_runtime()
                records = []
                for ref in refs:
                    if refusal(ref, runtime.config):
                        records.append(_record(ref.bucket, ref.key))  # the handler says why; nothing is read
                        continue
                    try:  # the object's own metadata, never the sender's versionId / eventTime / size
                        info = head(runtime.client, ref.bucket, ref.key)
                    except SignalcraftError as exc:
                        if exc.code is ErrorCode.NOT_FOUND:
                            skipped.append({"key": ref.key, "reason": "no such object"})
                            continue
                        raise
                    when = info.last_modified.astimezone(timezone.utc).isoformat() if info.last_modified else None
                    records.append(_record(ref.bucket, ref.key, info.etag, info.version_id, info.size, when))
                result = handler({"Records": records}, None) if records else {"records": 0, "skipped": []}
            except Exception as exc:  # noqa: BLE001 - storage or configuration: 500 makes MinIO redeliver later
                message = one_line(str(exc)) or type(exc).__name__
                say(f"notification failed: {message}")
                self._reply(500, {"error": message})
                return
            result = {**result, "skipped": list(result.get("skipped") or []) + skipped}
            names = ", ".join(f"{ref.bucket}/{ref.key}" for ref in refs) or "event"
            say(f"{names}: {json.dumps({k: result.get(k) for k in ('grades', 'errors')})}")
            self._reply(200, result)

    return ListenerServer((host, port), Receiver, workers=workers, queue_size=queue_size)


def serve(host: str, port: int, say: Callable[[str], None], *, token: str | None = None,
          buckets: Iterable[str] | None = None) -> None:
    server = make_server(host, port, say, token=token, buckets=buckets)
    who = "a bearer token" if token else "no token (loopback only)"
    allowed = ", ".join(sorted(buckets)) if buckets is not None else "any bucket"
    say(f"listening for MinIO notifications on http://{host}:{server.server_address[1]}/ "
        f"({who}; buckets: {allowed}; Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
