"""The certificate profiles of the factory PKI (PKI-SPEC section 4), in one place.

Three jobs, all with `cryptography`:

- load: PEM text from a script, a file or the API into objects, refusing anything that is not
  exactly what was asked for (`load_cert`, `load_cert_bundle`, `load_csr`, `load_private_key`);
- check: an artifact against its profile, raising `CheckError(artifact, rule)` that names the
  one rule broken (`check_root`, `check_gateway_tls`, `check_device_ca`, `check_device_cert`,
  `check_key_matches`, `check_crl`);
- build: the same profiles in process (`build_root`, `sign_gateway_tls`, `sign_device_ca`,
  `sign_device_cert`, `build_crl`, ...), so a checked script result and an in-process result
  are interchangeable.

Signing keys are duck-typed: anything with `.public_key()` that `CertificateBuilder.sign`
accepts (a file key today, an HSM-backed key object later).

No message built here carries key material: key errors name the file and the rule only.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid as uuid_module
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from collections.abc import Iterable, Set
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import (
    ExtendedKeyUsageOID,
    ExtensionOID,
    NameOID,
    SignatureAlgorithmOID,
)

from fioca.errors import CheckError

# --- The profile constants (PKI-SPEC section 4) -------------------------------------------

ROOT_CN = "Factory-CA"
ROOT_DAYS = 7300
GATEWAY_TLS_DAYS = 3650
DEVICE_CA_DAYS = 3650
# lmp-device-register / registration server devices; offline devices get OpenSSL's 30 days.
REGISTERED_DEVICE_DAYS = 7300
OFFLINE_DEVICE_DAYS = 30
CRL_NEXT_UPDATE_MINUTES = 15

CURVE_NAME = "secp256r1"  # prime256v1, P-256
# A documented length may be off by a day (time zones, leap handling in other tools).
VALIDITY_SLACK = timedelta(days=1)
# How far apart the signer's clock and ours may be for "not yet valid" / "expired".
CLOCK_SKEW = timedelta(minutes=5)

PRODUCTION = "production"  # businessCategory value of a production device

# DER of ECParameters { namedCurve prime256v1 }: what `openssl ecparam -genkey` writes first.
_P256_EC_PARAMETERS_DER = bytes.fromhex("06082a8648ce3d030107")

# Extensions OpenSSL 3 adds by itself; every profile tolerates them.
_KEY_IDENTIFIERS = frozenset({ExtensionOID.SUBJECT_KEY_IDENTIFIER, ExtensionOID.AUTHORITY_KEY_IDENTIFIER})

# keyUsage bit names as `KeyUsage` attributes, in RFC 5280 order.
_KEY_USAGE_BITS = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
)
# ... and as OpenSSL's config file spells them (what users and PKI-SPEC read).
_KEY_USAGE_NAMES = {
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
_EKU_NAMES = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
    ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning",
}


# --- Loading ---------------------------------------------------------------------------------

_PEM_BLOCK = re.compile(
    r"-----BEGIN (?P<label>[A-Z0-9 ]+)-----\r?\n(?P<body>.*?)-----END (?P=label)-----", re.DOTALL
)
_CERT_LABEL = "CERTIFICATE"
_CSR_LABELS = ("CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST")
_KEY_LABELS = ("EC PRIVATE KEY", "PRIVATE KEY")


@dataclass(frozen=True)
class PemBlock:
    label: str
    der: bytes

    def pem(self) -> bytes:
        """The block re-encoded as canonical PEM (64-column base64)."""
        body = base64.encodebytes(self.der).decode("ascii").replace("\n", "")
        lines = [body[i : i + 64] for i in range(0, len(body), 64)]
        return ("\n".join([f"-----BEGIN {self.label}-----", *lines, f"-----END {self.label}-----"]) + "\n").encode()


def pem_blocks(pem: bytes | str, artifact: str) -> list[PemBlock]:
    """Split PEM text into its blocks; refuse non-text, stray text and broken base64."""
    if isinstance(pem, bytes):
        try:
            text = pem.decode("utf-8")
        except UnicodeDecodeError as error:
            raise CheckError(artifact, f"is not PEM text: invalid UTF-8 byte at offset {error.start}") from None
    elif isinstance(pem, str):
        text = pem
    else:
        raise CheckError(artifact, f"is not PEM text: got {type(pem).__name__}")
    if not text.isascii():
        position = next(i for i, char in enumerate(text) if not char.isascii())
        raise CheckError(artifact, f"is not PEM text: non-ASCII character at offset {position}")
    matches = list(_PEM_BLOCK.finditer(text))
    if not matches:
        raise CheckError(artifact, "is not PEM: no -----BEGIN ...----- / -----END ...----- block found")
    blocks: list[PemBlock] = []
    end_of_last = 0
    for match in matches:
        _refuse_stray_text(text[end_of_last : match.start()], artifact)
        end_of_last = match.end()
        label = match["label"]
        body = "".join(match["body"].split())
        try:
            der = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise CheckError(artifact, f"PEM block {label} has a broken base64 body") from None
        blocks.append(PemBlock(label, der))
    _refuse_stray_text(text[end_of_last:], artifact)
    return blocks


def pem_spans(text: str) -> list[tuple[int, int]]:
    """Where each PEM block of `text` starts and ends."""
    return [match.span() for match in _PEM_BLOCK.finditer(text)]


def pem_only(text: str) -> str:
    """`text` without what lies outside its PEM blocks, as fioctl skips it when it reads a
    bundle (the server's `ca-crt`, a file for `update`). Whitespace between blocks is kept,
    so a clean bundle comes back byte for byte; other text becomes one newline."""
    spans = pem_spans(text)
    if not spans:
        return ""
    kept = [text[spans[0][0] : spans[0][1]]]
    for (_, end), (start, stop) in zip(spans, spans[1:]):
        between = text[end:start]
        kept += [between if not between.strip() else "\n", text[start:stop]]
    tail = text[spans[-1][1] :]
    kept.append(tail if not tail.strip() else "\n")
    return "".join(kept)


def _refuse_stray_text(between: str, artifact: str) -> None:
    # openssl tolerates prose around blocks; a checker should not: it hides what was produced.
    stray = between.strip()
    if stray:
        raise CheckError(artifact, f"has text outside PEM blocks: {stray[:40]!r}")


def _one_block(blocks: list[PemBlock], labels: Iterable[str], artifact: str) -> PemBlock:
    labels = tuple(labels)
    wanted = " or ".join(labels)
    wrong = [block.label for block in blocks if block.label not in labels]
    if wrong:
        raise CheckError(artifact, f"must be a PEM {wanted}, got a {wrong[0]} block")
    if len(blocks) != 1:
        raise CheckError(artifact, f"must hold exactly one PEM {wanted} block, found {len(blocks)}")
    return blocks[0]


def _parse_cert(block: PemBlock, artifact: str) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(block.der)
    except ValueError as error:
        raise CheckError(artifact, f"CERTIFICATE block does not parse as X.509: {error}") from None


def load_cert(pem: bytes | str, artifact: str) -> x509.Certificate:
    """Exactly one PEM certificate."""
    block = _one_block(pem_blocks(pem, artifact), [_CERT_LABEL], artifact)
    return _parse_cert(block, artifact)


def load_cert_bundle(pem: bytes | str, artifact: str) -> list[x509.Certificate]:
    """One or more PEM certificates (`ca-crt`: PEMs joined with "\\n"), in file order."""
    blocks = pem_blocks(pem, artifact)
    wrong = [block.label for block in blocks if block.label != _CERT_LABEL]
    if wrong:
        raise CheckError(artifact, f"must hold only PEM CERTIFICATE blocks, got a {wrong[0]} block")
    return [_parse_cert(block, artifact) for block in blocks]


def load_csr(pem: bytes | str, artifact: str) -> x509.CertificateSigningRequest:
    """Exactly one PEM CSR whose self-signature verifies."""
    block = _one_block(pem_blocks(pem, artifact), _CSR_LABELS, artifact)
    try:
        csr = x509.load_der_x509_csr(block.der)
    except ValueError as error:
        raise CheckError(artifact, f"CERTIFICATE REQUEST block does not parse: {error}") from None
    try:
        valid = csr.is_signature_valid
    except UnsupportedAlgorithm:
        valid = False
    if not valid:
        raise CheckError(artifact, "CSR self-signature does not verify")
    return csr


def load_private_key(pem: bytes | str, artifact: str) -> ec.EllipticCurvePrivateKey:
    """One unencrypted P-256 private key (SEC1 or PKCS#8).

    A leading `EC PARAMETERS` block (what `openssl ecparam -genkey` without `-noout` writes)
    is accepted and skipped when it names prime256v1.
    """
    blocks = pem_blocks(pem, artifact)
    key_blocks = []
    for block in blocks:
        if block.label == "EC PARAMETERS":
            if block.der != _P256_EC_PARAMETERS_DER:
                raise CheckError(artifact, "EC PARAMETERS block must name prime256v1 (P-256)")
            continue
        if block.label == "ENCRYPTED PRIVATE KEY":
            raise CheckError(artifact, "private key is encrypted; fioca needs an unencrypted key file")
        key_blocks.append(block)
    if not key_blocks:
        raise CheckError(artifact, "holds no private key block (only EC PARAMETERS)")
    block = _one_block(key_blocks, _KEY_LABELS, artifact)
    try:
        # The error text of a key parser is dropped on purpose: it must never echo key bytes.
        key = serialization.load_der_private_key(block.der, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise CheckError(artifact, f"{block.label} block does not parse as a private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CheckError(artifact, f"private key must be EC P-256, got {_key_kind(key.public_key())}")
    if key.curve.name != CURVE_NAME:
        raise CheckError(artifact, f"private key must be EC P-256, got EC {key.curve.name}")
    return key


def load_crl(pem: bytes | str, artifact: str) -> x509.CertificateRevocationList:
    """Exactly one PEM `X509 CRL`."""
    block = _one_block(pem_blocks(pem, artifact), ["X509 CRL"], artifact)
    try:
        return x509.load_der_x509_crl(block.der)
    except ValueError as error:
        raise CheckError(artifact, f"X509 CRL block does not parse: {error}") from None


# --- Checks: small rules shared by the profiles ---------------------------------------------


def _utcnow(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(timezone.utc)


def _key_kind(public_key: Any) -> str:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return f"EC {public_key.curve.name}"
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"RSA {public_key.key_size}"
    return type(public_key).__name__.removeprefix("_")


def _spki_der(public_key: Any) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _check_p256(cert: x509.Certificate, artifact: str) -> None:
    try:
        public_key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as error:
        raise CheckError(artifact, f"public key must be EC P-256, got an unreadable key ({error})") from None
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != CURVE_NAME:
        raise CheckError(artifact, f"public key must be EC P-256 (prime256v1), got {_key_kind(public_key)}")


def _check_signature_algorithm(cert: x509.Certificate, artifact: str) -> None:
    oid = cert.signature_algorithm_oid
    if oid != SignatureAlgorithmOID.ECDSA_WITH_SHA256:
        raise CheckError(artifact, f"signature algorithm must be ecdsa-with-SHA256, got {oid._name}")


def _check_time(cert: x509.Certificate, artifact: str, now: datetime | None) -> None:
    moment = _utcnow(now)
    if cert.not_valid_before_utc > moment + CLOCK_SKEW:
        raise CheckError(artifact, f"is not yet valid: notBefore {cert.not_valid_before_utc.isoformat()}")
    if cert.not_valid_after_utc < moment - CLOCK_SKEW:
        raise CheckError(artifact, f"has expired: notAfter {cert.not_valid_after_utc.isoformat()}")


def _check_validity(cert: x509.Certificate, artifact: str, days: int, now: datetime | None) -> None:
    length = cert.not_valid_after_utc - cert.not_valid_before_utc
    if abs(length - timedelta(days=days)) > VALIDITY_SLACK:
        actual = length.total_seconds() / 86400
        raise CheckError(artifact, f"validity must be {days} days (±1), got {actual:g} days")
    _check_time(cert, artifact, now)


def _extension(
    cert: x509.Certificate | x509.CertificateSigningRequest, oid: x509.ObjectIdentifier
) -> x509.Extension | None:
    try:
        return cert.extensions.get_extension_for_oid(oid)
    except x509.ExtensionNotFound:
        return None


def _check_only_extensions(cert: x509.Certificate, artifact: str, allowed: Iterable[x509.ObjectIdentifier]) -> None:
    permitted = set(allowed) | _KEY_IDENTIFIERS
    extra = [ext.oid for ext in cert.extensions if ext.oid not in permitted]
    if extra:
        names = ", ".join(oid._name if oid._name != "Unknown OID" else oid.dotted_string for oid in extra)
        raise CheckError(artifact, f"has extension(s) its profile does not allow: {names}")


def key_usage_bits(usage: x509.KeyUsage) -> list[str]:
    """The keyUsage bits set, as `KeyUsage` attribute names in RFC 5280 order."""
    bits = [bit for bit in _KEY_USAGE_BITS if getattr(usage, bit)]
    if usage.key_agreement:
        # encipherOnly/decipherOnly only have a meaning (and a value) with keyAgreement.
        bits += [bit for bit in ("encipher_only", "decipher_only") if getattr(usage, bit)]
    return bits


def _key_usage_names(usage: x509.KeyUsage) -> list[str]:
    return [_KEY_USAGE_NAMES[bit] for bit in key_usage_bits(usage)]


def _check_key_usage(
    cert: x509.Certificate,
    artifact: str,
    *,
    required: Set[str],
    optional: Set[str] = frozenset(),
    critical: bool,
) -> None:
    """keyUsage holds every `required` bit, nothing beyond `optional`, and is critical if asked."""
    wanted = ", ".join(sorted(required)) + (f" (optionally + {', '.join(sorted(optional))})" if optional else "")
    extension = _extension(cert, ExtensionOID.KEY_USAGE)
    if extension is None:
        raise CheckError(artifact, f"keyUsage is missing; must be {'critical ' if critical else ''}{wanted}")
    names = set(_key_usage_names(extension.value))
    if critical and not extension.critical:
        raise CheckError(artifact, f"keyUsage must be critical {wanted}, got non-critical")
    if not required <= names or not names <= set(required) | set(optional):
        raise CheckError(artifact, f"keyUsage must be {wanted}, got {', '.join(sorted(names)) or 'none'}")


def _check_eku(cert: x509.Certificate, artifact: str, expected: list[x509.ObjectIdentifier]) -> None:
    """extendedKeyUsage is critical and holds exactly `expected` (any order, no repeats)."""
    wanted = "+".join(_EKU_NAMES.get(oid, oid.dotted_string) for oid in expected)
    extension = _extension(cert, ExtensionOID.EXTENDED_KEY_USAGE)
    if extension is None:
        raise CheckError(artifact, f"extendedKeyUsage is missing; must be critical {wanted} only")
    purposes = list(extension.value)
    got = ", ".join(_EKU_NAMES.get(oid, oid.dotted_string) for oid in purposes) or "none"
    if len(purposes) != len(set(purposes)) or set(purposes) != set(expected):
        raise CheckError(artifact, f"extendedKeyUsage must be critical {wanted} only, got {got}")
    if not extension.critical:
        raise CheckError(artifact, f"extendedKeyUsage must be critical {wanted} only, got non-critical {got}")


def _check_not_ca(cert: x509.Certificate, artifact: str) -> None:
    # Leaf profiles carry no basicConstraints; an explicit CA:FALSE says the same and is allowed.
    extension = _extension(cert, ExtensionOID.BASIC_CONSTRAINTS)
    if extension is not None and extension.value.ca:
        raise CheckError(artifact, "must not be a CA, got basicConstraints CA:TRUE")


def _check_issued_by(cert: x509.Certificate, issuer: x509.Certificate, artifact: str, issuer_role: str) -> None:
    """Issuer name matches, the signature verifies with the issuer's key, AKID (if any) matches."""
    if cert.issuer != issuer.subject:
        raise CheckError(
            artifact,
            f"must be issued by the {issuer_role} {name_text(issuer.subject)}, got issuer {name_text(cert.issuer)}",
        )
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        raise CheckError(
            artifact, f"signature does not verify with the {issuer_role}'s key (signed by a different key?)"
        ) from None
    akid = _extension(cert, ExtensionOID.AUTHORITY_KEY_IDENTIFIER)
    if akid is not None and akid.value.key_identifier is not None:
        if akid.value.key_identifier != subject_key_identifier(issuer):
            raise CheckError(
                artifact, f"authorityKeyIdentifier does not match the {issuer_role}'s subjectKeyIdentifier"
            )


def subject_key_identifier(cert: x509.Certificate) -> bytes:
    """The cert's SKID, or the RFC 5280 method-1 hash of its key when it has none."""
    extension = _extension(cert, ExtensionOID.SUBJECT_KEY_IDENTIFIER)
    if extension is not None:
        return extension.value.digest
    return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest


def _single_attribute(name: x509.Name, oid: x509.ObjectIdentifier, label: str, artifact: str) -> str:
    values = name.get_attributes_for_oid(oid)
    if len(values) != 1:
        raise CheckError(artifact, f"subject must have exactly one {label}, got {len(values)}")
    return str(values[0].value)


def _check_subject_attributes(name: x509.Name, artifact: str, allowed: set[x509.ObjectIdentifier]) -> None:
    extra = [attribute for attribute in name if attribute.oid not in allowed]
    if extra:
        listed = ", ".join(attribute.rfc4514_string() for attribute in extra)
        raise CheckError(artifact, f"subject has attribute(s) the profile does not allow: {listed}")


def _check_ou(name: x509.Name, factory: str, artifact: str) -> None:
    ou = _single_attribute(name, NameOID.ORGANIZATIONAL_UNIT_NAME, "OU", artifact)
    if ou != factory:
        raise CheckError(artifact, f"subject OU must be the factory name {factory!r}, got {ou!r}")


def _dns_names(extensions: x509.Extensions, artifact: str) -> list[str]:
    try:
        san = extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    except x509.ExtensionNotFound:
        return []
    others = [type(name).__name__ for name in san.value if not isinstance(name, x509.DNSName)]
    if others:
        raise CheckError(artifact, f"subjectAltName must hold DNS names only, got {', '.join(others)}")
    return san.value.get_values_for_type(x509.DNSName)


def _san_names(extensions: x509.Extensions) -> list[x509.GeneralName]:
    """Every subjectAltName entry, in order (DNS, IP, URI, email: what `keys ca sign` copies)."""
    try:
        return list(extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value)
    except x509.ExtensionNotFound:
        return []


def _san_text(names: list[x509.GeneralName]) -> str:
    return ", ".join(str(name.value) for name in names) or "none"


# A host name as a device dials it: dot-separated LDH labels, no wildcard, no trailing dot.
_HOST_NAME = re.compile(r"(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+", re.I)


def check_server_csr(csr: x509.CertificateSigningRequest, *, gateway: bool, artifact: str) -> None:
    """A CSR the server sends for the root to sign (tls-csr, ca-csr), before any script runs:
    a P-256 key and, for the gateway, DNS host names only (the names devices will trust)."""
    try:
        key = csr.public_key()
        extensions = csr.extensions
    except (ValueError, UnsupportedAlgorithm) as error:
        raise CheckError(artifact, f"CSR does not parse: {error}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != CURVE_NAME:
        raise CheckError(artifact, f"public key must be EC P-256, got {_key_kind(key)}")
    if not gateway:
        return
    names = _dns_names(extensions, artifact)
    if not names:
        raise CheckError(artifact, "has no DNS names in subjectAltName")
    for name in names:
        if not _HOST_NAME.fullmatch(name):
            raise CheckError(artifact, f"subjectAltName {name!r} is not a host name")


# --- Checks: the profiles ------------------------------------------------------------------


def check_root(
    cert: x509.Certificate, *, factory: str, now: datetime | None = None, artifact: str = "root-crt"
) -> None:
    """The factory root of trust: self-signed CN=Factory-CA, OU=<factory>, 7300 days."""
    _check_subject_attributes(cert.subject, artifact, {NameOID.COMMON_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME})
    cn = _single_attribute(cert.subject, NameOID.COMMON_NAME, "CN", artifact)
    if cn != ROOT_CN:
        raise CheckError(artifact, f"subject CN must be {ROOT_CN!r}, got {cn!r}")
    _check_ou(cert.subject, factory, artifact)
    _check_p256(cert, artifact)
    _check_signature_algorithm(cert, artifact)
    if cert.issuer != cert.subject:
        raise CheckError(artifact, f"must be self-signed, got issuer {name_text(cert.issuer)}")
    try:
        cert.verify_directly_issued_by(cert)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        raise CheckError(artifact, "must be self-signed, but its signature does not verify with its own key") from None
    _check_validity(cert, artifact, ROOT_DAYS, now)
    _check_only_extensions(
        cert,
        artifact,
        [ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE, ExtensionOID.EXTENDED_KEY_USAGE],
    )
    constraints = _extension(cert, ExtensionOID.BASIC_CONSTRAINTS)
    if constraints is None or not constraints.value.ca:
        raise CheckError(artifact, "basicConstraints must be CA:TRUE")
    # The script writes keyUsage non-critical; cRLSign was added in 2023, so it is optional.
    _check_key_usage(cert, artifact, required={"keyCertSign"}, optional={"cRLSign"}, critical=False)
    _check_eku(cert, artifact, [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH])
    if _extension(cert, ExtensionOID.SUBJECT_KEY_IDENTIFIER) is None:
        raise CheckError(artifact, "subjectKeyIdentifier is missing")


def check_gateway_tls(
    cert: x509.Certificate,
    *,
    root: x509.Certificate,
    csr: x509.CertificateSigningRequest,
    now: datetime | None = None,
    artifact: str = "tls-crt",
) -> None:
    """The device gateway's server cert: the CSR's subject, key and DNS names, signed by the root."""
    _check_issued_by(cert, root, artifact, "root")
    if _spki_der(cert.public_key()) != _spki_der(csr.public_key()):
        raise CheckError(artifact, "public key does not match the tls-csr's public key")
    if cert.subject != csr.subject:
        raise CheckError(
            artifact, f"subject must be the tls-csr's {name_text(csr.subject)}, got {name_text(cert.subject)}"
        )
    _check_p256(cert, artifact)
    _check_signature_algorithm(cert, artifact)
    _check_validity(cert, artifact, GATEWAY_TLS_DAYS, now)
    _check_only_extensions(
        cert,
        artifact,
        [
            ExtensionOID.KEY_USAGE,
            ExtensionOID.EXTENDED_KEY_USAGE,
            ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
            ExtensionOID.BASIC_CONSTRAINTS,  # only as CA:FALSE, checked below
        ],
    )
    wanted_names = _san_names(csr.extensions)
    names = _san_names(cert.extensions)
    if names != wanted_names:
        kind = "DNS names " if all(isinstance(name, x509.DNSName) for name in [*names, *wanted_names]) else ""
        raise CheckError(
            artifact,
            f"subjectAltName {kind}must be the tls-csr's {_san_text(wanted_names)} (same order), got {_san_text(names)}",
        )
    if not names:
        raise CheckError(artifact, "subjectAltName must hold the gateway's DNS names, got none")
    # Older scripts also set keyEncipherment and keyAgreement.
    _check_key_usage(
        cert, artifact, required={"digitalSignature"}, optional={"keyEncipherment", "keyAgreement"}, critical=True
    )
    _check_eku(cert, artifact, [ExtendedKeyUsageOID.SERVER_AUTH])
    _check_not_ca(cert, artifact)


def check_device_ca(
    cert: x509.Certificate,
    *,
    root: x509.Certificate,
    factory: str,
    csr: x509.CertificateSigningRequest | None = None,
    expected_cn: str | None = None,
    now: datetime | None = None,
    artifact: str = "ca-crt",
) -> None:
    """An online or local device CA: OU=<factory>, CA:TRUE pathlen:0, 3650 days, signed by the root."""
    _check_issued_by(cert, root, artifact, "root")
    _check_ou(cert.subject, factory, artifact)
    cn = _single_attribute(cert.subject, NameOID.COMMON_NAME, "CN", artifact)
    if expected_cn is not None and cn != expected_cn:
        raise CheckError(artifact, f"subject CN must be {expected_cn!r}, got {cn!r}")
    if csr is not None:
        if cert.subject != csr.subject:
            raise CheckError(
                artifact, f"subject must be the CSR's {name_text(csr.subject)}, got {name_text(cert.subject)}"
            )
        if _spki_der(cert.public_key()) != _spki_der(csr.public_key()):
            raise CheckError(artifact, "public key does not match the CSR's public key")
    _check_p256(cert, artifact)
    _check_signature_algorithm(cert, artifact)
    _check_validity(cert, artifact, DEVICE_CA_DAYS, now)
    _check_only_extensions(cert, artifact, [ExtensionOID.KEY_USAGE, ExtensionOID.BASIC_CONSTRAINTS])
    _check_key_usage(cert, artifact, required={"keyCertSign"}, critical=True)
    constraints = _extension(cert, ExtensionOID.BASIC_CONSTRAINTS)
    if constraints is None:
        raise CheckError(artifact, "basicConstraints is missing; must be critical CA:TRUE, pathlen:0")
    if not constraints.value.ca:
        raise CheckError(artifact, "basicConstraints must be CA:TRUE, got CA:FALSE")
    if not constraints.critical:
        raise CheckError(artifact, "basicConstraints must be critical CA:TRUE, pathlen:0, got non-critical")
    if constraints.value.path_length != 0:
        got = "missing" if constraints.value.path_length is None else str(constraints.value.path_length)
        raise CheckError(artifact, f"basicConstraints pathlen must be 0, got {got}")


def check_device_cert(
    cert: x509.Certificate,
    *,
    ca: x509.Certificate,
    factory: str,
    uuid: str | None = None,
    now: datetime | None = None,
    artifact: str = "client.pem",
) -> None:
    """A device's client cert: CN=<uuid>, OU=<factory>, clientAuth, signed by a device CA."""
    if uuid is not None:
        try:
            uuid_module.UUID(uuid)
        except ValueError:
            raise ValueError(f"expected device UUID {uuid!r} is not a UUID") from None
    _check_issued_by(cert, ca, artifact, "device CA")
    _check_subject_attributes(
        cert.subject, artifact, {NameOID.COMMON_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME, NameOID.BUSINESS_CATEGORY}
    )
    cn = _single_attribute(cert.subject, NameOID.COMMON_NAME, "CN", artifact)
    if uuid is not None and cn != uuid:
        raise CheckError(artifact, f"subject CN must be the device UUID {uuid!r}, got {cn!r}")
    if not cn.strip():
        raise CheckError(artifact, "subject CN (the device UUID) is empty")
    _check_ou(cert.subject, factory, artifact)
    for category in cert.subject.get_attributes_for_oid(NameOID.BUSINESS_CATEGORY):
        if category.value != PRODUCTION:
            raise CheckError(artifact, f"subject businessCategory may only be {PRODUCTION!r}, got {category.value!r}")
    _check_p256(cert, artifact)
    _check_signature_algorithm(cert, artifact)
    if cert.not_valid_after_utc <= cert.not_valid_before_utc:
        raise CheckError(artifact, "notAfter must be later than notBefore")
    # No fixed length: 30 days (offline procedure) and 7300 (registration) are both in use.
    _check_time(cert, artifact, now)
    _check_only_extensions(
        cert,
        artifact,
        [ExtensionOID.KEY_USAGE, ExtensionOID.EXTENDED_KEY_USAGE, ExtensionOID.BASIC_CONSTRAINTS],
    )
    # The offline procedure sets keyAgreement too; registration sets digitalSignature only.
    _check_key_usage(cert, artifact, required={"digitalSignature"}, optional={"keyAgreement"}, critical=True)
    _check_eku(cert, artifact, [ExtendedKeyUsageOID.CLIENT_AUTH])
    _check_not_ca(cert, artifact)


def check_key_matches(key: Any, cert: x509.Certificate, artifact: str) -> None:
    """The private key (or anything with `.public_key()`) belongs to the certificate."""
    if _spki_der(key.public_key()) != _spki_der(cert.public_key()):
        raise CheckError(artifact, f"private key does not belong to the certificate {name_text(cert.subject)}")


def check_crl(
    crl: x509.CertificateRevocationList, *, root: x509.Certificate, artifact: str = "ca-revoke-crl"
) -> None:
    """A CRL issued by the root, ECDSA-SHA256, every entry with a reason code."""
    if crl.issuer != root.subject:
        raise CheckError(artifact, f"must be issued by the root {name_text(root.subject)}, got {name_text(crl.issuer)}")
    if not crl.is_signature_valid(root.public_key()):  # type: ignore[arg-type]
        raise CheckError(artifact, "signature does not verify with the root's key")
    if crl.signature_algorithm_oid != SignatureAlgorithmOID.ECDSA_WITH_SHA256:
        got = crl.signature_algorithm_oid._name
        raise CheckError(artifact, f"signature algorithm must be ecdsa-with-SHA256, got {got}")
    for entry in crl:
        if crl_reason(entry) is None:
            raise CheckError(artifact, f"entry for serial {entry.serial_number} has no reason code")


def crl_reason(entry: x509.RevokedCertificate) -> x509.ReasonFlags | None:
    try:
        return entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        return None


# --- Facts ---------------------------------------------------------------------------------


def fingerprint_sha256(cert: x509.Certificate) -> str:
    """As `openssl x509 -fingerprint -sha256` prints it: AB:CD:..."""
    return ":".join(f"{byte:02X}" for byte in cert.fingerprint(hashes.SHA256()))


def gateway_hosts(cert: x509.Certificate) -> list[str]:
    """The SAN DNS names in certificate order: gateway host first, OSTree host second."""
    try:
        san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    except x509.ExtensionNotFound:
        return []
    return san.value.get_values_for_type(x509.DNSName)


def serial_decimal(cert: x509.Certificate) -> str:
    """The serial in base 10, as `disabled-ca-serials` and `--ca-serial` write it."""
    return str(cert.serial_number)


def _first_attribute(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    values = name.get_attributes_for_oid(oid)
    return str(values[0].value) if values else None


def subject_ou(cert: x509.Certificate) -> str | None:
    return _first_attribute(cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME)


def subject_cn(cert: x509.Certificate) -> str | None:
    return _first_attribute(cert.subject, NameOID.COMMON_NAME)


def is_ca(cert: x509.Certificate) -> bool:
    extension = _extension(cert, ExtensionOID.BASIC_CONSTRAINTS)
    return bool(extension is not None and extension.value.ca)


def name_text(name: x509.Name) -> str:
    """A name in certificate order, `CN=Factory-CA,OU=acme` (as fioctl and OpenSSL show it)."""
    return ",".join(attribute.rfc4514_string() for attribute in name)


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


def csr_asks_for_ca(csr: x509.CertificateSigningRequest) -> bool:
    """True when the CSR requests basicConstraints CA:TRUE (`sign` then uses the CA profile)."""
    extension = _extension(csr, ExtensionOID.BASIC_CONSTRAINTS)
    return bool(extension is not None and extension.value.ca)


# --- Builders: the same profiles in process ------------------------------------------------


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh P-256 key, like `openssl ecparam -genkey -name prime256v1`."""
    return ec.generate_private_key(ec.SECP256R1())


def _start(now: datetime | None) -> datetime:
    # Certificates carry whole seconds; dropping microseconds keeps lengths exact.
    return _utcnow(now).replace(microsecond=0)


def _authority_key_identifier(issuer_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    return x509.AuthorityKeyIdentifier(subject_key_identifier(issuer_cert), None, None)


def _subject_name(*attributes: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes])


def _verified_csr(csr: x509.CertificateSigningRequest, artifact: str) -> x509.CertificateSigningRequest:
    if not csr.is_signature_valid:
        raise CheckError(artifact, "CSR self-signature does not verify")
    return csr


def _issued_for_csr(
    csr: x509.CertificateSigningRequest, *, issuer: x509.Certificate, start: datetime, days: int
) -> x509.CertificateBuilder:
    """The part every CSR-signing profile shares: the CSR's subject and key, issued by `issuer`,
    a fresh random serial, valid `days` from `start`. The caller adds the profile's extensions."""
    return (
        x509.CertificateBuilder()
        .subject_name(csr.subject)  # copied from the CSR
        .issuer_name(issuer.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
    )


def build_root(key: Any, *, factory: str, now: datetime | None = None) -> x509.Certificate:
    """The factory root of trust, as `create_ca` makes it."""
    start = _start(now)
    name = _subject_name((NameOID.COMMON_NAME, ROOT_CN), (NameOID.ORGANIZATIONAL_UNIT_NAME, factory))
    public_key = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)  # self-signed
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=ROOT_DAYS))
        # basicConstraints = CA:TRUE (non-critical, as create_ca writes it)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=False)
        # keyUsage = keyCertSign, cRLSign (non-critical)
        .add_extension(key_usage(key_cert_sign=True, crl_sign=True), critical=False)
        # extendedKeyUsage = critical, clientAuth, serverAuth
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]), critical=True
        )
        # subjectKeyIdentifier = hash
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    return builder.sign(key, hashes.SHA256())


