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

Performance structure: each process serves all its connections from one thread, an event
loop (`GatewayLoop`), as an nginx worker does; connections get TCP_NODELAY (an answer and the
close_notify after it must not wait for a delayed ACK); a registration waits for the group
commit at the end of the loop's turn (one fsync for every device registered in that turn, see
store.py); and with `GatewayContext.processes` > 1 (`fioca sandbox serve`: one per core)
`GatewayProcesses` starts that many more processes minus one on the same listening socket
(gateway_process.py), each a DeviceGateway of its own with its own interpreter lock, store
connections and rules. Everything they share goes through the store, so `certs_generation`
is kept there, and a device two processes see at the same moment is recorded once (its uuid
is the key; the loser's request finds the winner's record).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import json
import logging
import os
import select
import selectors
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from fioca.sandbox.http_wire import MAX_REQUEST_BYTES, REASONS, BadRequest, HttpRequest, http_date, parse_request
from fioca.sandbox.shared_pki import SharedPki
from fioca.sandbox.store import DeviceRecord, DeviceWrites
from fioca.sandbox.tuf import TufRepo

log = logging.getLogger("fioca.sandbox.gateway")

HANDSHAKE_TIMEOUT_SECONDS = 10
REQUEST_TIMEOUT_SECONDS = 30
RECEIVE_BYTES = 64 * 1024
MAX_CONNECTIONS = 4096  # open in one process at once; past it accept() waits for a close
ACCEPT_BATCH = 16  # connections taken per wake-up, so the other processes get their share
LISTEN_BACKLOG = 1024  # a fleet connecting at once must not overflow the accept queue
PRESENTED_CACHE_SIZE = 10_000
ACCEPT_RETRY_SECONDS = 0.05
SWEEP_SECONDS = 1  # how often the loop closes connections past their deadline
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
        self._server = GatewayLoop((context.host, context.port), self, listening=listening)
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


