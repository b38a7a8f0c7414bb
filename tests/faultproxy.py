"""A fault-injecting HTTP proxy for tests: put it between boto3 and the loopback S3 server to see what breaks.

Point boto3's endpoint_url (or AWS_ENDPOINT_URL) at `FaultProxy.url`. Every request is forwarded to the
upstream server unless a `Fault` in the plan matches it; then the proxy answers with an S3 XML error
(500 InternalError, 503 SlowDown, 403 ...), resets the connection, cuts the response body short or
trickles it out slowly. Faults fire for the next N matching requests (`times`) and/or a fraction of them
(`rate`, seeded), filtered by method, path and query. The proxy counts requests and injected faults and
keeps a log of each request, so tests can say "this object was never GET-ed" or "3 faults, 0 lost".

Only for tests: one thread per client connection, whole bodies buffered in memory.
"""

from __future__ import annotations

import http.client
import random
import re
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterable
from urllib.parse import unquote, urlsplit

__all__ = ["Fault", "FaultProxy", "RequestEntry", "s3_error_xml"]

#: Headers that describe one connection, not the message: never forwarded.
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
     "transfer-encoding", "upgrade", "expect", "proxy-connection"}
)
KINDS = ("error", "reset", "truncate", "trickle")


def s3_error_xml(code: str, message: str, resource: str = "", request_id: str = "FAULTPROXY") -> bytes:
    """The body S3 sends with an error status; botocore parses Code and Message from it."""
    def esc(text: str) -> str:
        return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{esc(code)}</Code><Message>{esc(message)}</Message>"
        f"<Resource>{esc(resource)}</Resource><RequestId>{esc(request_id)}</RequestId></Error>"
    ).encode()


@dataclass
class Fault:
    """One entry of the fault plan (mutable: it counts what it injected and how many shots are left).

    kind: "error" (status + S3 XML error body), "reset" (TCP RST instead of an answer), "truncate"
    (headers promise the whole body, half is sent, then RST), "trickle" (the whole answer, `chunk` bytes
    every `delay` seconds). `times`: fire for at most this many matching requests (None: no limit);
    `rate`: the fraction of matching requests that fire. `method` / `path` (regex searched in the
    URL-decoded path, e.g. "/bucket/key") / `query` (regex searched in the raw query string) filter.
    `forward`: let the request reach the server first (the write happens, the client sees the fault).
    `per_target`: fire at most this many times for any one method + path + query, so a request retried
    often enough always gets through (transient faults that cannot turn into an outage by bad luck).
    """

    kind: str = "error"
    status: int = 503
    code: str = "SlowDown"
    message: str = "Please reduce your request rate."
    times: int | None = None
    rate: float = 1.0
    method: str | None = None
    path: str | None = None
    query: str | None = None
    forward: bool = False
    per_target: int | None = None
    chunk: int = 512
    delay: float = 0.005
    injected: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"fault kind must be one of {KINDS}, not {self.kind!r}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"rate must be within [0, 1], not {self.rate}")
        self._path = re.compile(self.path) if self.path else None
        self._query = re.compile(self.query) if self.query else None
        self._hits: Counter = Counter()

    # -- constructors for the usual faults ---------------------------------------------------------
    @classmethod
    def slow_down(cls, **kw) -> "Fault":
        """503 SlowDown: S3's throttling answer (botocore backs off from 1 s)."""
        return cls(kind="error", status=503, code="SlowDown", message="Please reduce your request rate.", **kw)

    @classmethod
    def internal_error(cls, **kw) -> "Fault":
        """500 InternalError: a transient server failure (botocore backs off from 50 ms)."""
        return cls(kind="error", status=500, code="InternalError",
                   message="We encountered an internal error. Please try again.", **kw)

    @classmethod
    def error(cls, status: int, code: str, message: str, **kw) -> "Fault":
        return cls(kind="error", status=status, code=code, message=message, **kw)

    @classmethod
    def reset(cls, **kw) -> "Fault":
        return cls(kind="reset", **kw)

    @classmethod
    def truncate(cls, **kw) -> "Fault":
        return cls(kind="truncate", **kw)

    @classmethod
    def trickle(cls, chunk: int = 512, delay: float = 0.005, **kw) -> "Fault":
        return cls(kind="trickle", chunk=chunk, delay=delay, **kw)

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.injected >= self.times

    def matches(self, method: str, path: str, query: str) -> bool:
        if self.exhausted:
            return False
        if self.method and self.method.upper() != method:
            return False
        if self.per_target is not None and self._hits[(method, path, query)] >= self.per_target:
            return False
        if self._path and not self._path.search(path):
            return False
        return not (self._query and not self._query.search(query))


