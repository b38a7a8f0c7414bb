"""An embedded S3-compatible server (moto) so the demo and the tests run the real boto3 path with no cloud.

moto is an optional extra (`signalcraft-scoring[server]`), imported only when a server is started.
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

_INSTALL_HINT = "the embedded S3 server needs moto: pip install 'signalcraft-scoring[server]'"


def local_credentials_env() -> dict[str, str]:
    """Dummy credentials and region for talking to the embedded server (never real keys)."""
    return {
        "AWS_ACCESS_KEY_ID": "signalcraft-local",
        "AWS_SECRET_ACCESS_KEY": "signalcraft-local-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }


@dataclass
class S3Server:
    """A running embedded server; `stop()` (or leaving the `with` block) shuts it down."""

    endpoint_url: str
    _server: Any = field(default=None, repr=False)

    def stop(self) -> None:
        """Shut the server down; safe to call twice."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    def __enter__(self) -> "S3Server":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _wait_until_answering(endpoint_url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(endpoint_url + "/", timeout=1):
                return
        except urllib.error.HTTPError:
            return  # any HTTP answer means it is up
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"embedded S3 server at {endpoint_url} did not answer in {timeout_s:g} s")
            time.sleep(0.05)


def start_s3_server(host: str = "127.0.0.1", port: int = 0, timeout_s: float = 10.0) -> S3Server:
    """Start moto's threaded server (port 0: a free port) and return once it answers HTTP."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        raise RuntimeError(_INSTALL_HINT) from exc

    access_log = logging.getLogger("werkzeug")
    if access_log.level == logging.NOTSET:
        access_log.setLevel(logging.WARNING)  # one line per request drowns the demo output
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    bound_host, bound_port = server.get_host_and_port()
    url_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    s3 = S3Server(endpoint_url=f"http://{url_host}:{bound_port}", _server=server)
    try:
        _wait_until_answering(s3.endpoint_url, timeout_s)
    except BaseException:
        s3.stop()
        raise
    return s3
