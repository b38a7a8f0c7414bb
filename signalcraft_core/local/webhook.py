"""A tiny HTTP receiver for MinIO bucket notifications that runs the upload handler on each.

MinIO's webhook target POSTs the notification JSON (`{"EventName", "Key", "Records"}`); we answer
200 when every recording got its record and 500 otherwise, so MinIO retries the delivery.
"""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

MAX_BODY_BYTES = 1 << 20


def make_server(host: str, port: int, say: Callable[[str], None] = lambda _m: None) -> ThreadingHTTPServer:
    from signalcraft_core.local.invoke import FUNCTIONS, load_handler

    handler = load_handler(FUNCTIONS["ScoreUploadFunction"])

    from signalcraft_core.io.events import parse_event

    class Receiver(BaseHTTPRequestHandler):
        def log_message(self, *_args) -> None:  # quiet: we report per event instead
            pass

        def _reply(self, status: int, body: dict) -> None:
            data = json.dumps(body, default=str).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # MinIO probes the endpoint when the target is configured
            self._reply(200, {"status": "ready"})

        def do_POST(self) -> None:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = 0
            if length <= 0 or length > MAX_BODY_BYTES:
                self._reply(400, {"error": "expected a JSON notification body"})
                return
            try:  # a body we cannot understand: 400, MinIO redelivering it would not help
                event = json.loads(self.rfile.read(length))
                parse_event(event)
            except ValueError as exc:  # also JSONDecodeError / UnicodeDecodeError
                self._reply(400, {"error": str(exc)})
                return
            try:
                result = handler(event, None)
            except Exception as exc:  # noqa: BLE001 - storage or configuration: 500 makes MinIO redeliver later
                say(f"notification failed: {exc}")
                self._reply(500, {"error": str(exc)})
                return
            say(f"{event.get('Key') or 'event'}: {json.dumps({k: result.get(k) for k in ('grades', 'errors')})}")
            self._reply(200, result)

    return ThreadingHTTPServer((host, port), Receiver)


def serve(host: str, port: int, say: Callable[[str], None]) -> None:
    server = make_server(host, port, say)
    say(f"listening for MinIO notifications on http://{host}:{server.server_address[1]}/ (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
