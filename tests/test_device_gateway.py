"""Devices meet gateways: `fioca device check`, the document's curl line, and nginx.

Every kind of device (in process, faithful, typed by hand from the document, registered
online) is accepted by the sandbox gateway, by curl as the device, and by nginx serving the
same PKI; rogue ones are refused by all of them, each with its reason.
"""

from __future__ import annotations

import json
import shutil
import uuid as uuid_module
from pathlib import Path

import pytest
from test_device_support import (
    FACTORY,
    Factory,
    Nginx,
    curl_device,
    manual_procedure,
    rogue_device,
)

from fioca.pki import profiles


@pytest.fixture(scope="module")
def factory(tmp_path_factory):
    made = Factory(tmp_path_factory.mktemp("gateway"))
    yield made
    made.stop()


@pytest.fixture(scope="module")
def nginx(factory):
    server = Nginx(factory)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def devices(factory, tmp_path_factory) -> dict[str, Path]:
    """One device of every kind, none of them seen by the gateway yet."""
    made: dict[str, Path] = {}
    for kind, flags in (("in-process", []), ("faithful", ["--faithful"]), ("production", ["--production"])):
        result = factory.run("device", "create-offline", factory.pki, "--format", "json", *flags)
        assert result.exit_code == 0, result.stderr
        made[kind] = Path(json.loads(result.stdout)["devices"][0]["path"])
    manual_uuid = str(uuid_module.uuid4())
    done = manual_procedure(factory.pki, "offline-device", manual_uuid)
    assert done.returncode == 0, done.stderr
    made["manual"] = factory.pki / "devices" / "offline-device"
    sota_dir = tmp_path_factory.mktemp("sota")
    result = factory.run("device", "register", "--sota-dir", sota_dir, "--name", "online-1", "--hwid", "rpi4", "-t", "main")
    assert result.exit_code == 0, result.stderr
    made["registered"] = sota_dir
    return made


KINDS = ["in-process", "faithful", "manual", "production", "registered"]


def _uuid(folder: Path) -> str:
    return profiles.subject_cn(profiles.load_cert((folder / "client.pem").read_bytes(), "client.pem"))


@pytest.mark.parametrize("kind", KINDS)
def test_device_is_registered_on_first_request_and_accepted(factory: Factory, devices, kind: str):
    folder = devices[kind]
    uuid = _uuid(folder)
    registered_online = kind == "registered"
    # Offline devices are unknown until their first request; a registered one is known already.
    assert (uuid in factory.devices()) is registered_online
    result = factory.run("device", "check", folder, "--pki-dir", factory.pki, "--format", "json")
    assert result.exit_code == 0, result.stdout + result.stderr
    answer = json.loads(result.stdout)
    assert answer["accepted"] is True and answer["status"] == 200
    assert answer["device"]["uuid"] == uuid
    assert answer["device"]["is_prod"] is (kind == "production")
    assert answer["gateway"]["host"] == factory.gateway_host
    listed = factory.devices()[uuid]
    assert listed["name"] == ("online-1" if registered_online else uuid)
    assert listed["last_seen"]


def test_check_without_pki_dir_uses_root_crt_and_sota_toml(factory: Factory, devices):
    result = factory.run("device", "check", devices["in-process"])
    assert result.exit_code == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"accepted: device {_uuid(devices['in-process'])}")


def test_check_with_curl_style_resolve(factory: Factory, devices):
    resolve = f"{factory.gateway_host}:{factory.gateway_port}:127.0.0.1"
    result = factory.run("device", "check", devices["faithful"], "--pki-dir", factory.pki, "--resolve", resolve, env={})
    assert result.exit_code == 0, result.stdout + result.stderr
    # The twin: --resolve for a host that is not the gateway's is refused before connecting.
    wrong = factory.run("device", "check", devices["faithful"], "--pki-dir", factory.pki,
                        "--resolve", f"other.example:{factory.gateway_port}:127.0.0.1", env={})
    assert wrong.exit_code == 2 and "gateway host is" in wrong.stderr


