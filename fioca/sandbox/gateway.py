"""The sandbox's device gateway: HTTPS with client certificates on the gateway port (PKI-SPEC 7).

What it serves and trusts follows the backend, without a restart:

* Before the factory owns its PKI (no accepted `tls-crt`), it serves a *shared* gateway
  certificate from a sandbox-owned shared CA (`DIR/gateway-shared-ca.pem`, made once, 0600)
  naming `<gateway id>.ota-lite.foundries.io`, and trusts only that shared CA, which issues no
  device certificates: no device can connect or register before the PATCH.
* Once `tls-crt` is accepted it serves `tls-crt` with the key the backend holds, and trusts
  the device CAs of `ca-crt` (a revoked CA has left `ca-crt`, so its devices fail the TLS
  handshake). A rotated `tls-crt` or a changed `ca-crt` is picked up on the next connection:
  each accept compares `Store.certs_generation` (bumped by every save of the certs) with the
  one the cached `SSLContext` was built at, and builds a new context only when they differ.

The handshake checks the chain (a device CA is a trust anchor) but not the dates, so that an
expired or not-yet-valid certificate gets a readable 403 like every other refusal of an
authenticated device: wrong OU, no extendedKeyUsage (one without clientAuth already fails
OpenSSL's purpose check in the handshake), a deleted (deny-listed) uuid, a known uuid with a
new key, a new device under a disabled CA. An unknown device from a trusted CA is
registered on its first request and served in the same round trip.

Probes: `GET /device` (the device record as JSON), `GET /repo/1.root.json` (TUF root metadata
signed by a sandbox repo key), `GET /repo/targets.json` with `x-ats-tags` (empty targets).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import queue
import socket
import socketserver
import sqlite3
import ssl
import tempfile
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import formatdate
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fioca.sandbox.api import Route
from fioca.sandbox.backend import GATEWAY_DOMAIN, OSTREE_DOMAIN, Backend
from fioca.sandbox.certs import is_production, is_uuid, issued_by
from fioca.sandbox.files import write_private_file
from fioca.sandbox.registration import registration_routes
from fioca.sandbox.server import GatewayContext
from fioca.sandbox.store import DeviceRecord, Store, utc_now
from fioca.sandbox.tls import issue_server_cert, make_ca

log = logging.getLogger("fioca.sandbox.gateway")

SHARED_CA_CERT = "gateway-shared-ca.pem"
SHARED_CA_KEY = "gateway-shared-ca.key"
SHARED_SERVER_CERT = "gateway-shared.pem"
SHARED_SERVER_KEY = "gateway-shared.key"
REPO_KEY = "gateway-repo.key"
REPO_ROOT = "gateway-repo-root.json"

HANDSHAKE_TIMEOUT_SECONDS = 10
REQUEST_TIMEOUT_SECONDS = 30
MAX_BODY_BYTES = 64 * 1024
MAX_LINE_BYTES = 8 * 1024
MAX_HEADERS = 100
MAX_WORKERS = 256  # connections served at once; more wait for a free worker
LISTEN_BACKLOG = 1024  # a fleet connecting at once must not overflow the accept queue
PRESENTED_CACHE_SIZE = 10_000
SHUTDOWN_POLL_SECONDS = 0.05
ROOT_VALIDITY = timedelta(days=365)
TARGETS_VALIDITY = timedelta(days=30)
# OpenSSL's X509_V_FLAG_NO_CHECK_TIME: the handshake ignores validity dates, so the gateway
# refuses an expired device certificate with a readable 403 instead of a bare TLS alert.
VERIFY_NO_CHECK_TIME = 0x200000


# -- the hooks the sandbox calls ---------------------------------------------------------------


def create_gateway(context: GatewayContext) -> DeviceGateway:
    """The sandbox's gateway factory (see fioca.sandbox.server.GatewayContext)."""
    return DeviceGateway(context)


def api_routes(context: GatewayContext) -> list[Route]:
    """Routes served on the API port: online device registration (`/ota/devices/`)."""
    return registration_routes(context.backend)


