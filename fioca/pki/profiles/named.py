"""The named profiles: what each maker of factory PKIs really makes, and telling them apart.

A profile is a maker (OpenSSL 1.1 or 3 running a set of scripts, or fioctl's Go PKI) and, per
role (root, gateway TLS, device CA), the certificate it makes: its validity, digest, subject
and extensions in OpenSSL's config words (`AskedExtension`), before the key identifiers the
maker adds by itself (OpenSSL 3: SKID, and AKID below the root; 1.1: none; Go: SKID on CAs,
AKID from the issuer's SKID). Sources: PKI-SPEC sections 4 and 10, the API's scripts as
fioctl kept them (`scripts/api-2023`, `scripts/api-2026`), fioctl's `x509/golang.go` and its
history, and fioca's own `scripts/`.

`recognise(cert, role)` names the profile a certificate was made to and how it differs from
the closest one. It never refuses: what breaks trust is `trust`'s job, and what fioca itself
just made is held to what it asked for by `strict`.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import Enum

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.x509.oid import ExtensionOID, NameOID

from fioca import facts
from fioca.pki import reference
from fioca.pki.asked import AskedCertificate, AskedExtension
from fioca.pki.profiles.details import (
    CURVE_NAME,
    KEY_ID_METHODS,
    key_kind,
    name_text,
    subject_key_identifier,
)
from fioca.pki.profiles.extensions import (
    Context,
    Expected,
    differences,
    expected,
    openssl_defaults,
)


class Role(str, Enum):
    ROOT = "root"
    GATEWAY_TLS = "gateway-tls"
    DEVICE_CA = "device-ca"  # online and local alike


# --- Validity -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Days:
    """`openssl -days N`: notAfter is N*86400 s after notBefore. OpenSSL reads the clock once for
    each, so the two may fall one second further apart."""

    count: int
    slack_before = timedelta(0)
    slack_after = timedelta(seconds=1)

    def end(self, start: datetime) -> datetime:
        return start + timedelta(days=self.count)

    def __str__(self) -> str:
        return f"{self.count} days"


@dataclass(frozen=True)
class CalendarYears:
    """Go's `time.Now().AddDate(N, 0, 0)`: the same date N years on (29 February becomes
    1 March). Go reads the clock twice and adds the years in the local time zone, where a
    change of daylight saving time moves the end by an hour."""

    years: int
    slack_before = timedelta(hours=1)
    slack_after = timedelta(hours=1, seconds=1)

    def end(self, start: datetime) -> datetime:
        year = start.year + self.years
        if start.month == 2 and start.day == 29 and not calendar.isleap(year):
            return start.replace(year=year, month=3, day=1)
        return start.replace(year=year)

    def __str__(self) -> str:
        return f"{self.years} calendar years"


Validity = Days | CalendarYears


def validity_matches(validity: Validity, cert: x509.Certificate) -> bool:
    offset = cert.not_valid_after_utc - validity.end(cert.not_valid_before_utc)
    return -validity.slack_before <= offset <= validity.slack_after


def _days_text(length: timedelta) -> str:
    return f"{length.total_seconds() / 86400:g} days"


# --- Makers and shapes --------------------------------------------------------------------------


@dataclass(frozen=True)
class Maker:
    """What a tool adds by itself to what it is asked, and how it draws serials."""

    name: str
    serial_bits: int
    openssl: int | None = None  # OpenSSL's major version (1 for 1.1); None for Go
    go_key_id: str | None = None  # Go: the method of its key identifiers (details.KEY_ID_METHODS)

    def added(self, lines: tuple[AskedExtension, ...], *, self_signed: bool) -> tuple[AskedExtension, ...]:
        if self.openssl is None:
            return ()
        return openssl_defaults(lines, self_signed=self_signed, openssl=self.openssl)

    def key_ids(self, cert: x509.Certificate, *, is_ca: bool, issuer: x509.Certificate | None) -> list[Expected]:
        """Go's own key identifiers: a SKID on a CA when none is set, an AKID from the issuer's SKID."""
        if self.go_key_id is None:
            return []
        wanted = []
        if is_ca:
            digest = KEY_ID_METHODS[self.go_key_id](cert.public_key())
            wanted.append(Expected(ExtensionOID.SUBJECT_KEY_IDENTIFIER, False, x509.SubjectKeyIdentifier(digest)))
        issuer_skid = subject_key_identifier(issuer) if issuer is not None else None
        if issuer_skid is not None:
            value = x509.AuthorityKeyIdentifier(issuer_skid, None, None)
            wanted.append(Expected(ExtensionOID.AUTHORITY_KEY_IDENTIFIER, False, value))
        return wanted


OPENSSL_3 = Maker("OpenSSL 3", facts.OPENSSL_SERIAL_BITS, openssl=3)
OPENSSL_1_1 = Maker("OpenSSL 1.1", facts.OPENSSL_SERIAL_BITS, openssl=1)
GO = Maker("Go crypto/x509 1.19-1.24", facts.GO_SERIAL_BITS, go_key_id="sha1")
GO_125 = Maker("Go crypto/x509 1.25 on", facts.GO_SERIAL_BITS, go_key_id="sha256-160")


@dataclass(frozen=True)
class CertShape:
    """One certificate as a profile asks for it."""

    validity: Validity
    extensions: tuple[AskedExtension, ...]
    digest: str = "sha256"


def _line(name: str, critical: bool, *values: str) -> AskedExtension:
    return AskedExtension(name, critical, values or None)


# The words of each profile, as its scripts (or fioctl's Go template) write them.
_SCRIPT_DAYS = facts.SCRIPT_VALIDITY
_CA_LINES = (
    _line("keyUsage", True, "keyCertSign"),
    _line("basicConstraints", True, "CA:TRUE", "pathlen:0"),
)
_SAN_FROM_CSR = _line("subjectAltName", False)  # `subjectAltName = $dns`: the CSR's names

_API_2023 = {
    Role.ROOT: CertShape(Days(_SCRIPT_DAYS.root), (
        _line("basicConstraints", False, "CA:TRUE"),
        _line("keyUsage", False, "keyCertSign"),
        _line("extendedKeyUsage", True, "clientAuth", "serverAuth"),
    )),
    Role.GATEWAY_TLS: CertShape(Days(_SCRIPT_DAYS.gateway_tls), (
        _line("keyUsage", True, "digitalSignature", "keyEncipherment", "keyAgreement"),
        _line("extendedKeyUsage", True, "serverAuth"),
        _SAN_FROM_CSR,
    )),
    Role.DEVICE_CA: CertShape(Days(_SCRIPT_DAYS.device_ca), _CA_LINES),
}  # fmt: skip
_API_2026 = {
    **_API_2023,
    Role.ROOT: replace(_API_2023[Role.ROOT], extensions=(
        _line("basicConstraints", False, "CA:TRUE"),
        _line("keyUsage", False, "keyCertSign", "cRLSign"),
        _line("extendedKeyUsage", True, "clientAuth", "serverAuth"),
    )),
    Role.GATEWAY_TLS: replace(_API_2023[Role.GATEWAY_TLS], extensions=(
        _line("keyUsage", True, "digitalSignature"),
        _line("extendedKeyUsage", True, "serverAuth"),
        _SAN_FROM_CSR,
    )),
}  # fmt: skip
# fioca's own scripts: the 2026 words, with the key identifiers named where OpenSSL 1.1 needs them.
_FIOCA = {
    **_API_2026,
    Role.ROOT: replace(_API_2026[Role.ROOT], extensions=(
        *_API_2026[Role.ROOT].extensions,
        _line("subjectKeyIdentifier", False, "hash"),
    )),
    Role.GATEWAY_TLS: replace(_API_2026[Role.GATEWAY_TLS], extensions=(
        *_API_2026[Role.GATEWAY_TLS].extensions,
        _line("authorityKeyIdentifier", False, "keyid", "issuer"),
    )),
}  # fmt: skip
_GO_YEARS = facts.GO_YEARS
_GO_V037 = {
    Role.ROOT: CertShape(CalendarYears(_GO_YEARS.root), (
        _line("keyUsage", True, "keyCertSign"),
        _line("extendedKeyUsage", False, "serverAuth", "clientAuth"),
        _line("basicConstraints", True, "CA:TRUE"),
    )),
    Role.GATEWAY_TLS: CertShape(CalendarYears(_GO_YEARS.gateway_tls), (
        _line("keyUsage", True, "digitalSignature", "keyEncipherment", "keyAgreement"),
        _line("extendedKeyUsage", False, "serverAuth"),
        _SAN_FROM_CSR,
    )),
    Role.DEVICE_CA: CertShape(CalendarYears(_GO_YEARS.device_ca), _CA_LINES),
}  # fmt: skip
# v0.39 (CRLs) adds cRLSign to the root; v0.41 drops keyEncipherment and keyAgreement from TLS.
_GO_V039 = {**_GO_V037, Role.ROOT: replace(_GO_V037[Role.ROOT], extensions=(
    _line("keyUsage", True, "keyCertSign", "cRLSign"), *_GO_V037[Role.ROOT].extensions[1:],
))}  # fmt: skip
_GO_V041 = {**_GO_V039, Role.GATEWAY_TLS: replace(_GO_V039[Role.GATEWAY_TLS], extensions=(
    _line("keyUsage", True, "digitalSignature"), *_GO_V039[Role.GATEWAY_TLS].extensions[1:],
))}  # fmt: skip


@dataclass(frozen=True)
class NamedProfile:
    """A named way certificates are made: its maker and the shape of each role's certificate."""

    id: str
    label: str
    maker: Maker
    shapes: dict[Role, CertShape]
    script_set: str | None = None  # the reference script set that makes it (fioca.pki.reference)

    def shape(self, role: Role) -> CertShape:
        return self.shapes[Role(role)]

    def expected_extensions(
        self,
        role: Role,
        cert: x509.Certificate,
        *,
        issuer: x509.Certificate | None = None,
        csr: x509.CertificateSigningRequest | None = None,
    ) -> list[Expected]:
        """Every extension this profile puts in `cert` (values computed from its key, issuer, CSR)."""
        role = Role(role)
        self_signed = role is Role.ROOT
        lines = self.shape(role).extensions
        # (Go's shapes name no key identifier, so OpenSSL's reading of them never applies to Go.)
        context = Context(
            subject_key=cert.public_key(), self_signed=self_signed, issuer=None if self_signed else issuer,
            csr=csr, openssl=self.maker.openssl or 3,
        )  # fmt: skip
        wanted = [found for line in (*lines, *self.maker.added(lines, self_signed=self_signed))
                  if (found := expected(line, context)) is not None]  # fmt: skip
        wanted += self.maker.key_ids(cert, is_ca=role is not Role.GATEWAY_TLS, issuer=None if self_signed else issuer)
        return wanted

    def asked(self, role: Role, *, factory: str | None = None) -> AskedCertificate:
        """What this profile's scripts ask openssl to make for `role` (script profiles only)."""
        if self.script_set is None or not isinstance(self.shape(role).validity, Days):
            raise ValueError(f"profile {self.id} is not made by scripts")
        role = Role(role)
        shape = self.shape(role)
        script, command, output = _SCRIPT_STEPS[role]
        subject = None
        if role is Role.ROOT and factory is not None:
            subject = (("CN", facts.ROOT_CN), ("OU", factory))
        return AskedCertificate(
            script=script, line=0, command=command, output=output, self_signed=role is Role.ROOT,
            days=shape.validity.count, digest=shape.digest, extensions=shape.extensions, subject=subject,
        )  # fmt: skip


