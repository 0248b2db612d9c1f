"""The sandbox Factory API over HTTPS: routes, auth, JSON in and out.

A stdlib `ThreadingHTTPServer` with TLS: one daemon thread per connection, the TLS handshake
done in that thread (not in the accept loop, so a stalled client blocks nobody). The routing
table is data, so the device registration routes (`/ota/devices/`) can be added next to the
certs routes without touching this file.

Requests are logged (method, path, status) on the `fioca.sandbox.api` logger; headers never
are, so the token cannot reach a log.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from fioca.sandbox.backend import Backend, SandboxApiError
from fioca.sandbox.store import Store
from fioca.sandbox.tls import TlsFiles

log = logging.getLogger("fioca.sandbox.api")

TOKEN_HEADER = "OSF-TOKEN"
MAX_BODY_BYTES = 1024 * 1024
REQUEST_TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class Request:
    """What a route handler sees: the parsed JSON body (None when there was none)."""

    method: str
    path: str
    params: Mapping[str, str]  # the route pattern's named groups, URL-decoded
    headers: Message
    body: Any = None


# A handler answers (status, JSON-able body).
Handler = Callable[[Request], tuple[int, Any]]


@dataclass(frozen=True)
class Route:
    """One path pattern and its handlers by method. A `factory` group is checked against the
    sandbox's factory (404 when it differs); `name` is what injected faults match on."""

    name: str
    pattern: re.Pattern[str]
    methods: Mapping[str, Handler] = field(default_factory=dict)


def certs_routes(backend: Backend) -> list[Route]:
    """The Factory certs API of PKI-SPEC section 2."""
    return [
        Route(
            name="certs",
            pattern=re.compile(r"^/ota/factories/(?P<factory>[^/]+)/certs/$"),
            methods={
                "GET": lambda request: backend.get_certs(),
                "POST": lambda request: (201, backend.post_certs(request.body)),
                "PATCH": lambda request: (200, backend.patch_certs(request.body)),
            },
        ),
        Route(
            name="users-self",
            pattern=re.compile(r"^/ota/factories/(?P<factory>[^/]+)/users/self/$"),
            methods={"GET": lambda request: (200, backend.user_self())},
        ),
    ]


class ApiServer(ThreadingHTTPServer):
    """The HTTPS Factory API for the one factory held by `store`."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], *, store: Store, tls: TlsFiles, routes: list[Route]):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.store = store
        self.routes = list(routes)
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
        path = urlsplit(self.path).path
        raw_body = self._read_body()  # read first, so a refusal leaves the connection clean
        if raw_body is None:
            return 413, {"message": "Request body too large or not length-delimited", "errors": []}, {}
        route, match = self._find_route(path)
        if route is None or match is None:
            return 404, {"message": "Not found", "errors": []}, {}
        if not self._authorized():
            return 401, {"message": "Unauthorized", "errors": []}, {}
        params = {name: unquote(value) for name, value in match.groupdict().items()}
        factory = self.server.store.factory()
        if "factory" in params and (factory is None or params["factory"] != factory.name):
            return 404, {"message": f"Factory not found: {params['factory']}", "errors": []}, {}
        handler = route.methods.get(self.command)
        if handler is None and self.command == "HEAD":
            handler = route.methods.get("GET")
        if handler is None:
            allowed = ", ".join(sorted(route.methods))
            return 405, {"message": f"Method not allowed: {self.command}", "errors": []}, {"Allow": allowed}
        fault = self.server.store.take_fault(self.command, route.name)
        if fault is not None and not fault.apply:
            time.sleep(fault.stall)
            return fault.status, {"message": fault.message, "errors": ["injected by the sandbox"]}, {}
        try:
            body = json.loads(raw_body) if raw_body else None
        except (ValueError, UnicodeDecodeError) as error:
            return 400, {"message": "Invalid JSON body", "errors": [str(error)]}, {}
        try:
            status, answer = handler(
                Request(method=self.command, path=path, params=params, headers=self.headers, body=body)
            )
        except SandboxApiError as error:
            return error.status, error.body, {}
        if fault is not None:  # applied; now the answer is held back, then lost
            time.sleep(fault.stall)
            return fault.status, {"message": fault.message, "errors": ["injected by the sandbox"]}, {}
        return status, answer, {}

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

    def _authorized(self) -> bool:
        factory = self.server.store.factory()
        if factory is None:
            return False
        presented = self.headers.get(TOKEN_HEADER)
        if presented is None:
            authorization = self.headers.get("Authorization", "")
            if authorization.startswith("Bearer "):
                presented = authorization[len("Bearer "):]
        if not presented:
            return False
        return hmac.compare_digest(presented.encode("utf-8"), factory.token.encode("utf-8"))

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