# -- what a device presents ---------------------------------------------------------------------


class DeviceRefused(Exception):
    """The gateway refuses an authenticated device; the message is the 403 body's `message`."""


@dataclass(frozen=True)
class TrustedCa:
    """A device CA of ca-crt, as the gateway trusts it."""

    cert: x509.Certificate
    serial: str
    common_name: str


@dataclass(frozen=True)
class PresentedCert:
    """What the gateway needs from a device certificate, parsed once per certificate."""

    uuid: str | None
    units: tuple[str, ...]
    is_prod: bool
    client_auth: bool
    not_before: datetime
    not_after: datetime
    pubkey_pem: str
    ca: TrustedCa | None  # the device CA that signed it, None when no trusted CA did


def _common_name(name: x509.Name) -> str | None:
    names = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if len(names) == 1 else None


def read_presented(der: bytes, cas: list[TrustedCa]) -> PresentedCert:
    """Parse a device certificate and find which trusted CA signed it (name and signature:
    an added online CA shares its subject with the first one)."""
    cert = x509.load_der_x509_certificate(der)
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        client_auth = ExtendedKeyUsageOID.CLIENT_AUTH in usages
    except x509.ExtensionNotFound:
        client_auth = False
    issuer = next((ca for ca in cas if ca.cert.subject == cert.issuer and issued_by(cert, ca.cert)), None)
    return PresentedCert(
        uuid=_common_name(cert.subject),
        units=tuple(str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)),
        is_prod=is_production(cert.subject),
        client_auth=client_auth,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        pubkey_pem=cert.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii"),
        ca=issuer,
    )


class DeviceRules:
    """PKI-SPEC section 7's rules for an authenticated device; registers new devices."""

    def __init__(self, store: Store, factory: str, local_ca_cn: str, owner: str):
        self.store = store
        self.factory = factory
        self.local_ca_cn = local_ca_cn
        self.owner = owner

    def admit(self, presented: PresentedCert) -> DeviceRecord:
        """The device's record (registered now if new, last_seen updated), or DeviceRefused."""
        self._check_certificate(presented)
        uuid = presented.uuid
        assert uuid is not None and presented.ca is not None  # checked above
        record = self.store.device(uuid)
        if record is None:
            record = self._register(presented)
        self._check_known_device(record, presented)
        now = utc_now()
        if record.last_seen != now:  # second precision: at most one write a second per device
            self.store.touch_device(uuid)
            record = dataclasses.replace(record, last_seen=now)
        return record

    def _check_certificate(self, presented: PresentedCert) -> None:
        ca = presented.ca
        if ca is None:
            raise DeviceRefused(f"the certificate is not signed by a device CA of factory '{self.factory}'")
        now = datetime.now(timezone.utc)
        if now < presented.not_before:
            raise DeviceRefused(f"the certificate is not valid yet (notBefore {presented.not_before:%Y-%m-%dT%H:%M:%SZ})")
        if now > presented.not_after:
            raise DeviceRefused(f"the certificate has expired (notAfter {presented.not_after:%Y-%m-%dT%H:%M:%SZ})")
        if not ca.cert.not_valid_before_utc <= now <= ca.cert.not_valid_after_utc:
            raise DeviceRefused(f"the device CA serial {ca.serial} is outside its validity period")
        if not presented.client_auth:
            raise DeviceRefused("the certificate lacks extendedKeyUsage clientAuth")
        if presented.units != (self.factory,):
            units = ", ".join(presented.units) or "(none)"
            raise DeviceRefused(f"the certificate's OU is {units}, not factory '{self.factory}'")
        if presented.uuid is None or not is_uuid(presented.uuid):
            raise DeviceRefused(f"the certificate's CN must be the device UUID, not {presented.uuid or '(none)'}")

    def _register(self, presented: PresentedCert) -> DeviceRecord:
        """First request of an unknown device: record it, exactly once even under a race."""
        uuid, ca = presented.uuid, presented.ca
        assert uuid is not None and ca is not None
        if ca.serial in self.store.disabled_ca_serials():
            raise DeviceRefused(f"device CA serial {ca.serial} is disabled: it may not register new devices")
        try:
            record = self.store.add_device(
                uuid=uuid,
                name=uuid,  # a device registered by the gateway is named after its uuid
                pubkey=presented.pubkey_pem,
                is_prod=presented.is_prod,
                ca_serial=ca.serial,
                # A local CA is named after its user (fio-<polis-id>); that user owns its devices.
                owner=self.owner if ca.common_name == self.local_ca_cn else None,
            )
            log.info("registered device %s (device CA serial %s)", uuid, ca.serial)
            return record
        except sqlite3.IntegrityError:
            # Another connection of the same device registered it first: use that record.
            record = self.store.device(uuid)
            if record is None:
                raise
            return record

    @staticmethod
    def _check_known_device(record: DeviceRecord, presented: PresentedCert) -> None:
        if record.deny_listed:
            raise DeviceRefused(f"device {record.uuid} was deleted (it is on the deny-list)")
        if record.pubkey != presented.pubkey_pem:
            raise DeviceRefused(f"device {record.uuid} is registered with another public key")


