"""Extensions as an OpenSSL config asks for them, and the values a certificate must then hold.

The scripts' text asks in OpenSSL's vocabulary (`keyUsage = critical, keyCertSign`); the named
profiles are written in the same words (`fioca.pki.asked.AskedExtension`). This module turns
such a line into an `Expected` extension (its OID, criticality and `cryptography` value, with
what OpenSSL computes itself: `subjectKeyIdentifier = hash`, `authorityKeyIdentifier = keyid,
issuer`, a `subjectAltName` copied from the CSR) and lists how a certificate differs from a
set of them. Both the recognition of named profiles and the strict checks use it, so the two
read a profile the same way.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, ObjectIdentifier

from fioca.pki.asked import AskedExtension
from fioca.pki.profiles.details import (
    KEY_USAGE_BITS,
    KEY_USAGE_NAMES,
    eku_names,
    general_name_text,
    key_id_sha1,
    key_usage_names,
    subject_key_identifier,
)

# OpenSSL's config names of the extensions fioca knows, and their OIDs.
CONFIG_NAMES: dict[str, ObjectIdentifier] = {
    "basicConstraints": ExtensionOID.BASIC_CONSTRAINTS,
    "keyUsage": ExtensionOID.KEY_USAGE,
    "extendedKeyUsage": ExtensionOID.EXTENDED_KEY_USAGE,
    "subjectKeyIdentifier": ExtensionOID.SUBJECT_KEY_IDENTIFIER,
    "authorityKeyIdentifier": ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    "subjectAltName": ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
    "issuerAltName": ExtensionOID.ISSUER_ALTERNATIVE_NAME,
    "nameConstraints": ExtensionOID.NAME_CONSTRAINTS,
    "policyConstraints": ExtensionOID.POLICY_CONSTRAINTS,
    "certificatePolicies": ExtensionOID.CERTIFICATE_POLICIES,
    "crlDistributionPoints": ExtensionOID.CRL_DISTRIBUTION_POINTS,
    "authorityInfoAccess": ExtensionOID.AUTHORITY_INFORMATION_ACCESS,
    "subjectInfoAccess": ExtensionOID.SUBJECT_INFORMATION_ACCESS,
    "inhibitAnyPolicy": ExtensionOID.INHIBIT_ANY_POLICY,
    "policyMappings": ExtensionOID.POLICY_MAPPINGS,
    "tlsfeature": ExtensionOID.TLS_FEATURE,
    "noCheck": ExtensionOID.OCSP_NO_CHECK,
    "nsComment": ObjectIdentifier("2.16.840.1.113730.1.13"),
    "nsCertType": ObjectIdentifier("2.16.840.1.113730.1.1"),
}
_NAMES_BY_OID = {oid: name for name, oid in CONFIG_NAMES.items()}

# keyUsage and extendedKeyUsage values as OpenSSL reads them (short and long names).
_KEY_USAGE_LONG = {
    "Digital Signature": "digital_signature",
    "Non Repudiation": "content_commitment",
    "Key Encipherment": "key_encipherment",
    "Data Encipherment": "data_encipherment",
    "Key Agreement": "key_agreement",
    "Certificate Sign": "key_cert_sign",
    "CRL Sign": "crl_sign",
    "Encipher Only": "encipher_only",
    "Decipher Only": "decipher_only",
}
_KEY_USAGE_WORDS = {**{name: bit for bit, name in KEY_USAGE_NAMES.items()}, **_KEY_USAGE_LONG}
_EKU_WORDS = {
    "serverAuth": ExtendedKeyUsageOID.SERVER_AUTH,
    "clientAuth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "codeSigning": ExtendedKeyUsageOID.CODE_SIGNING,
    "emailProtection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "timeStamping": ExtendedKeyUsageOID.TIME_STAMPING,
    "OCSPSigning": ExtendedKeyUsageOID.OCSP_SIGNING,
    "anyExtendedKeyUsage": ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
}
_DOTTED_OID = re.compile(r"[0-2](\.[0-9]+)+")


class AskedValueError(ValueError):
    """An extension value fioca cannot read (its message says which and why)."""


class _Absent:
    """The marker for "this line asks for no extension" (`subjectKeyIdentifier = none`)."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT = _Absent()


@dataclass(frozen=True)
class Expected:
    """One extension a certificate must hold."""

    oid: ObjectIdentifier
    critical: bool
    # The value it must hold; None when only its presence and criticality can be compared.
    value: x509.ExtensionType | None

    @property
    def name(self) -> str:
        return extension_name(self.oid)


def extension_name(oid: ObjectIdentifier) -> str:
    return _NAMES_BY_OID.get(oid) or getattr(oid, "_name", None) or oid.dotted_string


def config_oid(name: str) -> ObjectIdentifier:
    """The OID of an extension name as a config writes it (or a dotted OID)."""
    if name in CONFIG_NAMES:
        return CONFIG_NAMES[name]
    if _DOTTED_OID.fullmatch(name):
        return ObjectIdentifier(name)
    raise AskedValueError(f"asks for an extension fioca does not know: {name}")


