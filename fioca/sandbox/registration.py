"""Online device registration: `POST /ota/devices/` as lmp-device-register speaks it.

The device sends a CSR (`CN=<uuid>, OU=<factory>` [+ `businessCategory=production`]); the
sandbox signs it with the factory's online device CA (PKI-SPEC section 4, "device
(lmp-device-register / registration server)"), records the device, and answers 201 with the
files the client writes into its sota dir: `client.pem`, `root.crt`, `sota.toml`,
`client.chained` (PKI-SPEC sections 2 and 9). A `HEAD` answers 200, so the client's
"is the server there" probe passes. Auth (OSF-TOKEN) is checked by the API server first.
"""

from __future__ import annotations

import re
import sqlite3
import uuid as uuid_module
from datetime import datetime, timedelta, timezone
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fioca.sandbox import sota_toml
from fioca.sandbox.api import Route
from fioca.sandbox.backend import GATEWAY_DOMAIN, OSTREE_DOMAIN, Backend, OnlineCa, SandboxApiError
from fioca.sandbox.certs import PRODUCTION, is_production, is_uuid, key_usage

DEVICES_PATTERN = re.compile(r"^/ota/devices/$")
DEVICE_VALIDITY = timedelta(days=7300)  # 20 years, as factory-registration-ref signs
GATEWAY_PORT = 8443

REQUIRED_FIELDS = ("name", "uuid", "csr", "hardware-id", "sota-config-dir")
OPTIONAL_STRING_FIELDS = ("use-ostree-server", "group")

# The files of a 201 answer, by name (the client writes each one into its sota dir).
CLIENT_PEM = "client.pem"
ROOT_CRT = "root.crt"
SOTA_TOML = "sota.toml"
CLIENT_CHAINED = "client.chained"


def registration_routes(backend: Backend) -> list[Route]:
    """The `/ota/devices/` route the API serves next to the certs routes."""
    return [
        Route(
            name="devices",
            pattern=DEVICES_PATTERN,
            methods={
                "POST": lambda request: (201, register_device(backend, request.body)),
                # lmp-device-register probes the server with HEAD first; anything < 500 passes.
                "HEAD": lambda request: (200, {}),
            },
        )
    ]


def _bad_request(message: str, *errors: str) -> SandboxApiError:
    return SandboxApiError(400, message, list(errors))


def _conflict(message: str, *errors: str) -> SandboxApiError:
    return SandboxApiError(409, message, list(errors))


def register_device(backend: Backend, body: Any) -> dict[str, str]:
    """Sign the device's CSR with the online CA, record the device, return its sota files."""
    fields, overrides = _checked_body(body)
    factory = backend.factory
    online_ca = backend.online_ca()
    if online_ca is None:
        raise _no_online_ca(backend)
    csr = _checked_csr(fields["csr"], factory.name, fields["uuid"])
    device_uuid = fields["uuid"]
    if backend.store.device(device_uuid) is not None:
        raise _duplicate(device_uuid)

    cert = sign_device_csr(csr, online_ca, device_uuid)
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
    public_key_pem = csr.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")
    try:
        backend.store.add_device(
            uuid=device_uuid,
            name=fields["name"],
            pubkey=public_key_pem,
            is_prod=is_production(csr.subject),
            ca_serial=online_ca.serial,
            owner=factory.polis_id,  # the user whose token registered it
        )
    except sqlite3.IntegrityError:
        raise _duplicate(device_uuid) from None  # a concurrent registration won the race

    gateway_host, ostree_host = gateway_hosts(backend)
    gateway_url = f"https://{gateway_host}:{GATEWAY_PORT}"
    use_ostree_server = fields.get("use-ostree-server", "true").lower() != "false"
    # With the OSTree server the device pulls from its own host; without it, from the gateway.
    ostree_url = f"https://{ostree_host}:{GATEWAY_PORT}/ostree" if use_ostree_server else f"{gateway_url}/treehub"
    certs = backend.store.certs()
    return {
        CLIENT_PEM: cert_pem,
        ROOT_CRT: certs.root_crt or "",
        SOTA_TOML: sota_toml.render(
            gateway_url=gateway_url,
            ostree_url=ostree_url,
            hardware_id=fields["hardware-id"],
            sota_config_dir=fields["sota-config-dir"],
            overrides=overrides,
        ),
        CLIENT_CHAINED: cert_pem + online_ca.cert_pem,
    }


