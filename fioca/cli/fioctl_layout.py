"""fioctl's text layouts, byte for byte: `keys ca show` (plain and `--pretty`) and the CRL of
`disable-device-ca` / `revoke-device-ca --dry-run --pretty`.

fioctl prints with Go's `fmt.Println`, which puts a space between operands and a newline at
the end; `Printer.println` does the same, so each line below reads like fioctl's source
(`subcommands/keys/ca_show.go`, `ca_revoke_device_ca.go`). Values are printed as Go prints
them: names as `pkix.Name.String()` (RFC 2253 order, most specific first), times as
`time.Time.String()`, key usages and extended key usages with fioctl's own words.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import (
    ExtendedKeyUsageOID,
    ExtensionOID,
    NameOID,
    SignatureAlgorithmOID,
)

from fioca.pki import profiles


class Printer:
    """What fmt.Print / fmt.Println write, collected."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def print(self, *operands: Any) -> None:
        self.parts.append("".join(str(operand) for operand in operands))

    def println(self, *operands: Any) -> None:
        self.parts.append(" ".join(str(operand) for operand in operands) + "\n")

    def text(self) -> str:
        return "".join(self.parts)


# --- keys ca show -----------------------------------------------------------------------------

def show(certs: dict[str, Any], *, pretty: bool, just: str | None) -> tuple[str, str]:
    """(stdout, stderr) of `keys ca show`. `just` is None, "root", "tls" or "device-cas".

    The full layout is fioctl's exactly. With `--just-*`, stdout holds only the PEM (what
    `update` takes back), and the disabled serials that fioctl appends go to stderr.
    """
    out = Printer()
    disabled = [str(serial) for serial in certs.get("disabled-ca-serials") or []]

    def one(field: str) -> None:
        value = certs.get(field) or ""
        if pretty:
            out.print(pretty_certificates(value))
        else:
            out.println(profiles.pem_only(value) if just else value)

    if just is not None:
        one({"root": "root-crt", "tls": "tls-crt", "device-cas": "ca-crt"}[just])
        if just == "device-cas" and disabled:
            return out.text(), _disabled(disabled, leading_blank=False)
        return out.text(), ""
    meta = certs.get("change-meta") or {}
    out.println("## Change Metadata")
    out.println("Created at:", meta.get("created-at") or "")
    for key, label in (("created-by", "Created by:"), ("updated-at", "Updated at:"), ("updated-by", "Updated by:")):
        if meta.get(key):
            out.println(label, meta[key])
    out.println("## Factory root certificate")
    one("root-crt")
    out.println("## Server TLS Certificate")
    one("tls-crt")
    out.println("\n## Device Authentication Certificate(s)")
    one("ca-crt")
    if disabled:
        out.print(_disabled(disabled, leading_blank=True))
    return out.text(), ""


def _disabled(serials: list[str], *, leading_blank: bool) -> str:
    out = Printer()
    out.println(("\n" if leading_blank else "") + "## Disabled Device Authentication Certificate Serial(s)")
    for serial in serials:
        out.println(" - ", serial)
    return out.text()


# --- --pretty: one certificate ----------------------------------------------------------------------


def pretty_certificates(pem: str) -> str:
    """fioctl's `prettyPrint`: each certificate of the bundle; text before a block is skipped,
    text after the last one is reported as fioctl reports it."""
    out = Printer()
    end = 0
    for start, end in profiles.pem_spans(pem):
        try:
            cert = x509.load_pem_x509_certificate(pem[start:end].encode("ascii", errors="replace"))
            cert.extensions  # noqa: B018 - parsed here, so a bad extension is reported like Go's parse error
        except ValueError as error:
            out.println("Failed to parse certificate:" + f"x509: {error}")
            continue
        _pretty_certificate(out, cert)
    if pem[end:].strip():
        out.println("Failed to parse remaining certificates: invalid PEM data")
    return out.text()


