"""A small HTTP receiver for MinIO bucket notifications that runs the upload handler on each, safely.

MinIO's webhook target POSTs the notification JSON (`{"EventName", "Key", "Records"}`) with
`Authorization: Bearer <auth_token>` when the target has an auth_token. The receiver:

- never listens without a token, not even on loopback (another local user can reach 127.0.0.1): with
  none given it makes one in a file only this user can read (`listener_token`); a missing or wrong
  token is answered 401 before the body is read (compared in constant time);
- answers 403 for a bucket outside its allow-list, 413 for a body over `max_body_bytes` (unread),
  400 for malformed or too deeply nested JSON or a payload that is no bucket notification;
- serves from a fixed pool of workers with a short queue (503 when full), and gives each request one
  deadline for its headers and body together (not a timeout per read, which a client sending a byte
  now and then never trips), so stalled or slow clients cannot pile up threads or memory or hold
  the workers;
- trusts the notification for *which* object only: every object is HEAD-ed and the upload event
  is rebuilt from its own ETag, version id, size and LastModified (the sender's versionId,
  eventTime and size are dropped), so a forged field cannot write a not_found record for an
  object that exists or refile a recording under another day;
- answers 200 when every recording got its record and 500 when grading could not be recorded
  (MinIO delivers it again later);
- prints what the sender wrote (object keys) with control characters escaped, so a key cannot
  forge console lines or send terminal escapes.
"""

from __future__ import annotations

import errno
import hmac
import io
import json
import os
import queue
import re
import secrets
import select
import socket
import socketserver
import stat
import threading
import time
from datetime import timezone
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import quote_plus

MAX_BODY_BYTES = 256 * 1024  # a MinIO notification is a few KiB
MAX_JSON_DEPTH = 32  # a notification nests 5 levels
READ_TIMEOUT_S = 10.0  # for a request's headers and body together, from the moment a worker takes it
WORKERS = 4
QUEUE_SIZE = 8
_DRAIN_LIMIT = 1 << 20  # bytes discarded (without waiting) before closing, so the client sees our answer


class ListenerRefused(ValueError):
    """The listener would be unsafe as configured (one line, for the CLI's `Error:`)."""


class BadNotification(ValueError):
    """A body that is not a usable notification: 400, MinIO redelivering it would not help."""


# ----------------------------------------------------------------------------------------- policy


TOKEN_ENV = "SIGNALCRAFT_WEBHOOK_TOKEN"
_MAX_TOKEN_BYTES = 4096
_TOKEN_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK  # O_NONBLOCK: a planted FIFO cannot hang the open


def default_token_file() -> Path:
    """Where the token made for this user is kept: one per user, so a restart keeps what MinIO was given."""
    return Path.home() / ".signalcraft" / "webhook-token"


def _not_private(st: os.stat_result) -> str | None:
    """Why a token file could leak or be swapped (as a phrase after its path), or None when only this user has it."""
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if st.st_uid != os.geteuid():
        return f"is owned by uid {st.st_uid}, not by this user (uid {os.geteuid()})"
    if st.st_mode & 0o077:
        return f"is open to other users (mode {stat.S_IMODE(st.st_mode):04o}; chmod 600 it)"
    return None


def read_token_file(path: str | Path) -> str:
    """The token in `path`; ListenerRefused unless it is a regular file (not a symlink) of this user, mode 0600 or less.

    Whoever can read the token can have any object graded, so a file others can read (or a link
    that could be re-pointed) is refused rather than trusted; the checks run on the open descriptor,
    so what was checked is what is read.
    """
    path = Path(path).expanduser()
    try:
        fd = os.open(path, _TOKEN_READ_FLAGS)
    except OSError as exc:
        why = "is a symbolic link" if exc.errno == errno.ELOOP else f"cannot be read ({exc.strerror or exc})"
        raise ListenerRefused(f"token file {path} {why}") from None
    try:
        reason = _not_private(os.fstat(fd))
        if reason:
            raise ListenerRefused(f"token file {path} {reason}; refusing to use it")
        data = os.read(fd, _MAX_TOKEN_BYTES + 1)
    finally:
        os.close(fd)
    token = data.decode("utf-8", "replace").strip()
    if not token or len(data) > _MAX_TOKEN_BYTES or any(c.isspace() or not c.isprintable() for c in token):
        raise ListenerRefused(f"token file {path} must hold one token (printable, no spaces, one line)")
    return token