# Where each role's certificate is made by a script set (the line is not known here).
_SCRIPT_STEPS = {
    Role.ROOT: (facts.CREATE_CA, "req -x509", facts.ROOT_CERT),
    Role.GATEWAY_TLS: (facts.SIGN_TLS_CSR, "x509 -req", None),
    Role.DEVICE_CA: (facts.SIGN_CA_CSR, "x509 -req", None),
}

FIOCA = NamedProfile(
    "fioca", "fioca's own scripts run by OpenSSL 3, or its builders", OPENSSL_3, _FIOCA, reference.FIOCA
)
# Most factories first, so that a tie between profiles that make the same certificate names the
# one it most likely came from.
PROFILES: tuple[NamedProfile, ...] = (
    NamedProfile("fioctl-go-v0.41", "fioctl's Go PKI, v0.41 to v0.46", GO, _GO_V041),
    NamedProfile("fioctl-go-1.26", "fioctl's Go PKI after v0.46, built with Go 1.26", GO_125, _GO_V041),
    NamedProfile("fioctl-go-v0.39", "fioctl's Go PKI, v0.39 and v0.40", GO, _GO_V039),
    NamedProfile("fioctl-go-v0.37", "fioctl's Go PKI, v0.37 and v0.38", GO, _GO_V037),
    NamedProfile("api-2026-openssl-3", "the API's scripts, 2026 revision, run by OpenSSL 3", OPENSSL_3, _API_2026, "api-2026"),
    NamedProfile("api-2023-openssl-3", "the API's scripts, 2023 revision, run by OpenSSL 3", OPENSSL_3, _API_2023, "api-2023"),
    NamedProfile("api-2023-openssl-1.1", "the API's scripts, 2023 revision, run by OpenSSL 1.1", OPENSSL_1_1, _API_2023, "api-2023"),
    NamedProfile("api-2026-openssl-1.1", "the API's scripts, 2026 revision, run by OpenSSL 1.1", OPENSSL_1_1, _API_2026, "api-2026"),
    FIOCA,
    NamedProfile("fioca-openssl-1.1", "fioca's own scripts run by OpenSSL 1.1", OPENSSL_1_1, _FIOCA, reference.FIOCA),
)  # fmt: skip
PROFILES_BY_ID = {profile.id: profile for profile in PROFILES}


