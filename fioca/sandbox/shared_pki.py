"""The shared PKI: what the service uses for a factory that has not made its own yet.

Before `keys ca create`, devices register and reach the gateway through a PKI the service
owns (PKI-SPEC sections 7 and 10): registration answers the service's shared root as
`root.crt` and a `client.pem` signed by a shared device CA, and the gateway serves a shared
certificate for the factory's host names. Once the factory's PKI is set, the gateway serves
`tls-crt` and trusts only the factory's device CAs: a device registered in the shared phase
no longer trusts the gateway (its `root.crt` is the shared root) and registers again.

The three certificates are made once per data dir (keys 0600) and kept:
  shared-root.pem/.key        the service's shared root (CA, no path length limit)
  shared-device-ca.pem/.key   signs devices registered in the shared phase (CA, pathlen 0)
  shared-gateway.pem/.key     the gateway's shared certificate, both host names as DNS SANs
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fioca import facts
from fioca.sandbox.certs import key_usage
from fioca.sandbox.files import write_private_file

ROOT_CERT = "shared-root.pem"
ROOT_KEY = "shared-root.key"
DEVICE_CA_CERT = "shared-device-ca.pem"
DEVICE_CA_KEY = "shared-device-ca.key"
GATEWAY_CERT = "shared-gateway.pem"
GATEWAY_KEY = "shared-gateway.key"

ROOT_SUBJECT = "fioca sandbox shared root"
DEVICE_CA_SUBJECT = "fioca sandbox shared device CA"
ROOT_VALIDITY = timedelta(days=7300)
CA_VALIDITY = timedelta(days=3650)
RENEW_BEFORE = timedelta(days=30)


@dataclass(frozen=True)
class SharedPki:
    """Paths and parsed forms of the shared PKI of one data dir."""

    root_cert: Path
    root_pem: str
    device_ca_pem: str
    device_ca: x509.Certificate
    device_ca_key: ec.EllipticCurvePrivateKey
    gateway_cert: Path
    gateway_key: Path

    def __repr__(self) -> str:
        return f"SharedPki(root={self.root_cert}, <keys hidden>)"

    @property
    def device_ca_serial(self) -> str:
        return str(self.device_ca.serial_number)


def gateway_hosts(gateway_id: str) -> tuple[str, str]:
    """(gateway host, OSTree host) of a factory's gateway id, as the service names them."""
    return f"{gateway_id}.{facts.GATEWAY_DOMAIN}", f"{gateway_id}.{facts.OSTREE_DOMAIN}"


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _issue(subject: str | x509.Name, key: ec.EllipticCurvePrivateKey, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
           validity: timedelta, extensions: list[tuple[x509.ExtensionType, bool]]) -> x509.Certificate:
    name = subject if isinstance(subject, x509.Name) else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_cert, issuer_key = issuer if issuer else (None, key)
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_cert.subject if issuer_cert else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))  # tolerate small clock skew
        .not_valid_after(now + validity)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


def _load_pair(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    if not (cert_path.exists() and key_path.exists()):
        return None
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return cert, key


def _ca_pair(data_dir: Path, names: tuple[str, str], subject: str, issuer: tuple | None,
             path_length: int | None, validity: timedelta) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    pair = _load_pair(data_dir / names[0], data_dir / names[1])
    if pair is not None:
        return pair
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _issue(subject, key, issuer, validity, [
        # A CA: the root may sign CAs, the device CA only device certificates.
        (x509.BasicConstraints(ca=True, path_length=path_length), True),
        (key_usage(key_cert_sign=True, crl_sign=True), True),
    ])
    write_private_file(data_dir / names[1], _key_pem(key))
    write_private_file(data_dir / names[0], _pem(cert))
    return cert, key


def _gateway_cert_fits(path: Path, root: x509.Certificate, hosts: tuple[str, str]) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        cert.verify_directly_issued_by(root)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except Exception:  # missing, unreadable, from another root: make a new one
        return False
    fresh = cert.not_valid_after_utc - datetime.now(UTC) > RENEW_BEFORE
    return fresh and tuple(names.get_values_for_type(x509.DNSName)) == hosts


def ensure_shared_pki(data_dir: Path, gateway_id: str) -> SharedPki:
    """The data dir's shared PKI, made the first time (and the gateway certificate again when
    it does not name this gateway's hosts or is about to expire)."""
    root = _ca_pair(data_dir, (ROOT_CERT, ROOT_KEY), ROOT_SUBJECT, None, None, ROOT_VALIDITY)
    device_ca = _ca_pair(data_dir, (DEVICE_CA_CERT, DEVICE_CA_KEY), DEVICE_CA_SUBJECT, root, 0, CA_VALIDITY)
    hosts = gateway_hosts(gateway_id)
    if not (_gateway_cert_fits(data_dir / GATEWAY_CERT, root[0], hosts) and (data_dir / GATEWAY_KEY).exists()):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(hosts[0], key, root, CA_VALIDITY, [
            # A TLS server for the gateway and OSTree hosts, nothing else.
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (key_usage(digital_signature=True), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), True),
            (x509.SubjectAlternativeName([x509.DNSName(host) for host in hosts]), False),
        ])
        write_private_file(data_dir / GATEWAY_KEY, _key_pem(key))
        write_private_file(data_dir / GATEWAY_CERT, _pem(cert))
    return SharedPki(
        root_cert=data_dir / ROOT_CERT,
        root_pem=_pem(root[0]).decode("ascii"),
        device_ca_pem=_pem(device_ca[0]).decode("ascii"),
        device_ca=device_ca[0],
        device_ca_key=device_ca[1],
        gateway_cert=data_dir / GATEWAY_CERT,
        gateway_key=data_dir / GATEWAY_KEY,
    )
