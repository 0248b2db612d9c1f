"""The strict checks, for what fioca (or a script it ran) just made.

- `check_as_asked`: the certificate is exactly what the script's text asked openssl for
  (`fioca.pki.asked.AskedCertificate`): the days (`-days N` is exactly N*86400 s), the digest,
  the subject (the config's, or the CSR's for `x509 -req`), the issuer, and every extension as
  asked with its criticality and no other, except those this OpenSSL adds by itself (3.x: a
  subjectKeyIdentifier on `req -x509`, and an authorityKeyIdentifier as well on `x509 -req`;
  1.1: none).
- `check_made_by_scripts`: the same, against what the named script profiles ask, for when the
  audit could not say what the script's text asked.
- `check_upload` (issue 10.4), on the stored bytes right before the PATCH: the trust tier, as
  asked, the issuer's exact name, notBefore within minutes of when it was made (a backdated
  root is refused), notAfter no later than a named profile allows, each extension one a named
  profile has, subjectKeyIdentifier = SHA-1 of the key (RFC 5280 4.2.1.2 method 1: it can carry
  no data), authorityKeyIdentifier = the issuer's, no pathLen on the root, and key matches.

Each raises `CheckError(artifact, rule)`; the first two return notes on what could not be
compared (a value computed at run time, an extension whose value fioca does not read).
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtensionOID, NameOID

from fioca import facts
from fioca.errors import CheckError
from fioca.pki.asked import AskedCertificate
from fioca.pki.profiles import der, trust
from fioca.pki.profiles.details import key_id_sha1, name_text, subject_key_identifier
from fioca.pki.profiles.extensions import (
    AskedValueError,
    Context,
    differences,
    expected,
    extension_name,
    openssl_defaults,
)
from fioca.pki.profiles.named import (
    PROFILES,
    Days,
    NamedProfile,
    Role,
    script_profiles,
    validity_matches,
)

UPLOAD_NOT_BEFORE = timedelta(minutes=facts.UPLOAD_NOT_BEFORE_MINUTES)

# Subject attribute names as OpenSSL configs write them.
_ATTRIBUTE_NAMES = {
    "CN": NameOID.COMMON_NAME, "commonName": NameOID.COMMON_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME, "organizationalUnitName": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "O": NameOID.ORGANIZATION_NAME, "organizationName": NameOID.ORGANIZATION_NAME,
    "C": NameOID.COUNTRY_NAME, "countryName": NameOID.COUNTRY_NAME,
    "L": NameOID.LOCALITY_NAME, "localityName": NameOID.LOCALITY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME, "stateOrProvinceName": NameOID.STATE_OR_PROVINCE_NAME,
    "emailAddress": NameOID.EMAIL_ADDRESS, "serialNumber": NameOID.SERIAL_NUMBER,
    "businessCategory": NameOID.BUSINESS_CATEGORY,
}  # fmt: skip


@functools.cache
def openssl_generation(program: str = "openssl") -> int:
    """The major version of the system `openssl` (1 for 1.1, 3 for 3.x), read once: it decides
    which key identifiers OpenSSL adds by itself. Anything else (LibreSSL) is taken as 1.1:
    no additions are known for it."""
    path = shutil.which(program)
    if path is None:
        raise CheckError(program, "is not on PATH; cannot tell which extensions it adds by itself")
    done = subprocess.run([path, "version"], capture_output=True, text=True, timeout=30, check=False)
    found = re.match(r"OpenSSL (\d+)\.(\d+)", done.stdout)
    if found is None:
        return 1
    return 3 if int(found[1]) >= 3 else 1


def _asked_digest(asked: AskedCertificate) -> str:
    # OpenSSL signs with SHA-256 when no digest is named (1.1 and 3, EC and RSA keys).
    return (asked.digest or "sha256").lstrip("-").lower()


def check_as_asked(
    cert: x509.Certificate,
    asked: AskedCertificate,
    *,
    issuer: x509.Certificate | None = None,
    csr: x509.CertificateSigningRequest | None = None,
    openssl: int | None = None,
    artifact: str | None = None,
) -> tuple[str, ...]:
    """`cert` is exactly what `asked` asks OpenSSL for; `issuer` is the signing CA (None when
    self-signed), `csr` the request an `x509 -req` signed, `openssl` its major version (default:
    the system's). Returns notes on what could not be compared."""
    artifact = artifact or asked.output or asked.script
    where = f"{asked.script}" + (f" line {asked.line}" if asked.line else "")
    found, notes = _asked_differences(cert, asked, issuer=issuer, csr=csr, openssl=openssl)
    if found:
        raise CheckError(artifact, f"is not what {where} asked for: {'; '.join(found)}")
    return tuple(notes)


def _asked_differences(
    cert: x509.Certificate,
    asked: AskedCertificate,
    *,
    issuer: x509.Certificate | None,
    csr: x509.CertificateSigningRequest | None,
    openssl: int | None,
) -> tuple[list[str], list[str]]:
    """(differences, notes) between `cert` and what `asked` asks for."""
    openssl = openssl if openssl is not None else openssl_generation()
    found: list[str] = []
    notes: list[str] = []
    if asked.days is None:
        notes.append("-days is computed at run time: the validity was not compared with the script's text")
    elif not validity_matches(Days(asked.days), cert):
        length = (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds()
        found.append(f"valid {length:.0f} s (asked: -days {asked.days}, {asked.days * 86400} s)")
    found += _digest_differences(cert, asked)
    found += _name_differences(cert, asked, issuer=issuer, csr=csr, notes=notes)
    if asked.extensions is None:
        found.append("the audit could not tell which extensions the script asks for")
        return found, notes
    context = Context(
        subject_key=cert.public_key(), self_signed=asked.self_signed, issuer=issuer, csr=csr, openssl=openssl
    )
    lines = (*asked.extensions, *openssl_defaults(asked.extensions, self_signed=asked.self_signed, openssl=openssl))
    try:
        wanted = [item for line in lines if (item := expected(line, context)) is not None]
    except AskedValueError as error:
        return [*found, str(error)], notes
    notes += [f"{item.name}: only its presence and criticality were compared" for item in wanted if item.value is None]
    found += differences(cert, wanted, source="asked")
    return found, notes


def _digest_differences(cert: x509.Certificate, asked: AskedCertificate) -> list[str]:
    try:
        digest = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        digest = None
    got = digest.name if digest is not None else "an unknown digest"
    return [] if got == _asked_digest(asked) else [f"signed with {got} (asked: {_asked_digest(asked)})"]


def _name_differences(
    cert: x509.Certificate,
    asked: AskedCertificate,
    *,
    issuer: x509.Certificate | None,
    csr: x509.CertificateSigningRequest | None,
    notes: list[str],
) -> list[str]:
    """The subject (the config's; the CSR's, byte for byte, for `x509 -req`) and the issuer
    (the signer's subject, byte for byte)."""
    found = []
    if asked.subject is not None:
        try:
            wanted = [(_ATTRIBUTE_NAMES[name], value) for name, value in asked.subject]
        except KeyError as error:
            return [f"asks for a subject attribute fioca does not know: {error.args[0]}"]
        if [(attribute.oid, attribute.value) for attribute in cert.subject] != wanted:
            asked_text = ", ".join(f"{name}={value}" for name, value in asked.subject)
            found.append(f"subject is {name_text(cert.subject)} (asked: {asked_text})")
    elif not asked.self_signed and csr is not None:
        if cert.subject.public_bytes() != csr.subject.public_bytes():
            found.append(f"subject is {name_text(cert.subject)} (asked: the CSR's {name_text(csr.subject)})")
    else:
        notes.append("the subject was not compared with the script's text")
    signer = cert if asked.self_signed else issuer
    if signer is not None and cert.issuer.public_bytes() != signer.subject.public_bytes():
        found.append(f"issuer is {name_text(cert.issuer)} (asked: {name_text(signer.subject)})")
    return found


def check_made_by_scripts(
    cert: x509.Certificate,
    role: Role,
    *,
    issuer: x509.Certificate | None = None,
    csr: x509.CertificateSigningRequest | None = None,
    factory: str | None = None,
    openssl: int | None = None,
    artifact: str,
) -> NamedProfile:
    """`cert` is exactly what one of the named script sets asks for `role` (fioca's own, the
    API's 2023 or 2026 revision), run by this OpenSSL; returns that profile. For when the audit
    cannot say what the script's own text asked."""
    openssl = openssl if openssl is not None else openssl_generation()
    closest: tuple[NamedProfile, list[str]] | None = None
    for profile in script_profiles(openssl):
        found, _notes = _asked_differences(
            cert, profile.asked(role, factory=factory), issuer=issuer, csr=csr, openssl=openssl
        )
        if not found:
            return profile
        if closest is None or len(found) < len(closest[1]):
            closest = (profile, found)
    assert closest is not None
    profile, found = closest
    raise CheckError(
        artifact, f"is not what any known script set asks for; closest is {profile.label}: {'; '.join(found)}"
    )


# --- The upload check (issue 10.4) ------------------------------------------------------------


def _trust(
    cert: x509.Certificate,
    role: Role,
    *,
    factory: str,
    issuer: x509.Certificate | None,
    csr: x509.CertificateSigningRequest | None,
    expected_cn: str | None,
    now: datetime,
    artifact: str,
) -> None:
    if role is Role.ROOT:
        trust.check_root(cert, factory=factory, now=now, artifact=artifact)
        return
    if issuer is None:
        raise ValueError(f"the upload check of a {role.value} certificate needs its issuer")
    if role is Role.GATEWAY_TLS:
        if csr is None:
            raise ValueError("the upload check of the gateway certificate needs its CSR")
        trust.check_gateway_tls(cert, root=issuer, csr=csr, now=now, artifact=artifact)
    else:
        trust.check_device_ca(
            cert, root=issuer, factory=factory, csr=csr, expected_cn=expected_cn, now=now, artifact=artifact
        )


def check_upload(
    cert: x509.Certificate,
    *,
    role: Role,
    factory: str,
    issuer: x509.Certificate | None = None,
    asked: AskedCertificate | None = None,
    csr: x509.CertificateSigningRequest | None = None,
    key: Any = None,
    expected_cn: str | None = None,
    made_at: datetime | None = None,
    now: datetime | None = None,
    openssl: int | None = None,
    artifact: str,
) -> None:
    """Everything an uploaded certificate must be before it leaves (see the module docstring).

    `issuer`: the root, for the gateway and device CAs; `asked`: what the script's text asked
    (None: what a named script set asks); `csr` / `key`: the request it signed / its private key
    (or anything with `.public_key()`); `made_at`: when it was stored (default: now)."""
    role = Role(role)
    moment = now or datetime.now(UTC)
    _check_der_fields(cert, artifact)
    _trust(cert, role, factory=factory, issuer=issuer, csr=csr, expected_cn=expected_cn, now=moment, artifact=artifact)
    if key is not None:
        trust.check_key_matches(key, cert, artifact)
    if asked is not None:
        check_as_asked(cert, asked, issuer=issuer, csr=csr, openssl=openssl, artifact=artifact)
    else:
        check_made_by_scripts(cert, role, issuer=issuer, csr=csr, factory=factory, openssl=openssl, artifact=artifact)
    signer = cert if role is Role.ROOT else issuer
    if cert.issuer.public_bytes() != signer.subject.public_bytes():
        raise CheckError(artifact, "issuer name is not the signer's subject byte for byte")
    _check_made_recently(cert, made_at or moment, artifact)
    _check_longest_validity(cert, role, artifact)
    _check_shortest_validity(cert, role, artifact)
    if role is Role.ROOT:
        _check_own_subject(cert, facts.ROOT_CN, factory, artifact)
    elif expected_cn is not None:
        _check_own_subject(cert, expected_cn, factory, artifact)
    _check_extensions_of_a_profile(cert, role, issuer=signer, csr=csr, artifact=artifact)


# The fields of a TBSCertificate OpenSSL and Go write, by tag: [0] version, serial, signature,
# issuer, validity, subject, subjectPublicKeyInfo, [3] extensions. Never the unique IDs ([1],
# [2]): bit strings of any length that nothing reads.
_TBS_TAGS = (0xA0, 0x02, 0x30, 0x30, 0x30, 0x30, 0x30, 0xA3)
_UTC_TIME, _GENERALIZED_TIME = 0x17, 0x18


def _check_der_fields(cert: x509.Certificate, artifact: str) -> None:
    """The certificate's DER holds only the fields a maker writes, each as RFC 5280 says it:
    the same signature algorithm inside and out, UTCTime up to 2049 and GeneralizedTime from
    2050 on (a choice between the two is a bit the script picks)."""
    data = cert.public_bytes(serialization.Encoding.DER)
    _tag, outer, _end = der.read(data, 0)
    _tag, tbs_start, tbs_end = der.read(data, outer)
    fields = der.children(data, tbs_start, tbs_end)
    if tuple(tag for tag, *_rest in fields) != _TBS_TAGS:
        raise CheckError(artifact, "holds fields no certificate maker writes (unique identifiers, or fields out of order)")
    inner = data[fields[2][1] : fields[2][3]]
    _tag, _start, algorithm_end = der.read(data, tbs_end)
    if inner != data[tbs_end:algorithm_end]:
        raise CheckError(artifact, "names another signature algorithm inside than outside")
    _tag, validity_start, validity_end = der.read(data, fields[4][1])
    for (tag, *_rest), when in zip(der.children(data, validity_start, validity_end),
                                   (cert.not_valid_before_utc, cert.not_valid_after_utc)):  # fmt: skip
        if tag != (_UTC_TIME if when.year < 2050 else _GENERALIZED_TIME):
            raise CheckError(artifact, f"encodes {when.isoformat()} otherwise than RFC 5280 (UTCTime until 2049)")


def _check_made_recently(cert: x509.Certificate, made_at: datetime, artifact: str) -> None:
    start = cert.not_valid_before_utc
    if start < made_at - UPLOAD_NOT_BEFORE or start > made_at + trust.CLOCK_SKEW:
        raise CheckError(
            artifact,
            f"notBefore {start.isoformat()} is not within {facts.UPLOAD_NOT_BEFORE_MINUTES} minutes of when it "
            f"was made ({made_at.replace(microsecond=0).isoformat()}): a certificate made now starts now",
        )


def _check_longest_validity(cert: x509.Certificate, role: Role, artifact: str) -> None:
    start = cert.not_valid_before_utc
    latest = max(
        profile.shape(role).validity.end(start) + profile.shape(role).validity.slack_after for profile in PROFILES
    )
    if cert.not_valid_after_utc > latest:
        raise CheckError(
            artifact,
            f"notAfter {cert.not_valid_after_utc.isoformat()} is later than any named profile allows for a {role.value} certificate",
        )


def _check_shortest_validity(cert: x509.Certificate, role: Role, artifact: str) -> None:
    """A root of trust is set once: one that expires early (`-days 1` asked in the text) is a
    factory lost, so nothing shorter than the shortest named profile goes up."""
    start = cert.not_valid_before_utc
    earliest = min(
        profile.shape(role).validity.end(start) - profile.shape(role).validity.slack_before for profile in PROFILES
    )
    if cert.not_valid_after_utc < earliest:
        raise CheckError(
            artifact,
            f"notAfter {cert.not_valid_after_utc.isoformat()} is earlier than any named profile has a {role.value} certificate end",
        )


# The string types OpenSSL (UTF8String, its default mask) and Go (PrintableString) write names in.
_NAME_STRING_TYPES = frozenset({x509.name._ASN1Type.UTF8String, x509.name._ASN1Type.PrintableString})


def _check_own_subject(cert: x509.Certificate, cn: str, factory: str, artifact: str) -> None:
    """The subject fioca names itself (the root's, a local CA's): `CN=<cn>, OU=<factory>` and
    nothing else: one attribute per RDN, in that order, in a string type a maker uses. An extra
    attribute, a multi-valued RDN or a BMPString would carry what the server chose."""
    wanted = [(NameOID.COMMON_NAME, cn), (NameOID.ORGANIZATIONAL_UNIT_NAME, factory)]
    rdns = list(cert.subject.rdns)
    found = [(attribute.oid, attribute.value) for rdn in rdns for attribute in rdn]
    if found != wanted or len(rdns) != len(wanted):
        raise CheckError(artifact, f"subject is {name_text(cert.subject)}, not exactly CN={cn}, OU={factory}")
    odd = [attribute for attribute in cert.subject if attribute._type not in _NAME_STRING_TYPES]
    if odd:
        raise CheckError(artifact, f"subject {odd[0].oid._name} is a {odd[0]._type.name}, not a UTF8String or PrintableString")


def _check_extensions_of_a_profile(
    cert: x509.Certificate,
    role: Role,
    *,
    issuer: x509.Certificate,
    csr: x509.CertificateSigningRequest | None,
    artifact: str,
) -> None:
    """Each extension is one a named profile has, value and criticality; the key identifiers
    are the ones computed from the keys, which can carry no data."""
    for found in cert.extensions:
        if found.oid == ExtensionOID.SUBJECT_KEY_IDENTIFIER:
            if found.value.digest != key_id_sha1(cert.public_key()):
                raise CheckError(
                    artifact, "subjectKeyIdentifier is not the SHA-1 of the public key (RFC 5280 4.2.1.2 method 1)"
                )
            continue
        if found.oid == ExtensionOID.AUTHORITY_KEY_IDENTIFIER:
            _check_authority_key_id(found.value, issuer, artifact)
            continue
        if found.oid == ExtensionOID.BASIC_CONSTRAINTS and role is Role.ROOT and found.value.path_length is not None:
            raise CheckError(
                artifact, f"basicConstraints of the root must have no pathlen, got pathlen:{found.value.path_length}"
            )
        if not _a_profile_has(found, cert, role, issuer=issuer, csr=csr):
            raise CheckError(
                artifact,
                f"{extension_name(found.oid)} is not as any named profile has it for a {role.value} certificate",
            )


def _check_authority_key_id(akid: x509.AuthorityKeyIdentifier, issuer: x509.Certificate, artifact: str) -> None:
    issuer_skid = subject_key_identifier(issuer)
    if akid.key_identifier is not None and akid.key_identifier != issuer_skid:
        raise CheckError(artifact, "authorityKeyIdentifier is not the issuer's subjectKeyIdentifier")
    names = akid.authority_cert_issuer
    if names is not None or akid.authority_cert_serial_number is not None:
        if names != [x509.DirectoryName(issuer.issuer)] or akid.authority_cert_serial_number != issuer.serial_number:
            raise CheckError(artifact, "authorityKeyIdentifier names another issuer or serial than the issuer's")


def _a_profile_has(
    found: x509.Extension,
    cert: x509.Certificate,
    role: Role,
    *,
    issuer: x509.Certificate,
    csr: x509.CertificateSigningRequest | None,
) -> bool:
    for profile in PROFILES:
        for wanted in profile.expected_extensions(role, cert, issuer=issuer, csr=csr):
            if wanted.oid == found.oid and wanted.critical == found.critical and wanted.value in (None, found.value):
                return True
    return False
