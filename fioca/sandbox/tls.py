"""The sandbox's own HTTPS identity: a small "sandbox API CA" and a server certificate.

Clients trust `DIR/api-ca.pem` (fioctl.yaml's `server.cacert`, `requests(verify=...)`,
`curl --cacert`). Both keys are made once and reused across restarts, so a client config
written on the first start keeps working; the server certificate is reissued from the same CA
only when it does not name the host asked for, or is about to expire.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fioca.sandbox.certs import key_usage
from fioca.sandbox.files import write_private_file

API_CA_CERT = "api-ca.pem"
API_CA_KEY = "api-ca.key"
API_SERVER_CERT = "api-server.pem"
API_SERVER_KEY = "api-server.key"

CA_VALIDITY = timedelta(days=3650)
SERVER_VALIDITY = timedelta(days=825)
RENEW_BEFORE = timedelta(days=30)
# Always named, whatever host the sandbox binds: the loopback names clients use.
LOOPBACK_NAMES = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class TlsFiles:
    """Where the API's TLS material lives in the data dir."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _san_names(hosts: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in [*LOOPBACK_NAMES, *hosts]:
        name = _general_name(host)
        if name not in names:
            names.append(name)
    return names


def make_ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed P-256 CA that only issues server certificates."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))  # tolerate small clock skew
        .not_valid_after(now + CA_VALIDITY)
        # A CA that signs leaf certificates only.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue_server_cert(
    ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, hosts: list[str]
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A TLS server certificate for `hosts` (plus the loopback names), signed by `ca_key`."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0] if hosts else "localhost")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + SERVER_VALIDITY)
        # A leaf: TLS server only, for the names clients dial.
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(_san_names(hosts)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _server_cert_fits(path: Path, ca_cert: x509.Certificate, hosts: list[str]) -> bool:
    """Whether the stored server certificate is from this CA, names every host and stays valid."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        cert.verify_directly_issued_by(ca_cert)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except Exception:  # missing, unreadable, foreign: any of these means "issue a new one"
        return False
    if cert.not_valid_after_utc - datetime.now(UTC) < RENEW_BEFORE:
        return False
    return all(_general_name(host) in names for host in hosts)


def ensure_api_tls(data_dir: Path, host: str) -> TlsFiles:
    """Make (once) the API CA and a server certificate naming `host`; return their paths."""
    files = TlsFiles(
        ca_cert=data_dir / API_CA_CERT,
        server_cert=data_dir / API_SERVER_CERT,
        server_key=data_dir / API_SERVER_KEY,
    )
    ca_key_path = data_dir / API_CA_KEY
    if files.ca_cert.exists() and ca_key_path.exists():
        ca_cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
        ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    else:
        ca_cert, ca_key = make_ca("fioca sandbox API CA")
        write_private_file(ca_key_path, _pem_key(ca_key))
        write_private_file(files.ca_cert, _pem_cert(ca_cert))
    hosts = [host] if host else []
    if not _server_cert_fits(files.server_cert, ca_cert, hosts):
        cert, key = issue_server_cert(ca_cert, ca_key, hosts)
        write_private_file(files.server_key, _pem_key(key))
        write_private_file(files.server_cert, _pem_cert(cert))
    return files