class GatewayLoop:
    """One thread serving every connection of this process from a selector, as nginx's worker
    does: TLS handshakes, requests and answers are each a step taken when the socket is ready,
    never a wait. Threads per connection cost more than the rest of a connection here: each
    handshake in a thread of its own contends for the interpreter lock and for OpenSSL 3.0's
    internal locks (futex calls and context switches by the dozen per connection).

    The group commit: the registrations and last_seen updates the requests gather (`writes`)
    are committed in one transaction, one fsync, on a thread of their own, so that the loop
    goes on serving while the disk (or another process's write lock) keeps it; the writes
    gathered meanwhile are the next group. An answer that tells a device what is not committed
    yet goes out after that commit, and a first request waiting for its registration is
    admitted again then: what a device is told is on the disk. EST operations (a signature and a
    write each) are answered from a thread of their own too (`run_est`). The kernel wakes every process's
    loop on a new connection on the shared socket; one accept() wins it."""

    def __init__(self, address: tuple[str, int], gateway: DeviceGateway, listening: socket.socket | None = None):
        self.gateway = gateway
        if listening is None:
            listening = socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET, socket.SOCK_STREAM)
            try:
                listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listening.bind(address)
                listening.listen(LISTEN_BACKLOG)
            except OSError:
                listening.close()
                raise
        self.socket = listening
        self.server_address = listening.getsockname()
        self.socket.setblocking(False)
        self.trust: TrustState | None = None  # what the gateway trusts this turn (None: it cannot tell)
        self.writes = DeviceWrites()  # the next group to commit
        self._after_commit: list[DeviceConnection] = []  # connections whose answer waits for that commit
        self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandbox-gateway-commit")
        self._est_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandbox-gateway-est")
        self._est_waiting: list[DeviceConnection] = []  # connections whose EST answer is being made
        # The group being committed: its writes, the connections waiting for it, its outcome.
        self._committing: tuple[DeviceWrites, list[DeviceConnection], Future[set[str]]] | None = None
        self._connections: set[DeviceConnection] = set()
        self._selector = selectors.DefaultSelector()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._accepting_again = 0.0  # monotonic time accept() may be tried again after EMFILE
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._selector.register(self.socket, selectors.EVENT_READ, self._accept)
        self._wake_reader.setblocking(False)
        self._selector.register(self._wake_reader, selectors.EVENT_READ, self._woken)
        self._thread = threading.Thread(target=self._run, name="sandbox-gateway", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """The loop ends and every connection closes; this process's socket closes (the other
        gateway processes' copies of it stay open until they stop)."""
        self._stopping = True
        self._wake()
        if self._thread is not None:
            self._thread.join()
        self._committer.shutdown(wait=True)  # a group being committed is, all the same
        self._est_worker.shutdown(wait=True)
        for connection in list(self._connections):
            connection.close()
        self._selector.close()
        self._wake_reader.close()
        self._wake_writer.close()
        self.socket.close()

    def _run(self) -> None:
        next_sweep = time.monotonic() + SWEEP_SECONDS
        while not self._stopping:
            ready = self._selector.select(max(0.0, next_sweep - time.monotonic()))
            self._refresh_trust()
            for key, _events in ready:
                try:
                    key.data()  # a connection's handler ends that connection on an error
                except Exception:  # a bug must not end the loop, and with it every connection
                    log.exception("internal error in the gateway loop")
            if self.writes and self._committing is None:
                self._start_commit()
            if time.monotonic() >= next_sweep:
                self._sweep()
                next_sweep = time.monotonic() + SWEEP_SECONDS

    def _refresh_trust(self) -> None:
        """What the gateway serves and trusts, read once a turn, after select() returned: a
        request that came after a change of the certs (a revocation) is read against it."""
        try:
            self.trust = self.gateway.trust_state()
        except Exception:
            log.exception("cannot load the certs the backend holds: no device is served until they load")
            self.trust = None

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            if len(self._connections) >= MAX_CONNECTIONS:
                self._pause_accepting()  # the next close resumes it
                return
            try:
                raw, address = self.socket.accept()
            except BlockingIOError:
                return  # another process's loop took it, or none is left
            except OSError as error:
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._pause_accepting()  # out of descriptors or memory: let some go first
                    self._accepting_again = time.monotonic() + ACCEPT_RETRY_SECONDS
                return  # else the connection went away before it was accepted
            try:
                connection = DeviceConnection.accepted(self, raw, address)
            except OSError as error:
                log.debug("connection from %s ended at once: %s", address[0], error)
                raw.close()
                continue
            self._connections.add(connection)
            connection.on_ready()  # the ClientHello is often there already

    def _pause_accepting(self) -> None:
        with contextlib.suppress(KeyError):
            self._selector.unregister(self.socket)

    def _resume_accepting(self) -> None:
        if self._stopping or time.monotonic() < self._accepting_again:
            return
        try:
            self._selector.get_key(self.socket)
        except KeyError:
            self._selector.register(self.socket, selectors.EVENT_READ, self._accept)

    def watch(self, connection: DeviceConnection, events: int) -> None:
        """Call `connection.on_ready` when its socket is ready for `events`."""
        if connection.watched == events:
            return
        if connection.watched:
            self._selector.modify(connection.connection, events, connection.on_ready)
        else:
            self._selector.register(connection.connection, events, connection.on_ready)
        connection.watched = events

    def after_commit(self, connection: DeviceConnection) -> None:
        """Go on with `connection` (`committed` or `commit_failed`) after the commit of the
        writes gathered so far; until then its socket is not watched."""
        self._unwatch(connection)
        self._after_commit.append(connection)

    def _unwatch(self, connection: DeviceConnection) -> None:
        if connection.watched:
            self._selector.unregister(connection.connection)
            connection.watched = 0

    def forget(self, connection: DeviceConnection) -> None:
        self._unwatch(connection)
        self._connections.discard(connection)
        if len(self._connections) < MAX_CONNECTIONS:
            self._resume_accepting()

    def _start_commit(self) -> None:
        """Hand the writes gathered so far to the committer; it wakes the loop when done."""
        writes, self.writes = self.writes, DeviceWrites()
        waiting, self._after_commit = self._after_commit, []
        done = self._committer.submit(self.gateway.store.commit_device_writes, writes)
        self._committing = writes, waiting, done
        done.add_done_callback(lambda _done: self._wake())

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # a byte is there already, or the loop has stopped
            self._wake_writer.send(b"x")

    def run_est(self, connection: DeviceConnection, answer: Any) -> Future[Any]:
        """Make an EST answer on the EST thread; `connection.est_answered` once it is made."""
        self._unwatch(connection)
        done = self._est_worker.submit(answer)
        self._est_waiting.append(connection)
        done.add_done_callback(lambda _done: self._wake())
        return done

    def _woken(self) -> None:
        with contextlib.suppress(BlockingIOError):
            self._wake_reader.recv(4096)
        answered = [connection for connection in self._est_waiting if connection.est_done()]
        self._est_waiting = [connection for connection in self._est_waiting if connection not in answered]
        for connection in answered:
            connection.est_answered()
        if self._committing is not None and self._committing[2].done():
            writes, waiting, done = self._committing
            self._committing = None
            self._committed(writes, waiting, done)

    def _committed(self, writes: DeviceWrites, waiting: list[DeviceConnection], done: Future[set[str]]) -> None:
        """The connections that waited for a group go on (a first request is admitted again:
        it finds its device now), or get a 500 when it could not be committed."""
        try:
            added = done.result()
        except Exception:  # sqlite3.Error: busy past its timeout, disk full, ...
            log.exception("cannot record %d devices and %d last_seen times", len(writes.new), len(writes.seen))
            for connection in waiting:
                connection.commit_failed()
            return
        for uuid in sorted(added):
            log.info("registered device %s (device CA serial %s)", uuid, writes.new[uuid].ca_serial)
        for uuid in sorted(writes.rotated):
            log.info("device %s used the key EST certified: its rotation is committed", uuid)
        registered = {uuid: writes.new[uuid] for uuid in added}
        for connection in waiting:
            connection.committed(registered)

    def _sweep(self) -> None:
        """Close connections past their deadline: a handshake or a request that does not come."""
        now = time.monotonic()
        for connection in [connection for connection in self._connections if connection.deadline < now]:
            log.debug("connection from %s timed out", connection.address[0])
            connection.close()
        if len(self._connections) < MAX_CONNECTIONS:
            self._resume_accepting()


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


class DeviceConnection:
    """One device's TLS connection in the loop: the handshake, then HTTP/1.x requests
    answered in order, until either side closes. `on_ready` takes the next step the socket
    allows and asks the loop to call it again when the socket is ready for the one after."""

    def __init__(self, loop: GatewayLoop, connection: ssl.SSLSocket, address: Any, state: TrustState):
        self.loop = loop
        self.gateway = loop.gateway
        self.connection = connection
        self.address = address
        self.handshake_state = state  # the CAs that verify this connection's certificate
        self.serves_est = False  # the device asked for the EST host by name (set by the handshake)
        self.deadline = time.monotonic() + HANDSHAKE_TIMEOUT_SECONDS
        self.watched = 0  # the selector events the loop watches its socket for (0: not registered)
        self._handshaken = False
        self._received = bytearray()
        self._outgoing = b""  # an answer the socket has not taken whole yet
        self._device_closed = False  # it sent its last request (EOF)
        self._closing = False  # close once the answer is out
        self._waiting: HttpRequest | None = None  # a first request waiting for its registration's commit
        self._answer_waits = False  # the answer given tells what the next commit holds
        self._est: tuple[HttpRequest, DeviceRecord, Future[Any]] | None = None  # an EST request its thread answers
        self._presented: tuple[TrustState, PresentedCert] | None = None
        self._closed = False

    @classmethod
    def accepted(cls, loop: GatewayLoop, raw: socket.socket, address: Any) -> DeviceConnection:
        state = loop.trust
        if state is None:
            raise OSError("the gateway cannot load its certs")
        # The answer and the close_notify after it go out at once, not after a delayed ACK.
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        raw.setblocking(False)
        connection = state.ssl_context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        return cls(loop, connection, address, state)

    def on_ready(self) -> None:
        with self._ended_on_error():
            if not self._handshaken and not self._handshake():
                return
            if self._outgoing and not self._flush():
                return
            if self._waiting is None:
                self._receive()
                self._answer_received()

    @contextlib.contextmanager
    def _ended_on_error(self) -> Iterator[None]:
        """Around each step the loop calls: an error ends this connection, and only it (the
        loop and the other connections, those of its commit group too, go on)."""
        try:
            yield
        except OSError as error:  # the device went away mid-request (ssl.SSLError included)
            log.debug("connection from %s ended: %s", self.address[0], error)
            self.close()
        except Exception:
            log.exception("internal error on the connection from %s", self.address[0])
            self.close()

    def _handshake(self) -> bool:
        try:
            self.connection.do_handshake()
        except ssl.SSLWantReadError:
            self.loop.watch(self, selectors.EVENT_READ)
            return False
        except ssl.SSLWantWriteError:
            self.loop.watch(self, selectors.EVENT_WRITE)
            return False
        except (ssl.SSLError, OSError) as error:
            # Untrusted or revoked CA, no client certificate, plain HTTP: the handshake says no.
            log.debug("handshake with %s failed: %s", self.address[0], error)
            self.close()
            return False
        self._handshaken = True
        est = self.handshake_state.est
        self.serves_est = est is not None and self.connection.context is est.ssl_context
        self.deadline = time.monotonic() + REQUEST_TIMEOUT_SECONDS
        return True

    def _receive(self) -> None:
        """What the device sent so far (TLS may hold more than the socket says is ready)."""
        while len(self._received) <= MAX_REQUEST_BYTES:
            try:
                chunk = self.connection.recv(RECEIVE_BYTES)
            except ssl.SSLWantReadError:
                return
            if not chunk:
                self._device_closed = True
                return
            if not self._received:
                # A request has REQUEST_TIMEOUT_SECONDS from its first byte (or from the answer
                # before it) to arrive whole: one byte now and then does not keep it open.
                self.deadline = time.monotonic() + REQUEST_TIMEOUT_SECONDS
            self._received += chunk

    def _answer_received(self) -> None:
        """Answer the requests received whole, in order, each sent before the next is read;
        then wait for more, for the socket to take the rest, or close. While the loop holds
        writes not committed yet, the answer waits for the commit (GatewayLoop._commit)."""
        while not self._outgoing and not self._closing:
            try:
                parsed = parse_request(self._received)
            except BadRequest as error:
                self._send(error.status, {"message": str(error)}, head=False, keep_alive=False)
                self._closing = True
                break
            if parsed is None:
                self._closing = self._device_closed
                break
            request, used = parsed
            del self._received[:used]
            if not self._answer_or_wait(request):
                return
        self._wait_or_close()

    def _answer_or_wait(self, request: HttpRequest, registered: DeviceRecord | None = None) -> bool:
        """Answer `request` and send the answer; False when it waits for the next group commit
        (a registration, or an answer telling a last_seen not committed yet): `committed` goes on."""
        self._closing = not self._answer(request, registered)
        if self._est is not None:
            return False  # answered from the EST thread (est_answered)
        if self._waiting is not None or self._answer_waits:
            self._answer_waits = False
            self.loop.after_commit(self)
            return False
        self._flush()
        return True

    def _wait_or_close(self) -> None:
        if self._closed:
            return
        if self._outgoing:
            self.loop.watch(self, selectors.EVENT_WRITE)
        elif self._closing:
            self.close(notify=True)
        else:
            self.loop.watch(self, selectors.EVENT_READ)

    def committed(self, registered: dict[str, DeviceRecord]) -> None:
        """The commit this connection waited for is done: the waiting first request is
        answered, the answer goes out, and the connection goes on. `registered`: the devices
        that commit recorded, by uuid."""
        with self._ended_on_error():
            request, self._waiting = self._waiting, None
            if request is not None and not self._answer_or_wait(request, self._registered_now(registered)):
                return
            self._flush()
            self._answer_received()

    def _registered_now(self, registered: dict[str, DeviceRecord]) -> DeviceRecord | None:
        """The record this connection's request registered, when the trust it was admitted
        under still holds: the rules ran on it, the commit recorded it. None: admitted again
        (another connection or process registered the uuid first, or the certs changed), and
        it may wait once more: its uuid freed meanwhile, or a last_seen to commit first."""
        if self._presented is None or self._presented[0] is not self.loop.trust:
            return None
        presented = self._presented[1]
        record = registered.get(presented.uuid or "")
        # Another connection of the group may have claimed the uuid with another key: the
        # record committed is its, and this one is admitted again (and refused).
        return record if record is not None and record.pubkey == presented.pubkey_pem else None

    def commit_failed(self) -> None:
        """The commit failed: nothing it held is promised; a 500 instead, and the connection ends."""
        self._waiting = None
        self._outgoing = b""  # an answer waiting for the commit, not sent yet
        self._send(500, {"message": "internal gateway error"}, head=False, keep_alive=False)
        self._closing = True
        try:
            self._flush()
            self._wait_or_close()
        except OSError:
            self.close()

    def _flush(self) -> bool:
        """Send what the socket takes now; True when all of it is out. A TLS write the socket
        cannot take whole is retried with the same bytes (OpenSSL requires it)."""
        while self._outgoing:
            try:
                sent = self.connection.send(self._outgoing)
            except (ssl.SSLWantWriteError, BlockingIOError):
                self.loop.watch(self, selectors.EVENT_WRITE)
                return False
            except ssl.SSLWantReadError:
                self.loop.watch(self, selectors.EVENT_READ)
                return False
            self._outgoing = self._outgoing[sent:]
            self.deadline = time.monotonic() + REQUEST_TIMEOUT_SECONDS
        return True

    def close(self, *, notify: bool = False) -> None:
        """Close the connection. `notify`: end TLS properly first, as web servers do when they
        close first (without a close_notify, `openssl s_client` and other strict clients report
        a truncated answer); the device's own close_notify is not waited for."""
        if self._closed:
            return
        self._closed = True
        self.loop.forget(self)
        if notify:
            with contextlib.suppress(OSError, ValueError):
                self.connection.unwrap()  # non-blocking: sends ours, then says it would wait for theirs
        self.connection.close()

    def _answer(self, request: HttpRequest, registered: DeviceRecord | None = None) -> bool:
        """Answer one request; False when the connection must close after it. A device not
        registered yet waits for the group commit (see GatewayLoop): True, nothing answered yet.
        `registered`: the record this request registered, admitted already (`_registered_now`)."""
        head = request.method == "HEAD"
        presented = None
        try:
            presented = self._presented_cert()
            device = registered or self.gateway.rules.admit(presented, self.loop.writes)
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
        if device is None:
            self._waiting = request  # answered after the commit that registers it
            return True
        self._answer_waits = device.uuid in self.loop.writes  # its new last_seen
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
        """A request on the EST host: RFC 7030's operations, nothing else. An operation is
        answered from the loop's EST thread (`est_answered`): it signs a certificate and writes
        the pending key, which a database locked by another process would make the loop wait for."""
        self._answer_waits = False  # an EST answer tells nothing of last_seen
        if is_est_path(request.path):
            answer = functools.partial(
                self.gateway.est.answer, request.method, request.path, request.headers, request.body,
                device=device, client_der=self.connection.getpeercert(binary_form=True) or b"",
            )
            self._est = request, device, self.loop.run_est(self, answer)
            return request.keep_alive
        log.info("EST %s %s 404 (device %s)", request.method, request.path, device.uuid)
        self._send(404, b"not found: the EST server serves /.well-known/est/\n", head=request.method == "HEAD",
                   keep_alive=request.keep_alive, content_type=TEXT)
        return request.keep_alive

    def est_done(self) -> bool:
        return self._est is None or self._est[2].done()

    def est_answered(self) -> None:
        """The EST thread answered this connection's request: send it, and go on."""
        with self._ended_on_error():
            assert self._est is not None
            (request, device, done), self._est = self._est, None
            try:
                answer = done.result()
            except Exception:
                log.exception("internal error on EST %s %s", request.method, request.path)
                self._send(500, b"internal EST server error\n", head=False, keep_alive=False, content_type=TEXT)
                self._closing = True
            else:
                log.info("EST %s %s %s (device %s)", request.method, request.path, answer.status, device.uuid)
                self._send(answer.status, answer.body, head=request.method == "HEAD", keep_alive=request.keep_alive,
                           content_type=answer.content_type, extra_headers=answer.headers)
            self._flush()
            self._answer_received()

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
        state = self.loop.trust
        if state is None:
            raise RuntimeError("the gateway cannot load its certs")  # answered 500
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
            f"HTTP/1.1 {status} {REASONS.get(status, '')}",
            "Server: fioca-sandbox-gateway",
            f"Date: {http_date(int(time.time()))}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(payload)}",
            *(f"{name}: {value}" for name, value in extra_headers),
        ]
        if not keep_alive:
            lines.append("Connection: close")
        # Head and body in one write: one TLS record, one syscall (`_flush`).
        self._outgoing += "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + (b"" if head else payload)


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
