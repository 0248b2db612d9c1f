"""Helpers for the gateway and registration tests (no tests here): a factory whose PKI was made
by the reference scripts, device certificates made with `cryptography` or with the documented
openssl procedure, and a device-side HTTPS client that speaks to the gateway like a device."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import subprocess
import uuid as uuid_module
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sandbox_helpers import FACTORY, Client, Flow, create_flow, run

from fioca.sandbox import Sandbox

CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH
SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH


@dataclass
class Device:
    """A device's credentials on disk, as curl and the ssl module want them."""

    uuid: str
    cert: Path
    key: Path

    @property
    def cert_pem(self) -> str:
        return self.cert.read_text()

    def public_key_pem(self) -> str:
        cert = x509.load_pem_x509_certificate(self.cert.read_bytes())
        return cert.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()


@dataclass
class Reply:
    status: int
    body: bytes
    server_cert_der: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class KeptConnection:
    """Requests on one open connection; `get` answers (status, JSON body, Connection header)."""

    connection: http.client.HTTPConnection

    def get(self, path: str = "/device") -> tuple[int, Any, str]:
        self.connection.request("GET", path)
        response = self.connection.getresponse()
        return response.status, json.loads(response.read()), response.getheader("Connection", "")

    def close(self) -> None:
        self.connection.close()


@dataclass
class Gateway:
    """Where devices reach the sandbox gateway: the tls-crt host name, resolved to loopback."""

    host: str
    port: int

    def get(self, device: Device, path: str = "/device", *, cafile: Path, headers: dict[str, str] | None = None,
            method: str = "GET") -> Reply:
        """One request on a fresh mTLS connection; ssl.SSLError / ConnectionError when refused."""
        with self.tls(device, cafile=cafile) as tls:
            connection = http.client.HTTPConnection(self.host, self.port, timeout=10)
            connection.sock = tls  # reuse our verified socket
            connection.request(method, path, headers=headers or {})
            response = connection.getresponse()
            return Reply(response.status, response.read(), tls.getpeercert(binary_form=True))

    def session(self, device: Device, *, cafile: Path) -> KeptConnection:
        """One mTLS connection kept open for several requests (keep-alive)."""
        connection = http.client.HTTPConnection(self.host, self.port, timeout=10)
        connection.sock = self.tls(device, cafile=cafile)
        return KeptConnection(connection)

    def tls(self, device: Device, *, cafile: Path, timeout: float = 10) -> ssl.SSLSocket:
        """An mTLS connection as `device`, handshake done, for the caller to speak HTTP on
        (byte by byte if it likes) and close; ssl.SSLError / ConnectionError when refused."""
        context = ssl.create_default_context(cafile=str(cafile))
        context.load_cert_chain(str(device.cert), str(device.key))
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        try:
            return context.wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise

    def refused_handshake(self, device: Device, *, cafile: Path) -> Exception:
        """Assert the TLS layer refuses the device (no HTTP answer at all); the error raised."""
        with pytest.raises((ssl.SSLError, ConnectionError)) as raised:
            reply = self.get(device, cafile=cafile)
            pytest.fail(f"the gateway answered {reply.status}: {reply.body!r}")
        return raised.value

    def curl(self, device: Device, path: str, *, cafile: Path, cwd: Path) -> subprocess.CompletedProcess:
        """The documented probe: curl --cacert factory_ca.pem --cert client.pem --key pkey.pem."""
        return subprocess.run(
            [
                "curl", "-sS", "--max-time", "10", "--cacert", str(cafile), "--cert", str(device.cert),
                "--key", str(device.key), "--resolve", f"{self.host}:{self.port}:127.0.0.1",
                "-w", "\n%{http_code}", f"https://{self.host}:{self.port}{path}",
            ],
            cwd=cwd, capture_output=True, text=True, timeout=30,
        )


@dataclass
class Factory:
    """A running sandbox whose PKI was created by the documented flow and PATCHed."""

    sandbox: Sandbox
    client: Client
    flow: Flow
    gateway: Gateway

    @property
    def root_file(self) -> Path:
        return self.flow.pki_dir / "factory_ca.pem"

    def local_ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        return load_ca(self.flow.pki_dir / "local-ca.pem", self.flow.pki_dir / "local-ca.key")

    def get(self, device: Device, path: str = "/device", **kwargs: Any) -> Reply:
        return self.gateway.get(device, path, cafile=self.root_file, **kwargs)

    def refused_handshake(self, device: Device) -> Exception:
        return self.gateway.refused_handshake(device, cafile=self.root_file)

    def stored(self, device: Device) -> Any:
        return self.sandbox.store.device(device.uuid)


def gateway_of(sandbox: Sandbox) -> Gateway:
    gateway_id = sandbox.store.factory().gateway_id
    return Gateway(host=f"{gateway_id}.ota-lite.foundries.io", port=int(sandbox.info.gateway_url.rsplit(":", 1)[1]))


def start_factory(base: Path, *, patch: bool = True) -> Factory:
    sandbox = Sandbox(base / "sandbox", factory=FACTORY)
    sandbox.start()
    client = Client(sandbox)
    flow = create_flow(client, base / "pki")
    if patch:
        response = client.patch_certs(flow.patch_body())
        assert response.status_code == 200, response.text
    return Factory(sandbox=sandbox, client=client, flow=flow, gateway=gateway_of(sandbox))