def sign_gateway_tls(
    csr: x509.CertificateSigningRequest, *, root_cert: x509.Certificate, root_key: Any, now: datetime | None = None
) -> x509.Certificate:
    """The gateway server cert for `tls-csr`, as `sign_tls_csr` makes it. The CSR's names are
    copied as they are: DNS names for the gateway (checked before), also IP, URI and email
    names for `keys ca sign`, as fioctl copies them."""
    _verified_csr(csr, "tls-csr")
    san_names = _san_names(csr.extensions)
    if not san_names:
        raise CheckError("tls-csr", "has no DNS names in subjectAltName")
    builder = (
        _issued_for_csr(csr, issuer=root_cert, start=_start(now), days=GATEWAY_TLS_DAYS)
        # keyUsage = critical, digitalSignature
        .add_extension(key_usage(digital_signature=True), critical=True)
        # extendedKeyUsage = critical, serverAuth
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=True)
        # subjectAltName = the CSR's names, same order
        .add_extension(x509.SubjectAlternativeName(san_names), critical=False)
        # authorityKeyIdentifier = keyid
        .add_extension(_authority_key_identifier(root_cert), critical=False)
        # subjectKeyIdentifier (OpenSSL 3 adds it by itself)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(csr.public_key()), critical=False)
    )
    return builder.sign(root_key, hashes.SHA256())


