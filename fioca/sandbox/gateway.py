"""The sandbox's device gateway: HTTPS with client certificates on the gateway port (PKI-SPEC 7).

What it serves and trusts follows the backend, without a restart:

* Before the factory owns its PKI (no accepted `tls-crt`), it serves the shared gateway
  certificate (`shared_pki.py`) naming `<gateway id>.ota-lite.foundries.io` and
  `<gateway id>.ostree.foundries.io`, and trusts the shared device CA, which signs the devices
  registered in that phase (`POST /ota/devices/`).
* Once `tls-crt` is accepted it serves `tls-crt` with the key the backend holds, and trusts
  the device CAs of `ca-crt` (a revoked CA has left `ca-crt`, so its devices fail the TLS
  handshake). A rotated `tls-crt` or a changed `ca-crt` is picked up on the next connection:
  each accept compares `Store.certs_generation` (bumped by every save of the certs) with the
  one the cached `SSLContext` was built at, and builds a new one only when they differ.

The rules (`device_rules.py`) run on every request, not once per connection: on a connection
kept open, a request after the device was deleted, its CA disabled (for a device not known
yet) or revoked, or the PKI switched, is refused like a new connection would be. A request
whose device CA is no longer trusted is answered 403 and the connection closed.

The handshake checks the chain (a device CA is a trust anchor) but not the dates, so that an
expired or not-yet-valid certificate gets a readable 403 like every other refusal of an
authenticated device. An unknown device from a trusted CA is registered on its first request
and served in the same round trip.

Probes: `GET /device` (the device record as JSON), `GET /repo/1.root.json` (TUF root metadata
signed by a sandbox repo key), `GET /repo/targets.json` with `x-ats-tags` (empty targets).

EST (`est.py`): a device that names the EST host (the DNS name of an accepted `est-tls-crt`)
in its TLS handshake is served `est-tls-crt` and `/.well-known/est/` only, after the same rules;
before `keys est authorize`, a name under est.foundries.io is refused in the handshake
(unrecognized_name).

Performance structure: connections get TCP_NODELAY (an answer and the close_notify after it
must not wait for a delayed ACK); every thread reads the store on a connection of its own
(store.py); and with `GatewayContext.processes` > 1 (`fioca sandbox serve`: one per core)
`GatewayProcesses` starts that many more processes minus one on the same listening socket
(gateway_process.py), each a DeviceGateway of its own with its own interpreter lock, store
connections and rules. Everything they share goes through the store, so `certs_generation`
is kept there. Every process's threads wait in accept() on the one socket: the kernel wakes
one of them, in whichever process, per connection.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import os
import select
import socket
import socketserver
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509

from fioca import facts
from fioca.sandbox.backend import Backend, GatewayIdentity
from fioca.sandbox.context import GatewayContext
from fioca.sandbox.device_rules import (
    DeviceRefused,
    DeviceRules,
    PresentedCert,
    TrustedCa,
    read_presented,
)
from fioca.sandbox.est import TEXT, EstService, is_est_path
from fioca.sandbox.shared_pki import SharedPki
from fioca.sandbox.store import DeviceRecord
from fioca.sandbox.tuf import TufRepo

log = logging.getLogger("fioca.sandbox.gateway")

HANDSHAKE_TIMEOUT_SECONDS = 10
REQUEST_TIMEOUT_SECONDS = 30
MAX_BODY_BYTES = 64 * 1024
MAX_LINE_BYTES = 8 * 1024
MAX_HEADERS = 100
MAX_WORKERS = 256  # connections served at once; more wait for a free worker
LISTEN_BACKLOG = 1024  # a fleet connecting at once must not overflow the accept queue
PRESENTED_CACHE_SIZE = 10_000
ACCEPT_RETRY_SECONDS = 0.05
CLOSE_NOTIFY_SECONDS = 1  # how long to wait for the device's close_notify in return
PROCESS_START_SECONDS = 60  # for a gateway process to import fioca and load the PKI
PROCESS_STOP_SECONDS = 10
PROCESS_MODULE = "fioca.sandbox.gateway_process"
READY_LINE = b"ready\n"
# OpenSSL's X509_V_FLAG_NO_CHECK_TIME: the handshake ignores validity dates, so the gateway
# refuses an expired device certificate with a readable 403 instead of a bare TLS alert.
VERIFY_NO_CHECK_TIME = 0x200000
JSON = "application/json"


def create_gateway(context: GatewayContext) -> DeviceGateway:
    """The sandbox's gateway factory (see fioca.sandbox.context.GatewayContext)."""
    return DeviceGateway(context)


