"""A small HTTPS server on a random loopback port, for what the sandbox does not serve yet
(OAuth token refresh, TOKEN_HEADER, a stalled or trickling answer, hostile error bodies).

`Stub(routes)` answers `(method, path)` with a handler `(request) -> Answer`; it records every
request (method, path, headers, body) in order. Its certificate comes from a private CA that
the system does not trust: `stub.cacert` is that CA's PEM file.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from fioca.sandbox.tls import issue_server_cert, make_ca


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Answer:
    status: int = 200
    body: Any = field(default_factory=dict)  # JSON-encoded unless bytes
    trickle_seconds: float = 0.0  # wait between bytes of the body (a stalled server)
    reason: str | None = None

    def payload(self) -> bytes:
        return self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()


Handler = Callable[[Request], Answer]


class Stub:
    def __init__(self, directory: Path, routes: dict[tuple[str, str], Handler]):
        self.routes = routes
        self.requests: list[Request] = []
        self.stop = threading.Event()
        ca_cert, ca_key = make_ca("fioca test stub CA")
        cert, key = issue_server_cert(ca_cert, ca_key, ["127.0.0.1"])
        directory.mkdir(parents=True, exist_ok=True)
        self.cacert = directory / "stub-ca.pem"
        self.cacert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        chain = directory / "stub-server.pem"
        chain.write_bytes(
            cert.public_bytes(serialization.Encoding.PEM)
            + key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(chain)
        stub = self

        class RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = Request(self.command, self.path, dict(self.headers.items()), body)
                stub.requests.append(request)
                handler = stub.routes.get((self.command, self.path.split("?")[0]))
                answer = handler(request) if handler else Answer(404, {"message": "no such route"})
                payload = answer.payload()
                self.send_response(answer.status, answer.reason)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command == "HEAD":
                    return
                if not answer.trickle_seconds:
                    self.wfile.write(payload)
                    return
                for byte in payload:
                    if stub.stop.is_set():
                        return
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(answer.trickle_seconds)

            do_GET = do_POST = do_PATCH = do_PUT = do_HEAD = _handle

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), RequestHandler)
        self.server.daemon_threads = True
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Stub:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()
