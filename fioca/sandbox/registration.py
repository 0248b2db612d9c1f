"""Device registration on the API: `POST /ota/devices/` (lmp-device-register) and
`PUT /ota/devices/` (pre-registration, as factory-registration-ref uses it).

POST: the device sends a CSR (`CN=<uuid>, OU=<factory>` [+ `businessCategory=production`])
and its settings; the sandbox signs the CSR (PKI-SPEC section 4, "device (lmp-device-register
/ registration server)") with the factory's online device CA, or with the shared device CA
while the factory has no PKI of its own (`shared_pki.py`), records the device (its `group`
kept), and answers 201 with the files the client writes into its sota dir: `client.pem`,
`root.crt` (the factory root, or the shared root), `sota.toml` naming the gateway's real port,
`client.chained` (PKI-SPEC sections 2 and 9). lmp-device-register sends every leaf as a
string and may send the JSON body as form data's content type: the body is read as JSON
whatever the Content-Type says.

PUT: `{"client.pem": <PEM>, "name": ... [, "group": ...]}` records a device whose certificate
a device CA of `ca-crt` signed elsewhere (a factory-registration-ref server); the certificate
is held to the gateway's rules (`device_rules.py`). Answers 201 with the device.

A uuid has one spelling (lower-case, hyphenated): any other is refused, so a deleted device
cannot come back and a known one cannot get a second key under another spelling. A known or
deleted (deny-listed) uuid is a 409 on both.

The API server checks the credentials first (`auth.py`): the factory token, or an OAuth
token with the `devices:create` scope (lmp-device-register's device flow).
"""

from __future__ import annotations

import sqlite3
import uuid as uuid_module
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fioca import facts, sota_toml
from fioca.sandbox.backend import (
    Backend,
    SandboxApiError,
    bad_request,
    conflict,
    parse_pem_certs,
)
from fioca.sandbox.certs import PRODUCTION, is_canonical_uuid, is_production, key_usage
from fioca.sandbox.device_rules import (
    DeviceExists,
    DeviceRefused,
    DeviceRules,
    TrustedCa,
    read_presented,
)
from fioca.sandbox.shared_pki import SharedPki, gateway_hosts
from fioca.sandbox.store import DeviceRecord

DEVICE_VALIDITY = timedelta(days=facts.REGISTERED_DEVICE_DAYS)  # 20 years, as factory-registration-ref signs
MAX_GROUP_LENGTH = 128

REQUIRED_FIELDS = ("name", "uuid", "csr", "hardware-id", "sota-config-dir")


@dataclass(frozen=True)
class Signer:
    """Who signs a registered device: the online CA (the factory's PKI) or the shared CA."""

    cert_pem: str
    key: ec.EllipticCurvePrivateKey
    serial: str
    root_pem: str  # what the device gets as root.crt

    def __repr__(self) -> str:
        return f"Signer(serial={self.serial!r}, <key hidden>)"

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem.encode("ascii"))