# -- what the gateway serves and trusts ----------------------------------------------------------


@dataclass(frozen=True)
class EstEndpoint:
    """The EST server's identity: `est-tls-crt` (its key the backend's) for its DNS names."""

    ssl_context: ssl.SSLContext
    hosts: frozenset[str]


@dataclass
class TrustState:
    """One generation of what the gateway serves and trusts, with its per-certificate cache."""

    generation: int  # Store.certs_generation when it was built
    ssl_context: ssl.SSLContext
    cas: list[TrustedCa]
    shared: bool
    est: EstEndpoint | None = None
    presented: dict[bytes, PresentedCert] = dataclasses.field(default_factory=dict)

    def read(self, der: bytes, *, verified: bool) -> PresentedCert:
        """The parsed certificate. `verified`: this state's handshake checked its signature."""
        presented = self.presented.get(der)
        if presented is None:
            presented = read_presented(x509.load_der_x509_certificate(der), self.cas, verified=verified)
            if len(self.presented) >= PRESENTED_CACHE_SIZE:
                self.presented.clear()  # crude bound; a rebuild costs one parse per device
            self.presented[der] = presented
        return presented


def _server_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    # A device CA is a trust anchor by itself (the root is not needed in the store); dates are
    # checked after the handshake (see VERIFY_NO_CHECK_TIME).
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN | VERIFY_NO_CHECK_TIME
    # No TLS 1.3 session tickets: issuing them (and keeping each session in OpenSSL's server
    # cache, which Python cannot turn off) costs more than everything else of a connection,
    # and devices mostly keep their connection open instead of resuming.
    context.num_tickets = 0
    return context


def build_trust_state(backend: Backend, shared: SharedPki, data_dir: Path, generation: int) -> TrustState:
    """An SSLContext for the backend's current certs: tls-crt + device CAs, or the shared PKI;
    and, once est-tls-crt is accepted, one for the EST host that the handshake switches to."""
    context = _server_context()
    identity = backend.gateway_identity()
    if identity is None:
        context.load_cert_chain(shared.gateway_cert, shared.gateway_key)
        context.load_verify_locations(cadata=shared.device_ca_pem)
        context.sni_callback = _identity_for_name(None)
        return TrustState(generation=generation, ssl_context=context, cas=[TrustedCa.of(shared.device_ca)], shared=True)

    _load_identity(context, identity, data_dir)
    device_cas = backend.device_cas()
    trusted = "".join(ca.pem for ca in device_cas)
    if trusted:
        context.load_verify_locations(cadata=trusted)
    est = _est_endpoint(backend, data_dir, trusted)
    context.sni_callback = _identity_for_name(est)
    cas = [TrustedCa.of(ca.cert, disabled=ca.disabled) for ca in device_cas]
    return TrustState(generation=generation, ssl_context=context, cas=cas, shared=False, est=est)


def _load_identity(context: ssl.SSLContext, identity: GatewayIdentity, data_dir: Path) -> None:
    # load_cert_chain only reads files: a 0600 temp file in the 0700 data dir, removed at once.
    fd, chain_path = tempfile.mkstemp(dir=data_dir, prefix=".gateway-chain.", suffix=".pem")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(identity.cert_pem.rstrip("\n") + "\n" + identity.key_pem)
        context.load_cert_chain(chain_path)
    finally:
        os.unlink(chain_path)