def sign_device_ca(
    csr: x509.CertificateSigningRequest, *, root_cert: x509.Certificate, root_key: Any, now: datetime | None = None
) -> x509.Certificate:
    """A device CA (online or local) for a CSR, as `sign_ca_csr` / `create_device_ca` make it."""
    _verified_csr(csr, "ca-csr")
    builder = (
        _issued_for_csr(csr, issuer=root_cert, start=_start(now), days=DEVICE_CA_DAYS)
        # keyUsage = critical, keyCertSign
        .add_extension(key_usage(key_cert_sign=True), critical=True)
        # basicConstraints = critical, CA:TRUE, pathlen:0
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        # subjectKeyIdentifier and authorityKeyIdentifier (OpenSSL 3 adds both by itself)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(csr.public_key()), critical=False)
        .add_extension(_authority_key_identifier(root_cert), critical=False)
    )
    return builder.sign(root_key, hashes.SHA256())


def build_device_ca_csr(key: Any, *, cn: str, factory: str) -> x509.CertificateSigningRequest:
    """A device CA's CSR: CN=<cn>, OU=<factory>, asking for CA:TRUE pathlen:0."""
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_subject_name((NameOID.COMMON_NAME, cn), (NameOID.ORGANIZATIONAL_UNIT_NAME, factory)))
        # basicConstraints requested, so `sign` can tell a CA CSR from a server CSR
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
    )
    return builder.sign(key, hashes.SHA256())