@dataclass(frozen=True)
class RequestEntry:
    """One request the proxy saw: what was asked and what the client got (`fault` None = forwarded)."""

    method: str
    path: str  # URL-decoded, e.g. "/bucket/site-a/pump/x.wav"
    query: str
    status: int | None  # None when the connection was reset before any answer
    fault: str | None
    at: float = field(default_factory=time.monotonic)


class FaultProxy:
    """A threaded HTTP proxy on 127.0.0.1 in front of `upstream` ("http://127.0.0.1:PORT") with a fault plan."""

    def __init__(self, upstream: str, seed: int = 0, timeout: float = 30.0) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be http://host:port, not {upstream!r}")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self.timeout = timeout
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._plan: list[Fault] = []
        self._log: list[RequestEntry] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections = 0

    # -- life cycle ---------------------------------------------------------------------------------
    def start(self) -> "FaultProxy":
        proxy = self

        class Handler(_ProxyHandler):
            owner = proxy

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="faultproxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> "FaultProxy":
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("proxy is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- the plan -------------------------------------------------------------------------------------
    def add(self, *faults: Fault) -> Fault:
        """Append faults to the plan (first match wins); returns the last one for its `injected` count."""
        with self._lock:
            self._plan.extend(faults)
        return faults[-1]

    def clear(self) -> None:
        """No more faults (counts and the request log are kept)."""
        with self._lock:
            self._plan.clear()

    def _choose(self, method: str, path: str, query: str) -> Fault | None:
        with self._lock:
            for fault in self._plan:
                if fault.matches(method, path, query):
                    if fault.rate < 1.0 and self._rng.random() >= fault.rate:
                        continue
                    fault.injected += 1
                    fault._hits[(method, path, query)] += 1
                    return fault
        return None

    def _record(self, entry: RequestEntry) -> None:
        with self._lock:
            self._log.append(entry)

    # -- what happened --------------------------------------------------------------------------------
    @property
    def log(self) -> list[RequestEntry]:
        with self._lock:
            return list(self._log)

    @property
    def connections(self) -> int:
        """Client connections accepted so far (the proxy keeps each alive, as S3 does)."""
        with self._lock:
            return self._connections

    def _connected(self) -> None:
        with self._lock:
            self._connections += 1

    @property
    def requests(self) -> int:
        with self._lock:
            return len(self._log)

    @property
    def faults_injected(self) -> int:
        with self._lock:
            return sum(1 for e in self._log if e.fault)

    def fault_counts(self) -> Counter:
        """Injected faults by kind ("error:503", "reset", ...)."""
        with self._lock:
            return Counter(e.fault for e in self._log if e.fault)

    def count(self, method: str | None = None, path: str | None = None, query: str | None = None,
              faulted: bool | None = None) -> int:
        """Requests seen matching the filters (`path`/`query`: regex searched, like Fault's)."""
        return len(self.select(method, path, query, faulted))

    def select(self, method: str | None = None, path: str | None = None, query: str | None = None,
               faulted: bool | None = None) -> list[RequestEntry]:
        p = re.compile(path) if path else None
        q = re.compile(query) if query else None
        return [e for e in self.log
                if (method is None or e.method == method.upper())
                and (p is None or p.search(e.path)) and (q is None or q.search(e.query))
                and (faulted is None or bool(e.fault) == faulted)]

    def paths(self, method: str) -> Counter:
        """How often each path was requested with `method`."""
        return Counter(e.path for e in self.log if e.method == method.upper())


class _ProxyHandler(BaseHTTPRequestHandler):
    """Forwards one client connection's requests over one upstream connection, or injects a fault."""

    protocol_version = "HTTP/1.1"  # keep-alive, like S3: botocore pools connections
    owner: FaultProxy
    _upstream: http.client.HTTPConnection | None = None

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        return

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._handle()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_GET

    def setup(self) -> None:
        super().setup()
        self.owner._connected()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            if self._upstream is not None:
                self._upstream.close()

    # -- helpers ----------------------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        if body or self.command in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        for attempt in range(2):  # the upstream may have closed an idle keep-alive connection
            if self._upstream is None:
                self._upstream = http.client.HTTPConnection(self.owner.upstream_host, self.owner.upstream_port,
                                                            timeout=self.owner.timeout)
            try:
                self._upstream.request(self.command, self.path, body=body or None, headers=headers)
                resp = self._upstream.getresponse()
                data = resp.read()
                if resp.will_close:
                    self._upstream.close()
                    self._upstream = None
                return resp.status, resp.reason, resp.getheaders(), data
            except (ConnectionError, http.client.HTTPException, OSError):
                self._upstream.close()
                self._upstream = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _send_head(self, status: int, reason: str, headers: Iterable[tuple[str, str]], length: int) -> None:
        self.send_response_only(status, reason)
        for name, value in headers:
            if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def _reset(self) -> None:
        """Abort the connection with a TCP RST (SO_LINGER 0), as a crashed load balancer would."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.connection.close()

    def _handle(self) -> None:
        owner = self.owner
        split = urlsplit(self.path)
        path, query, method = unquote(split.path), split.query, self.command
        body = self._read_body()
        fault = owner._choose(method, path, query)
        if fault is None or fault.kind in ("truncate", "trickle") or fault.forward:
            try:
                status, reason, headers, data = self._forward(body)
            except OSError:
                owner._record(RequestEntry(method, path, query, None, "upstream-down"))
                self._reset()
                return
        if fault is None:
            length = _declared_length(headers, data) if method == "HEAD" else len(data)
            owner._record(RequestEntry(method, path, query, status, None))  # before the client sees it
            self._send_head(status, reason, headers, length)
            if method != "HEAD":
                self.wfile.write(data)
            return
        if fault.kind == "error":
            error = b"" if method == "HEAD" else s3_error_xml(fault.code, fault.message, path)
            head = [("Content-Type", "application/xml"), ("x-amz-request-id", "FAULTPROXY")]
            owner._record(RequestEntry(method, path, query, fault.status, f"error:{fault.status}"))
            self._send_head(fault.status, http.client.responses.get(fault.status, "Error"), head, len(error))
            self.wfile.write(error)
        elif fault.kind == "reset":
            owner._record(RequestEntry(method, path, query, None, "reset"))
            self._reset()
        elif fault.kind == "truncate":
            length = _declared_length(headers, data) if method == "HEAD" else len(data)
            owner._record(RequestEntry(method, path, query, status, "truncate"))
            self._send_head(status, reason, headers, length)
            if method != "HEAD":
                self.wfile.write(data[: len(data) // 2])
            self._reset()
        else:  # trickle
            length = _declared_length(headers, data) if method == "HEAD" else len(data)
            owner._record(RequestEntry(method, path, query, status, "trickle"))
            self._send_head(status, reason, headers, length)
            if method != "HEAD":
                for start in range(0, len(data), max(1, fault.chunk)):
                    self.wfile.write(data[start:start + fault.chunk])
                    self.wfile.flush()
                    time.sleep(fault.delay)


def _declared_length(headers: Iterable[tuple[str, str]], data: bytes) -> int:
    """A HEAD answer carries the object's size in Content-Length but no body: keep the upstream's value."""
    for name, value in headers:
        if name.lower() == "content-length":
            return int(value)
    return len(data)
