"""fioca's own profile, built in process, and the re-issue of what a script made.

The builders make what fioca's bundled scripts make when OpenSSL 3 runs them (the `fioca`
named profile), so a checked script result and an in-process result are interchangeable:
`build_root`, `sign_gateway_tls`, `sign_device_ca`, `sign_device_cert`, `build_crl` and the
CSRs. `reissue` gives a certificate a fresh random serial and a fresh signature and keeps the
rest (subject, key, validity, extensions), so what a script chose for those two (the serial,
the ECDSA nonce) never reaches the server.

Signing keys are duck-typed: anything with `.public_key()` that `CertificateBuilder.sign`
accepts (a file key, or `hsm.TokenKey`, which signs on the token).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fioca import facts
from fioca.errors import CheckError
from fioca.pki.profiles import der
from fioca.pki.profiles.details import (
    PRODUCTION,
    REASON_FLAGS,
    general_names,
    name_text,
    same_key,
    subject_key_identifier,
)

ROOT_DAYS = facts.SCRIPT_VALIDITY.root
GATEWAY_TLS_DAYS = facts.SCRIPT_VALIDITY.gateway_tls
DEVICE_CA_DAYS = facts.SCRIPT_VALIDITY.device_ca


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh P-256 key, like `openssl ecparam -genkey -name prime256v1`."""
    return ec.generate_private_key(ec.SECP256R1())


def _start(now: datetime | None) -> datetime:
    # Certificates carry whole seconds; dropping microseconds keeps lengths exact.
    return (now if now is not None else datetime.now(UTC)).replace(microsecond=0)


def authority_key_identifier(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """What OpenSSL 3's `authorityKeyIdentifier = keyid, issuer` makes: the issuer's SKID, or,
    when the issuer has none (a root made by OpenSSL 1.1), its issuer's name and its serial."""
    skid = subject_key_identifier(issuer)
    if skid is not None:
        return x509.AuthorityKeyIdentifier(skid, None, None)
    return x509.AuthorityKeyIdentifier(None, [x509.DirectoryName(issuer.issuer)], issuer.serial_number)


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
    """The factory root of trust, as fioca's `create_ca` makes it."""
    start = _start(now)
    name = _subject_name((NameOID.COMMON_NAME, facts.ROOT_CN), (NameOID.ORGANIZATIONAL_UNIT_NAME, factory))
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
    """The gateway server cert for `tls-csr`, as fioca's `sign_tls_csr` makes it. The CSR's
    names are copied as they are: DNS names for the gateway (checked before), and IP, URI and
    email names too for `keys ca sign`, as fioctl copies them."""
    _verified_csr(csr, "tls-csr")
    names = general_names(csr)
    if not names:
        raise CheckError("tls-csr", "has no DNS names in subjectAltName")
    builder = (
        _issued_for_csr(csr, issuer=root_cert, start=_start(now), days=GATEWAY_TLS_DAYS)
        # keyUsage = critical, digitalSignature
        .add_extension(key_usage(digital_signature=True), critical=True)
        # extendedKeyUsage = critical, serverAuth
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=True)
        # subjectAltName = the CSR's names, same order
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        # authorityKeyIdentifier = keyid, issuer
        .add_extension(authority_key_identifier(root_cert), critical=False)
        # subjectKeyIdentifier (OpenSSL 3 adds it by itself)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(csr.public_key()), critical=False)
    )
    return builder.sign(root_key, hashes.SHA256())


def sign_device_ca(
    csr: x509.CertificateSigningRequest, *, root_cert: x509.Certificate, root_key: Any, now: datetime | None = None
) -> x509.Certificate:
    """A device CA (online or local) for a CSR, as fioca's `sign_ca_csr` / `create_device_ca` make it."""
    _verified_csr(csr, "ca-csr")
    builder = (
        _issued_for_csr(csr, issuer=root_cert, start=_start(now), days=DEVICE_CA_DAYS)
        # keyUsage = critical, keyCertSign
        .add_extension(key_usage(key_cert_sign=True), critical=True)
        # basicConstraints = critical, CA:TRUE, pathlen:0
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        # subjectKeyIdentifier and authorityKeyIdentifier (OpenSSL 3 adds both by itself)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(csr.public_key()), critical=False)
        .add_extension(authority_key_identifier(root_cert), critical=False)
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


def build_device_csr(key: Any, *, uuid: str, factory: str, production: bool = False) -> x509.CertificateSigningRequest:
    """A device's CSR as lmp-device-register makes it: CN=<uuid>, OU=<factory> [, businessCategory],
    requesting the device profile's two extensions, in its order."""
    attributes = [(NameOID.COMMON_NAME, uuid), (NameOID.ORGANIZATIONAL_UNIT_NAME, factory)]
    if production:
        attributes.append((NameOID.BUSINESS_CATEGORY, PRODUCTION))
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_subject_name(*attributes))
        # keyUsage = critical, digitalSignature (requested; the signer decides)
        .add_extension(key_usage(digital_signature=True), critical=True)
        # extendedKeyUsage = critical, clientAuth
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=True)
    )
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
        .add_extension(authority_key_identifier(ca_cert), critical=False)
    )
    return builder.sign(ca_key, hashes.SHA256())