class Registrar:
    """Registration and pre-registration of the one factory a Backend holds."""

    def __init__(self, backend: Backend, shared: SharedPki, gateway_port: Callable[[], int]):
        self.backend = backend
        self.shared = shared
        self.gateway_port = gateway_port
        factory = backend.factory
        self.rules = DeviceRules(backend.store, factory=factory.name, local_ca_cn=backend.local_ca_cn,
                                 owner=factory.polis_id)

    # -- POST ------------------------------------------------------------------------------------

    def register(self, body: Any) -> dict[str, str]:
        """Sign the device's CSR, record the device, return its sota files."""
        fields, overrides = _checked_body(body)
        factory = self.backend.factory
        signer = self._signer()
        csr = _checked_csr(fields["csr"], factory.name, fields["uuid"])
        device_uuid = fields["uuid"]
        self._check_new(device_uuid)
        cert = sign_device_csr(csr, signer, device_uuid)
        cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
        public_key_pem = csr.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")
        try:
            self.backend.store.add_device(
                uuid=device_uuid, name=fields["name"], pubkey=public_key_pem, is_prod=is_production(csr.subject),
                ca_serial=signer.serial, owner=factory.polis_id,  # the user whose token registered it
                group=fields.get("group") or None, seen=False,
            )
        except sqlite3.IntegrityError:
            raise _duplicate(device_uuid) from None  # a concurrent registration won the race
        return {
            facts.DEVICE_CERT: cert_pem,
            facts.DEVICE_ROOT: signer.root_pem,
            facts.SOTA_TOML: self._sota_toml(fields, overrides),
            facts.DEVICE_CHAINED: cert_pem + signer.cert_pem,
        }

    def _signer(self) -> Signer:
        certs = self.backend.store.certs()
        if not certs.root_crt:  # the shared phase: the service's PKI signs
            shared = self.shared
            return Signer(shared.device_ca_pem, shared.device_ca_key, shared.device_ca_serial, shared.root_pem)
        online = self.backend.online_ca()
        if online is None:
            raise conflict(
                "Factory has no usable online device CA: none in ca-crt, or it is disabled",
                "add one with keys ca add-device-ca --online-ca, or re-enable it",
            )
        key = serialization.load_pem_private_key(online.key_pem.encode("ascii"), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return Signer(online.cert_pem, key, online.serial, certs.root_crt)

    def _check_new(self, device_uuid: str) -> None:
        record = self.backend.store.device(device_uuid)
        if record is not None:
            raise _duplicate(device_uuid, deleted=record.deny_listed)

    def _sota_toml(self, fields: dict[str, str], overrides: sota_toml.Overrides) -> str:
        gateway_host, ostree_host = self.hosts()
        port = self.gateway_port()
        gateway_url = f"https://{gateway_host}:{port}"
        use_ostree_server = fields.get("use-ostree-server", "true").lower() != "false"
        # With the OSTree server the device pulls from its own host; without it, from the gateway.
        ostree_url = f"https://{ostree_host}:{port}/ostree" if use_ostree_server else f"{gateway_url}/treehub"
        return sota_toml.render(
            gateway_url=gateway_url, ostree_url=ostree_url, hardware_id=fields["hardware-id"],
            sota_config_dir=fields["sota-config-dir"], overrides=overrides,
        )

    def hosts(self) -> tuple[str, str]:
        """(gateway host, OSTree host): the first two DNS names of tls-crt, as devices find
        them; the service's names for the gateway id before there is a tls-crt."""
        tls_crt = self.backend.store.certs().tls_crt
        if tls_crt:
            try:
                cert = x509.load_pem_x509_certificate(tls_crt.encode("ascii"))
                names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                dns_names = names.get_values_for_type(x509.DNSName)
            except (ValueError, x509.ExtensionNotFound):
                dns_names = []
            if len(dns_names) >= 2:
                return dns_names[0], dns_names[1]
        return gateway_hosts(self.backend.factory.gateway_id)

    # -- PUT -------------------------------------------------------------------------------------

    def pre_register(self, body: Any) -> DeviceRecord:
        """Record a device from a certificate a device CA of ca-crt signed."""
        cert_pem, name, group = _checked_put_body(body)
        if not self.backend.store.certs().root_crt:
            raise conflict(
                "Factory PKI is not configured: there is no device CA to vouch for this certificate",
                "create the factory PKI first (keys ca create)",
            )
        cert = parse_pem_certs(facts.DEVICE_CERT, cert_pem)
        if len(cert) != 1:
            raise bad_request(f"Invalid {facts.DEVICE_CERT}: expected exactly one certificate, got {len(cert)}")
        cas = [TrustedCa.of(ca.cert, disabled=ca.disabled) for ca in self.backend.device_cas()]
        presented = read_presented(cert[0].cert, cas, verified=False)
        try:
            return self.rules.pre_register(presented, name=name, group=group)
        except DeviceRefused as refusal:
            raise bad_request(f"Invalid {facts.DEVICE_CERT}: {refusal}") from None
        except DeviceExists as exists:
            raise _duplicate(exists.uuid, deleted=self._deleted(exists.uuid)) from None

    def _deleted(self, device_uuid: str) -> bool:
        record = self.backend.store.device(device_uuid)
        return record is not None and record.deny_listed


def _duplicate(device_uuid: str, *, deleted: bool = False) -> SandboxApiError:
    if deleted:
        return conflict(
            f"Device {device_uuid} was deleted and is on the deny-list",
            "uuid: a deleted device's uuid cannot be used again until it leaves the deny-list"
            " (fioctl devices delete-denied)",
        )
    return conflict(
        f"Device {device_uuid} already exists",
        f"uuid: a device with uuid {device_uuid} is already registered; use a new uuid",
    )


def _checked_group(value: Any, errors: list[str]) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        errors.append("group: must be a string")
    elif len(value) > MAX_GROUP_LENGTH or not value.isprintable() or value != value.strip():
        errors.append(f"group: must be a printable name of at most {MAX_GROUP_LENGTH} characters")
    else:
        return value
    return None


def _checked_body(body: Any) -> tuple[dict[str, str], sota_toml.Overrides]:
    """The string fields and the overrides; 400 naming every field that is wrong."""
    if not isinstance(body, dict):
        raise bad_request("Invalid request: the body must be a JSON object")
    errors: list[str] = []
    fields: dict[str, str] = {}
    for name in (*REQUIRED_FIELDS, "use-ostree-server"):
        value = body.get(name)
        if value is None:
            if name in REQUIRED_FIELDS:
                errors.append(f"{name}: this field is required")
        elif not isinstance(value, str):
            errors.append(f"{name}: must be a string")
        elif name in REQUIRED_FIELDS and not value.strip():
            errors.append(f"{name}: must not be empty")
        else:
            fields[name] = value
    group = _checked_group(body.get("group"), errors)
    if group is not None:
        fields["group"] = group
    overrides = _checked_overrides(body.get("overrides"), errors)
    if "uuid" in fields and not is_canonical_uuid(fields["uuid"]):
        errors.append(f"uuid: {fields['uuid']!r} is not a lower-case hyphenated UUID")
    if errors:
        raise bad_request("Invalid device registration request", *errors)
    return fields, overrides


def _checked_put_body(body: Any) -> tuple[str, str | None, str | None]:
    if not isinstance(body, dict):
        raise bad_request("Invalid request: the body must be a JSON object")
    errors: list[str] = []
    cert_pem = body.get(facts.DEVICE_CERT)
    if not isinstance(cert_pem, str) or not cert_pem.strip():
        errors.append(f"{facts.DEVICE_CERT}: this field is required (the device certificate, PEM)")
    name = body.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip() or not name.isprintable()):
        errors.append("name: must be a printable, non-empty string")
    group = _checked_group(body.get("group"), errors)
    if errors:
        raise bad_request("Invalid device pre-registration request", *errors)
    return cert_pem, name, group


