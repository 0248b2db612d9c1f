"""Helpers (no tests) for the `keys ca` lifecycle tests: a created PKI, device certs, a gateway probe."""

from __future__ import annotations

import shutil
import socket
import ssl
import uuid as uuid_module
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from cryptography import x509

from fioca.cli import main
from fioca.pki import profiles
from fioca.sandbox.server import Sandbox


@dataclass
class Created:
    """A sandbox factory whose PKI `keys ca create` made."""

    pki: Path
    env: dict[str, str]
    sandbox: Sandbox

    def read(self, name: str) -> bytes:
        return (self.pki / name).read_bytes()

    def cert(self, name: str) -> x509.Certificate:
        return profiles.load_cert(self.read(name), name)

    def root(self) -> x509.Certificate:
        return self.cert("factory_ca.pem")

    def root_key(self):
        return profiles.load_private_key(self.read("factory_ca.key"), "factory_ca.key")


def device_cert(created: Created, ca_file: str, *, factory: str = "acme") -> tuple[str, bytes, bytes]:
    """(uuid, client cert PEM, key PEM) for a new device signed by the local CA `ca_file`."""
    ca_cert = created.cert(ca_file)
    ca_key = profiles.load_private_key(created.read(ca_file.removesuffix(".pem") + ".key"), ca_file)
    key = profiles.new_key()
    device_uuid = str(uuid_module.uuid4())
    csr = profiles.build_device_csr(key, uuid=device_uuid, factory=factory)
    cert = profiles.sign_device_cert(csr, ca_cert=ca_cert, ca_key=ca_key, days=profiles.OFFLINE_DEVICE_DAYS)
    return device_uuid, profiles.cert_pem(cert), profiles.private_key_pem(key)


def register_online(sandbox, *, factory: str = "acme") -> tuple[str, bytes, bytes]:
    """lmp-device-register's POST /ota/devices/: (uuid, client.pem, key PEM) signed by the online CA."""
    info = sandbox.info
    key = profiles.new_key()
    device_uuid = str(uuid_module.uuid4())
    csr = profiles.build_device_csr(key, uuid=device_uuid, factory=factory)
    body = {
        "name": f"dev-{device_uuid[:8]}",
        "uuid": device_uuid,
        "csr": profiles.csr_pem(csr).decode(),
        "hardware-id": "intel-corei7-64",
        "sota-config-dir": "/var/sota",
    }
    response = requests.post(
        f"{info.api_url}/ota/devices/", json=body, headers={"OSF-TOKEN": info.token}, verify=str(info.cacert), timeout=10
    )
    assert response.status_code == 201, response.text
    return device_uuid, response.json()["client.pem"].encode(), profiles.private_key_pem(key)


@dataclass
class Probe:
    status: int | None  # None: the gateway refused the TLS handshake
    served_cert_der: bytes | None
    body: bytes = b""


def probe_gateway(sandbox, root_pem: bytes, sni: str, cert_pem: bytes, key_pem: bytes, tmp: Path) -> Probe:
    """A device's `GET /device` over mTLS: trusts only the factory root, SNI = the gateway host."""
    tmp.mkdir(parents=True, exist_ok=True)
    name = uuid_module.uuid4().hex
    root_path, cert_path, key_path = tmp / f"{name}.root", tmp / f"{name}.crt", tmp / f"{name}.key"
    root_path.write_bytes(root_pem)
    cert_path.write_bytes(cert_pem)
    key_path.write_bytes(key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(root_path))
    context.load_cert_chain(str(cert_path), str(key_path))
    url = urlsplit(sandbox.info.gateway_url)
    served = None
    try:
        with socket.create_connection((url.hostname, url.port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=sni) as tls:
                served = tls.getpeercert(binary_form=True)
                tls.sendall(f"GET /device HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n".encode())
                data = b""
                while chunk := tls.recv(65536):
                    data += chunk
    except (ssl.SSLError, ConnectionError, OSError):
        return Probe(None, served)
    if not data:
        return Probe(None, served)
    status = int(data.split(b" ", 2)[1])
    return Probe(status, served, data.split(b"\r\n\r\n", 1)[-1])




_SETTINGS_ENV = ("FIOCTL_FACTORY", "FIOCTL_TOKEN", "FIOCTL_CONFIG", "CACERT", "FIOCA_SERVER", "TOKEN_HEADER")


@pytest.fixture(scope="module")
def created_template(tmp_path_factory):
    """Once per module: a stopped sandbox whose PKI `keys ca create` made, to copy from."""
    base = tmp_path_factory.mktemp("created")
    with pytest.MonkeyPatch.context() as patch:
        (base / "home").mkdir()
        patch.setenv("HOME", str(base / "home"))
        for name in _SETTINGS_ENV:
            patch.delenv(name, raising=False)
        with Sandbox(base / "sandbox", factory="acme", scripts="api-2026"):
            patch.setenv("FIOCTL_CONFIG", str(base / "sandbox" / "fioctl.yaml"))
            assert main(["keys", "ca", "create", str(base / "pki"), "--yes"]) == 0
    return base


@pytest.fixture
def created(created_template, tmp_path):
    """A factory with a created PKI (online CA + local-ca.pem), private to one test.

    Copying the template's sandbox data and PKI dir costs milliseconds; running create costs a
    second, which every test here would otherwise pay.
    """
    shutil.copytree(created_template / "sandbox", tmp_path / "sandbox", ignore=shutil.ignore_patterns("sandbox.lock"))
    shutil.copytree(created_template / "pki", tmp_path / "pki", ignore=shutil.ignore_patterns(".fioca.lock"))
    with Sandbox(tmp_path / "sandbox", factory="acme", scripts="api-2026") as box:
        yield Created(tmp_path / "pki", {"FIOCTL_CONFIG": str(tmp_path / "sandbox" / "fioctl.yaml")}, box)