@pytest.mark.parametrize("kind", KINDS)
def test_the_documented_curl_line_is_accepted(factory: Factory, devices, kind: str):
    status, body = curl_device(devices[kind], cwd=factory.pki, port=factory.gateway_port, host=factory.gateway_host)
    assert status == 200, body
    assert json.loads(body)["uuid"] == _uuid(devices[kind])


@pytest.mark.parametrize("kind", KINDS)
def test_nginx_accepts_the_same_devices(factory: Factory, nginx: Nginx, devices, kind: str):
    status, body = curl_device(devices[kind], cwd=factory.pki, port=nginx.port, host=factory.gateway_host)
    assert status == 200, body
    answer = json.loads(body)
    assert answer["verify"] == "SUCCESS"
    assert f"CN={_uuid(devices[kind])}" in answer["subject"] and f"OU={FACTORY}" in answer["subject"]


def test_rogue_ca_is_refused_by_the_sandbox_curl_and_nginx(factory: Factory, nginx: Nginx, tmp_path: Path):
    rogue = rogue_device(tmp_path / "rogue")
    result = factory.run("device", "check", rogue, "--pki-dir", factory.pki, "--format", "json")
    assert result.exit_code == 3, result.stdout + result.stderr
    answer = json.loads(result.stdout)
    assert answer["accepted"] is False and answer["stage"] == "tls"
    assert "not trusted" in answer["reason"]
    assert _uuid(rogue) not in factory.devices()
    status, _ = curl_device(rogue, cwd=factory.pki, port=factory.gateway_port, host=factory.gateway_host)
    assert status < 0  # curl fails: the handshake is refused
    status, body = curl_device(rogue, cwd=factory.pki, port=nginx.port, host=factory.gateway_host)
    assert status == 400 and "SSL certificate error" in body  # nginx: verify failed, request refused


def test_wrong_ou_is_refused_by_the_gateway_with_its_reason(factory: Factory, tmp_path: Path):
    stranger = rogue_device(tmp_path / "ou", ou="other-factory", local_ca=factory.pki)
    result = factory.run("device", "check", stranger, "--pki-dir", factory.pki)
    assert result.exit_code == 3
    assert result.stdout.startswith("refused 403:")
    assert "other-factory" in result.stdout and FACTORY in result.stdout


def test_deleted_device_is_refused(factory: Factory, tmp_path: Path):
    made = factory.run("device", "create-offline", factory.pki, "--out", tmp_path, "--format", "json")
    folder = Path(json.loads(made.stdout)["devices"][0]["path"])
    assert factory.run("device", "check", folder, "--pki-dir", factory.pki).exit_code == 0
    deleted = factory.run("sandbox", "delete-device", _uuid(folder), "--data", factory.sandbox.data_dir)
    assert deleted.exit_code == 0, deleted.stderr
    result = factory.run("device", "check", folder, "--pki-dir", factory.pki, "--format", "json")
    assert result.exit_code == 3
    assert "deny-list" in json.loads(result.stdout)["reason"]


def test_a_gateway_not_signed_by_the_trusted_root_is_refused_by_the_device(factory: Factory, devices, tmp_path: Path):
    folder = tmp_path / "device"
    shutil.copytree(devices["in-process"], folder)
    other_root = profiles.build_root(profiles.new_key(), factory=FACTORY)
    (folder / "root.crt").chmod(0o600)
    (folder / "root.crt").write_bytes(profiles.cert_pem(other_root))
    result = factory.run("device", "check", folder, "--format", "json")
    assert result.exit_code == 3
    answer = json.loads(result.stdout)
    assert answer["stage"] == "tls" and "does not verify against root.crt" in answer["reason"]


def test_faithful_key_with_ec_parameters_loads_for_tls(devices):
    # The documented pkey.pem (EC PARAMETERS + key) is what the accepted checks above used.
    text = (devices["faithful"] / "pkey.pem").read_text()
    assert text.count("-----BEGIN") == 2 and "EC PARAMETERS" in text
    assert (devices["manual"] / "local-ca.srl").exists() is False  # the serial file stays in the PKI dir
    assert (devices["manual"].parent.parent / "local-ca.srl").exists()
