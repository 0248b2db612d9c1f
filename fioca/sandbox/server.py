"""`Sandbox`: the emulated factory as one object, its data dir, and its two listening ports.

The data dir (0700) holds:
  sandbox.db         all state (store.py), 0600
  api-ca.pem/.key    the API's own CA, api-server.pem/.key its server certificate (tls.py)
  shared-*.pem/.key  the service's shared PKI, used before the factory has its own (shared_pki.py)
  gateway-repo.*     the gateway's TUF repo key and root metadata (tuf.py)
  sandbox.json       how clients reach it (SandboxInfo.as_dict), 0600, rewritten on start
  fioctl.yaml        a fioctl-style config with the API token, 0600, rewritten on start
  fioctl-oauth.yaml  the same with the OAuth application credential instead of the token
                     (`clientcredentials`, as `fioctl login` writes it), 0600, rewritten on start
  sandbox.lock       held while a Sandbox runs on the dir

The API port serves the certs API, the device API (registration, pre-registration, fioctl's
device calls) and OAuth (routes.py). The gateway port serves devices over mTLS (gateway.py);
another gateway plugs in through a `GatewayFactory` (context.py), and `PortReservation`
holds the port without serving (a client gets "connection refused" at once).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import socket
import threading
import uuid as uuid_module
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

import yaml

from fioca import facts
from fioca.errors import FiocaError
from fioca.sandbox.api import ApiServer, Route
from fioca.sandbox.auth import Authenticator
from fioca.sandbox.backend import DEFAULT_SCRIPTS, SCRIPT_CHOICES, Backend
from fioca.sandbox.context import GatewayContext, GatewayFactory, GatewayServer
from fioca.sandbox.files import ensure_private_dir, write_private_file
from fioca.sandbox.gateway import create_gateway
from fioca.sandbox.oauth import ACCESS_TOKEN_SECONDS, OAuthServer
from fioca.sandbox.registration import Registrar
from fioca.sandbox.routes import certs_routes, device_routes, oauth_routes
from fioca.sandbox.shared_pki import ensure_shared_pki, gateway_hosts
from fioca.sandbox.store import FactoryRecord, Store
from fioca.sandbox.tls import TlsFiles, ensure_api_tls

DEFAULT_FACTORY = "demo-factory"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_USER_NAME = "Sandbox User"
INFO_FILE = facts.SANDBOX_INFO_FILE
FIOCTL_CONFIG_FILE = "fioctl.yaml"
FIOCTL_OAUTH_CONFIG_FILE = "fioctl-oauth.yaml"
LOCK_FILE = "sandbox.lock"
SHUTDOWN_POLL_SECONDS = 0.05
OAUTH_PATH = "/oauth"


class SandboxError(FiocaError):
    """The sandbox cannot start on this data dir as asked."""


@dataclass(frozen=True)
class SandboxInfo:
    """How clients reach a running sandbox (what sandbox.json holds)."""

    api_url: str
    gateway_url: str
    factory: str
    token: str = field(repr=False)
    cacert: Path
    gateway_host: str = ""  # the name the gateway's certificate is for; resolve it to gateway_url's address
    oauth_url: str = ""  # fioctl's clientcredentials.url: <api_url>/oauth
    client_id: str = ""
    client_secret: str = field(default="", repr=False)

    def as_dict(self) -> dict[str, str]:
        return {
            "api_url": self.api_url,
            "gateway_url": self.gateway_url,
            "gateway_host": self.gateway_host,
            "factory": self.factory,
            "token": self.token,
            "cacert": str(self.cacert),
            "oauth_url": self.oauth_url,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
        }


class PortReservation:
    """Holds the gateway port until the real gateway exists: bound but not listening."""

    def __init__(self, context: GatewayContext):
        family = socket.AF_INET6 if ":" in context.host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        # No SO_REUSEADDR: on Linux it would let another SO_REUSEADDR socket share the port.
        self._socket.bind((context.host, context.port))

    @property
    def port(self) -> int:
        return int(self._socket.getsockname()[1])

    def start(self) -> None:
        pass  # nothing to serve yet

    def stop(self) -> None:
        self._socket.close()


def url_for(host: str, port: int) -> str:
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


class Sandbox:
    """An emulated factory: certs API (HTTPS) and device gateway, state in `data_dir`."""

    def __init__(
        self,
        data_dir: Path,
        factory: str = DEFAULT_FACTORY,
        host: str = DEFAULT_HOST,
        api_port: int = 0,
        gateway_port: int = 0,
        gateway_factory: GatewayFactory | None = None,
        scripts: str | None = DEFAULT_SCRIPTS,
        token_header: str | None = None,
        access_token_seconds: int = ACCESS_TOKEN_SECONDS,
        gateway_processes: int = 1,
    ):
        """`scripts`: what a POST certs answer carries besides the CSRs: the API's scripts of a
        revision ("api-2026", the default, because the documented flow runs the server's
        scripts; or "api-2023"), or None (today's API: CSRs only).
        `token_header`: a header name accepted for the API token besides OSF-TOKEN (what
        fioctl's TOKEN_HEADER renames it to). `access_token_seconds`: how long OAuth access
        tokens live. 0 for a port picks a free one. `gateway_processes`: how many processes
        serve the gateway's port (gateway.GatewayProcesses); more than one only from a process
        that runs no other thread yet (`fioca sandbox serve` passes one per core)."""
        if scripts is not None and scripts not in SCRIPT_CHOICES:
            raise SandboxError(f"unknown script set {scripts!r}; one of {', '.join(SCRIPT_CHOICES)}, or none")
        self.data_dir = Path(data_dir)
        self.factory_name = factory
        self.host = host
        self.api_port = api_port
        self.gateway_port = gateway_port
        self.gateway_factory = gateway_factory
        self.scripts = scripts
        self.token_header = token_header
        self.access_token_seconds = access_token_seconds
        self.gateway_processes = gateway_processes
        self.store: Store | None = None
        self.backend: Backend | None = None
        self.oauth: OAuthServer | None = None
        self._info: SandboxInfo | None = None
        self._lock_file: IO[str] | None = None
        self._api: ApiServer | None = None
        self._api_thread: threading.Thread | None = None
        self._gateway: GatewayServer | None = None

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> SandboxInfo:
        """Open (or create) the data dir, bind both ports, serve in background threads."""
        if self._info is not None:
            raise SandboxError("this sandbox is already running")
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> SandboxInfo:
        ensure_private_dir(self.data_dir)
        self._take_dir_lock()
        self.store = Store(self.data_dir)
        factory = self._open_factory(self.store)
        self.backend = Backend(self.store, scripts=self.scripts)
        tls = ensure_api_tls(self.data_dir, self.host)
        context = GatewayContext(
            data_dir=self.data_dir, host=self.host, port=self.gateway_port, store=self.store,
            backend=self.backend, api_tls=tls, shared=ensure_shared_pki(self.data_dir, factory.gateway_id),
            processes=self.gateway_processes,
        )
        try:
            self._gateway = (self.gateway_factory or create_gateway)(context)
            self._api = ApiServer((self.host, self.api_port), store=self.store, tls=tls,
                                  routes=self._routes(context), authenticator=self._authenticator())
        except OSError as error:
            raise SandboxError(f"cannot listen on {self.host}: {error.strerror or error}") from error
        self._gateway.start()
        self._api_thread = threading.Thread(
            # A short poll keeps stop() quick: shutdown() waits for the loop's next poll.
            target=self._api.serve_forever, kwargs={"poll_interval": SHUTDOWN_POLL_SECONDS},
            name="sandbox-api", daemon=True,
        )
        self._api_thread.start()
        self._info = self._client_view(factory, tls)
        self._write_client_files(self._info)
        return self._info

    def _routes(self, context: GatewayContext) -> list[Route]:
        assert self.backend is not None and self._gateway is not None
        gateway = self._gateway
        self.oauth = OAuthServer(self.backend.store, verification_uri=lambda: f"{self.info.oauth_url}/device/",
                                 access_token_seconds=self.access_token_seconds)
        # sota.toml names the port the gateway really listens on, so a device's files work as written.
        registrar = Registrar(self.backend, context.shared, gateway_port=lambda: gateway.port)
        hint = f"To authorize a device, run: fioca sandbox approve-device --data {self.data_dir} <user code>"
        return [*certs_routes(self.backend), *device_routes(registrar), *oauth_routes(self.oauth, hint)]

    def _authenticator(self) -> Authenticator:
        assert self.store is not None and self.oauth is not None
        return Authenticator(self.store, self.oauth, token_header=self.token_header)

    def _client_view(self, factory: FactoryRecord, tls: TlsFiles) -> SandboxInfo:
        assert self._api is not None and self._gateway is not None
        api_url = url_for(self.host, self._api.port)
        return SandboxInfo(
            api_url=api_url,
            gateway_url=url_for(self.host, self._gateway.port),
            gateway_host=gateway_hosts(factory.gateway_id)[0],
            factory=factory.name,
            token=factory.token,
            cacert=tls.ca_cert.resolve(),
            oauth_url=api_url + OAUTH_PATH,
            client_id=factory.client_id or "",
            client_secret=factory.client_secret or "",
        )

    def stop(self) -> None:
        """Stop serving and release the data dir; safe to call more than once."""
        if self._api is not None:
            if self._api_thread is not None and self._api_thread.is_alive():
                self._api.shutdown()
            self._api.server_close()
            self._api = None
        if self._api_thread is not None:
            self._api_thread.join(timeout=5)
            self._api_thread = None
        if self._gateway is not None:
            self._gateway.stop()
            self._gateway = None
        if self.store is not None:
            self.store.close()
            self.store = None
        self.backend = None
        self.oauth = None
        if self._lock_file is not None:
            self._lock_file.close()  # closing drops the flock
            self._lock_file = None
        self._info = None

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    @property
    def info(self) -> SandboxInfo:
        if self._info is None:
            raise SandboxError("the sandbox is not running; call start() first")
        return self._info

    @property
    def running(self) -> bool:
        return self._info is not None

    # -- faults (for tests of the client's error handling) -----------------------------------

    def inject_fault(self, *, method: str = "*", route: str = "*", status: int = 500,
                     message: str = "injected fault", times: int = 1, stall: float = 0.0,
                     apply: bool = False) -> None:
        """Make the next `times` requests to `route` ("certs", "users-self", "devices",
        "oauth-token", ..., "*"; see routes.py) with `method` fail with `status` before reaching
        the backend. With `stall`, hold the answer back that many seconds first (a client
        timeout); with `apply` too, the backend applies the request and then the answer stalls
        (an answer lost after the change was made)."""
        if self.store is None:
            raise SandboxError("the sandbox is not running; call start() first")
        self.store.add_fault(method=method, route=route, status=status, message=message, times=times,
                             stall=stall, apply=apply)

    # -- the user's side of the OAuth device flow ---------------------------------------------

    def approve_device(self, user_code: str, *, approve: bool = True) -> bool:
        """What the user does in the browser for lmp-device-register's device flow: approve
        (or deny) the device showing `user_code`. False when no pending authorization has it."""
        if self.oauth is None:
            raise SandboxError("the sandbox is not running; call start() first")
        return self.oauth.decide(user_code, approve=approve)

    # -- steps of start ----------------------------------------------------------------------

    def _take_dir_lock(self) -> None:
        lock_file = os.fdopen(os.open(self.data_dir / LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o600), "r+")
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            raise SandboxError(
                f"data dir {self.data_dir} is in use by another running sandbox; stop it or use another --data dir"
            ) from None
        self._lock_file = lock_file

    def _open_factory(self, store: Store) -> FactoryRecord:
        """The dir's factory; created on first start with a fresh token, credential and ids."""
        factory = store.factory()
        if factory is None:
            return store.create_factory(
                name=self.factory_name,
                token=secrets.token_urlsafe(32),
                polis_id=secrets.token_hex(12),
                user_name=DEFAULT_USER_NAME,
                # Real gateway ids look like UUIDs (ec056c71-...): <id>.ota-lite.foundries.io.
                gateway_id=str(uuid_module.uuid4()),
                client_id=_new_client_id(),
                client_secret=secrets.token_urlsafe(32),
            )
        if factory.name != self.factory_name:
            raise SandboxError(
                f"data dir {self.data_dir} belongs to factory '{factory.name}', not '{self.factory_name}';"
                f" use --factory {factory.name} or another --data dir"
            )
        if not factory.client_id:  # a data dir made by a sandbox older than OAuth
            store.set_oauth_client(_new_client_id(), secrets.token_urlsafe(32))
            factory = store.factory()
            assert factory is not None
        return factory

    def _write_client_files(self, info: SandboxInfo) -> None:
        write_private_file(self.data_dir / INFO_FILE, json.dumps(info.as_dict(), indent=2) + "\n")
        server = {"url": info.api_url, "cacert": str(info.cacert)}
        config = {"factory": info.factory, "token": info.token, "server": server}
        write_private_file(self.data_dir / FIOCTL_CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))
        oauth_config = {
            "factory": info.factory,
            "server": server,
            "clientcredentials": {"client_id": info.client_id, "client_secret": info.client_secret,
                                  "url": info.oauth_url},
        }
        write_private_file(self.data_dir / FIOCTL_OAUTH_CONFIG_FILE, yaml.safe_dump(oauth_config, sort_keys=False))


def _new_client_id() -> str:
    return f"sandbox-{secrets.token_hex(8)}"


def read_info(data_dir: Path) -> SandboxInfo:
    """The client view of the sandbox last started on `data_dir` (from sandbox.json)."""
    path = Path(data_dir) / INFO_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return SandboxInfo(
            api_url=data["api_url"], gateway_url=data["gateway_url"], factory=data["factory"],
            token=data["token"], cacert=Path(data["cacert"]), gateway_host=data.get("gateway_host", ""),
            oauth_url=data.get("oauth_url", ""), client_id=data.get("client_id", ""),
            client_secret=data.get("client_secret", ""),
        )
    except (OSError, ValueError, KeyError) as error:
        raise SandboxError(f"no usable {INFO_FILE} in {data_dir}; start the sandbox there first") from error


__all__ = [
    "GatewayContext",
    "GatewayFactory",
    "GatewayServer",
    "PortReservation",
    "Sandbox",
    "SandboxError",
    "SandboxInfo",
    "read_info",
    "url_for",
]