def _pretty_certificate(out: Printer, cert: x509.Certificate) -> None:
    out.println("Certificate:")
    out.println("\tVersion:", cert.version.value + 1)
    out.println("\tSerial Number:", cert.serial_number)
    out.println("\tSignature Algorithm:", signature_algorithm(cert.signature_algorithm_oid))
    out.println("\tIssuer:", go_name(cert.issuer))
    out.println("\tValidity")
    out.println("\t\tNot Before:", go_time(cert.not_valid_before_utc))
    out.println("\t\tNot After:", go_time(cert.not_valid_after_utc))
    out.println("\tSubject:", go_name(cert.subject))
    out.println("\tSubject Public Key Info")
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _CURVES:
        out.println("\t\tNIST CURVE:", _CURVES[key.curve.name])
        out.print("\t\t\t")
        point = key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        for index, byte in enumerate(point):
            out.print(f"{byte:02x}:")
            if (index + 1) % 15 == 0:
                out.println()
                out.print("\t\t\t")
        out.println()
    else:
        out.println("Failed to read public key")
    constraints = _extension_value(cert, x509.BasicConstraints)
    is_ca = constraints is not None and constraints.ca
    out.println("\tIs CA:", "true" if is_ca else "false")
    out.println("\tExtensions:")
    for extension in cert.extensions:
        _pretty_extension(out, extension, cert, is_ca)


def _pretty_extension(out: Printer, extension: x509.Extension, cert: x509.Certificate, is_ca: bool) -> None:
    title = _EXTENSION_TITLES.get(extension.oid)
    if title is None:
        out.println("\t\tUnknown OID", extension.oid.dotted_string)
        return
    out.print(f"\t\t{title}: ")
    if extension.critical:
        out.print("(critical)")
    value = extension.value
    if isinstance(value, x509.SubjectKeyIdentifier):
        out.println("\n\t\t\t", value.digest.hex())
    elif isinstance(value, x509.AuthorityKeyIdentifier):
        out.println("\n\t\t\t", (value.key_identifier or b"").hex())
    elif isinstance(value, x509.KeyUsage):
        out.println()
        out.println("\t\t\t", key_usage_words(value))
    elif isinstance(value, x509.BasicConstraints):
        out.println()
        if is_ca:
            out.println("\t\t\tCA:TRUE MaxPath ", -1 if value.path_length is None else value.path_length)
        else:
            out.println("\t\t\tCA:FALSE")
    elif isinstance(value, x509.ExtendedKeyUsage):
        out.println()
        out.println("\t\t\t", ext_key_usage_words(value))
    elif isinstance(value, x509.SubjectAlternativeName):
        out.println()
        for label, kind in (("DNS:", x509.DNSName), ("IP:", x509.IPAddress), ("URI:", x509.UniformResourceIdentifier), ("Email:", x509.RFC822Name)):
            for name in value.get_values_for_type(kind):
                out.println(f"\t\t\t{label}", _go_ip(name) if kind is x509.IPAddress else name)


_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
_EXTENSION_TITLES = {
    ExtensionOID.SUBJECT_KEY_IDENTIFIER: "x509v3 Subject Key Id",
    ExtensionOID.AUTHORITY_KEY_IDENTIFIER: "x509v3 Authority Key Id",
    ExtensionOID.KEY_USAGE: "x509v3 Key Usage",
    ExtensionOID.BASIC_CONSTRAINTS: "x509v3 Basic Constraints",
    ExtensionOID.EXTENDED_KEY_USAGE: "x509v3 Extended Key Usage",
    ExtensionOID.SUBJECT_ALTERNATIVE_NAME: "x509v3 Subject Name Alternative",
}


def key_usage_words(usage: x509.KeyUsage) -> str:
    """fioctl's `keyUsage`: each bit's name followed by a space."""
    bits = [
        ("digitalSignature", usage.digital_signature),
        ("nonRepudiation", usage.content_commitment),
        ("keyEncipherment", usage.key_encipherment),
        ("dataEncipherment", usage.data_encipherment),
        ("keyAgreement", usage.key_agreement),
        ("keyCertSign", usage.key_cert_sign),
        ("cRLSign", usage.crl_sign),
        ("encipherOnly", usage.key_agreement and usage.encipher_only),
        ("decipherOnly", usage.key_agreement and usage.decipher_only),
    ]
    return "".join(f"{name} " for name, on in bits if on)