def script_profiles(openssl: int) -> tuple[NamedProfile, ...]:
    """The profiles a script set makes when run by this OpenSSL major version."""
    return tuple(profile for profile in PROFILES if profile.maker.openssl == openssl)


# --- Recognising --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recognition:
    """The named profile closest to a certificate, and how it differs ((): made as it makes them)."""

    role: Role
    profile: NamedProfile
    differences: tuple[str, ...]
    also: tuple[NamedProfile, ...] = ()  # other profiles that make exactly this certificate too

    @property
    def exact(self) -> bool:
        return not self.differences

    def note(self, artifact: str) -> str:
        """One line for the user: `tls-crt: matches fioctl-go-v0.41 (fioctl's Go PKI, ...)`."""
        named = f"{self.profile.id} ({self.profile.label})"
        if self.exact:
            others = f"; so do {', '.join(profile.id for profile in self.also)}" if self.also else ""
            return f"{artifact}: matches the named profile {named}{others}"
        return f"{artifact}: closest named profile is {named}; differs: {'; '.join(self.differences)}"


def recognise(
    cert: x509.Certificate,
    role: Role,
    *,
    issuer: x509.Certificate | None = None,
    csr: x509.CertificateSigningRequest | None = None,
    candidates: tuple[NamedProfile, ...] = PROFILES,
    prefer: NamedProfile | None = None,
) -> Recognition:
    """The closest of `candidates` for `cert` in `role`: fewest differences; on a tie `prefer`
    (say, the root's profile, for the certificates it signed), else the first named.

    `issuer` (the root, for the gateway and device CAs) lets the authorityKeyIdentifier be
    compared; `csr` lets the subject and subjectAltName be compared with what was asked."""
    role = Role(role)
    scored = [
        (profile, tuple(profile_differences(profile, cert, role, issuer=issuer, csr=csr))) for profile in candidates
    ]
    best, diffs = min(scored, key=lambda item: (len(item[1]), item[0] is not prefer))
    also = tuple(profile for profile, found in scored if not found and profile is not best) if not diffs else ()
    return Recognition(role, best, diffs, also)