def build_device_csr(
    key: Any, *, uuid: str, factory: str, production: bool = False
) -> x509.CertificateSigningRequest:
    """A device's CSR as lmp-device-register makes it: CN=<uuid>, OU=<factory> [, businessCategory]."""
    attributes = [(NameOID.COMMON_NAME, uuid), (NameOID.ORGANIZATIONAL_UNIT_NAME, factory)]
    if production:
        attributes.append((NameOID.BUSINESS_CATEGORY, PRODUCTION))
    builder = x509.CertificateSigningRequestBuilder().subject_name(_subject_name(*attributes))
    return builder.sign(key, hashes.SHA256())


def sign_device_cert(
    csr: x509.CertificateSigningRequest,
    *,
    ca_cert: x509.Certificate,
    ca_key: Any,
    days: int,
    key_usage_agreement: bool = True,
    now: datetime | None = None,
) -> x509.Certificate:
    """A device client cert; `key_usage_agreement` follows the offline procedure (registration: False)."""
    _verified_csr(csr, "device CSR")
    builder = (
        # subject CN=<uuid>, OU=<factory> [, businessCategory=production], from the CSR
        _issued_for_csr(csr, issuer=ca_cert, start=_start(now), days=days)
        # keyUsage = critical, digitalSignature [, keyAgreement]
        .add_extension(key_usage(digital_signature=True, key_agreement=key_usage_agreement), critical=True)
        # extendedKeyUsage = critical, clientAuth
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=True)
        # authorityKeyIdentifier = keyid (chain building on the gateway)
        .add_extension(_authority_key_identifier(ca_cert), critical=False)
    )
    return builder.sign(ca_key, hashes.SHA256())


