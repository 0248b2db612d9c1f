"""Every lifecycle and device command on a factory whose PKI another tool made.

For each named profile a fixture builds (fioctl's Go PKI by version, the API's 2023 scripts as
OpenSSL 1.1 and 3 ran them, the 2026 scripts, fioca's own), a sandbox is seeded with that PKI
through its PATCH, as that tool's upload would, and fioca's commands are run on the PKI dir as
a user would type them: `keys ca sign`, `rotate-tls`, `add-device-ca`, `update`,
`disable-device-ca`, `revoke-device-ca`, `device create-offline`, `device register` and
`device check` against the sandbox's gateway.
"""

from __future__ import annotations

import json
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from pki_fixtures import FIXTURE_PROFILES, BuiltPki, seed_sandbox

from fioca.pki import profiles
from fioca.sandbox.server import Sandbox
from tests.conftest import config_env

FACTORY = "acme"


@dataclass
class Seeded:
    pki: BuiltPki
    sandbox: Sandbox
    env: dict[str, str]

    @property
    def path(self) -> Path:
        return self.pki.path

    def certs(self) -> dict:
        info = self.sandbox.info
        response = requests.get(
            f"{info.api_url}/ota/factories/{info.factory}/certs/", headers={"OSF-TOKEN": info.token},
            verify=str(info.cacert), timeout=10,
        )  # fmt: skip
        assert response.status_code == 200, response.text
        return response.json()

    def device_cas(self) -> list[x509.Certificate]:
        return profiles.load_server_cert_bundle(self.certs()["ca-crt"], "ca-crt")


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> dict[str, Path]:
    """Per profile, once per module: a stopped sandbox holding that PKI, and the PKI dir."""
    return {}


@pytest.fixture(params=FIXTURE_PROFILES)
def seeded(request, templates: dict[str, Path], tmp_path_factory, tmp_path: Path, home: Path):
    """A sandbox factory holding a PKI made to the profile, and that PKI dir, private to one test
    (copied from the module's template: seeding costs more than copying)."""
    profile = request.param
    if profile not in templates:
        base = tmp_path_factory.mktemp(f"seeded-{profile}")
        with Sandbox(base / "sandbox", factory=FACTORY) as box:
            seed_sandbox(box, profile, base / "pki")
        templates[profile] = base
    base = templates[profile]
    shutil.copytree(base / "sandbox", tmp_path / "sandbox", ignore=shutil.ignore_patterns("sandbox.lock"))
    shutil.copytree(base / "pki", tmp_path / "pki")
    with Sandbox(tmp_path / "sandbox", factory=FACTORY) as box:
        local_ca_cn = profiles.subject_cn(
            profiles.load_cert((tmp_path / "pki" / "local-ca.pem").read_bytes(), "local-ca.pem")
        )
        yield Seeded(BuiltPki(profile, tmp_path / "pki", FACTORY, local_ca_cn), box, config_env(box))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _ok(result) -> None:
    assert result.exit_code == 0, result.output


def _server_csr(tmp_path: Path, *, ca: bool) -> Path:
    """A CSR for `keys ca sign`: a gateway-style server CSR, or a device CA's."""
    key = profiles.new_key()
    if ca:
        csr = profiles.build_device_ca_csr(key, cn="line-3-ca", factory=FACTORY)
    else:
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "est.example.com")]))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("est.example.com")]), critical=False)
            .sign(key, hashes.SHA256())
        )
    path = tmp_path / ("ca.csr" if ca else "server.csr")
    path.write_bytes(profiles.csr_pem(csr))
    return path


def test_sign_both_kinds(cli, seeded: Seeded, tmp_path: Path) -> None:
    root = seeded.pki.cert("factory_ca.pem")
    for ca in (False, True):
        result = cli("keys", "ca", "sign", "--pki-dir", seeded.path, "--profile", "ca" if ca else "tls",
                     _server_csr(tmp_path, ca=ca), env=seeded.env)  # fmt: skip
        _ok(result)
        cert = profiles.load_cert(result.stdout, "stdout")
        cert.verify_directly_issued_by(root)
        assert profiles.is_ca(cert) is ca