@dataclass(frozen=True)
class Context:
    """What OpenSSL looks at when it computes a value: the certificate's key, the issuer, the CSR."""

    subject_key: Any  # the certificate's public key
    self_signed: bool
    issuer: x509.Certificate | None = None  # the issuing CA; None when self-signed or not known
    csr: x509.CertificateSigningRequest | None = None
    openssl: int = 3  # OpenSSL's major version: 3 adds defaults and treats self-signed AKIDs apart


def openssl_defaults(
    lines: tuple[AskedExtension, ...], *, self_signed: bool, openssl: int
) -> tuple[AskedExtension, ...]:
    """What OpenSSL adds by itself to what a config asks: 3.x a subjectKeyIdentifier, and an
    authorityKeyIdentifier when not self-signed, unless the config names them; 1.1 nothing."""
    if openssl < 3:
        return ()
    named = {line.name for line in lines}
    added = []
    if "subjectKeyIdentifier" not in named:
        added.append(AskedExtension("subjectKeyIdentifier", False, ("hash",)))
    if not self_signed and "authorityKeyIdentifier" not in named:
        added.append(AskedExtension("authorityKeyIdentifier", False, ("keyid", "issuer")))
    return tuple(added)


def expected(line: AskedExtension, context: Context) -> Expected | None:
    """The extension a config line makes, or None when the line asks for none."""
    oid = config_oid(line.name)
    value = _value(oid, line, context)
    if value is ABSENT:
        return None
    return Expected(oid, line.critical, value)  # type: ignore[arg-type]


def _value(oid: ObjectIdentifier, line: AskedExtension, context: Context) -> Any:
    values = line.values
    if oid == ExtensionOID.SUBJECT_ALTERNATIVE_NAME:
        if values is None:  # computed at run time (`subjectAltName = $dns`): the CSR's names
            return _csr_names(context.csr)
        return x509.SubjectAlternativeName([_general_name(value) for value in values])
    if values is None:
        return None
    readers = {
        ExtensionOID.BASIC_CONSTRAINTS: _basic_constraints,
        ExtensionOID.KEY_USAGE: _key_usage,
        ExtensionOID.EXTENDED_KEY_USAGE: _extended_key_usage,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER: _subject_key_id,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER: _authority_key_id,
    }
    reader = readers.get(oid)
    return reader(values, context) if reader is not None else None


def _csr_names(csr: x509.CertificateSigningRequest | None) -> Any:
    if csr is None:
        return None
    try:
        return csr.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    except x509.ExtensionNotFound:
        return ABSENT


def _basic_constraints(values: tuple[str, ...], _context: Context) -> x509.BasicConstraints:
    ca, path_length = False, None
    for value in values:
        key, _, setting = value.partition(":")
        if key.upper() == "CA" and setting.upper() in ("TRUE", "FALSE"):
            ca = setting.upper() == "TRUE"
        elif key.lower() == "pathlen" and setting.isdigit():
            path_length = int(setting)
        else:
            raise AskedValueError(f"basicConstraints value {value!r} is not one OpenSSL reads")
    return x509.BasicConstraints(ca=ca, path_length=path_length if ca else None)


def _key_usage(values: tuple[str, ...], _context: Context) -> x509.KeyUsage:
    bits = dict.fromkeys(KEY_USAGE_BITS, False)
    for value in values:
        if value not in _KEY_USAGE_WORDS:
            raise AskedValueError(f"keyUsage value {value!r} is not one OpenSSL reads")
        bits[_KEY_USAGE_WORDS[value]] = True
    try:
        return x509.KeyUsage(**bits)
    except ValueError:  # encipherOnly / decipherOnly without keyAgreement
        raise AskedValueError(f"keyUsage {', '.join(values)} is not a keyUsage OpenSSL makes") from None


def _extended_key_usage(values: tuple[str, ...], _context: Context) -> x509.ExtendedKeyUsage:
    purposes = []
    for value in values:
        if value in _EKU_WORDS:
            purposes.append(_EKU_WORDS[value])
        elif _DOTTED_OID.fullmatch(value):
            purposes.append(ObjectIdentifier(value))
        else:
            raise AskedValueError(f"extendedKeyUsage value {value!r} is not one OpenSSL reads")
    return x509.ExtendedKeyUsage(purposes)


def _general_name(value: str) -> x509.GeneralName:
    kind, _, text = value.partition(":")
    if kind == "DNS":
        return x509.DNSName(text)
    if kind == "IP":
        try:
            return x509.IPAddress(ipaddress.ip_address(text))
        except ValueError:
            raise AskedValueError(f"subjectAltName value {value!r} is not an IP address") from None
    if kind == "email" and text != "copy":
        return x509.RFC822Name(text)
    if kind == "URI":
        return x509.UniformResourceIdentifier(text)
    raise AskedValueError(f"subjectAltName value {value!r} is not one fioca can compare")


