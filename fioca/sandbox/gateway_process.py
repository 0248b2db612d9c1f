"""One more process serving a sandbox's device gateway (gateway.GatewayProcesses starts it).

    python -m fioca.sandbox.gateway_process DATA_DIR FD [--log-requests]

FD is the gateway's listening socket, inherited from the sandbox's process. This process
opens the data dir's store (connections of its own: an SQLite connection must not cross a
fork, which is why this is a new interpreter and not a fork), loads what the sandbox already
made there (shared PKI, repo key; nothing is written), serves the socket as a DeviceGateway
and prints `ready`. It stops when its stdin ends: the sandbox closes it, or dies. Ctrl-C is
the sandbox's to handle.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
from pathlib import Path

from fioca.sandbox.backend import Backend
from fioca.sandbox.context import GatewayContext
from fioca.sandbox.gateway import READY_LINE, DeviceGateway
from fioca.sandbox.shared_pki import ensure_shared_pki
from fioca.sandbox.store import Store
from fioca.sandbox.tls import API_CA_CERT, API_SERVER_CERT, API_SERVER_KEY, TlsFiles


def serve(data_dir: Path, listening: socket.socket) -> None:
    store = Store(data_dir)
    try:
        factory = store.factory()
        if factory is None:
            raise SystemExit(f"{data_dir} holds no sandbox factory")
        host, port = listening.getsockname()[:2]
        context = GatewayContext(
            data_dir=data_dir, host=host, port=port, store=store, backend=Backend(store, scripts=None),
            api_tls=TlsFiles(data_dir / API_CA_CERT, data_dir / API_SERVER_CERT, data_dir / API_SERVER_KEY),
            shared=ensure_shared_pki(data_dir, factory.gateway_id),
        )
        gateway = DeviceGateway(context, listening=listening)
        gateway.start()
        try:
            sys.stdout.buffer.write(READY_LINE)
            sys.stdout.flush()
            sys.stdin.buffer.read()  # until the sandbox closes it, or dies
        finally:
            gateway.stop()
    finally:
        store.close()


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    data_dir, fd = Path(argv[0]), int(argv[1])
    if "--log-requests" in argv[2:]:
        logger = logging.getLogger("fioca.sandbox")
        logger.setLevel(logging.INFO)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("sandbox: %(message)s"))
        logger.addHandler(handler)
    listening = socket.socket(fileno=fd)
    serve(data_dir, listening)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
