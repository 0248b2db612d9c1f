"""Reading facts off certificates, CSRs and keys: names, key identifiers, usages, summaries.

Small pure functions every tier and builder shares, and that the CLI prints from. Nothing
here decides whether a certificate is good.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from fioca import facts

CURVE_NAME = facts.CURVE_SEC  # prime256v1, P-256, as `cryptography` names it

# RFC 5280 reasonCode values, as `cryptography` names them (7 is unused); the backend acts on
# facts.CRL_REASON_CODES among them.
REASON_CODES = {
    x509.ReasonFlags.unspecified: 0,
    x509.ReasonFlags.key_compromise: 1,
    x509.ReasonFlags.ca_compromise: 2,
    x509.ReasonFlags.affiliation_changed: 3,
    x509.ReasonFlags.superseded: 4,
    x509.ReasonFlags.cessation_of_operation: 5,
    x509.ReasonFlags.certificate_hold: 6,
    x509.ReasonFlags.remove_from_crl: 8,
    x509.ReasonFlags.privilege_withdrawn: 9,
    x509.ReasonFlags.aa_compromise: 10,
}
REASON_FLAGS = {code: flag for flag, code in REASON_CODES.items()}
PRODUCTION = facts.PRODUCTION  # businessCategory value of a production device

# keyUsage bit names as `KeyUsage` attributes, in RFC 5280 order ...
KEY_USAGE_BITS = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)
# ... and as OpenSSL's config files spell them (what the scripts write and users read).
KEY_USAGE_NAMES = {
    "digital_signature": "digitalSignature",
    "content_commitment": "nonRepudiation",
    "key_encipherment": "keyEncipherment",
    "data_encipherment": "dataEncipherment",
    "key_agreement": "keyAgreement",
    "key_cert_sign": "keyCertSign",
    "crl_sign": "cRLSign",
    "encipher_only": "encipherOnly",
    "decipher_only": "decipherOnly",
}
EKU_NAMES = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
    ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning",
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE: "anyExtendedKeyUsage",
}


# --- Keys -------------------------------------------------------------------------------------


def key_kind(public_key: Any) -> str:
    """`EC secp256r1`, `RSA 2048`, `Ed25519PublicKey`: what a message names a key by."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return f"EC {public_key.curve.name}"
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"RSA {public_key.key_size}"
    return type(public_key).__name__.removeprefix("_")


def spki_der(public_key: Any) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def same_key(a: Any, b: Any) -> bool:
    """Two public keys (or anything with `.public_key()`) are the same key."""
    a = a.public_key() if hasattr(a, "public_key") else a
    b = b.public_key() if hasattr(b, "public_key") else b
    return spki_der(a) == spki_der(b)


def _subject_public_key_bits(public_key: Any) -> bytes:
    """The BIT STRING subjectPublicKey's contents, what RFC 5280 4.2.1.2 hashes."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return public_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    if isinstance(public_key, rsa.RSAPublicKey):
        return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    if isinstance(public_key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    raise ValueError(f"no key identifier method for a {key_kind(public_key)} key")


def key_id_sha1(public_key: Any) -> bytes:
    """RFC 5280 4.2.1.2 method 1: SHA-1 of the key, as OpenSSL's `hash` and Go before 1.25 make it."""
    return hashlib.sha1(_subject_public_key_bits(public_key)).digest()


def key_id_sha256(public_key: Any) -> bytes:
    """RFC 7093 section 2 method 1: SHA-256 of the key cut to 160 bits, as Go makes it from 1.25."""
    return hashlib.sha256(_subject_public_key_bits(public_key)).digest()[:20]


KEY_ID_METHODS = {"sha1": key_id_sha1, "sha256-160": key_id_sha256}


# --- Extensions -------------------------------------------------------------------------------


def extension(
    item: x509.Certificate | x509.CertificateSigningRequest, oid: x509.ObjectIdentifier
) -> x509.Extension | None:
    try:
        return item.extensions.get_extension_for_oid(oid)
    except x509.ExtensionNotFound:
        return None


