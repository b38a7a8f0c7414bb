"""An embedded S3-compatible server (moto) so the demo and the tests run the real boto3 path with no cloud.

It listens on 127.0.0.1, where every local user can connect, so it assumes a hostile neighbour: each
server makes its own random access key, and every request must be signed with a key the server
issued (moto's IAM request checks, switched on for the whole process before the first request), for
one of the services the tool talks to (`SERVICES`: S3, and the alerts' EventBridge and SNS, with
SQS for their subscribers). moto's own control API (``/moto-api/``: reset the state, switch the
checks off, dump the data) and its other services (IAM and STS, which mint keys) are refused before
moto sees the request, so a neighbour can neither read the recordings and grades, nor plant objects
to be graded, nor wipe the keys.

moto is an optional extra (`signalcraft-scoring[server]`), imported only when a server is started.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
import string
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from signalcraft_core.local.environ import patched_environ

_INSTALL_HINT = "the embedded S3 server needs moto: pip install 'signalcraft-scoring[server]'"
REGION = "us-east-1"
SERVICES = ("s3", "events", "sns", "sqs")   # what the tool talks to: S3, the alerts' EventBridge and SNS, SQS
_REFUSAL = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
            b"<Message>the embedded S3 server answers requests signed with its own key only</Message></Error>")
#: What the shell may hold that would take the key or the requests elsewhere: hidden while a server's
#: key is in os.environ (a service's own endpoint variable wins over AWS_ENDPOINT_URL in boto3).
_HIDDEN = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
           *(f"AWS_ENDPOINT_URL_{service.upper()}" for service in SERVICES))
_REFUSED_PATHS = ("/moto-api", "/latest/")   # moto's control API; its instance-metadata stand-in
_TARGET_PREFIXES = ("AWSEvents.", "AmazonSQS.")   # the JSON-protocol services of SERVICES; S3 and SNS send none
_KEY_ALPHABET = string.ascii_uppercase + string.digits
_ALLOW = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": [f"{service}:*" for service in SERVICES], "Resource": "*"}]})
# The service named in a SigV4 Authorization header's credential scope, "Credential=KEY/DATE/REGION/SERVICE/
# aws4_request". Presigned URLs are refused: moto cannot check a query-string signature with its IAM checks on.
_SCOPE_SERVICE = re.compile(r"^AWS4-HMAC-SHA256 Credential=[^/,\s]+/\d{8}/[^/,\s]*/([a-z0-9-]+)/aws4_request,")


@dataclass
class S3Server:
    """A running embedded server and the key it accepts; `stop()` (or leaving the `with` block) shuts it down."""

    endpoint_url: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    _stop: Callable[[], None] | None = field(default=None, repr=False)

    def credentials_env(self) -> dict[str, str]:
        """The environment a boto3 client (or a handler, or a child process) needs to talk to this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
        }

    @contextlib.contextmanager
    def environment(self) -> Iterator[None]:
        """This server's key in os.environ for the block (a profile or session token the shell holds is
        hidden: the server knows only its own keys); the previous values come back afterwards."""
        with patched_environ(self.credentials_env(), _HIDDEN):
            yield

    def accept(self, access_key_id: str, secret_access_key: str) -> None:
        """Accept one more key pair (tests use recognisable ones to look for leaks); it must start with AKIA."""
        _issue_key(access_key_id, secret_access_key)

    def stop(self) -> None:
        """Shut the server down; safe to call twice."""
        stop, self._stop = self._stop, None
        if stop is not None:
            stop()

    def __enter__(self) -> "S3Server":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _new_key() -> tuple[str, str]:
    """A fresh key pair: an AKIA id (what moto takes for an IAM user's key) and a 40-character secret."""
    key_id = "AKIA" + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(16))
    return key_id, secrets.token_urlsafe(30)


def _issue_key(access_key_id: str, secret_access_key: str) -> None:
    """Register the pair in moto's in-process IAM, as the key of a user of its own allowed every SERVICES action.

    Done in this process, not over HTTP, so there is no moment in which unsigned requests are accepted.
    """
    if not access_key_id.startswith("AKIA"):
        raise ValueError("an embedded-server access key id starts with AKIA")
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.iam.models import iam_backends

    iam = iam_backends[DEFAULT_ACCOUNT_ID]["aws"]
    user = "signalcraft-local-" + secrets.token_hex(6)
    iam.create_user(region_name=REGION, user_name=user)
    iam.put_user_policy(user, "signalcraft-local", _ALLOW)
    key = iam.create_access_key(user)
    key.access_key_id, key.secret_access_key = access_key_id, secret_access_key


def _signed_for_a_service(environ: dict[str, Any]) -> bool:
    """True for a request signed in its header with a SigV4 scope naming one of SERVICES (moto checks the signature)."""
    found = _SCOPE_SERVICE.match(environ.get("HTTP_AUTHORIZATION", ""))
    return found is not None and found.group(1) in SERVICES and \
        "X-Amz-Credential" not in environ.get("QUERY_STRING", "")


def _admissible(environ: dict[str, Any]) -> bool:
    """A request moto may see: signed for one of SERVICES, not for its control API or metadata routes,
    and without an X-Amz-Target other than those services' own (moto answers a Cognito "public
    operation" target unsigned, whatever the path: a neighbour could read and write objects with it)."""
    if environ.get("PATH_INFO", "").startswith(_REFUSED_PATHS):
        return False
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target is not None and not target.startswith(_TARGET_PREFIXES):
        return False
    return _signed_for_a_service(environ)


def guarded(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """WSGI guard in front of moto: refuses its control API and anything but a signed request for SERVICES."""
    def guard(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not _admissible(environ):
            body = _REFUSAL
            start_response("403 Forbidden", [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))])
            return [body]
        return app(environ, start_response)
    return guard


def _wait_until_answering(endpoint_url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(endpoint_url + "/", timeout=1):
                return
        except urllib.error.HTTPError:
            return  # any HTTP answer (here: 403 for an unsigned request) means it is up
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"embedded S3 server at {endpoint_url} did not answer in {timeout_s:g} s")
            time.sleep(0.05)


def start_s3_server(host: str = "127.0.0.1", port: int = 0, timeout_s: float = 10.0) -> S3Server:
    """Start moto's S3 on a thread (port 0: a free port) with a key of its own; return once it answers HTTP.

    The IAM checks are moto's process-wide setting: every embedded server in this process requires
    signed requests, and each accepts the keys of the others (moto's state is one per process).
    """
    try:
        from moto import settings
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server
    except ImportError as exc:
        raise RuntimeError(_INSTALL_HINT) from exc

    access_log = logging.getLogger("werkzeug")
    if access_log.level == logging.NOTSET:
        access_log.setLevel(logging.WARNING)  # one line per request drowns the demo output
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0   # from the first request on, signatures are checked
    key_id, secret = _new_key()
    _issue_key(key_id, secret)
    app = guarded(DomainDispatcherApplication(create_backend_app))
    server = make_server(host, port, app, threaded=True, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, name="signalcraft-s3", daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join()

    bound_host, bound_port = server.server_address[:2]
    url_host = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
    s3 = S3Server(endpoint_url=f"http://{url_host}:{bound_port}", access_key_id=key_id,
                  secret_access_key=secret, _stop=stop)
    try:
        _wait_until_answering(s3.endpoint_url, timeout_s)
    except BaseException:
        s3.stop()
        raise
    return s3
