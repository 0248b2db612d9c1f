"""Fixtures for the sandbox tests: a real Sandbox on a random loopback port, a small client,
and the documented `keys ca create` flow run with the rendered scripts and real openssl."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fioca import facts
from fioca.sandbox import Sandbox

FACTORY = "acme-factory"


class Client:
    """Just enough of a Factory API client to drive the sandbox from tests."""

    def __init__(self, sandbox: Sandbox, token: str | None = None):
        info = sandbox.info
        self.base = f"{info.api_url}/ota/factories/{info.factory}"
        self.verify = str(info.cacert)
        self.token = info.token if token is None else token
        self.session = requests.Session()

    def request(self, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None) -> requests.Response:
        all_headers = {"OSF-TOKEN": self.token} if self.token else {}
        all_headers.update(headers or {})
        return self.session.request(
            method, f"{self.base}/{path}", json=body, headers=all_headers, verify=self.verify, timeout=10
        )

    def get_certs(self) -> requests.Response:
        return self.request("GET", "certs/")

    def post_certs(self, body: Any) -> requests.Response:
        return self.request("POST", "certs/", body)

    def patch_certs(self, body: Any) -> requests.Response:
        return self.request("PATCH", "certs/", body)

    def user_self(self) -> dict[str, Any]:
        response = self.request("GET", "users/self/")
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    with Sandbox(tmp_path / "sandbox", factory=FACTORY) as running:
        yield running


@pytest.fixture
def client(sandbox: Sandbox) -> Client:
    return Client(sandbox)


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a script like fioctl did (as a file, cwd = PKI dir); its stdout is the result."""
    minimal_env = {"PATH": os.environ["PATH"], **(env or {})}
    done = subprocess.run(args, cwd=cwd, env=minimal_env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def write_scripts(pki_dir: Path, scripts: dict[str, str]) -> None:
    pki_dir.mkdir(parents=True, exist_ok=True)
    for name, text in scripts.items():
        path = pki_dir / name
        path.write_text(text)
        path.chmod(0o700)


@dataclass
class Flow:
    """The artifacts of one `keys ca create` run, as PEM text."""

    pki_dir: Path
    root_crt: str
    tls_crt: str
    online_crt: str
    local_crt: str

    @property
    def ca_crt(self) -> str:
        return self.online_crt + "\n" + self.local_crt

    def patch_body(self) -> dict[str, str]:
        return {"root-crt": self.root_crt, "tls-crt": self.tls_crt, "ca-crt": self.ca_crt}

    def root_key(self) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key((self.pki_dir / "factory_ca.key").read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key

    def root_cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.root_crt.encode())


def run_create_flow(pki_dir: Path, answer: dict[str, str]) -> Flow:
    """The script-era steps of PKI-SPEC section 3, with the scripts of a POST answer."""
    write_scripts(pki_dir, {name: answer[name] for name in facts.SCRIPT_NAMES})
    (pki_dir / "tls-csr").write_text(answer["tls-csr"])
    (pki_dir / "ca-csr").write_text(answer["ca-csr"])
    run(["./create_ca"], pki_dir)
    tls_crt = run(["./sign_tls_csr", "tls-csr"], pki_dir)
    online_crt = run(["./sign_ca_csr", "ca-csr"], pki_dir)
    run(["./create_device_ca", "local-ca.key", "local-ca.pem"], pki_dir)
    return Flow(
        pki_dir=pki_dir,
        root_crt=(pki_dir / "factory_ca.pem").read_text(),
        tls_crt=tls_crt,
        online_crt=online_crt,
        local_crt=(pki_dir / "local-ca.pem").read_text(),
    )


def create_flow(client: Client, pki_dir: Path) -> Flow:
    response = client.post_certs({})
    assert response.status_code == 201, response.text
    return run_create_flow(pki_dir, response.json())


@pytest.fixture
def flow(client: Client, tmp_path: Path) -> Flow:
    """POSTed and scripts run, nothing PATCHed yet."""
    return create_flow(client, tmp_path / "pki")


@pytest.fixture
def configured(client: Client, flow: Flow) -> Flow:
    """A factory whose PKI was created by the documented flow."""
    response = client.patch_certs(flow.patch_body())
    assert response.status_code == 200, response.text
    return flow


def serial_of(pem: str) -> str:
    return str(x509.load_pem_x509_certificate(pem.encode()).serial_number)


def make_crl(flow: Flow, entries: list[tuple[str, x509.ReasonFlags]], *, signer: ec.EllipticCurvePrivateKey | None = None) -> str:
    """A CRL as fioctl's revoke/disable-device-ca builds it: issued by the root, +15 min."""
    now = datetime.now(UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(flow.root_cert().subject)
        .last_update(now)
        .next_update(now + timedelta(minutes=15))
    )
    for serial, reason in entries:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(int(serial))
            .revocation_date(now)
            .add_extension(x509.CRLReason(reason), critical=False)
            .build()
        )
    crl = builder.sign(signer or flow.root_key(), hashes.SHA256())
    return crl.public_bytes(serialization.Encoding.PEM).decode()


def sign_with_root(flow: Flow, public_key: Any, subject: x509.Name, *, ca: bool) -> str:
    """A certificate for `public_key` signed by the flow's root (to forge near-valid uploads)."""
    root = flow.root_cert()
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(root.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
    )
    return builder.sign(flow.root_key(), hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def name(common_name: str, unit: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, common_name), x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit)]
    )