def key_usage_bits(usage: x509.KeyUsage) -> list[str]:
    """The keyUsage bits set, as `KeyUsage` attribute names in RFC 5280 order."""
    bits = [bit for bit in KEY_USAGE_BITS[:7] if getattr(usage, bit)]
    if usage.key_agreement:
        # encipherOnly/decipherOnly only have a meaning (and a value) with keyAgreement.
        bits += [bit for bit in KEY_USAGE_BITS[7:] if getattr(usage, bit)]
    return bits


def key_usage_names(usage: x509.KeyUsage) -> list[str]:
    return [KEY_USAGE_NAMES[bit] for bit in key_usage_bits(usage)]


def eku_names(purposes: x509.ExtendedKeyUsage) -> list[str]:
    return [EKU_NAMES.get(oid, oid.dotted_string) for oid in purposes]


def subject_key_identifier(cert: x509.Certificate) -> bytes | None:
    """The certificate's subjectKeyIdentifier, or None when it has none."""
    found = extension(cert, ExtensionOID.SUBJECT_KEY_IDENTIFIER)
    return found.value.digest if found is not None else None


def is_ca(cert: x509.Certificate) -> bool:
    found = extension(cert, ExtensionOID.BASIC_CONSTRAINTS)
    return bool(found is not None and found.value.ca)


def csr_asks_for_ca(csr: x509.CertificateSigningRequest) -> bool:
    """True when the CSR requests basicConstraints CA:TRUE (`sign` then uses the CA profile)."""
    found = extension(csr, ExtensionOID.BASIC_CONSTRAINTS)
    return bool(found is not None and found.value.ca)


def general_names(item: x509.Certificate | x509.CertificateSigningRequest) -> list[x509.GeneralName]:
    """Every subjectAltName entry, in order ([] without the extension)."""
    found = extension(item, ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    return list(found.value) if found is not None else []


def gateway_hosts(cert: x509.Certificate) -> list[str]:
    """The SAN DNS names in certificate order: gateway host first, OSTree host second."""
    return [name.value for name in general_names(cert) if isinstance(name, x509.DNSName)]


def general_name_text(name: x509.GeneralName) -> str:
    prefix = {x509.DNSName: "DNS", x509.IPAddress: "IP", x509.RFC822Name: "email",
              x509.UniformResourceIdentifier: "URI"}.get(type(name), type(name).__name__)  # fmt: skip
    return f"{prefix}:{name.value}"


# --- Names and summaries ----------------------------------------------------------------------


def name_text(name: x509.Name) -> str:
    """A name in certificate order, `CN=Factory-CA,OU=acme` (as fioctl and OpenSSL show it)."""
    return ",".join(attribute.rfc4514_string() for attribute in name)


def _first_attribute(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    values = name.get_attributes_for_oid(oid)
    return str(values[0].value) if values else None


def subject_ou(item: x509.Certificate | x509.CertificateSigningRequest) -> str | None:
    return _first_attribute(item.subject, NameOID.ORGANIZATIONAL_UNIT_NAME)


def subject_cn(item: x509.Certificate | x509.CertificateSigningRequest) -> str | None:
    return _first_attribute(item.subject, NameOID.COMMON_NAME)


def fingerprint_sha256(cert: x509.Certificate) -> str:
    """As `openssl x509 -fingerprint -sha256` prints it: AB:CD:..."""
    return ":".join(f"{byte:02X}" for byte in cert.fingerprint(hashes.SHA256()))


def serial_decimal(cert: x509.Certificate) -> str:
    """The serial in base 10, as `disabled-ca-serials` and `--ca-serial` write it."""
    return str(cert.serial_number)


def validity(cert: x509.Certificate) -> timedelta:
    """notAfter - notBefore."""
    return cert.not_valid_after_utc - cert.not_valid_before_utc


def describe(cert: x509.Certificate) -> dict[str, Any]:
    """The facts summaries and `--format json` print about one certificate."""
    return {
        "subject": name_text(cert.subject),
        "issuer": name_text(cert.issuer),
        "serial": serial_decimal(cert),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "fingerprint": fingerprint_sha256(cert),
        "is_ca": is_ca(cert),
    }
