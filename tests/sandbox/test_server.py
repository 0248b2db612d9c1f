"""The Sandbox object and its data dir: restart, file modes, client files, the CLI."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path

import pytest
import yaml
from sandbox_helpers import FACTORY, Client, create_flow

from fioca.sandbox import Sandbox, SandboxError, read_info
from fioca.sandbox.context import GatewayContext
from fioca.sandbox.server import PortReservation


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_survives_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "sandbox"
    with Sandbox(data, factory=FACTORY) as first:
        client = Client(first)
        flow = create_flow(client, tmp_path / "pki")
        assert client.patch_certs(flow.patch_body()).status_code == 200
        token, me, gateway_id = first.info.token, client.user_self(), first.store.factory().gateway_id
        ca_pem = first.info.cacert.read_bytes()
        before = client.get_certs().json()

    with Sandbox(data, factory=FACTORY) as second:
        client = Client(second)
        assert second.info.token == token
        assert second.info.cacert.read_bytes() == ca_pem  # old client configs keep verifying
        assert client.user_self() == me
        assert second.store.factory().gateway_id == gateway_id
        assert client.get_certs().json() == before
        assert second.backend.gateway_identity().cert_pem == flow.tls_crt  # the backend key survived
        assert client.post_certs({}).status_code == 409


def test_a_new_dir_gets_a_new_token(tmp_path: Path) -> None:
    with Sandbox(tmp_path / "one") as one, Sandbox(tmp_path / "two") as two:
        assert one.info.token != two.info.token
        assert len(one.info.token) >= 32
        assert one.info.factory == "demo-factory"


def test_a_dir_for_another_factory_is_refused(tmp_path: Path) -> None:
    with Sandbox(tmp_path / "sandbox", factory=FACTORY):
        pass
    with pytest.raises(SandboxError, match=f"belongs to factory '{FACTORY}', not 'other'"):
        Sandbox(tmp_path / "sandbox", factory="other").start()


def test_a_dir_serves_one_sandbox_at_a_time(sandbox: Sandbox) -> None:
    with pytest.raises(SandboxError, match="in use by another running sandbox"):
        Sandbox(sandbox.data_dir, factory=FACTORY).start()
    assert Client(sandbox).get_certs().status_code == 206  # the first one is unharmed


def test_ports_are_bound_while_running(sandbox: Sandbox) -> None:
    running = sandbox.info
    api_port = int(running.api_url.rsplit(":", 1)[1])
    gateway_port = int(running.gateway_url.rsplit(":", 1)[1])
    assert api_port != gateway_port
    for port in (api_port, gateway_port):
        with socket.socket() as probe, pytest.raises(OSError):
            probe.bind(("127.0.0.1", port))  # taken while running
    assert read_info(sandbox.data_dir) == running  # sandbox.json gives the same view


def test_stop_releases_ports(tmp_path: Path) -> None:
    box = Sandbox(tmp_path / "sandbox")
    info = box.start()
    box.stop()
    box.stop()  # twice is fine
    for url in (info.api_url, info.gateway_url):
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", int(url.rsplit(":", 1)[1])))  # free again
    with pytest.raises(SandboxError, match="not running"):
        _ = box.info


def test_files_are_private_and_client_files_are_right(sandbox: Sandbox) -> None:
    data = sandbox.data_dir
    assert _mode(data) == 0o700
    files = sorted(path.name for path in data.iterdir())
    for required in ("sandbox.db", "api-ca.pem", "api-ca.key", "api-server.pem", "api-server.key", "sandbox.json",
                     "fioctl.yaml", "fioctl-oauth.yaml"):
        assert required in files
    for path in data.iterdir():
        assert _mode(path) == 0o600, path.name  # includes sandbox.db-wal / -shm while running

    info = sandbox.info
    gateway_id = sandbox.store.factory().gateway_id
    assert json.loads((data / "sandbox.json").read_text()) == {
        "api_url": info.api_url,
        "gateway_url": info.gateway_url,
        "gateway_host": f"{gateway_id}.ota-lite.foundries.io",
        "factory": FACTORY,
        "token": info.token,
        "cacert": str(data.resolve() / "api-ca.pem"),
        "oauth_url": info.api_url + "/oauth",
        "client_id": info.client_id,
        "client_secret": info.client_secret,
    }
    assert info.client_id.startswith("sandbox-") and len(info.client_secret) >= 32
    assert info.api_url.startswith("https://127.0.0.1:") and info.gateway_url.startswith("https://127.0.0.1:")
    assert yaml.safe_load((data / "fioctl.yaml").read_text()) == {
        "factory": FACTORY,
        "token": info.token,
        "server": {"url": info.api_url, "cacert": str(info.cacert)},
    }
    assert yaml.safe_load((data / "fioctl-oauth.yaml").read_text()) == {
        "factory": FACTORY,
        "server": {"url": info.api_url, "cacert": str(info.cacert)},
        "clientcredentials": {"client_id": info.client_id, "client_secret": info.client_secret,
                              "url": info.api_url + "/oauth"},
    }
    for secret in (info.token, info.client_secret):
        assert secret not in repr(info) and secret not in repr(sandbox.store.factory())


def test_a_loose_existing_dir_is_tightened(tmp_path: Path) -> None:
    data = tmp_path / "sandbox"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    with Sandbox(data):
        assert _mode(data) == 0o700


class RecordingGateway:
    """A stand-in gateway: binds a real listening socket, records its life cycle."""

    def __init__(self, context: GatewayContext):
        self.context = context
        self.events: list[str] = []
        self._socket = socket.create_server((context.host, context.port))

    @property
    def port(self) -> int:
        return self._socket.getsockname()[1]

    def start(self) -> None:
        self.events.append("start")

    def stop(self) -> None:
        self.events.append("stop")
        self._socket.close()


def test_a_gateway_plugs_in_through_the_factory_hook(tmp_path: Path) -> None:
    made: list[RecordingGateway] = []

    def factory(context: GatewayContext) -> RecordingGateway:
        made.append(RecordingGateway(context))
        return made[-1]

    with Sandbox(tmp_path / "sandbox", factory=FACTORY, gateway_factory=factory) as box:
        gateway = made[0]
        assert box.info.gateway_url == f"https://127.0.0.1:{gateway.port}"
        assert gateway.context.backend is box.backend and gateway.context.store is box.store
        assert gateway.context.api_tls.ca_cert == box.info.cacert
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=5):
            pass  # the plugged-in gateway listens
    assert gateway.events == ["start", "stop"]


def test_a_port_reservation_holds_the_port_but_refuses_connections(tmp_path: Path) -> None:
    with Sandbox(tmp_path / "sandbox", gateway_factory=PortReservation) as box:
        port = int(box.info.gateway_url.rsplit(":", 1)[1])
        with socket.socket() as probe, pytest.raises(OSError):
            probe.bind(("127.0.0.1", port))
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5)


def test_a_data_dir_from_before_oauth_and_groups_is_upgraded(tmp_path: Path) -> None:
    import sqlite3

    data = tmp_path / "sandbox"
    with Sandbox(data, factory=FACTORY) as first:
        token = first.info.token
    with sqlite3.connect(data / "sandbox.db") as old:  # the schema-1 shape of an older sandbox
        for table, column in (("factory", "client_id"), ("factory", "client_secret"), ("devices", "device_group")):
            old.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        old.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    with Sandbox(data, factory=FACTORY) as again:
        assert again.info.token == token  # the same factory
        assert again.info.client_id.startswith("sandbox-") and again.info.client_secret
        again.store.add_device(uuid="6a1c7f0e-0000-4000-8000-000000000001", name="d", pubkey="PEM", group="lab")
        assert again.store.device("6a1c7f0e-0000-4000-8000-000000000001").group == "lab"
        assert again.store._execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == "2"