def build_crl(
    *,
    root_cert: x509.Certificate,
    root_key: Any,
    serials_reasons: list[tuple[int, x509.ReasonFlags]],
    next_update_minutes: int = CRL_NEXT_UPDATE_MINUTES,
    now: datetime | None = None,
) -> x509.CertificateRevocationList:
    """A CRL signed by the root: certificateHold = disable, removeFromCRL = re-enable, else revoke."""
    start = _start(now)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(root_cert.subject)
        .last_update(start)
        .next_update(start + timedelta(minutes=next_update_minutes))
        # cRLNumber: seconds since the epoch, so a later CRL has a larger number
        .add_extension(x509.CRLNumber(int(start.timestamp())), critical=False)
        # authorityKeyIdentifier = the root's key
        .add_extension(_authority_key_identifier(root_cert), critical=False)
    )
    for serial, reason in serials_reasons:
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(start)
            # reasonCode: what the backend acts on
            .add_extension(x509.CRLReason(reason), critical=False)
            .build()
        )
        builder = builder.add_revoked_certificate(entry)
    return builder.sign(root_key, hashes.SHA256())


def key_usage(
    *,
    digital_signature: bool = False,
    key_agreement: bool = False,
    key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    """A keyUsage with only the named bits set (the bits fioca's profiles use)."""
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=key_agreement,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


# --- PEM ---------------------------------------------------------------------------------------


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def certs_pem(certs: Iterable[x509.Certificate]) -> bytes:
    """A bundle as `ca-crt` holds it: PEMs joined with "\\n"."""
    return b"\n".join(cert_pem(cert) for cert in certs)


def csr_pem(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(serialization.Encoding.PEM)


def crl_pem(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.PEM)


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Unencrypted SEC1 `EC PRIVATE KEY`, what `openssl ecparam -genkey -noout` writes."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
