"""The sandbox Factory API over HTTPS: routes, auth, JSON in and out.

A stdlib `ThreadingHTTPServer` with TLS: one daemon thread per connection, the TLS handshake
done in that thread (not in the accept loop, so a stalled client blocks nobody). The routing
table is data (routes.py).

Each route names the scope its methods need (`auth.py`): 401 without a valid credential, 403
when the credential's scope does not cover the method. A route without a scope (OAuth's own)
takes no credential. A JSON route's body is parsed whatever the Content-Type says
(lmp-device-register's curl may label it form data); a form route gets the raw body.

Requests are logged (method, path, status) on the `fioca.sandbox.api` logger; headers never
are, so the token cannot reach a log.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from fioca.sandbox.auth import Authenticator
from fioca.sandbox.backend import SandboxApiError
from fioca.sandbox.oauth import SCOPE_ALL
from fioca.sandbox.store import Store
from fioca.sandbox.tls import TlsFiles

log = logging.getLogger("fioca.sandbox.api")

MAX_BODY_BYTES = 1024 * 1024
REQUEST_TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class Request:
    """What a route handler sees: the parsed JSON body (None when there was none, or for a
    form route), and the raw bytes."""

    method: str
    path: str
    params: Mapping[str, str]  # the route pattern's named groups, URL-decoded
    headers: Message
    body: Any = None
    raw_body: bytes = b""
    query: Mapping[str, str] = field(default_factory=dict)


# A handler answers (status, JSON-able body).
Handler = Callable[[Request], tuple[int, Any]]


@dataclass(frozen=True)
class Route:
    """One path pattern and its handlers by method. A `factory` group (or `?factory=` query
    parameter) is checked against the sandbox's factory (404 when it differs); `name` is what
    injected faults match on. `scope`: what the caller's credentials must allow (None: no
    credentials at all), per method in `scopes` where it differs. `form`: the body is
    urlencoded, handed over raw."""

    name: str
    pattern: re.Pattern[str]
    methods: Mapping[str, Handler] = field(default_factory=dict)
    scope: str | None = SCOPE_ALL
    scopes: Mapping[str, str | None] = field(default_factory=dict)
    form: bool = False

    def scope_of(self, method: str) -> str | None:
        return self.scopes.get(method, self.scope)


class ApiServer(ThreadingHTTPServer):
    """The HTTPS Factory API for the one factory held by `store`."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], *, store: Store, tls: TlsFiles, routes: list[Route],
                 authenticator: Authenticator):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.store = store
        self.routes = list(routes)
        self.authenticator = authenticator
        super().__init__(address, ApiRequestHandler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(tls.server_cert, tls.server_key)
        # Handshake lazily, in the connection's own thread.
        self.socket = context.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Plain-HTTP clients, dropped connections, timeouts: not worth a traceback on stderr.
        log.debug("connection from %s ended with an error", client_address[0], exc_info=True)


class ApiRequestHandler(BaseHTTPRequestHandler):
    server: ApiServer
    server_version = "fioca-sandbox"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = REQUEST_TIMEOUT_SECONDS
    # An answer goes out in one write, without Nagle: headers and body in separate small
    # segments would wait on the client's delayed ACK (about 40 ms a request).
    disable_nagle_algorithm = True
    wbufsize = -1

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        try:
            status, body, headers = self._answer()
        except Exception:
            log.exception("internal error on %s %s", self.command, urlsplit(self.path).path)
            status, body, headers = 500, {"message": "Internal sandbox error", "errors": []}, {}
        self._send_json(status, body, headers)

    def _answer(self) -> tuple[int, Any, dict[str, str]]:
        target = urlsplit(self.path)
        path = target.path
        raw_body = self._read_body()  # read first, so a refusal leaves the connection clean
        if raw_body is None:
            return 413, {"message": "Request body too large or not length-delimited", "errors": []}, {}
        route, match = self._find_route(path)
        if route is None or match is None:
            return 404, {"message": "Not found", "errors": []}, {}
        method = "GET" if self.command == "HEAD" and "HEAD" not in route.methods else self.command
        refusal = self._refusal(route.scope_of(method))
        if refusal is not None:
            return refusal
        params = {name: unquote(value) for name, value in match.groupdict().items()}
        query = dict(parse_qsl(target.query, keep_blank_values=True))
        factory = self.server.store.factory()
        for asked in (params.get("factory"), query.get("factory")):
            if asked is not None and (factory is None or asked != factory.name):
                return 404, {"message": f"Factory not found: {asked}", "errors": []}, {}
        handler = route.methods.get(method)
        if handler is None:
            allowed = ", ".join(sorted(route.methods))
            return 405, {"message": f"Method not allowed: {self.command}", "errors": []}, {"Allow": allowed}
        fault = self.server.store.take_fault(self.command, route.name)
        if fault is not None and not fault.apply:
            time.sleep(fault.stall)
            return fault.status, {"message": fault.message, "errors": ["injected by the sandbox"]}, {}
        body = None
        if raw_body and not route.form:
            try:
                body = json.loads(raw_body)
            except (ValueError, UnicodeDecodeError) as error:
                return 400, {"message": "Invalid JSON body", "errors": [str(error)]}, {}
        try:
            status, answer = handler(Request(method=self.command, path=path, params=params, headers=self.headers,
                                             body=body, raw_body=raw_body, query=query))
        except SandboxApiError as error:
            return error.status, error.body, {}
        if fault is not None:  # applied; now the answer is held back, then lost
            time.sleep(fault.stall)
            return fault.status, {"message": fault.message, "errors": ["injected by the sandbox"]}, {}
        return status, answer, {}

    def _refusal(self, scope: str | None) -> tuple[int, Any, dict[str, str]] | None:
        """401 without a valid credential, 403 when its scope is short; None when allowed."""
        if scope is None:
            return None
        principal = self.server.authenticator.principal(self.headers)
        if principal is None:
            return 401, {"message": "Unauthorized", "errors": []}, {}
        if not principal.may(scope):
            return 403, {"message": f"Forbidden: the token's scope does not allow this ({scope} needed)",
                         "errors": []}, {}
        return None

    def _find_route(self, path: str) -> tuple[Route | None, re.Match[str] | None]:
        for route in self.server.routes:
            match = route.pattern.match(path)
            if match:
                return route, match
        return None, None

    def _read_body(self) -> bytes | None:
        """The request body, b"" when there is none; None when it cannot be read safely."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            return None
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            return None
        return self.rfile.read(length) if length else b""

    def _send_json(self, status: int, body: Any, headers: Mapping[str, str]) -> None:
        payload = (json.dumps(body, indent=2) + "\n").encode("utf-8")
        self.send_response(status, _reason(status))
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # Method, path (no query string) and status only: nothing a header could leak.
        log.info("%s %s %s", self.command, urlsplit(self.path).path, code)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s: " + format, self.address_string(), *args)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