# -- what the gateway serves and trusts ----------------------------------------------------------


@dataclass(frozen=True)
class SharedPki:
    """The service's default gateway identity, used before a factory owns its PKI."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


def _names_host(cert_path: Path, host: str) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    return host in names.get_values_for_type(x509.DNSName) and cert.not_valid_after_utc > datetime.now(timezone.utc)


def ensure_shared_pki(data_dir: Path, gateway_id: str) -> SharedPki:
    """Make (once) the shared CA and a gateway certificate for this factory's gateway host."""
    shared = SharedPki(
        ca_cert=data_dir / SHARED_CA_CERT, server_cert=data_dir / SHARED_SERVER_CERT, server_key=data_dir / SHARED_SERVER_KEY
    )
    ca_key_path = data_dir / SHARED_CA_KEY
    gateway_host = f"{gateway_id}.{GATEWAY_DOMAIN}"
    if shared.ca_cert.exists() and ca_key_path.exists():
        ca_cert = x509.load_pem_x509_certificate(shared.ca_cert.read_bytes())
        ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    else:
        ca_cert, ca_key = make_ca("fioca sandbox shared gateway CA")
        write_private_file(ca_key_path, _private_pem(ca_key))
        write_private_file(shared.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))
    if not (_names_host(shared.server_cert, gateway_host) and shared.server_key.exists()):
        cert, key = issue_server_cert(ca_cert, ca_key, [gateway_host, f"{gateway_id}.{OSTREE_DOMAIN}"])  # type: ignore[arg-type]
        write_private_file(shared.server_key, _private_pem(key))
        write_private_file(shared.server_cert, cert.public_bytes(serialization.Encoding.PEM))
    return shared


def _private_pem(key: Any) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


@dataclass
class TrustState:
    """One generation of what the gateway serves and trusts, with its per-certificate cache."""

    generation: int  # Store.certs_generation when it was built
    ssl_context: ssl.SSLContext
    cas: list[TrustedCa]
    shared: bool
    presented: dict[bytes, PresentedCert] = dataclasses.field(default_factory=dict)

    def read(self, der: bytes) -> PresentedCert:
        presented = self.presented.get(der)
        if presented is None:
            presented = read_presented(der, self.cas)
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
    """An SSLContext for the backend's current certs: tls-crt + device CAs, or the shared PKI."""
    context = _server_context()
    identity = backend.gateway_identity()
    if identity is None:
        context.load_cert_chain(shared.server_cert, shared.server_key)
        context.load_verify_locations(cafile=shared.ca_cert)
        return TrustState(generation=generation, ssl_context=context, cas=[], shared=True)

    # load_cert_chain only reads files: a 0600 temp file in the 0700 data dir, removed at once.
    fd, chain_path = tempfile.mkstemp(dir=data_dir, prefix=".gateway-chain.", suffix=".pem")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(identity.cert_pem.rstrip("\n") + "\n" + identity.key_pem)
        context.load_cert_chain(chain_path)
    finally:
        os.unlink(chain_path)
    device_cas = backend.device_cas()
    cas = [
        TrustedCa(cert=ca.cert, serial=ca.serial, common_name=_common_name(ca.cert.subject) or "")
        for ca in device_cas
    ]
    if device_cas:
        context.load_verify_locations(cadata="".join(ca.pem for ca in device_cas))
    return TrustState(generation=generation, ssl_context=context, cas=cas, shared=False)