def _subject_key_id(values: tuple[str, ...], context: Context) -> Any:
    if values == ("none",):
        return ABSENT
    if values == ("hash",):
        return x509.SubjectKeyIdentifier(key_id_sha1(context.subject_key))
    literal = "".join(values).replace(":", "")
    try:
        return x509.SubjectKeyIdentifier(bytes.fromhex(literal))
    except ValueError:
        raise AskedValueError(f"subjectKeyIdentifier value {','.join(values)!r} is not one OpenSSL reads") from None


def _authority_key_id(values: tuple[str, ...], context: Context) -> Any:
    """OpenSSL's `keyid[:always], issuer[:always]`: the issuer's SKID, and the issuer's name and
    serial when asked always, or asked and no keyid could be had. OpenSSL 3 leaves the
    non-`always` parts out of a self-signed certificate. None (compare presence only) when the
    issuer is not known."""
    words = set(values)
    unknown = words - {"keyid", "keyid:always", "issuer", "issuer:always", "none"}
    if unknown:
        raise AskedValueError(f"authorityKeyIdentifier value {sorted(unknown)[0]!r} is not one OpenSSL reads")
    if "none" in words:
        return ABSENT
    if context.self_signed:
        if context.openssl >= 3 and not {"keyid:always", "issuer:always"} & words:
            return ABSENT
        # OpenSSL reads the SKID it adds to this very certificate; its own serial is not known here.
        return (
            None
            if "issuer:always" in words
            else x509.AuthorityKeyIdentifier(key_id_sha1(context.subject_key), None, None)
        )
    issuer = context.issuer
    if issuer is None:
        return None
    key_id = subject_key_identifier(issuer) if words & {"keyid", "keyid:always"} else None
    add_issuer = "issuer:always" in words or ("issuer" in words and key_id is None)
    if key_id is None and not add_issuer:
        return ABSENT
    if not add_issuer:
        return x509.AuthorityKeyIdentifier(key_id, None, None)
    return x509.AuthorityKeyIdentifier(key_id, [x509.DirectoryName(issuer.issuer)], issuer.serial_number)


# --- Comparing -------------------------------------------------------------------------------


def value_text(value: x509.ExtensionType | None) -> str:
    """A value in the words a config uses: `CA:TRUE, pathlen:0`, `keyCertSign, cRLSign`."""
    if value is None:
        return "(any value)"
    if isinstance(value, x509.BasicConstraints):
        text = f"CA:{'TRUE' if value.ca else 'FALSE'}"
        return text + (f", pathlen:{value.path_length}" if value.path_length is not None else "")
    if isinstance(value, x509.KeyUsage):
        return ", ".join(key_usage_names(value)) or "none"
    if isinstance(value, x509.ExtendedKeyUsage):
        return ", ".join(eku_names(value)) or "none"
    if isinstance(value, (x509.SubjectAlternativeName, x509.IssuerAlternativeName)):
        return ", ".join(general_name_text(name) for name in value) or "none"
    if isinstance(value, x509.SubjectKeyIdentifier):
        return f"keyid {value.digest.hex()[:16]}..."
    if isinstance(value, x509.AuthorityKeyIdentifier):
        parts = [f"keyid {value.key_identifier.hex()[:16]}..."] if value.key_identifier else []
        if value.authority_cert_serial_number is not None:
            parts.append(f"issuer and serial {value.authority_cert_serial_number}")
        return ", ".join(parts) or "empty"
    return type(value).__name__


def _critical_text(critical: bool) -> str:
    return "critical" if critical else "not critical"


def differences(
    cert: x509.Certificate,
    wanted: list[Expected],
    *,
    source: str = "profile",
    ignore: frozenset[ObjectIdentifier] = frozenset(),
) -> list[str]:
    """How `cert`'s extensions differ from `wanted` (missing, extra, criticality, value), each
    as a phrase naming what `source` ("profile", "asked") has; [] when they are the same set.
    Extensions in `ignore` are not compared."""
    found = {extension.oid: extension for extension in cert.extensions if extension.oid not in ignore}
    result = []
    for want in (want for want in wanted if want.oid not in ignore):
        have = found.pop(want.oid, None)
        if have is None:
            result.append(f"has no {want.name} ({source}: {_critical_text(want.critical)} {value_text(want.value)})")
            continue
        if have.critical != want.critical:
            result.append(f"{want.name} is {_critical_text(have.critical)} ({source}: {_critical_text(want.critical)})")
        if want.value is not None and have.value != want.value:
            result.append(f"{want.name} is {value_text(have.value)} ({source}: {value_text(want.value)})")
    for extra in found.values():
        result.append(f"has {extension_name(extra.oid)} {value_text(extra.value)} ({source}: none)")
    return result
