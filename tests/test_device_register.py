"""`fioca device register`: the lmp-device-register protocol against the sandbox, and its refusals."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from cryptography.x509.oid import NameOID

from fioca import facts
from fioca.device import register as reg
from fioca.errors import CheckError
from fioca.pki import profiles
from test_device_support import FACTORY, Factory


@pytest.fixture(scope="module")
def factory(tmp_path_factory):
    made = Factory(tmp_path_factory.mktemp("register"))
    yield made
    made.stop()


def _register(factory: Factory, sota_dir: Path, *extra: object):
    return factory.run("device", "register", "--sota-dir", sota_dir, "--hwid", "rpi4", "--format", "json", *extra)


def test_register_writes_every_answer_file_and_the_key(factory: Factory, tmp_path: Path):
    uuid = "0e5b7a8c-2f0d-4a51-9a0b-3c1f8d2e4b6a"
    result = _register(factory, tmp_path, "--uuid", uuid, "--name", "dev-a", "--group", "lab")
    assert result.exit_code == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["uuid"] == uuid and answer["name"] == "dev-a"
    assert answer["files"] == ["client.pem", "root.crt", "sota.toml", "client.chained", "pkey.pem"]
    assert stat.S_IMODE((tmp_path / "pkey.pem").stat().st_mode) == 0o400
    assert stat.S_IMODE((tmp_path / "client.pem").stat().st_mode) == 0o644
    assert (tmp_path / "root.crt").read_bytes() == (factory.pki / facts.ROOT_CERT).read_bytes()
    cert = profiles.load_cert((tmp_path / "client.pem").read_bytes(), "client.pem")
    key = profiles.load_private_key((tmp_path / "pkey.pem").read_bytes(), "pkey.pem")
    profiles.check_key_matches(key, cert, "pkey.pem")
    online = profiles.load_cert((factory.pki / facts.ONLINE_CA_CERT).read_bytes(), "online-crt")
    profiles.check_device_cert(cert, ca=online, factory=FACTORY, uuid=uuid)
    toml = (tmp_path / "sota.toml").read_text()
    assert f'primary_ecu_hardware_id = "rpi4"' in toml and f'path = "{tmp_path}/"' in toml
    listed = factory.devices()[uuid]
    assert listed["name"] == "dev-a" and listed["is_prod"] is False


def test_production_registration(factory: Factory, tmp_path: Path):
    result = _register(factory, tmp_path, "--production")
    assert result.exit_code == 0, result.stderr
    uuid = json.loads(result.stdout)["uuid"]
    cert = profiles.load_cert((tmp_path / "client.pem").read_bytes(), "client.pem")
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.BUSINESS_CATEGORY)] == ["production"]
    assert factory.devices()[uuid]["is_prod"] is True


def test_registered_sota_dir_is_refused_unless_force(factory: Factory, tmp_path: Path):
    first = _register(factory, tmp_path)
    assert first.exit_code == 0, first.stderr
    before = (tmp_path / "client.pem").read_bytes()
    again = _register(factory, tmp_path)
    assert again.exit_code == 3 and "already registered" in again.stderr
    assert (tmp_path / "client.pem").read_bytes() == before
    forced = _register(factory, tmp_path, "--force")
    assert forced.exit_code == 0, forced.stderr
    assert (tmp_path / "client.pem").read_bytes() != before
    assert json.loads(forced.stdout)["uuid"] != json.loads(first.stdout)["uuid"]
    assert stat.S_IMODE((tmp_path / "pkey.pem").stat().st_mode) == 0o400


def test_only_201_is_success(factory: Factory, tmp_path: Path):
    count = len(factory.devices())
    factory.sandbox.inject_fault(method="POST", route="devices", status=200, message="looks fine")
    result = _register(factory, tmp_path)
    assert result.exit_code == 6, result.stderr
    assert "POST" in result.stderr and "200" in result.stderr
    assert list(tmp_path.iterdir()) == []
    assert len(factory.devices()) == count


def test_head_failing_stops_before_post(factory: Factory, tmp_path: Path):
    count = len(factory.devices())
    factory.sandbox.inject_fault(method="HEAD", route="devices", status=500, message="down", times=1)
    result = _register(factory, tmp_path)
    assert result.exit_code == 6, result.stderr
    assert "HEAD" in result.stderr
    assert list(tmp_path.iterdir()) == [] and len(factory.devices()) == count


def test_server_refusal_is_reported_and_nothing_written(factory: Factory, tmp_path: Path):
    uuid = "5d1f3b2a-0c4e-4f6a-8b9d-7e2a1c3b5d4f"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert _register(factory, tmp_path / "a", "--uuid", uuid).exit_code == 0
    duplicate = _register(factory, tmp_path / "b", "--uuid", uuid)
    assert duplicate.exit_code == 6
    assert "409" in duplicate.stderr and "already exists" in duplicate.stderr
    assert list((tmp_path / "b").iterdir()) == []


def test_missing_sota_dir_and_bad_uuid(factory: Factory, tmp_path: Path):
    missing = _register(factory, tmp_path / "nope")
    assert missing.exit_code == 1 and "does not exist" in missing.stderr
    bad = _register(factory, tmp_path, "--uuid", "xyz")
    assert bad.exit_code == 2 and "not a UUID" in bad.stderr


def test_body_is_the_documented_one():
    options = reg.RegisterOptions(sota_dir=Path("/var/sota"), hardware_id="rpi4", group="lab", tags="main")
    body = reg.registration_body(options, uuid="u-1", name="n-1", csr_pem="CSR")
    assert body == {
        "name": "n-1",
        "uuid": "u-1",
        "csr": "CSR",
        "hardware-id": "rpi4",
        "sota-config-dir": "/var/sota",
        "use-ostree-server": "true",
        "overrides": {"pacman": {"tags": '"main"'}},
        "group": "lab",
    }
    plain = reg.registration_body(
        reg.RegisterOptions(sota_dir=Path("/s"), hardware_id="h", use_ostree_server=False), uuid="u", name="n", csr_pem="C"
    )
    assert "group" not in plain and plain["overrides"] == {} and plain["use-ostree-server"] == "false"


@pytest.fixture(scope="module")
def good_answer(factory, tmp_path_factory):
    """A real 201 answer and the key it belongs to."""
    sota_dir = tmp_path_factory.mktemp("answer")
    result = _register(factory, sota_dir)
    assert result.exit_code == 0, result.stderr
    answer = {name: (sota_dir / name).read_text() for name in ("client.pem", "root.crt", "sota.toml", "client.chained")}
    key = profiles.load_private_key((sota_dir / "pkey.pem").read_bytes(), "pkey.pem")
    return answer, key, json.loads(result.stdout)["uuid"]


def test_checked_answer_accepts_the_real_answer(good_answer):
    answer, key, uuid = good_answer
    assert set(reg.checked_answer(answer, key=key, uuid=uuid, factory=FACTORY, production=False)) == set(answer)


@pytest.mark.parametrize(
    "tamper, rule",
    [
        (lambda a: a.update({"../etc/passwd": "x"}), "not a file name"),
        (lambda a: a.update({"pkey.pem": "x"}), "not a file name"),
        (lambda a: a.pop("root.crt"), "has no root.crt"),
        (lambda a: a.update({"root.crt": profiles.cert_pem(profiles.build_root(profiles.new_key(), factory=FACTORY)).decode()}), "client.chained CA"),
        (lambda a: a.update({"client.chained": a["client.pem"]}), "followed by its issuing CA"),
        (lambda a: a.update({"sota.toml": 5}), "must be text"),
    ],
)
def test_checked_answer_refuses_tampered_answers(good_answer, tamper, rule):
    answer, key, uuid = good_answer
    changed = dict(answer)
    tamper(changed)
    with pytest.raises(CheckError, match=rule.replace(".", r"\.")):
        reg.checked_answer(changed, key=key, uuid=uuid, factory=FACTORY, production=False)


def test_checked_answer_refuses_a_cert_for_another_key_or_uuid(good_answer):
    answer, key, uuid = good_answer
    with pytest.raises(CheckError, match="does not belong"):
        reg.checked_answer(answer, key=profiles.new_key(), uuid=uuid, factory=FACTORY, production=False)
    with pytest.raises(CheckError, match="device UUID"):
        reg.checked_answer(answer, key=key, uuid="11111111-2222-3333-4444-555555555555", factory=FACTORY, production=False)
    with pytest.raises(CheckError, match="production"):
        reg.checked_answer(answer, key=key, uuid=uuid, factory=FACTORY, production=True)
