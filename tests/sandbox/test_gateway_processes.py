"""The gateway served by more than one process (`fioca sandbox serve` runs one per core).

A gateway process on a socket of the test's own is reached alone, so what it does is seen
for certain: it applies the rules, registers into the sandbox's store, and follows what the
API changes there (a deleted device, a revoked CA) without a restart; it ends when its stdin
does (the sandbox closing it, or dying). Through `Sandbox(gateway_processes=3)`: a burst of
first requests registers each device once, whichever process took it, and stopping the
sandbox leaves no process behind.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sandbox_helpers import FACTORY, Client, create_flow, make_crl, serial_of
from test_gateway_lifecycle import REVOKE
from test_gateway_support import Factory, Gateway, gateway_of, make_device

from fioca.sandbox import Sandbox
from fioca.sandbox.gateway import PROCESS_MODULE, READY_LINE


def _factory(base: Path, processes: int = 1) -> Factory:
    sandbox = Sandbox(base / "sandbox", factory=FACTORY, gateway_processes=processes)
    sandbox.start()
    client = Client(sandbox)
    flow = create_flow(client, base / "pki")
    assert client.patch_certs(flow.patch_body()).status_code == 200
    return Factory(sandbox=sandbox, client=client, flow=flow, gateway=gateway_of(sandbox))


def _lone_process(factory: Factory) -> tuple[subprocess.Popen, Gateway]:
    """A gateway process on a listening socket only it serves."""
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen(16)
    process = subprocess.Popen([sys.executable, "-m", PROCESS_MODULE, str(factory.sandbox.data_dir), str(listening.fileno())],
                               pass_fds=(listening.fileno(),), stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    port = listening.getsockname()[1]
    listening.close()  # the process holds it now
    assert process.stdout.readline() == READY_LINE
    return process, Gateway(host=factory.gateway.host, port=port)


def test_a_gateway_process_applies_the_rules_through_the_sandboxs_store(tmp_path: Path) -> None:
    factory = _factory(tmp_path)
    process, alone = _lone_process(factory)
    try:
        device = make_device(tmp_path / "devices", factory.local_ca())
        reply = alone.get(device, cafile=factory.root_file)
        assert reply.status == 200 and reply.json()["uuid"] == device.uuid
        assert factory.stored(device) is not None  # registered in the sandbox's own store

        deleted = make_device(tmp_path / "devices", factory.local_ca())
        assert alone.get(deleted, cafile=factory.root_file).status == 200
        assert factory.sandbox.store.set_device_deny_listed(deleted.uuid)
        refused = alone.get(deleted, cafile=factory.root_file)
        assert refused.status == 403 and "deleted" in refused.json()["message"]

        # A CRL through the sandbox's API: the process builds its TLS context again.
        crl = make_crl(factory.flow, [(serial_of(factory.flow.local_crt), REVOKE)])
        assert factory.client.patch_certs({"ca-revoke-crl": crl}).status_code == 200
        alone.refused_handshake(device, cafile=factory.root_file)
        factory.refused_handshake(device)  # the twin: the sandbox's own process agrees
    finally:
        process.stdin.close()  # what the sandbox does to stop it, and what its death does
        assert process.wait(timeout=30) == 0
        factory.sandbox.stop()


def test_a_burst_on_three_processes_registers_each_device_once_and_stop_ends_them(tmp_path: Path) -> None:
    factory = _factory(tmp_path, processes=3)
    running = list(factory.sandbox._gateway._processes._running)
    try:
        assert len(running) == 2 and all(process.poll() is None for process in running)
        devices = [make_device(tmp_path / "devices", factory.local_ca()) for _ in range(30)]
        with ThreadPoolExecutor(max_workers=12) as pool:
            replies = list(pool.map(lambda device: factory.get(device), devices * 2))
        assert [reply.status for reply in replies] == [200] * 60
        stored = factory.sandbox.store.devices()
        assert sorted(record.uuid for record in stored) == sorted(device.uuid for device in devices)
    finally:
        factory.sandbox.stop()
    assert [process.returncode for process in running] == [0, 0]  # ended, cleanly, and reaped
