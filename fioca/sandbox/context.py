"""What the sandbox hands its device gateway, and what it needs back (kept apart from
server.py so the gateway can import it without importing the server that imports it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from fioca.sandbox.backend import Backend
from fioca.sandbox.shared_pki import SharedPki
from fioca.sandbox.store import Store
from fioca.sandbox.tls import TlsFiles


@dataclass(frozen=True)
class GatewayContext:
    """Everything a device gateway needs from the sandbox."""

    data_dir: Path
    host: str
    port: int  # 0 = pick a free port
    store: Store
    backend: Backend
    api_tls: TlsFiles
    shared: SharedPki
    processes: int = 1  # processes serving the gateway's socket (gateway.GatewayProcesses)


class GatewayServer(Protocol):
    """What the sandbox needs from a device gateway."""

    @property
    def port(self) -> int: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


GatewayFactory = Callable[[GatewayContext], GatewayServer]