def profile_differences(
    profile: NamedProfile,
    cert: x509.Certificate,
    role: Role,
    *,
    issuer: x509.Certificate | None = None,
    csr: x509.CertificateSigningRequest | None = None,
) -> list[str]:
    """Every way `cert` differs from what `profile` makes for `role`."""
    role = Role(role)
    shape = profile.shape(role)
    found: list[str] = []
    if not validity_matches(shape.validity, cert):
        found.append(
            f"valid {_days_text(cert.not_valid_after_utc - cert.not_valid_before_utc)} (profile: {shape.validity})"
        )
    found += _digest_and_key(cert, shape)
    found += _serial(cert, profile.maker)
    found += _subject(cert, role, profile.maker, csr)
    wanted = profile.expected_extensions(role, cert, issuer=issuer, csr=csr)
    # Without its issuer a certificate's authorityKeyIdentifier cannot be told (a root is its own).
    unknown = issuer is None and role is not Role.ROOT
    found += differences(cert, wanted, ignore=frozenset({ExtensionOID.AUTHORITY_KEY_IDENTIFIER} if unknown else ()))
    return found


def _digest_and_key(cert: x509.Certificate, shape: CertShape) -> list[str]:
    found = []
    try:
        digest = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        digest = None
    if digest is None or digest.name != shape.digest:
        found.append(f"signed with {digest.name if digest else 'an unknown digest'} (profile: {shape.digest})")
    try:
        kind = key_kind(cert.public_key())
    except (ValueError, UnsupportedAlgorithm):
        kind = "that does not parse"
    if kind != f"EC {CURVE_NAME}":
        found.append(f"key {kind} (profile: EC {CURVE_NAME})")
    return found


