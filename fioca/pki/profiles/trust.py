"""The trust tier: what breaks trust or a backend rule, whoever made the certificate.

Every rule here is one a verifier (OpenSSL on a device, Go in the gateway) or the Factory
backend (PKI-SPEC section 2) enforces, so a certificate that fails one does not work:

- the chain: the issuer's name, its signature, an authorityKeyIdentifier that points at it;
- key matches: a key and its certificate, a certificate and its CSR;
- purposes: a CA is CA:TRUE with keyCertSign and no extendedKeyUsage that shuts out the
  certificates below it; the gateway is no CA, serverAuth, digitalSignature, with its CSR's
  names; a device is no CA, clientAuth, digitalSignature;
- the factory: the OU of the root and of every device CA (and device) is the factory name;
- weak crypto (RSA < 2048, curves < 224 bits, MD5 or SHA-1 signatures), unknown critical
  extensions, and a certificate expired or not yet valid.

What only tells one maker from another (exact days, criticality of extendedKeyUsage, a
subjectKeyIdentifier, the serial's style, extra keyUsage bits) is never refused here:
`named.recognise` reports it. Each check raises `CheckError(artifact, rule)` for the first
rule broken.
"""

from __future__ import annotations

import re
import uuid as uuid_module
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from fioca import facts
from fioca.errors import CheckError
from fioca.pki.profiles.details import (
    CURVE_NAME,
    PRODUCTION,
    eku_names,
    extension,
    general_name_text,
    general_names,
    key_kind,
    key_usage_names,
    name_text,
    same_key,
    subject_key_identifier,
)

CLOCK_SKEW = timedelta(minutes=facts.CLOCK_SKEW_MINUTES)

# Critical extensions both OpenSSL and Go understand; any other critical one makes them refuse
# the certificate ("unhandled critical extension").
UNDERSTOOD_CRITICAL = frozenset(
    {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.NAME_CONSTRAINTS,
        ExtensionOID.CERTIFICATE_POLICIES,
        ExtensionOID.CRL_DISTRIBUTION_POINTS,
    }
)