# Go's x509.ExtKeyUsage numbers; OIDs Go does not know are left out, as Go leaves them out.
_GO_EXT_KEY_USAGES = {
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE: 0,
    ExtendedKeyUsageOID.SERVER_AUTH: 1,
    ExtendedKeyUsageOID.CLIENT_AUTH: 2,
    ExtendedKeyUsageOID.CODE_SIGNING: 3,
    ExtendedKeyUsageOID.EMAIL_PROTECTION: 4,
    x509.ObjectIdentifier("1.3.6.1.5.5.7.3.5"): 5,
    x509.ObjectIdentifier("1.3.6.1.5.5.7.3.6"): 6,
    x509.ObjectIdentifier("1.3.6.1.5.5.7.3.7"): 7,
    ExtendedKeyUsageOID.TIME_STAMPING: 8,
    ExtendedKeyUsageOID.OCSP_SIGNING: 9,
    x509.ObjectIdentifier("1.3.6.1.4.1.311.10.3.3"): 10,
    x509.ObjectIdentifier("2.16.840.1.113730.4.1"): 11,
    x509.ObjectIdentifier("1.3.6.1.4.1.311.2.1.22"): 12,
    x509.ObjectIdentifier("1.3.6.1.4.1.311.61.1.1"): 13,
}
_GO_EXT_KEY_USAGE_WORDS = {0: "KeyUsageAny", 1: "ServerAuth", 2: "ClientAuth"}


def ext_key_usage_words(usages: x509.ExtendedKeyUsage) -> str:
    numbers = [_GO_EXT_KEY_USAGES[oid] for oid in usages if oid in _GO_EXT_KEY_USAGES]
    return "".join(f"{_GO_EXT_KEY_USAGE_WORDS.get(n, f'Unknown({n})')} " for n in numbers)


def _go_ip(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped or address)  # Go prints an IPv4-mapped address as IPv4


def _extension_value(cert: x509.Certificate, kind: type) -> Any:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


# --- Go's ways of printing values ---------------------------------------------------------------

_SIGNATURE_ALGORITHMS = {
    SignatureAlgorithmOID.RSA_WITH_MD5: "MD5-RSA",
    SignatureAlgorithmOID.RSA_WITH_SHA1: "SHA1-RSA",
    SignatureAlgorithmOID.RSA_WITH_SHA256: "SHA256-RSA",
    SignatureAlgorithmOID.RSA_WITH_SHA384: "SHA384-RSA",
    SignatureAlgorithmOID.RSA_WITH_SHA512: "SHA512-RSA",
    SignatureAlgorithmOID.DSA_WITH_SHA1: "DSA-SHA1",
    SignatureAlgorithmOID.DSA_WITH_SHA256: "DSA-SHA256",
    SignatureAlgorithmOID.ECDSA_WITH_SHA1: "ECDSA-SHA1",
    SignatureAlgorithmOID.ECDSA_WITH_SHA256: "ECDSA-SHA256",
    SignatureAlgorithmOID.ECDSA_WITH_SHA384: "ECDSA-SHA384",
    SignatureAlgorithmOID.ECDSA_WITH_SHA512: "ECDSA-SHA512",
    SignatureAlgorithmOID.ED25519: "Ed25519",
}


def signature_algorithm(oid: x509.ObjectIdentifier) -> str:
    return _SIGNATURE_ALGORITHMS.get(oid, "0")  # Go prints an unknown algorithm as its number, 0


def go_time(moment: datetime) -> str:
    """time.Time.String() of a UTC time with whole seconds."""
    return moment.strftime("%Y-%m-%d %H:%M:%S +0000 UTC")


# pkix.Name.String(): the attributes Go parses into fields, in the order ToRDNSequence builds
# them (the string is that sequence reversed); CN and SERIALNUMBER keep only their last value.
_GO_NAME_FIELDS = [
    (NameOID.COUNTRY_NAME, "C", False),
    (NameOID.STATE_OR_PROVINCE_NAME, "ST", False),
    (NameOID.LOCALITY_NAME, "L", False),
    (NameOID.STREET_ADDRESS, "STREET", False),
    (NameOID.POSTAL_CODE, "POSTALCODE", False),
    (NameOID.ORGANIZATION_NAME, "O", False),
    (NameOID.ORGANIZATIONAL_UNIT_NAME, "OU", False),
    (NameOID.COMMON_NAME, "CN", True),
    (NameOID.SERIAL_NUMBER, "SERIALNUMBER", True),
]
_GO_FIELD_OIDS = {oid for oid, _label, _last in _GO_NAME_FIELDS}
_GO_PRINTABLE = re.compile(r"[A-Za-z0-9 '()+,\-./:=?*&]*")