def _est_endpoint(backend: Backend, data_dir: Path, trusted: str) -> EstEndpoint | None:
    """The EST host's context: est-tls-crt, and the same trust and settings as the gateway's
    (the switch in the handshake changes the certificate served, not who may connect)."""
    identity = backend.est_identity()
    if identity is None:
        return None
    context = _server_context()
    _load_identity(context, identity, data_dir)
    if trusted:
        context.load_verify_locations(cadata=trusted)
    cert = x509.load_pem_x509_certificate(identity.cert_pem.encode("ascii"))
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        hosts = frozenset(names.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        hosts = frozenset()
    return EstEndpoint(ssl_context=context, hosts=hosts)


def _identity_for_name(est: EstEndpoint | None) -> Any:
    """The handshake's SNI callback: the EST host gets est-tls-crt; an EST name this factory
    has not authorized (no est-tls-crt for it) is refused with unrecognized_name."""

    def choose(connection: ssl.SSLSocket, server_name: str | None, _context: ssl.SSLContext) -> int | None:
        if est is not None and server_name in est.hosts:
            connection.context = est.ssl_context
        elif server_name and server_name.endswith("." + facts.EST_DOMAIN):
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        return None

    return choose


# -- the server -----------------------------------------------------------------------------------


class DeviceGateway:
    """The mTLS device gateway of one sandbox factory (a `GatewayServer`). `listening`: a
    socket already listening (a gateway process serves its parent's); else it binds its own."""

    def __init__(self, context: GatewayContext, listening: socket.socket | None = None):
        factory = context.backend.factory
        self.backend = context.backend
        self.store = context.store
        self.data_dir = context.data_dir
        self.shared = context.shared
        self.repo = TufRepo.ensure(context.data_dir)
        self.rules = DeviceRules(
            context.store, factory=factory.name, local_ca_cn=context.backend.local_ca_cn, owner=factory.polis_id
        )
        self.est = EstService(context.backend)
        self._state_lock = threading.Lock()
        self._state: TrustState | None = None
        self._server = GatewayTcpServer((context.host, context.port), self, listening=listening)
        self._processes = GatewayProcesses(context, self._server.socket) if listening is None and context.processes > 1 else None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self.trust_state()  # fail at start, not at the first device, if the certs do not load
        if self._processes is not None:
            self._processes.start()
        self._server.start()

    def stop(self) -> None:
        if self._processes is not None:
            self._processes.stop()
        self._server.stop()

    def trust_state(self) -> TrustState:
        """The current generation; rebuilt when the store saved certs since it was made."""
        state = self._state
        if state is not None and state.generation == self.store.certs_generation:
            return state  # the per-connection path: no query, no lock
        with self._state_lock:
            # Read the counter first: a save racing with the build bumps it again.
            generation = self.store.certs_generation
            if self._state is None or self._state.generation != generation:
                self._state = build_trust_state(self.backend, self.shared, self.data_dir, generation)
                log.info("gateway now serves the %s PKI", "shared" if self._state.shared else "factory's")
            return self._state


class GatewayTcpServer(socketserver.TCPServer):
    """Threads that each accept a connection and serve it (TLS handshake and requests), so a
    slow device delays nobody else and no connection is handed from one thread to another:
    the kernel wakes one thread blocked in accept() per connection, in this process or in
    another gateway process on the same socket. A thread that takes a connection while no
    other waits in accept() starts one more first (up to MAX_WORKERS); threads are kept for
    the next connection: starting one costs more than the rest of a request."""

    allow_reuse_address = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address: tuple[str, int], gateway: DeviceGateway, listening: socket.socket | None = None):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.gateway = gateway
        self._owner = listening is None  # bound here; else another process's socket, served too
        self._pool_lock = threading.Lock()
        self._threads = 0
        self._waiting = 0  # threads blocked in accept()
        self._stopping = False
        # finish_request does the work; a socket already listening is served as it is.
        super().__init__(address, socketserver.BaseRequestHandler, bind_and_activate=listening is None)
        if listening is not None:
            self.socket.close()
            self.socket = listening
            self.server_address = listening.getsockname()
        self.socket.setblocking(True)

    def start(self) -> None:
        with self._pool_lock:
            self._spawn()

    def _spawn(self) -> None:
        """One more thread waiting in accept() (the pool lock held)."""
        self._threads += 1
        self._waiting += 1
        threading.Thread(target=self._accept_and_serve, name="sandbox-gateway-worker", daemon=True).start()

    def _accept_and_serve(self) -> None:
        while True:
            try:
                request, client_address = self.socket.accept()
            except OSError as error:
                if self._stopping:
                    return
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    time.sleep(ACCEPT_RETRY_SECONDS)  # out of descriptors or memory: let some go first
                continue  # else the connection went away before it was accepted
            with self._pool_lock:
                self._waiting -= 1
                if self._stopping:
                    request.close()
                    return
                if self._waiting == 0 and self._threads < MAX_WORKERS:
                    self._spawn()  # someone must be in accept() for the next connection
            try:
                self.finish_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)
            with self._pool_lock:
                self._waiting += 1

    def stop(self) -> None:
        """No thread accepts again, and this process's socket closes; a thread serving a
        connection finishes it. Where the socket was bound, shutting down its reading side
        wakes the threads in accept() (it ends the socket for every process on it, so the
        sandbox stops its gateway processes first); a gateway process's threads in accept()
        end with the process."""
        with self._pool_lock:
            self._stopping = True
        if self._owner:
            with contextlib.suppress(OSError):
                self.socket.shutdown(socket.SHUT_RD)
        self.server_close()

    def finish_request(self, request: Any, client_address: Any) -> None:
        state = self.gateway.trust_state()
        # The answer and the close_notify after it go out at once, not after a delayed ACK.
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        request.settimeout(HANDSHAKE_TIMEOUT_SECONDS)
        try:
            connection = state.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as error:
            # Untrusted or revoked CA, no client certificate, plain HTTP: the handshake says no.
            log.debug("handshake with %s failed: %s", client_address[0], error)
            return
        try:
            connection.settimeout(REQUEST_TIMEOUT_SECONDS)
            DeviceConnection(connection, self.gateway, state).serve()
        except OSError as error:  # the device went away mid-request (ssl.SSLError included)
            log.debug("connection from %s ended: %s", client_address[0], error)
        finally:
            connection.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s ended with an error", client_address[0], exc_info=True)