def _new_token_file(path: Path) -> str | None:
    """Write a fresh token to `path` (O_EXCL, O_NOFOLLOW, 0600; folder made 0700); None when `path` exists."""
    folder = path.parent
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.stat(folder)
    except OSError as exc:
        raise ListenerRefused(f"token folder {folder} cannot be used ({exc.strerror or exc})") from None
    if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):  # others could swap the file
        raise ListenerRefused(f"token folder {folder} is not private to this user "
                              f"(uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}); refusing to use it")
    token = secrets.token_hex(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return None
    except OSError as exc:
        raise ListenerRefused(f"token file {path} cannot be written ({exc.strerror or exc})") from None
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(token + "\n")
    return token


def listener_token(token: str | None = None, token_file: str | Path | None = None) -> tuple[str, Path | None]:
    """The bearer token to require, and the file it is in when it was not given (made on first use).

    The token made for the user is kept in `default_token_file()` and reused on later starts (MinIO
    keeps sending the one it was configured with; delete the file for a new one). It is never
    printed: the caller points the user to the file.
    """
    if token and token_file:
        raise ListenerRefused(f"give the token one way: --auth-token ({TOKEN_ENV}) or --auth-token-file, not both")
    if token:
        return token, None
    if token_file:
        return read_token_file(token_file), None
    path = default_token_file()
    return _new_token_file(path) or read_token_file(path), path


_JSON_SPECIAL = re.compile(rb'[\[\]{}"\\]')


def json_depth_ok(data: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether arrays/objects in `data` nest at most `limit` deep (strings skipped); checked before json.loads.

    One pass over the bytes that matter (brackets, quotes, backslashes), tracking whether we are in
    a string and what a backslash escapes: linear in the body, whatever it holds. (A regex for whole
    string tokens rescans an unterminated string from each of its quotes: quadratic, with the GIL
    held.) json.loads alone is no limit: on 3.11 it nests to the recursion limit (~1000) before
    RecursionError.
    """
    depth = 0
    in_string = False
    escaped = -1  # the position a backslash escapes
    for match in _JSON_SPECIAL.finditer(data):
        pos = match.start()
        char = data[pos]
        if in_string:
            if pos == escaped:
                continue
            if char == 0x5C:  # backslash
                escaped = pos + 1
            elif char == 0x22:  # quote
                in_string = False
        elif char == 0x22:
            in_string = True
        elif char in b"[{":
            depth += 1
            if depth > limit:
                return False
        elif char in b"]}":
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
        # Everything server_close() touches exists before the bind: a port in use must surface as the
        # OSError it is (one line from the CLI), not as an AttributeError from the cleanup.
        self._closer = _LingeringCloser()
        self._pending: queue.Queue = queue.Queue(maxsize=max(0, queue_size) or 1)
        self._threads = [threading.Thread(target=self._work, name=f"minio-listener-{i}", daemon=True)
                         for i in range(max(1, workers))]
        super().__init__(address, handler)
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
        for thread in self._threads:
            if thread.ident is not None:  # started: a bind that failed started none
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


class _DeadlineReader(io.RawIOBase):
    """The connection's bytes, each read waiting only for what is left of one deadline for the whole request.

    A per-read timeout is no bound: a client sending a header byte every few seconds keeps a worker
    for as long as it likes (and enough of them keep every worker and the queue). Past the deadline
    a read raises TimeoutError, which closes the connection.
    """

    def __init__(self, sock: socket.socket, seconds: float) -> None:
        super().__init__()
        self._sock = sock
        self._deadline = time.monotonic() + seconds

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("request not received in time")
        self._sock.settimeout(remaining)
        return self._sock.recv_into(buffer)


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

    `token`: the shared secret (MinIO's auth_token); required on every address, loopback too (see
    `listener_token` for one made for the user).
    `buckets`: the allow-list (None: any bucket the credentials can read; the CLI always passes one).
    `read_timeout_s`: the time a request's headers and body get together, not per read.
    """
    from signalcraft_core.errors import ErrorCode, SignalcraftError
    from signalcraft_core.io.events import parse_event
    from signalcraft_core.io.objects import head
    from signalcraft_core.local.invoke import FUNCTIONS, load_handler
    from signalcraft_core.logs import one_line, printable
    from signalcraft_core.pipeline.grade import refusal
    from signalcraft_core.pipeline.runtime import get_runtime

    if not token:  # loopback is no shield: any local user can connect to 127.0.0.1
        raise ListenerRefused(
            f"refusing to listen on {host or 'all addresses'} without a token: pass --auth-token-file, or set "
            f"{TOKEN_ENV}, to the auth_token MinIO's webhook target sends")
    expected = token.encode("utf-8")
    allowed = frozenset(buckets) if buckets is not None else None
    handler = load_handler(FUNCTIONS["ScoreUploadFunction"])

    def tell(line: str) -> None:
        say(printable(line))

    class Receiver(BaseHTTPRequestHandler):
        server_version = "signalcraft-minio-listener"
        sys_version = ""

        def setup(self) -> None:
            super().setup()  # one request per connection (HTTP/1.0 answers), so one deadline per request
            self.rfile.close()
            self.rfile = io.BufferedReader(_DeadlineReader(self.connection, read_timeout_s))

        def log_message(self, *_args) -> None:  # quiet: we report per event instead
            pass

        def _reply(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body, default=str).encode()
            self.connection.settimeout(read_timeout_s)  # the answer's own bound, not what the request left over
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
            except OSError:  # TimeoutError: the request's deadline passed; the connection is closed
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
                tell(f"notification failed: {message}")
                self._reply(500, {"error": message})
                return
            result = {**result, "skipped": list(result.get("skipped") or []) + skipped}
            names = ", ".join(f"{ref.bucket}/{ref.key}" for ref in refs) or "event"
            tell(f"{names}: {json.dumps({k: result.get(k) for k in ('grades', 'errors')})}")
            self._reply(200, result)

    return ListenerServer((host, port), Receiver, workers=workers, queue_size=queue_size)


def serve(host: str, port: int, say: Callable[[str], None], *, token: str | None = None,
          buckets: Iterable[str] | None = None) -> None:
    server = make_server(host, port, say, token=token, buckets=buckets)
    allowed = ", ".join(sorted(buckets)) if buckets is not None else "any bucket"
    say(f"listening for MinIO notifications on http://{host}:{server.server_address[1]}/ "
        f"(bearer token required; buckets: {allowed}; Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
