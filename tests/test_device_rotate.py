"""`fioca device rotate-cert`: a device's key and certificate renewed over EST, against the real
sandbox, with curl as the device's other client. Killed at every step, the device still has a
working pair, and a second run finishes the rotation."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import stat
from pathlib import Path

import pytest
from test_keys_ca_helpers import created, created_template  # noqa: F401  (fixtures)

from fioca import facts
from fioca.device import check, rotate
from fioca.device.est import EstServer, Transport
from fioca.errors import RefusedError
from fioca.pki import profiles
from tests.est_support import (
    Hosts,
    authorized,
    curl,
    device_status,
    offline_devices,
    openssl,
    uuid_of,
)
from tests.test_device_support import Factory


@pytest.fixture(scope="module")
def factory(tmp_path_factory):
    made = Factory(tmp_path_factory.mktemp("rotate"))
    yield made
    made.stop()


@pytest.fixture(scope="module")
def hosts(factory) -> Hosts:
    return authorized(factory)


def known_device(factory: Factory, hosts: Hosts, out: Path) -> Path:
    folder = offline_devices(factory, out)[0]
    assert device_status(hosts, folder) == 200  # registered on its first request
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def online_ca(factory: Factory):
    return profiles.load_cert((factory.pki / facts.ONLINE_CA_CERT).read_bytes(), facts.ONLINE_CA_CERT)


def test_rotate_one_device(factory, hosts, tmp_path):
    folder = known_device(factory, hosts, tmp_path / "fleet")
    before = snapshot(folder)
    result = factory.run("device", "rotate-cert", folder)
    assert result.exit_code == 0, result.stderr
    uuid = uuid_of(folder)
    cert = profiles.load_cert((folder / "client.pem").read_bytes(), "client.pem")
    assert result.stdout == f"rotated: {uuid}  {folder}  serial {cert.serial_number}, issuer CN=online-ca,OU=acme\n"
    assert [line for line in result.stderr.splitlines() if not line.startswith(("note:", "rotated "))] == [
        words for step, words in rotate.STEPS.items() if words and step != "settle"
    ]
    # The new pair under the old names, the old pair kept aside, sota.toml as it was.
    assert sorted(snapshot(folder)) == sorted([*before, "client.pem.bak", "pkey.pem.bak"])
    assert (folder / "client.pem.bak").read_bytes() == before["client.pem"]
    assert (folder / "pkey.pem.bak").read_bytes() == before["pkey.pem"]
    assert (folder / "sota.toml").read_bytes() == before["sota.toml"]
    for name in ("pkey.pem", "client.pem", "sota.toml", "pkey.pem.bak", "client.pem.bak"):
        assert mode(folder / name) == 0o400, name
    old = profiles.load_cert(before["client.pem"], "old")
    assert cert.subject.public_bytes() == old.subject.public_bytes()
    profiles.check_device_cert(cert, ca=online_ca(factory), factory="acme", uuid=uuid)
    profiles.check_key_matches(profiles.load_private_key((folder / "pkey.pem").read_bytes(), "pkey.pem"), cert, "pkey.pem")
    # The gateway takes the new pair and refuses the old one; `device check` agrees.
    assert device_status(hosts, folder) == 200
    assert device_status(hosts, folder, key="pkey.pem.bak", cert="client.pem.bak") == 403
    assert factory.run("device", "check", folder).stdout.startswith(f"accepted: device {uuid}")
    assert factory.devices()[uuid]["ca_serial"] == str(online_ca(factory).serial_number)


def test_rotating_again_keeps_every_old_pair(factory, hosts, tmp_path):
    folder = known_device(factory, hosts, tmp_path / "fleet")
    first = snapshot(folder)
    assert factory.run("device", "rotate-cert", folder).exit_code == 0
    second = snapshot(folder)
    assert factory.run("device", "rotate-cert", folder).exit_code == 0
    assert (folder / "client.pem.bak").read_bytes() == first["client.pem"]
    assert (folder / "client.pem.bak.1").read_bytes() == second["client.pem"]
    assert (folder / "pkey.pem.bak.1").read_bytes() == second["pkey.pem"]
    assert device_status(hosts, folder) == 200
    for suffix in (".bak", ".bak.1"):
        assert device_status(hosts, folder, key="pkey.pem" + suffix, cert="client.pem" + suffix) == 403


def test_a_registered_sota_dir_gets_client_chained_too(factory, hosts, tmp_path):
    sota_dir = tmp_path / "sota"
    sota_dir.mkdir(mode=0o700)
    registered = factory.run("device", "register", "--sota-dir", sota_dir, "--name", "online-1", "--hwid", "rpi4", "-t", "main")
    assert registered.exit_code == 0, registered.stderr
    old_chained = (sota_dir / "client.chained").read_bytes()
    result = factory.run("device", "rotate-cert", sota_dir)
    assert result.exit_code == 0, result.stderr
    cert_pem = (sota_dir / "client.pem").read_bytes()
    assert (sota_dir / "client.chained").read_bytes() == cert_pem + profiles.cert_pem(online_ca(factory))
    assert (sota_dir / "client.chained.bak").read_bytes() == old_chained
    assert factory.run("device", "check", sota_dir).exit_code == 0


def test_a_fleet_with_progress_json_and_one_refusal(factory, hosts, tmp_path):
    fleet = tmp_path / "fleet"
    folders = offline_devices(factory, fleet, count=40)
    for folder in folders:
        assert device_status(hosts, folder) == 200
    deleted = folders[7]
    assert factory.run("sandbox", "delete-device", "--data", factory.sandbox.data_dir, uuid_of(deleted)).exit_code == 0
    untouched = snapshot(deleted)
    result = factory.run("device", "rotate-cert", fleet, "--fleet", "--format", "json", "--workers", "4")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == "ERROR: 1 of 40 device(s) were not rotated; each is listed with its reason"
    progress = [line for line in result.stderr.splitlines() if line.startswith("devices: ")]
    assert progress[-1] == "devices: 40/40" and len(progress) == 10
    answer = json.loads(result.stdout)
    assert (answer["rotated"], answer["failed"]) == (39, 1)
    assert answer["est_server"] == f"https://{hosts.est}:8443/.well-known/est"
    by_path = {Path(device["path"]): device for device in answer["devices"]}
    failed = by_path[deleted.resolve()]
    assert failed["status"] == "failed" and failed["uuid"] == uuid_of(deleted) and failed["exit_code"] == 3
    assert "was deleted (it is on the deny-list)" in failed["error"]
    assert snapshot(deleted) == untouched  # nothing written on a refusal
    for folder in folders:
        if folder != deleted:
            assert by_path[folder.resolve()]["status"] == "rotated"
            assert device_status(hosts, folder) == 200


def test_explicit_server_name_and_resolve_need_no_api_settings(factory, hosts, tmp_path):
    folder = known_device(factory, hosts, tmp_path / "fleet")
    resolves = [f"{host}:{hosts.port}:127.0.0.1" for host in (hosts.est, hosts.gateway)]
    result = factory.run("device", "rotate-cert", folder, "--server-name", hosts.est, "--est-port", hosts.port,
                         *[arg for value in resolves for arg in ("--resolve", value)], env={})  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert f"over EST at https://{hosts.est}:{hosts.port}/.well-known/est" in result.stderr
    assert device_status(hosts, folder) == 200


def test_a_gateway_refusal_after_the_switch_puts_the_old_pair_back(factory, hosts, tmp_path):
    folder = known_device(factory, hosts, tmp_path / "fleet")
    before = snapshot(folder)

    def meanwhile(step: str) -> None:
        # Between the switch and the confirmation, another enrolment replaces the pending key:
        # the gateway refuses the new pair, and still pins the old one.
        if step == "confirm":
            key = tmp_path / "other.key"
            openssl("ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out", str(key))
            der = openssl("req", "-new", "-key", str(key), "-subj", f"/CN={uuid_of(folder, 'client.pem.next')}/OU=acme",
                          "-outform", "DER")  # fmt: skip
            (tmp_path / "csr.b64").write_bytes(openssl("base64", input=der))
            answer = curl(hosts, hosts.est, "/.well-known/est/simplereenroll", cacert=folder / "root.crt",
                          cert=folder / "client.pem", key=folder / "pkey.pem", data=tmp_path / "csr.b64",
                          content_type="application/pkcs10")  # fmt: skip
            assert answer.status == 200

    server = EstServer(hosts.est)
    with pytest.raises(RefusedError, match="the device keeps its old key and certificate"):
        rotate.rotate(folder, server, Transport(gateway=("127.0.0.1", hosts.port)), on_step=meanwhile)
    assert snapshot(folder) == before
    assert device_status(hosts, folder) == 200


def test_a_folder_whose_sota_toml_names_no_pair_is_refused(factory, hosts, tmp_path):
    folder = known_device(factory, hosts, tmp_path / "fleet")
    text = (folder / "sota.toml").read_text()
    (folder / "sota.toml").chmod(0o600)
    (folder / "sota.toml").write_text("\n".join(line for line in text.splitlines() if "tls_pkey_path" not in line))
    before = snapshot(folder)
    result = factory.run("device", "rotate-cert", folder)
    assert result.exit_code == 1
    assert "has no [import] tls_pkey_path and tls_clientcert_path" in result.stderr
    assert snapshot(folder) == before


def test_without_an_est_server_fioctls_message(cli, created, tmp_path):
    made = cli("device", "create-offline", created.pki, "--out", tmp_path / "fleet", "--format", "json", env=created.env)
    folder = Path(json.loads(made.stdout)["devices"][0]["path"])
    result = cli("device", "rotate-cert", folder, env=created.env)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == "ERROR: EST server is not configured. Please see `fioca keys est`"


# --- Killed at every step ---------------------------------------------------------------------------

# Every step an offline device's rotation passes ("settle" only on a second run).
KILL_POINTS = [step for step in rotate.STEPS if step != "settle" and "chained" not in step]


def _rotate_and_die_at(folder: str, est_host: str, port: int, step: str) -> None:
    """In a child process: rotate, and SIGKILL ourselves when `step` is reached (no cleanup runs)."""

    def on_step(reached: str) -> None:
        if reached == step:
            os.kill(os.getpid(), signal.SIGKILL)

    rotate.rotate(Path(folder), EstServer(est_host), Transport(gateway=("127.0.0.1", port)), on_step=on_step)


@pytest.fixture(scope="module")
def forkserver():
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["fioca.device.rotate", "test_device_rotate"])
    return context


@pytest.mark.parametrize("step", KILL_POINTS)
def test_killed_at_any_step_the_device_works_and_a_second_run_finishes(factory, hosts, tmp_path, forkserver, step):
    folder = known_device(factory, hosts, tmp_path / "fleet")
    original = snapshot(folder)
    child = forkserver.Process(target=_rotate_and_die_at, args=(str(folder), hosts.est, hosts.port, step))
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL, f"the rotation did not reach {step}"
    # The pair sota.toml names works, whatever the step (curl, as the device's other client).
    key, cert = check.key_and_cert(folder, (folder / "sota.toml").read_text())
    assert device_status(hosts, folder, key=key.name, cert=cert.name) == 200, step
    # A second run leaves a rotated device: the new pair in place, no .next, sota.toml as it was.
    again = factory.run("device", "rotate-cert", folder)
    assert again.exit_code == 0, again.stderr
    assert not [name for name in snapshot(folder) if name.endswith(".next")]
    assert (folder / "sota.toml").read_bytes() == original["sota.toml"]
    assert (folder / "pkey.pem.bak").read_bytes() == original["pkey.pem"]  # the first pair, kept aside once
    new = profiles.load_cert((folder / "client.pem").read_bytes(), "client.pem")
    assert new.issuer == online_ca(factory).subject
    assert device_status(hosts, folder) == 200
    assert device_status(hosts, folder, key="pkey.pem.bak", cert="client.pem.bak") == 403
    # Killed once sota.toml was switched and before the end, the second run finishes that
    # rotation instead of starting another; killed before, or at the very end, it rotates.
    resumed = "finished the rotation an interrupted run had begun" in again.stdout
    position = KILL_POINTS.index(step)
    assert resumed == (KILL_POINTS.index("switch") < position < KILL_POINTS.index("done")), again.stdout
    backups = sorted(name for name in snapshot(folder) if name.startswith("pkey.pem.bak"))
    assert backups == (["pkey.pem.bak", "pkey.pem.bak.1"] if step == "done" else ["pkey.pem.bak"])