def go_name(name: x509.Name) -> str:
    attributes = [attribute for rdn in name.rdns for attribute in rdn]
    sequence: list[list[str]] = [[_go_raw_attribute(a)] for a in attributes if a.oid not in _GO_FIELD_OIDS]
    for oid, label, last_only in _GO_NAME_FIELDS:
        values = [str(a.value) for a in attributes if a.oid == oid]
        if values:
            sequence.append([f"{label}={_go_escape(v)}" for v in (values[-1:] if last_only else values)])
    return ",".join("+".join(rdn) for rdn in reversed(sequence))


def _go_escape(value: str) -> str:
    escaped = []
    for index, char in enumerate(value):
        if char in ',+"\\<>;' or (char == " " and index in (0, len(value) - 1)) or (char == "#" and index == 0):
            escaped.append("\\")
        escaped.append(char)
    return "".join(escaped)


def _go_raw_attribute(attribute: x509.NameAttribute) -> str:
    """An attribute Go has no name for: OID=#<DER of the value as Go re-encodes a string>."""
    value = attribute.value if isinstance(attribute.value, str) else attribute.value.decode("latin-1")
    tag = 0x13 if _GO_PRINTABLE.fullmatch(value) else 0x0C  # PrintableString, else UTF8String
    body = value.encode("utf-8")
    return f"{attribute.oid.dotted_string}=#{bytes([tag]).hex()}{_der_length(len(body))}{body.hex()}"


def _der_length(length: int) -> str:
    if length < 0x80:
        return f"{length:02x}"
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return f"{0x80 | len(octets):02x}{octets.hex()}"


# --- The CRL of disable/revoke-device-ca --dry-run --pretty --------------------------------------

_CRL_REASON_WORDS = {9: "Revoke", 6: "Disable", 8: "Renew"}  # fioctl's words (8 is "CrlCaRenew")


def pretty_crl(crl: x509.CertificateRevocationList) -> str:
    out = Printer()
    out.println("Certificate Revocation List:")
    out.println("\tIssuer:", go_name(crl.issuer))
    out.println("\tValidity:")
    out.println("\t\tNot Before:", go_time(crl.last_update_utc))
    out.println("\t\tNot After:", go_time(crl.next_update_utc) if crl.next_update_utc else "0001-01-01 00:00:00 +0000 UTC")
    out.println("\tSignature Algorithm:", signature_algorithm(crl.signature_algorithm_oid))
    out.println("\tSignature:", crl.signature.hex())
    out.println("\tRevoked Certificates:")
    for entry in crl:
        out.println("\t\tSerial:", entry.serial_number)
        out.println("\t\t\tRevocation Date:", go_time(entry.revocation_date_utc))
        if len(entry.extensions):
            out.println("\t\t\tExtensions:")
            for extension in entry.extensions:
                if isinstance(extension.value, x509.CRLReason):
                    code = profiles.REASON_CODES[extension.value.reason]
                    out.print("\t\t\t\tx509v3 Reason Code:")
                    if extension.critical:
                        out.print("(critical)")
                    out.println("\n\t\t\t\t\t", _CRL_REASON_WORDS.get(code, ""), "-", code)
                else:
                    out.println("\t\t\t\tUnknown OID", extension.oid.dotted_string)
    if len(crl.extensions):
        out.println("\tExtensions:")
        for extension in crl.extensions:
            if isinstance(extension.value, x509.AuthorityKeyIdentifier):
                out.print("\t\tx509v3 Authority Key Id: ")
                if extension.critical:
                    out.print("(critical)")
                out.println("\n\t\t\t", (extension.value.key_identifier or b"").hex())
            elif isinstance(extension.value, x509.CRLNumber):
                out.print("\t\tx509v3 CRL Number: ")
                if extension.critical:
                    out.print("(critical)")
                out.println("\n\t\t\t", extension.value.crl_number)
            else:
                out.println("\t\tUnknown OID", extension.oid.dotted_string)
    return out.text()