@contextmanager
def running_factory(base: Path) -> Iterator[Factory]:
    """A configured factory (`start_factory`), its sandbox stopped afterwards."""
    factory = start_factory(base)
    try:
        yield factory
    finally:
        factory.sandbox.stop()


@pytest.fixture
def fresh_factory(tmp_path: Path) -> Iterator[Factory]:
    """A factory of its own, for tests that change its CAs or certs for good."""
    with running_factory(tmp_path) as factory:
        yield factory


def load_ca(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return cert, key


def new_uuid() -> str:
    return str(uuid_module.uuid4())


def make_device(
    folder: Path,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    *,
    device_uuid: str | None = None,
    unit: str | None = FACTORY,
    usages: list[x509.ObjectIdentifier] | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    production: bool = False,
    key: ec.EllipticCurvePrivateKey | None = None,
    ca: bool | None = None,
) -> Device:
    """A device certificate signed by `issuer`; every rule-relevant field can be bent.
    `usages=[]` leaves out extendedKeyUsage altogether; `ca` adds basicConstraints CA:TRUE or
    CA:FALSE (None: no basicConstraints, as the documented procedure makes them)."""
    issuer_cert, issuer_key = issuer
    device_uuid = device_uuid or new_uuid()
    key = key or ec.generate_private_key(ec.SECP256R1())
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, device_uuid)]
    if unit is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
    if production:
        attributes.append(x509.NameAttribute(NameOID.BUSINESS_CATEGORY, "production"))
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attributes))
        .issuer_name(issuer_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - timedelta(minutes=1))
        .not_valid_after(not_after or now + timedelta(days=30))
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=True, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
    )
    # OpenSSL 3 adds the AKID by default; OpenSSL's chain builder needs it to tell apart two
    # device CAs with the same subject (a second local CA of the same user, another online CA).
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    usages = [CLIENT_AUTH] if usages is None else usages
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=True)
    cert = builder.sign(issuer_key, hashes.SHA256())
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / f"{device_uuid}.pem", folder / f"{device_uuid}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return Device(uuid=device_uuid, cert=cert_path, key=key_path)


def make_documented_device(pki_dir: Path, device_uuid: str, *, factory: str = FACTORY) -> Device:
    """PKI-SPEC section 8, command by command (the heredocs written as files)."""
    folder = pki_dir / "devices" / device_uuid
    folder.mkdir(parents=True)
    rel = folder.relative_to(pki_dir)
    (folder / "device-cert.conf").write_text(
        "[req]\nprompt = no\ndays=3650\ndistinguished_name = req_dn\n\n[req_dn]\n# Device ID\n"
        f'commonName="{device_uuid}"\norganizationalUnitName="{factory}"\n'
    )
    (folder / "device-cert.ext").write_text(
        "keyUsage=critical,digitalSignature,keyAgreement\nextendedKeyUsage=critical,clientAuth\n"
    )
    run(["openssl", "ecparam", "-genkey", "-name", "prime256v1", "-out", f"{rel}/pkey.pem"], pki_dir)
    run(["openssl", "req", "-new", "-config", f"{rel}/device-cert.conf", "-key", f"{rel}/pkey.pem",
         "-out", f"{rel}/device-cert.csr"], pki_dir)
    run(["openssl", "x509", "-req", "-in", f"{rel}/device-cert.csr", "-CAcreateserial", "-extfile",
         f"{rel}/device-cert.ext", "-CAkey", "local-ca.key", "-CA", "local-ca.pem", "-sha256",
         "-out", f"{rel}/client.pem"], pki_dir)
    return Device(uuid=device_uuid, cert=folder / "client.pem", key=folder / "pkey.pem")


def make_csr(device_uuid: str, *, unit: str = FACTORY, common_name: str | None = None,
             production: bool = False) -> tuple[str, ec.EllipticCurvePrivateKey]:
    """A device CSR as lmp-device-register makes it: CN=<uuid>, OU=<factory>."""
    key = ec.generate_private_key(ec.SECP256R1())
    attributes = [
        x509.NameAttribute(NameOID.COMMON_NAME, common_name or device_uuid),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
    ]
    if production:
        attributes.append(x509.NameAttribute(NameOID.BUSINESS_CATEGORY, "production"))
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attributes)).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode(), key


def register_body(device_uuid: str, csr: str, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": f"dev-{device_uuid[:8]}",
        "uuid": device_uuid,
        "csr": csr,
        "hardware-id": "intel-corei7-64",
        "sota-config-dir": "/var/sota",
        "use-ostree-server": "true",
        "overrides": {},
    }
    body.update(changes)
    return body


def post_device(client: Client, body: Any, *, token: str | None = None) -> Any:
    """POST <api>/ota/devices/ with the factory token (or `token`, "" for none)."""
    api = client.base.split("/ota/factories/")[0]
    headers = {"OSF-TOKEN": client.token if token is None else token} if token != "" else {}
    return client.session.post(f"{api}/ota/devices/", json=body, headers=headers, verify=client.verify, timeout=10)


def save_registered(folder: Path, device_uuid: str, answer: dict[str, str], key: ec.EllipticCurvePrivateKey) -> Device:
    """Write a 201 answer's files and the key like lmp-device-register does in its sota dir."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in answer.items():
        (folder / name).write_text(text)
    (folder / "pkey.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return Device(uuid=device_uuid, cert=folder / "client.pem", key=folder / "pkey.pem")