def _serial(cert: x509.Certificate, maker: Maker) -> list[str]:
    bits = cert.serial_number.bit_length()
    if bits < facts.RANDOM_SERIAL_MIN_BITS:
        return [f"serial {cert.serial_number} is not random (profile: {maker.serial_bits} random bits)"]
    if bits > maker.serial_bits:
        return [f"serial has {bits} bits (profile: {maker.name} draws {maker.serial_bits})"]
    return []


def _subject(cert: x509.Certificate, role: Role, maker: Maker, csr: x509.CertificateSigningRequest | None) -> list[str]:
    """The root's `CN=Factory-CA, OU=<factory>`; a signed CSR's subject as the maker copies it
    (OpenSSL: as is; Go: the same names, re-encoded in its own order)."""
    if role is Role.ROOT:
        order = [attribute.oid for attribute in cert.subject]
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if order != [NameOID.COMMON_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME] or cn[0].value != facts.ROOT_CN:
            return [f"subject is {name_text(cert.subject)} (profile: CN={facts.ROOT_CN}, OU=<factory>)"]
        return []
    if csr is None:
        return []
    if maker.openssl is not None:
        if cert.subject.public_bytes() != csr.subject.public_bytes():
            return ["subject is not the CSR's as OpenSSL copies it (the same names, order and encoding)"]
        return []
    names = sorted((attribute.oid.dotted_string, attribute.value) for attribute in cert.subject)
    if names != sorted((attribute.oid.dotted_string, attribute.value) for attribute in csr.subject):
        return ["subject does not hold the CSR's names"]
    return []


def pki_notes(
    root: x509.Certificate,
    issued: list[tuple[str, x509.Certificate, Role, x509.CertificateSigningRequest | None]],
    *,
    root_artifact: str = facts.ROOT_CERT,
) -> list[str]:
    """One note per certificate of a PKI (`Recognition.note`): the root first, then each
    (artifact, certificate, role, CSR or None) it signed, ties settled in favour of the root's profile."""
    recognised = recognise(root, Role.ROOT)
    notes = [recognised.note(root_artifact)]
    for artifact, cert, role, csr in issued:
        notes.append(recognise(cert, role, issuer=root, csr=csr, prefer=recognised.profile).note(artifact))
    return notes