def _utcnow(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


# --- Small rules ------------------------------------------------------------------------------


def check_strong_key(public_key: Any, artifact: str) -> None:
    """Refuse keys every verifier treats as weak (RSA < 2048 bits, curves < 224 bits, DSA)."""
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < facts.MIN_RSA_BITS:
            raise CheckError(
                artifact,
                f"public key RSA {public_key.key_size} is too weak (RSA needs {facts.MIN_RSA_BITS} bits or more)",
            )
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.key_size < facts.MIN_EC_BITS:
            raise CheckError(
                artifact,
                f"public key EC {public_key.curve.name} is too weak (curves need {facts.MIN_EC_BITS} bits or more)",
            )
    elif isinstance(public_key, dsa.DSAPublicKey):
        raise CheckError(artifact, "public key is DSA, which TLS verifiers no longer accept")


def _public_key(item: x509.Certificate | x509.CertificateSigningRequest, artifact: str) -> Any:
    try:
        return item.public_key()
    except (ValueError, UnsupportedAlgorithm) as error:
        raise CheckError(artifact, f"public key does not parse ({error})") from None


def check_strong_signature(item: x509.Certificate | x509.CertificateRevocationList, artifact: str) -> None:
    """Refuse MD5 and SHA-1 signatures, and algorithms fioca cannot tell."""
    oid = item.signature_algorithm_oid
    try:
        digest = item.signature_hash_algorithm
    except UnsupportedAlgorithm:
        raise CheckError(
            artifact, f"signature algorithm {getattr(oid, '_name', oid.dotted_string)} is unknown"
        ) from None
    if digest is not None and digest.name in facts.WEAK_DIGESTS:
        raise CheckError(artifact, f"signature algorithm {oid._name} is too weak (MD5 and SHA-1 are refused)")


def check_time(cert: x509.Certificate, artifact: str, now: datetime | None = None) -> None:
    moment = _utcnow(now)
    if cert.not_valid_after_utc <= cert.not_valid_before_utc:
        raise CheckError(artifact, "notAfter must be later than notBefore")
    if cert.not_valid_before_utc > moment + CLOCK_SKEW:
        raise CheckError(artifact, f"is not yet valid: notBefore {cert.not_valid_before_utc.isoformat()}")
    if cert.not_valid_after_utc < moment - CLOCK_SKEW:
        raise CheckError(artifact, f"has expired: notAfter {cert.not_valid_after_utc.isoformat()}")


def _check_crypto_and_time(cert: x509.Certificate, artifact: str, now: datetime | None) -> None:
    check_strong_key(_public_key(cert, artifact), artifact)
    check_time(cert, artifact, now)
    check_serial(cert, artifact)
    unknown = [ext.oid for ext in cert.extensions if ext.critical and ext.oid not in UNDERSTOOD_CRITICAL]
    if unknown:
        name = getattr(unknown[0], "_name", unknown[0].dotted_string)
        raise CheckError(artifact, f"critical extension {name} is one TLS verifiers do not understand and refuse")


def check_serial(cert: x509.Certificate, artifact: str) -> None:
    """RFC 5280 4.1.2.2: a positive serial of at most 20 octets. Makers draw 159 (OpenSSL) or
    160 (Go) random bits; a longer serial is not one a CA drew, and could carry a key."""
    serial = cert.serial_number
    if serial <= 0 or serial.bit_length() > facts.GO_SERIAL_BITS:
        raise CheckError(
            artifact, f"serial is {serial.bit_length()} bits; RFC 5280 allows a positive serial of at most 20 octets"
        )


def check_authority_key_id(cert: x509.Certificate, issuer: x509.Certificate, artifact: str, issuer_role: str) -> None:
    """An authorityKeyIdentifier, when present, points at `issuer` (OpenSSL's X509_check_akid):
    its keyid is the issuer's subjectKeyIdentifier (when the issuer has one), its serial and
    name are the issuer's."""
    found = extension(cert, ExtensionOID.AUTHORITY_KEY_IDENTIFIER)
    if found is None:
        return
    akid: x509.AuthorityKeyIdentifier = found.value
    issuer_skid = subject_key_identifier(issuer)
    if akid.key_identifier is not None and issuer_skid is not None and akid.key_identifier != issuer_skid:
        raise CheckError(artifact, f"authorityKeyIdentifier does not match the {issuer_role}'s subjectKeyIdentifier")
    if akid.authority_cert_serial_number is not None and akid.authority_cert_serial_number != issuer.serial_number:
        raise CheckError(
            artifact,
            f"authorityKeyIdentifier names serial {akid.authority_cert_serial_number}, not the {issuer_role}'s",
        )
    names = [name.value for name in akid.authority_cert_issuer or [] if isinstance(name, x509.DirectoryName)]
    if names and issuer.issuer not in names:
        raise CheckError(
            artifact, f"authorityKeyIdentifier names issuer {name_text(names[0])}, not the {issuer_role}'s"
        )


def check_issued_by(cert: x509.Certificate, issuer: x509.Certificate, artifact: str, issuer_role: str) -> None:
    """The issuer name matches, the signature verifies with the issuer's key, an AKID points at it."""
    if cert.issuer != issuer.subject:
        raise CheckError(
            artifact,
            f"must be issued by the {issuer_role} {name_text(issuer.subject)}, got issuer {name_text(cert.issuer)}",
        )
    if cert.issuer.public_bytes() != issuer.subject.public_bytes():
        # Every maker copies the issuer's subject as it is; `cryptography` verifies only such a copy.
        raise CheckError(artifact, f"issuer name is not encoded as the {issuer_role}'s subject is (re-encoded?)")
    check_strong_signature(cert, artifact)  # first: a weak signature is not worth verifying
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        raise CheckError(
            artifact, f"signature does not verify with the {issuer_role}'s key (signed by a different key?)"
        ) from None
    check_authority_key_id(cert, issuer, artifact, issuer_role)


def _single_attribute(name: x509.Name, oid: x509.ObjectIdentifier, label: str, artifact: str) -> str:
    values = name.get_attributes_for_oid(oid)
    if len(values) != 1:
        raise CheckError(artifact, f"subject must have exactly one {label}, got {len(values)}")
    return str(values[0].value)


def check_ou(name: x509.Name, factory: str, artifact: str) -> None:
    """The backend's rule: the subject OU is the factory name."""
    ou = _single_attribute(name, NameOID.ORGANIZATIONAL_UNIT_NAME, "OU", artifact)
    if ou != factory:
        raise CheckError(artifact, f"subject OU must be the factory name {factory!r}, got {ou!r}")


def _check_ca_purpose(cert: x509.Certificate, artifact: str, *, below: tuple[x509.ObjectIdentifier, ...]) -> None:
    """CA:TRUE, keyCertSign, and no extendedKeyUsage that shuts out the purposes `below` it
    (OpenSSL and Go apply a CA's extendedKeyUsage to the whole chain)."""
    constraints = extension(cert, ExtensionOID.BASIC_CONSTRAINTS)
    if constraints is None:
        raise CheckError(artifact, "basicConstraints is missing; a CA must be CA:TRUE")
    if not constraints.value.ca:
        raise CheckError(artifact, "basicConstraints must be CA:TRUE, got CA:FALSE")
    usage = extension(cert, ExtensionOID.KEY_USAGE)
    if usage is None:
        raise CheckError(artifact, "keyUsage is missing; a CA needs keyCertSign")
    if not usage.value.key_cert_sign:
        got = ", ".join(key_usage_names(usage.value)) or "none"
        raise CheckError(artifact, f"keyUsage must include keyCertSign (a CA signs certificates), got {got}")
    purposes = extension(cert, ExtensionOID.EXTENDED_KEY_USAGE)
    if purposes is not None and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in purposes.value:
        missing = [oid for oid in below if oid not in purposes.value]
        if missing:
            wanted = "+".join(eku_names(x509.ExtendedKeyUsage(list(below))))
            got = ", ".join(eku_names(purposes.value)) or "none"
            raise CheckError(
                artifact, f"extendedKeyUsage must allow {wanted} (it limits every certificate below this CA), got {got}"
            )


def _check_leaf_purpose(cert: x509.Certificate, artifact: str, purpose: x509.ObjectIdentifier) -> None:
    """Not a CA, digitalSignature (an ECDSA TLS handshake signs), the one TLS purpose."""
    constraints = extension(cert, ExtensionOID.BASIC_CONSTRAINTS)
    if constraints is not None and constraints.value.ca:
        raise CheckError(artifact, "must not be a CA, got basicConstraints CA:TRUE")
    usage = extension(cert, ExtensionOID.KEY_USAGE)
    if usage is None:
        raise CheckError(artifact, "keyUsage is missing; must include digitalSignature")
    if not usage.value.digital_signature:
        got = ", ".join(key_usage_names(usage.value)) or "none"
        raise CheckError(artifact, f"keyUsage must include digitalSignature, got {got}")
    wanted = eku_names(x509.ExtendedKeyUsage([purpose]))[0]
    purposes = extension(cert, ExtensionOID.EXTENDED_KEY_USAGE)
    if purposes is None:
        raise CheckError(artifact, f"extendedKeyUsage is missing; must include {wanted}")
    if purpose not in purposes.value:
        got = ", ".join(eku_names(purposes.value)) or "none"
        raise CheckError(artifact, f"extendedKeyUsage must include {wanted}, got {got}")


# --- The certificates of the factory PKI ----------------------------------------------------


def check_root(
    cert: x509.Certificate, *, factory: str | None, now: datetime | None = None, artifact: str = "root-crt"
) -> None:
    """The factory root of trust: self-signed, OU=<factory>, a CA that can sign the gateway and
    device CAs, whose own constraints leave room for the device CAs below it. `factory=None`:
    the service's shared root (PKI-SPEC 10), which names no factory."""
    if factory is not None:
        check_ou(cert.subject, factory, artifact)
    if cert.issuer != cert.subject:
        raise CheckError(artifact, f"must be self-signed, got issuer {name_text(cert.issuer)}")
    check_strong_signature(cert, artifact)
    try:
        cert.verify_directly_issued_by(cert)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        raise CheckError(artifact, "must be self-signed, but its signature does not verify with its own key") from None
    check_authority_key_id(cert, cert, artifact, "root")
    _check_crypto_and_time(cert, artifact, now)
    _check_ca_purpose(cert, artifact, below=(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH))
    if extension(cert, ExtensionOID.BASIC_CONSTRAINTS).value.path_length == 0:
        raise CheckError(artifact, "basicConstraints pathlen:0 on the root leaves no room for the device CAs below it")


def check_gateway_tls(
    cert: x509.Certificate,
    *,
    root: x509.Certificate,
    csr: x509.CertificateSigningRequest,
    now: datetime | None = None,
    artifact: str = "tls-crt",
) -> None:
    """The device gateway's server cert: signed by the root, for the CSR's key and names."""
    check_issued_by(cert, root, artifact, "root")
    if not same_key(cert, csr):
        raise CheckError(artifact, "public key does not match the tls-csr's public key")
    _check_crypto_and_time(cert, artifact, now)
    _check_leaf_purpose(cert, artifact, ExtendedKeyUsageOID.SERVER_AUTH)
    # Devices take the gateway's host from the first name and OSTree's from the second.
    wanted, names = general_names(csr), general_names(cert)
    if names != wanted:
        wanted_text = ", ".join(general_name_text(name) for name in wanted) or "none"
        got = ", ".join(general_name_text(name) for name in names) or "none"
        raise CheckError(artifact, f"subjectAltName must be the tls-csr's {wanted_text} (same order), got {got}")
    if not names:
        raise CheckError(artifact, "subjectAltName must hold the gateway's DNS names, got none")


def check_device_ca(
    cert: x509.Certificate,
    *,
    root: x509.Certificate,
    factory: str | None,
    csr: x509.CertificateSigningRequest | None = None,
    expected_cn: str | None = None,
    now: datetime | None = None,
    artifact: str = "ca-crt",
) -> None:
    """An online or local device CA: signed by the root, OU=<factory>, a CA for client certs;
    for a local CA the backend also wants CN=fio-<user id> (`expected_cn`). `factory=None`: the
    service's shared device CA, which names no factory."""
    check_issued_by(cert, root, artifact, "root")
    if factory is not None:
        check_ou(cert.subject, factory, artifact)
    if expected_cn is not None:
        cn = _single_attribute(cert.subject, NameOID.COMMON_NAME, "CN", artifact)
        if cn != expected_cn:
            raise CheckError(artifact, f"subject CN must be {expected_cn!r}, got {cn!r}")
    if csr is not None and not same_key(cert, csr):
        raise CheckError(artifact, "public key does not match the CSR's public key")
    _check_crypto_and_time(cert, artifact, now)
    _check_ca_purpose(cert, artifact, below=(ExtendedKeyUsageOID.CLIENT_AUTH,))


def check_device_cert(
    cert: x509.Certificate,
    *,
    ca: x509.Certificate,
    factory: str,
    uuid: str | None = None,
    now: datetime | None = None,
    artifact: str = "client.pem",
) -> None:
    """A device's client cert: signed by a device CA, CN=<uuid>, OU=<factory>, clientAuth."""
    if uuid is not None:
        try:
            uuid_module.UUID(uuid)
        except ValueError:
            raise ValueError(f"expected device UUID {uuid!r} is not a UUID") from None
    check_issued_by(cert, ca, artifact, "device CA")
    cn = _single_attribute(cert.subject, NameOID.COMMON_NAME, "CN", artifact)
    if uuid is not None and cn != uuid:
        raise CheckError(artifact, f"subject CN must be the device UUID {uuid!r}, got {cn!r}")
    if not cn.strip():
        raise CheckError(artifact, "subject CN (the device UUID) is empty")
    check_ou(cert.subject, factory, artifact)
    for category in cert.subject.get_attributes_for_oid(NameOID.BUSINESS_CATEGORY):
        # The gateway reads it as the production marking; any other value means something else.
        if category.value != PRODUCTION:
            raise CheckError(artifact, f"subject businessCategory may only be {PRODUCTION!r}, got {category.value!r}")
    _check_crypto_and_time(cert, artifact, now)
    _check_leaf_purpose(cert, artifact, ExtendedKeyUsageOID.CLIENT_AUTH)


def check_key_matches(key: Any, cert: x509.Certificate, artifact: str) -> None:
    """The private key (or anything with `.public_key()`) belongs to the certificate."""
    if not same_key(key, cert):
        raise CheckError(artifact, f"private key does not belong to the certificate {name_text(cert.subject)}")


def check_crl(crl: x509.CertificateRevocationList, *, root: x509.Certificate, artifact: str = "ca-revoke-crl") -> None:
    """A CRL issued by the root, with a strong signature, every entry with a reason code."""
    if crl.issuer != root.subject:
        raise CheckError(artifact, f"must be issued by the root {name_text(root.subject)}, got {name_text(crl.issuer)}")
    if not crl.is_signature_valid(root.public_key()):  # type: ignore[arg-type]
        raise CheckError(artifact, "signature does not verify with the root's key")
    check_strong_signature(crl, artifact)
    for entry in crl:
        if crl_reason(entry) is None:
            raise CheckError(artifact, f"entry for serial {entry.serial_number} has no reason code")


def crl_reason(entry: x509.RevokedCertificate) -> x509.ReasonFlags | None:
    try:
        return entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        return None


# --- What the server sends to be signed -------------------------------------------------------

# A host name as a device dials it: dot-separated LDH labels, no wildcard, no trailing dot.
_HOST_NAME = re.compile(r"(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+", re.IGNORECASE)


def check_server_csr(csr: x509.CertificateSigningRequest, *, gateway: bool, artifact: str) -> None:
    """A CSR the server sends for the root to sign (tls-csr, ca-csr), before any script runs:
    a P-256 key (the backend makes no other) and, for the gateway, DNS host names only (the
    names devices will trust). Its subject is not checked: fioctl never does."""
    try:
        key = csr.public_key()
        extensions = csr.extensions
    except (ValueError, UnsupportedAlgorithm) as error:
        raise CheckError(artifact, f"CSR does not parse: {error}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != CURVE_NAME:
        raise CheckError(artifact, f"public key must be EC P-256, got {key_kind(key)}")
    if not gateway:
        return
    try:
        san = extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    except x509.ExtensionNotFound:
        raise CheckError(artifact, "has no DNS names in subjectAltName") from None
    others = [type(name).__name__ for name in san if not isinstance(name, x509.DNSName)]
    if others:
        raise CheckError(artifact, f"subjectAltName must hold DNS names only, got {', '.join(others)}")
    names = san.get_values_for_type(x509.DNSName)
    if not names:
        raise CheckError(artifact, "has no DNS names in subjectAltName")
    for name in names:
        if not _HOST_NAME.fullmatch(name):
            raise CheckError(artifact, f"subjectAltName {name!r} is not a host name")