# -- the TUF repository probes --------------------------------------------------------------------


def canonical_json(value: Any) -> bytes:
    """TUF's canonical form: sorted keys, no spaces (enough for the ASCII metadata here)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _expires(delta: timedelta) -> str:
    return (datetime.now(timezone.utc) + delta).replace(microsecond=0).isoformat().replace("+00:00", "Z")


class TufRepo:
    """A one-key TUF repository: signed root metadata (made once) and empty targets."""

    def __init__(self, key: ed25519.Ed25519PrivateKey, root_json: bytes):
        self._key = key
        self.root_json = root_json
        public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.public_key = {"keytype": "ed25519", "scheme": "ed25519", "keyval": {"public": public.hex()}}
        self.key_id = hashlib.sha256(canonical_json(self.public_key)).hexdigest()

    @classmethod
    def ensure(cls, data_dir: Path) -> TufRepo:
        """The repo of this data dir: its key and 1.root.json are made once and kept."""
        key_path, root_path = data_dir / REPO_KEY, data_dir / REPO_ROOT
        if key_path.exists() and root_path.exists():
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            assert isinstance(key, ed25519.Ed25519PrivateKey)
            return cls(key, root_path.read_bytes())
        key = ed25519.Ed25519PrivateKey.generate()
        repo = cls(key, b"")
        repo.root_json = json.dumps(repo._root_metadata(), indent=2).encode("utf-8") + b"\n"
        write_private_file(key_path, _private_pem(key))
        write_private_file(root_path, repo.root_json)
        return repo

    def _signed(self, signed: dict[str, Any]) -> dict[str, Any]:
        signature = self._key.sign(canonical_json(signed))
        return {"signatures": [{"keyid": self.key_id, "sig": signature.hex()}], "signed": signed}

    def _root_metadata(self) -> dict[str, Any]:
        role = {"keyids": [self.key_id], "threshold": 1}
        return self._signed(
            {
                "_type": "root",
                "spec_version": "1.0.0",
                "version": 1,
                "expires": _expires(ROOT_VALIDITY),
                "consistent_snapshot": False,
                "keys": {self.key_id: self.public_key},
                "roles": {"root": role, "targets": dict(role), "snapshot": dict(role), "timestamp": dict(role)},
            }
        )

    def targets(self) -> bytes:
        metadata = self._signed(
            {"_type": "targets", "spec_version": "1.0.0", "version": 1, "expires": _expires(TARGETS_VALIDITY), "targets": {}}
        )
        return json.dumps(metadata, indent=2).encode("utf-8") + b"\n"


# -- the server -----------------------------------------------------------------------------------


class DeviceGateway:
    """The mTLS device gateway of one sandbox factory (a `GatewayServer`)."""

    def __init__(self, context: GatewayContext):
        factory = context.backend.factory
        self.backend = context.backend
        self.store = context.store
        self.data_dir = context.data_dir
        self.shared = ensure_shared_pki(context.data_dir, factory.gateway_id)
        self.repo = TufRepo.ensure(context.data_dir)
        self.rules = DeviceRules(
            context.store, factory=factory.name, local_ca_cn=context.backend.local_ca_cn, owner=factory.polis_id
        )
        self._state_lock = threading.Lock()
        self._state: TrustState | None = None
        self._thread: threading.Thread | None = None
        self._server = GatewayTcpServer((context.host, context.port), self)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self.trust_state()  # fail at start, not at the first device, if the certs do not load
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": SHUTDOWN_POLL_SECONDS},
            name="sandbox-gateway", daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

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
    """Accepts TCP in one thread and hands each connection (TLS handshake and requests) to a
    worker thread of its own, so a slow device delays nobody else. Workers are kept for the
    next connection: starting a thread costs more than the rest of a request."""

    allow_reuse_address = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address: tuple[str, int], gateway: DeviceGateway):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.gateway = gateway
        self._jobs: queue.SimpleQueue[tuple[Any, Any] | None] = queue.SimpleQueue()
        self._pool_lock = threading.Lock()
        self._workers = 0
        self._idle = 0  # workers waiting for a connection no one has promised them yet
        super().__init__(address, socketserver.BaseRequestHandler)  # finish_request does the work

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._pool_lock:
            if self._idle:
                self._idle -= 1  # an idle worker takes it
            elif self._workers < MAX_WORKERS:
                self._workers += 1
                threading.Thread(target=self._work, name="sandbox-gateway-worker", daemon=True).start()
            # else: every worker is busy; the connection waits for the first one free
        self._jobs.put((request, client_address))

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            request, client_address = job
            try:
                self.finish_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)
            with self._pool_lock:
                self._idle += 1

    def server_close(self) -> None:
        super().server_close()
        with self._pool_lock:
            workers, self._workers, self._idle = self._workers, 0, 0
        for _ in range(workers):
            self._jobs.put(None)  # each worker ends after the connection it is serving

    def finish_request(self, request: Any, client_address: Any) -> None:
        state = self.gateway.trust_state()
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


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    keep_alive: bool


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
        self.state = state
        self._presented: PresentedCert | None = None

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
                self._answer(request)
                if not request.keep_alive:
                    return

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
        self._discard_body(reader, headers)
        connection = headers.get("connection", "").lower()
        keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
        return HttpRequest(method=method, path=urlsplit(target).path, headers=headers, keep_alive=keep_alive)

    @staticmethod
    def _discard_body(reader: Any, headers: dict[str, str]) -> None:
        """Read and drop a request body, so the next request on the connection parses."""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            raise BadRequest(411, "a request body needs a Content-Length")
        try:
            length = int(headers.get("content-length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY_BYTES:
            raise BadRequest(413, "request body too large")
        if length:
            reader.read(length)

    def _answer(self, request: HttpRequest) -> None:
        head = request.method == "HEAD"
        try:
            device = self.gateway.rules.admit(self._presented_cert())
        except DeviceRefused as refusal:
            log.info("%s %s 403: %s", request.method, request.path, refusal)
            self._send(403, {"message": str(refusal)}, head=head, keep_alive=request.keep_alive)
            return
        except Exception:
            log.exception("internal error on %s %s", request.method, request.path)
            self._send(500, {"message": "internal gateway error"}, head=head, keep_alive=False)
            return
        if request.method not in ("GET", "HEAD"):
            status, body = 405, {"message": f"method not allowed: {request.method}"}
        else:
            status, body = self._route(request)
            if status == 200 and request.path == "/device":
                body = device_json(device, self.gateway.rules.factory)
        log.info("%s %s %s (device %s)", request.method, request.path, status, device.uuid)
        self._send(status, body, head=head, keep_alive=request.keep_alive)

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
        if self._presented is None:
            der = self.connection.getpeercert(binary_form=True)
            if der is None:  # cannot happen with CERT_REQUIRED; refuse rather than assume
                raise DeviceRefused("no client certificate")
            self._presented = self.state.read(der)
        return self._presented

    def _send(self, status: int, body: Any, *, head: bool, keep_alive: bool) -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8") + b"\n"
        lines = [
            f"HTTP/1.1 {status} {_reason(status)}",
            "Server: fioca-sandbox-gateway",
            f"Date: {formatdate(usegmt=True)}",
            "Content-Type: application/json",
            f"Content-Length: {len(payload)}",
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
        "created_at": device.created_at,
        "last_seen": device.last_seen,
    }


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