class GatewayProcesses:
    """The gateway's other processes (`python -m fioca.sandbox.gateway_process`), each given
    the listening socket and the data dir; `start` returns once each serves, `stop` once each
    has ended. They also end when this process dies: their stdin is a pipe from it."""

    def __init__(self, context: GatewayContext, listening: socket.socket):
        self.context = context
        self.listening = listening
        self._running: list[subprocess.Popen] = []

    def start(self) -> None:
        log_requests = logging.getLogger("fioca.sandbox").isEnabledFor(logging.INFO)
        fd = self.listening.fileno()
        command = [sys.executable, "-m", PROCESS_MODULE, str(self.context.data_dir), str(fd)]
        for _ in range(self.context.processes - 1):
            self._running.append(subprocess.Popen(
                [*command, *(["--log-requests"] if log_requests else [])],
                pass_fds=(fd,), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            ))  # fmt: skip
        for process in self._running:
            ready = _read_line(process.stdout, PROCESS_START_SECONDS)
            if ready != READY_LINE:
                self.stop()
                raise OSError(f"a gateway process did not start (it said {ready!r}); see its error above")

    def stop(self) -> None:
        for process in self._running:
            with contextlib.suppress(OSError):
                process.stdin.close()  # its signal to stop
        for process in self._running:
            try:
                process.wait(timeout=PROCESS_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            process.stdout.close()
        self._running = []


def _read_line(stream: Any, timeout: float) -> bytes:
    """One line from a child's stdout, or b"" when it says nothing within `timeout` seconds."""
    poller = select.poll()
    poller.register(stream.fileno(), select.POLLIN)
    if not poller.poll(timeout * 1000):
        return b""
    return stream.readline()


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    keep_alive: bool
    body: bytes = b""


class BadRequest(Exception):
    """The bytes on the connection are not an HTTP/1.x request we serve; answer and close."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class DeviceConnection:
    """HTTP/1.x over one device's TLS connection, until either side closes.

    A small parser of its own: http.server's goes through the email package for headers,
    which costs more than the rest of a request here (see the gateway benchmark).
    """

    def __init__(self, connection: ssl.SSLSocket, gateway: DeviceGateway, state: TrustState):
        self.connection = connection
        self.gateway = gateway
        self.handshake_state = state  # the CAs that verified this connection's certificate
        # The device asked for the EST host by name, and the handshake served est-tls-crt.
        self.serves_est = state.est is not None and connection.context is state.est.ssl_context
        self._presented: tuple[TrustState, PresentedCert] | None = None

    def serve(self) -> None:
        with self.connection.makefile("rb") as reader:
            while True:
                try:
                    request = self._read_request(reader)
                except BadRequest as error:
                    self._send(error.status, {"message": str(error)}, head=False, keep_alive=False)
                    return
                if request is None:
                    return  # the device closed the connection
                if not self._answer(request):
                    self._close_notify()
                    return

    def _close_notify(self) -> None:
        """End TLS properly when the gateway closes first, as web servers do: without a
        close_notify, `openssl s_client` and other strict clients report a truncated answer."""
        try:
            self.connection.settimeout(CLOSE_NOTIFY_SECONDS)
            self.connection.unwrap()
        except (OSError, ValueError):
            pass  # the device went away first: nothing left to end

    def _read_request(self, reader: Any) -> HttpRequest | None:
        line = reader.readline(MAX_LINE_BYTES + 1)
        if not line:
            return None
        if len(line) > MAX_LINE_BYTES:
            raise BadRequest(414, "request line too long")
        try:
            method, target, version = line.decode("latin-1").split()
        except ValueError:
            raise BadRequest(400, "malformed request line") from None
        if version not in ("HTTP/1.0", "HTTP/1.1"):
            raise BadRequest(505, f"unsupported protocol {version}")
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS + 1):
            line = reader.readline(MAX_LINE_BYTES + 1)
            if line in (b"\r\n", b"\n"):
                break
            if not line:
                return None
            if len(line) > MAX_LINE_BYTES:
                raise BadRequest(431, "header line too long")
            name, colon, value = line.decode("latin-1").partition(":")
            if not colon:
                raise BadRequest(400, "malformed header line")
            headers[name.strip().lower()] = value.strip()
        else:
            raise BadRequest(431, "too many headers")
        body = self._read_body(reader, headers)
        connection = headers.get("connection", "").lower()
        keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
        return HttpRequest(method=method, path=urlsplit(target).path, headers=headers, keep_alive=keep_alive, body=body)

    @staticmethod
    def _read_body(reader: Any, headers: dict[str, str]) -> bytes:
        """The request body (an EST CSR; other routes ignore it), read whole so the next
        request on the connection parses."""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            raise BadRequest(411, "a request body needs a Content-Length")
        try:
            length = int(headers.get("content-length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY_BYTES:
            raise BadRequest(413, "request body too large")
        return reader.read(length) if length else b""

    def _answer(self, request: HttpRequest) -> bool:
        """Answer one request; False when the connection must close after it."""
        head = request.method == "HEAD"
        presented = None
        try:
            presented = self._presented_cert()
            device = self.gateway.rules.admit(presented)
        except DeviceRefused as refusal:
            log.info("%s %s 403: %s", request.method, request.path, refusal)
            # A certificate no trusted CA vouches for any more ends the connection it opened.
            keep_alive = request.keep_alive and presented is not None and presented.ca is not None
            message = f"{refusal}\n".encode() if self.serves_est else {"message": str(refusal)}
            self._send(403, message, head=head, keep_alive=keep_alive, content_type=TEXT if self.serves_est else JSON)
            return keep_alive
        except Exception:
            log.exception("internal error on %s %s", request.method, request.path)
            self._send(500, {"message": "internal gateway error"}, head=head, keep_alive=False)
            return False
        if self.serves_est:
            return self._answer_est(request, device)
        if is_est_path(request.path):
            status, body = 404, {"message": "EST is not served on the gateway's name: connect to the EST server's "
                                            "(the DNS name of est-tls-crt, `fioca keys est show`)"}
        elif request.method not in ("GET", "HEAD"):
            status, body = 405, {"message": f"method not allowed: {request.method}"}
        else:
            status, body = self._route(request)
            if status == 200 and request.path == "/device":
                body = device_json(device, self.gateway.rules.factory)
        log.info("%s %s %s (device %s)", request.method, request.path, status, device.uuid)
        self._send(status, body, head=head, keep_alive=request.keep_alive)
        return request.keep_alive

    def _answer_est(self, request: HttpRequest, device: DeviceRecord) -> bool:
        """A request on the EST host: RFC 7030's operations, nothing else."""
        if is_est_path(request.path):
            try:
                answer = self.gateway.est.answer(
                    request.method, request.path, request.headers, request.body,
                    device=device, client_der=self.connection.getpeercert(binary_form=True) or b"",
                )
            except Exception:
                log.exception("internal error on EST %s %s", request.method, request.path)
                self._send(500, b"internal EST server error\n", head=False, keep_alive=False, content_type=TEXT)
                return False
            status, payload, content_type, headers = answer.status, answer.body, answer.content_type, answer.headers
        else:
            status, payload, content_type, headers = 404, b"not found: the EST server serves /.well-known/est/\n", TEXT, ()
        log.info("EST %s %s %s (device %s)", request.method, request.path, status, device.uuid)
        self._send(status, payload, head=request.method == "HEAD", keep_alive=request.keep_alive,
                   content_type=content_type, extra_headers=headers)
        return request.keep_alive

    def _route(self, request: HttpRequest) -> tuple[int, Any]:
        repo = self.gateway.repo
        if request.path == "/device":
            return 200, None  # filled in by the caller, which holds the device record
        if request.path in ("/repo/1.root.json", "/repo/root.json"):
            return 200, repo.root_json
        if request.path == "/repo/targets.json":
            if not request.headers.get("x-ats-tags", "").strip():
                return 400, {"message": "the x-ats-tags header is required"}
            return 200, repo.targets()
        return 404, {"message": f"not found: {request.path}"}

    def _presented_cert(self) -> PresentedCert:
        """The device's certificate read against what the gateway trusts *now*: a request
        after a revocation or a PKI switch finds no trusted CA for it."""
        state = self.gateway.trust_state()
        if self._presented is None or self._presented[0] is not state:
            der = self.connection.getpeercert(binary_form=True)
            if der is None:  # cannot happen with CERT_REQUIRED; refuse rather than assume
                raise DeviceRefused("no client certificate")
            self._presented = state, state.read(der, verified=state is self.handshake_state)
        return self._presented[1]

    def _send(
        self, status: int, body: Any, *, head: bool, keep_alive: bool, content_type: str = JSON,
        extra_headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8") + b"\n"
        lines = [
            f"HTTP/1.1 {status} {_reason(status)}",
            "Server: fioca-sandbox-gateway",
            f"Date: {formatdate(usegmt=True)}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(payload)}",
            *(f"{name}: {value}" for name, value in extra_headers),
        ]
        if not keep_alive:
            lines.append("Connection: close")
        # Head and body in one write: one TLS record, one syscall.
        self.connection.sendall("\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + (b"" if head else payload))


def device_json(device: DeviceRecord, factory: str) -> dict[str, Any]:
    """`GET /device`: what the gateway knows about the calling device."""
    return {
        "uuid": device.uuid,
        "name": device.name,
        "factory": factory,
        "owner": device.owner,
        "pubkey": device.pubkey,
        "is_prod": device.is_prod,
        "ca_serial": device.ca_serial,
        "group": device.group,
        "created_at": device.created_at,
        "last_seen": device.last_seen,
    }


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