def test_rotate_tls_with_scripts_then_in_process(cli, seeded: Seeded) -> None:
    for via in ("script", "inprocess"):
        old = (seeded.path / "tls-crt").read_bytes()
        result = cli("keys", "ca", "rotate-tls", seeded.path, "--via", via, "--yes", env=seeded.env)
        _ok(result)
        new = (seeded.path / "tls-crt").read_bytes()
        assert new != old and old in {path.read_bytes() for path in seeded.path.glob("tls-crt.bak*")}
        assert _mode(seeded.path / "tls-crt") == 0o400
        assert profiles.load_server_cert(seeded.certs()["tls-crt"], "tls-crt") == profiles.load_cert(new, "tls-crt")


def test_add_device_cas_then_update(cli, seeded: Seeded, tmp_path: Path) -> None:
    before = seeded.device_cas()
    _ok(cli("keys", "ca", "add-device-ca", seeded.path, "--local-ca", "--local-ca-filename", "line-2.pem", "--yes",
            env=seeded.env))  # fmt: skip
    _ok(cli("keys", "ca", "add-device-ca", seeded.path, "--online-ca", "--via", "inprocess", "--yes", env=seeded.env))
    after = seeded.device_cas()
    assert after[: len(before)] == before and len(after) == len(before) + 2
    assert _mode(seeded.path / "line-2.key") == 0o400
    # update: the factory's bundle as the server holds it, and one CA more.
    extra_key = profiles.new_key()
    csr = profiles.build_device_ca_csr(extra_key, cn=seeded.pki.local_ca_cn, factory=FACTORY)
    root_key = profiles.load_private_key(seeded.pki.read("factory_ca.key"), "factory_ca.key")
    extra = profiles.sign_device_ca(csr, root_cert=seeded.pki.cert("factory_ca.pem"), root_key=root_key)
    bundle = tmp_path / "cas.pem"
    bundle.write_bytes(profiles.certs_pem([*after, extra]))
    result = cli("keys", "ca", "update", bundle, "--yes", env=seeded.env)
    _ok(result)
    assert seeded.device_cas() == [*after, extra]


def test_disable_then_revoke(cli, seeded: Seeded) -> None:
    local = seeded.pki.cert("local-ca.pem")
    online = seeded.pki.cert("online-crt")
    _ok(cli("keys", "ca", "disable-device-ca", seeded.path, "--ca-file", "local-ca.pem", "--yes", env=seeded.env))
    assert seeded.certs()["disabled-ca-serials"] == [str(local.serial_number)]
    _ok(cli("keys", "ca", "revoke-device-ca", seeded.path, "--ca-serial", str(online.serial_number), "--yes",
            env=seeded.env))  # fmt: skip
    assert online not in seeded.device_cas() and local in seeded.device_cas()


def test_devices_offline_and_registered_reach_the_gateway(cli, seeded: Seeded, tmp_path: Path) -> None:
    folders = []
    for flags in ([], ["--faithful"]):
        result = cli("device", "create-offline", seeded.path, "--out", tmp_path / "devices", "--format", "json",
                     *flags, env=seeded.env)  # fmt: skip
        _ok(result)
        folders.append(Path(json.loads(result.stdout)["devices"][0]["path"]))
    sota = tmp_path / "sota"
    sota.mkdir()
    _ok(cli("device", "register", "--sota-dir", sota, "--name", "online-1", "--hwid", "rpi4", "-t", "main", env=seeded.env))
    assert (sota / "root.crt").read_bytes().strip() == seeded.pki.read("factory_ca.pem").strip()
    for folder in (*folders, sota):
        result = cli("device", "check", folder, "--pki-dir", seeded.path, "--format", "json", env=seeded.env)
        _ok(result)
        answer = json.loads(result.stdout)
        assert answer["accepted"] is True and answer["status"] == 200