def build_crl(
    *,
    root_cert: x509.Certificate,
    root_key: Any,
    serials_reasons: list[tuple[int, int]],
    next_update_minutes: int = facts.CRL_NEXT_UPDATE_MINUTES,
    now: datetime | None = None,
) -> x509.CertificateRevocationList:
    """A CRL signed by the root, one entry per (serial, reason code): 6 (certificateHold) =
    disable, 8 (removeFromCRL) = re-enable, 9 (privilegeWithdrawn) = revoke.

    A serial of 160 bits (fioctl's Go PKI draws them) goes in through a stand-in, since
    `cryptography` takes 159 at most (`der.with_serials`)."""
    start = _start(now)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(root_cert.subject)
        .last_update(start)
        .next_update(start + timedelta(minutes=next_update_minutes))
        # cRLNumber: seconds since the epoch, so a later CRL has a larger number
        .add_extension(x509.CRLNumber(int(start.timestamp())), critical=False)
        # authorityKeyIdentifier = the root's key
        .add_extension(authority_key_identifier(root_cert), critical=False)
    )
    real = {serial for serial, _reason in serials_reasons}
    stand_ins: dict[int, int] = {}
    for serial, reason in serials_reasons:
        if serial.bit_length() >= 160:
            stand_in = next(
                candidate for candidate in range(1, len(real) + 2) if candidate not in real | set(stand_ins)
            )
            stand_ins[stand_in] = serial
            serial = stand_in
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(start)
            # reasonCode: what the backend acts on
            .add_extension(x509.CRLReason(REASON_FLAGS[reason]), critical=False)
            .build()
        )
        builder = builder.add_revoked_certificate(entry)
    crl = builder.sign(root_key, hashes.SHA256())
    return der.with_serials(crl, stand_ins, root_key) if stand_ins else crl


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


# --- Re-issue ---------------------------------------------------------------------------------


def reissue(
    cert: x509.Certificate, *, signer_key: Any, issuer: x509.Certificate | None = None, not_before: datetime | None = None
) -> x509.Certificate:
    """`cert` again with a fresh random serial and a fresh signature by `signer_key`: the same
    subject (byte for byte), key, validity and extensions, in order. `issuer` is the (re-issued)
    CA that signs it, None for a self-signed root. An authorityKeyIdentifier that names the
    issuer's serial is brought up to date, since re-issuing the root changes that serial.
    `not_before` moves the validity to start then, as long as before: a start the script
    picked (to the second, within the upload check's minutes) would carry its choice on."""
    signer = cert if issuer is None else issuer
    if not same_key(signer_key, signer):
        raise CheckError(name_text(cert.subject), f"the re-issuing key is not the key of {name_text(signer.subject)}")
    try:
        digest = cert.signature_hash_algorithm or hashes.SHA256()
    except UnsupportedAlgorithm:
        digest = hashes.SHA256()
    serial = x509.random_serial_number()  # the one part a script chose that must not travel
    builder = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(signer.subject)
        .public_key(cert.public_key())
        .serial_number(serial)
        .not_valid_before(not_before or cert.not_valid_before_utc)
        .not_valid_after((not_before or cert.not_valid_before_utc) + (cert.not_valid_after_utc - cert.not_valid_before_utc))
    )
    for found in cert.extensions:
        value = found.value
        if isinstance(value, x509.AuthorityKeyIdentifier) and value.authority_cert_serial_number is not None:
            # Names the issuer's serial (the root's own, for the root), which re-issuing renews.
            named = (cert.subject, serial) if issuer is None else (issuer.issuer, issuer.serial_number)
            value = x509.AuthorityKeyIdentifier(value.key_identifier, [x509.DirectoryName(named[0])], named[1])
        builder = builder.add_extension(value, critical=found.critical)
    return builder.sign(signer_key, digest)


def reissue_pki(
    root: x509.Certificate, root_key: Any, issued: Mapping[str, x509.Certificate]
) -> tuple[x509.Certificate, dict[str, x509.Certificate]]:
    """The root re-issued by its own key, then every certificate it issued (by name) re-issued
    under the new root: fresh serials and signatures throughout."""
    new_root = reissue(root, signer_key=root_key)
    return new_root, {name: reissue(cert, signer_key=root_key, issuer=new_root) for name, cert in issued.items()}


# --- PEM ---------------------------------------------------------------------------------------


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def certs_pem(certs: Any) -> bytes:
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
