"""`Sandbox`: the emulated factory as one object, its data dir, and its two listening ports.

The data dir (0700) holds:
  sandbox.db        all state (store.py), 0600
  api-ca.pem/.key   the API's own CA, api-server.pem/.key its server certificate (tls.py)
  sandbox.json      {api_url, gateway_url, factory, token, cacert}, 0600, rewritten on start
  fioctl.yaml       a fioctl-style config pointing at this sandbox, 0600, rewritten on start
  sandbox.lock      held while a Sandbox runs on the dir

The device gateway plugs in through a `GatewayFactory` (see `GatewayContext`). When none is
given, `fioca/sandbox/gateway.py` is used if it exists: it must define
`create_gateway(context: GatewayContext) -> GatewayServer` and may define
`api_routes(context: GatewayContext) -> list[Route]` (e.g. `/ota/devices/` registration),
which are served by the API next to the certs routes. Without gateway.py the gateway port is
only *reserved* (`PortReservation`): bound, never listening, so a client gets "connection
refused" at once instead of hanging, and the URL in sandbox.json is already the final one.
"""

from __future__ import annotations

import fcntl
import importlib
import importlib.util
import json
import os
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol

import yaml

from fioca.errors import FiocaError
from fioca.sandbox.api import ApiServer, Route, certs_routes
from fioca.sandbox.backend import Backend
from fioca.sandbox.files import ensure_private_dir, write_private_file
from fioca.sandbox.store import FactoryRecord, Store
from fioca.sandbox.tls import TlsFiles, ensure_api_tls

DEFAULT_FACTORY = "demo-factory"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_USER_NAME = "Sandbox User"
INFO_FILE = "sandbox.json"
FIOCTL_CONFIG_FILE = "fioctl.yaml"
LOCK_FILE = "sandbox.lock"
GATEWAY_MODULE = "fioca.sandbox.gateway"
SHUTDOWN_POLL_SECONDS = 0.05


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

    def as_dict(self) -> dict[str, str]:
        return {
            "api_url": self.api_url,
            "gateway_url": self.gateway_url,
            "factory": self.factory,
            "token": self.token,
            "cacert": str(self.cacert),
        }


@dataclass(frozen=True)
class GatewayContext:
    """Everything a device gateway needs from the sandbox."""

    data_dir: Path
    host: str
    port: int  # 0 = pick a free port
    store: Store
    backend: Backend
    api_tls: TlsFiles


class GatewayServer(Protocol):
    """What the sandbox needs from a device gateway."""

    @property
    def port(self) -> int: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


GatewayFactory = Callable[[GatewayContext], GatewayServer]


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


def _gateway_module() -> Any | None:
    # find_spec first: a missing gateway.py means "reserve the port", while an ImportError
    # raised from inside an existing gateway.py is a bug that must surface.
    if importlib.util.find_spec(GATEWAY_MODULE) is None:
        return None
    return importlib.import_module(GATEWAY_MODULE)


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
    ):
        self.data_dir = Path(data_dir)
        self.factory_name = factory
        self.host = host
        self.api_port = api_port
        self.gateway_port = gateway_port
        self.gateway_factory = gateway_factory
        self.store: Store | None = None
        self.backend: Backend | None = None
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
        self.backend = Backend(self.store)
        tls = ensure_api_tls(self.data_dir, self.host)

        context = GatewayContext(
            data_dir=self.data_dir, host=self.host, port=self.gateway_port,
            store=self.store, backend=self.backend, api_tls=tls,
        )
        routes: list[Route] = certs_routes(self.backend)
        gateway_factory = self.gateway_factory
        if gateway_factory is None:
            module = _gateway_module()
            if module is None:
                gateway_factory = PortReservation
            else:
                gateway_factory = module.create_gateway
                if hasattr(module, "api_routes"):
                    routes += list(module.api_routes(context))
        try:
            self._api = ApiServer((self.host, self.api_port), store=self.store, tls=tls, routes=routes)
            self._gateway = gateway_factory(context)
        except OSError as error:
            raise SandboxError(f"cannot listen on {self.host}: {error.strerror or error}") from error
        self._gateway.start()
        self._api_thread = threading.Thread(
            # A short poll keeps stop() quick: shutdown() waits for the loop's next poll.
            target=self._api.serve_forever, kwargs={"poll_interval": SHUTDOWN_POLL_SECONDS},
            name="sandbox-api", daemon=True,
        )
        self._api_thread.start()

        self._info = SandboxInfo(
            api_url=url_for(self.host, self._api.port),
            gateway_url=url_for(self.host, self._gateway.port),
            factory=factory.name,
            token=factory.token,
            cacert=tls.ca_cert.resolve(),
        )
        self._write_client_files(self._info)
        return self._info

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
        """Make the next `times` requests to `route` ("certs", "users-self", "*") with `method`
        fail with `status` before reaching the backend. With `stall`, hold the answer back that
        many seconds first (a client timeout); with `apply` too, the backend applies the request
        and then the answer stalls (an answer lost after the change was made)."""
        if self.store is None:
            raise SandboxError("the sandbox is not running; call start() first")
        self.store.add_fault(method=method, route=route, status=status, message=message, times=times,
                             stall=stall, apply=apply)

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
        """The dir's factory; created on first start with a fresh token and ids."""
        factory = store.factory()
        if factory is None:
            return store.create_factory(
                name=self.factory_name,
                token=secrets.token_urlsafe(32),
                polis_id=secrets.token_hex(12),
                user_name=DEFAULT_USER_NAME,
                gateway_id=secrets.token_hex(6),
            )
        if factory.name != self.factory_name:
            raise SandboxError(
                f"data dir {self.data_dir} belongs to factory '{factory.name}', not '{self.factory_name}';"
                f" use --factory {factory.name} or another --data dir"
            )
        return factory

    def _write_client_files(self, info: SandboxInfo) -> None:
        write_private_file(self.data_dir / INFO_FILE, json.dumps(info.as_dict(), indent=2) + "\n")
        config = {
            "factory": info.factory,
            "token": info.token,
            "server": {"url": info.api_url, "cacert": str(info.cacert)},
        }
        write_private_file(self.data_dir / FIOCTL_CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))


def read_info(data_dir: Path) -> SandboxInfo:
    """The client view of the sandbox last started on `data_dir` (from sandbox.json)."""
    path = Path(data_dir) / INFO_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return SandboxInfo(
            api_url=data["api_url"], gateway_url=data["gateway_url"], factory=data["factory"],
            token=data["token"], cacert=Path(data["cacert"]),
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