def _duplicate(device_uuid: str) -> SandboxApiError:
    return _conflict(
        f"Device {device_uuid} already exists",
        f"uuid: a device with uuid {device_uuid} is already registered (or was deleted); use a new uuid",
    )


def _no_online_ca(backend: Backend) -> SandboxApiError:
    if not backend.store.certs().root_crt:
        return _conflict(
            "Factory PKI is not configured: there is no online device CA to sign the CSR",
            "create the factory PKI with an online CA first (keys ca create --online-ca)",
        )
    return _conflict(
        "Factory has no usable online device CA: none in ca-crt, or it is disabled",
        "add one with keys ca add-device-ca --online-ca, or re-enable it",
    )


def _checked_body(body: Any) -> tuple[dict[str, str], sota_toml.Overrides]:
    """The string fields and the overrides; 400 naming every field that is wrong."""
    if not isinstance(body, dict):
        raise _bad_request("Invalid request: the body must be a JSON object")
    errors: list[str] = []
    fields: dict[str, str] = {}
    for name in (*REQUIRED_FIELDS, *OPTIONAL_STRING_FIELDS):
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
    overrides = _checked_overrides(body.get("overrides"), errors)
    if "uuid" in fields and not is_uuid(fields["uuid"]):
        errors.append(f"uuid: {fields['uuid']!r} is not a UUID")
    if errors:
        raise _bad_request("Invalid device registration request", *errors)
    return fields, overrides


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
        raise _bad_request("Invalid csr: not a PEM certificate signing request", str(error)) from None
    if not csr.is_signature_valid:
        raise _bad_request("Invalid csr: its signature does not match its public key")
    if not isinstance(csr.public_key(), (ec.EllipticCurvePublicKey, rsa.RSAPublicKey, ed25519.Ed25519PublicKey)):
        raise _bad_request("Invalid csr: the key must be EC, RSA or Ed25519")
    subject = csr.subject
    units = [str(a.value) for a in subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)]
    if units != [factory]:
        raise _bad_request(
            "Invalid csr: the subject OU must equal the factory name",
            f"csr: OU is {', '.join(units) or '(none)'}, expected '{factory}'",
        )
    names = [str(a.value) for a in subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if names != [device_uuid]:
        raise _bad_request(
            "Invalid csr: the subject CN must be the device uuid",
            f"csr: CN is {', '.join(names) or '(none)'}, expected '{device_uuid}'",
        )
    categories = [str(a.value) for a in subject.get_attributes_for_oid(NameOID.BUSINESS_CATEGORY)]
    if categories not in ([], [PRODUCTION]):
        raise _bad_request(
            "Invalid csr: businessCategory may only be 'production'",
            f"csr: businessCategory is {', '.join(categories)}",
        )
    return csr


def sign_device_csr(csr: x509.CertificateSigningRequest, online_ca: OnlineCa, device_uuid: str) -> x509.Certificate:
    """The device certificate: the CSR's subject, signed by the online CA for 20 years."""
    ca_cert = x509.load_pem_x509_certificate(online_ca.cert_pem.encode("ascii"))
    ca_key = serialization.load_pem_private_key(online_ca.key_pem.encode("ascii"), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    now = datetime.now(timezone.utc)
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
        # Names the online CA's key, so a chain builder picks the right CA among same-named ones.
        .add_extension(_authority_key_id(ca_cert, ca_key), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _authority_key_id(ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey) -> x509.AuthorityKeyIdentifier:
    """The CA's own SKID when it has one (so the ids match byte for byte), else one from its key."""
    try:
        skid = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(skid)


def gateway_hosts(backend: Backend) -> tuple[str, str]:
    """(gateway host, OSTree host): the first two DNS names of tls-crt, as devices find them."""
    tls_crt = backend.store.certs().tls_crt
    if tls_crt:
        try:
            cert = x509.load_pem_x509_certificate(tls_crt.encode("ascii"))
            names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            dns_names = names.get_values_for_type(x509.DNSName)
        except (ValueError, x509.ExtensionNotFound):
            dns_names = []
        if len(dns_names) >= 2:
            return dns_names[0], dns_names[1]
    gateway_id = backend.factory.gateway_id
    return f"{gateway_id}.{GATEWAY_DOMAIN}", f"{gateway_id}.{OSTREE_DOMAIN}"