def _checked_overrides(value: Any, errors: list[str]) -> sota_toml.Overrides:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(section, dict) and all(isinstance(item, str) for item in section.values())
        for section in value.values()
    ):
        errors.append("overrides: must map section -> key -> string (a TOML value, \"\" to unset)")
        return {}
    errors.extend(sota_toml.check_overrides(value))
    return value


def _checked_csr(text: str, factory: str, device_uuid: str) -> x509.CertificateSigningRequest:
    """The CSR, when it is well formed, self-signed and names this device and factory."""
    try:
        csr = x509.load_pem_x509_csr(text.encode("utf-8"))
    except ValueError as error:
        raise bad_request("Invalid csr: not a PEM certificate signing request", str(error)) from None
    if not csr.is_signature_valid:
        raise bad_request("Invalid csr: its signature does not match its public key")
    if not isinstance(csr.public_key(), (ec.EllipticCurvePublicKey, rsa.RSAPublicKey, ed25519.Ed25519PublicKey)):
        raise bad_request("Invalid csr: the key must be EC, RSA or Ed25519")
    subject = csr.subject
    units = [str(a.value) for a in subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)]
    if units != [factory]:
        raise bad_request(
            "Invalid csr: the subject OU must equal the factory name",
            f"csr: OU is {', '.join(units) or '(none)'}, expected '{factory}'",
        )
    names = [str(a.value) for a in subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if names != [device_uuid]:
        raise bad_request(
            "Invalid csr: the subject CN must be the device uuid",
            f"csr: CN is {', '.join(names) or '(none)'}, expected '{device_uuid}'",
        )
    categories = [str(a.value) for a in subject.get_attributes_for_oid(NameOID.BUSINESS_CATEGORY)]
    if categories not in ([], [PRODUCTION]):
        raise bad_request(
            "Invalid csr: businessCategory may only be 'production'",
            f"csr: businessCategory is {', '.join(categories)}",
        )
    return csr


def sign_device_csr(csr: x509.CertificateSigningRequest, signer: Signer, device_uuid: str) -> x509.Certificate:
    """The device certificate: the CSR's subject, signed by the signer's CA for 20 years."""
    ca_cert = signer.cert
    now = datetime.now(UTC)
    # The UUID as a 128-bit number, as factory-registration-ref does; 0 is not a legal serial.
    serial = uuid_module.UUID(device_uuid).int or x509.random_serial_number()
    return (
        x509.CertificateBuilder()
        .subject_name(csr.subject)  # CN=<uuid>, OU=<factory> [, businessCategory=production]
        .issuer_name(ca_cert.subject)
        .public_key(csr.public_key())
        .serial_number(serial)
        .not_valid_before(now)
        .not_valid_after(now + DEVICE_VALIDITY)
        # Signs TLS handshakes only.
        .add_extension(key_usage(digital_signature=True), critical=True)
        # A TLS client of the device gateway, nothing else.
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=True)
        # Names the CA's key, so a chain builder picks the right CA among same-named ones.
        .add_extension(_authority_key_id(ca_cert, signer.key), critical=False)
        .sign(signer.key, hashes.SHA256())
    )


def _authority_key_id(ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey) -> x509.AuthorityKeyIdentifier:
    """The CA's own SKID when it has one (so the ids match byte for byte), else one from its key."""
    try:
        skid = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(skid)
