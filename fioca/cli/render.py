"""Text layouts: fioctl's `keys ca show` (plain and --pretty), create's summary, the dry-run plan."""

from __future__ import annotations

import hashlib
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, SignatureAlgorithmOID

from fioca.pki import profiles
from fioca.pki.hsm import HsmSettings

_NAME_LABELS = {
    NameOID.COMMON_NAME: "CN",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.COUNTRY_NAME: "C",
    NameOID.BUSINESS_CATEGORY: "businessCategory",
}
_SIGNATURE_NAMES = {
    SignatureAlgorithmOID.ECDSA_WITH_SHA256: "ECDSA-SHA256",
    SignatureAlgorithmOID.ECDSA_WITH_SHA384: "ECDSA-SHA384",
    SignatureAlgorithmOID.ECDSA_WITH_SHA512: "ECDSA-SHA512",
    SignatureAlgorithmOID.RSA_WITH_SHA256: "SHA256-RSA",
}
_EKU_NAMES = {
    ExtendedKeyUsageOID.CLIENT_AUTH: "TLS Web Client Authentication",
    ExtendedKeyUsageOID.SERVER_AUTH: "TLS Web Server Authentication",
}


def show_text(certs: dict[str, Any], *, pretty: bool, just: str | None) -> str:
    """fioctl's `keys ca show` layout. `just` is None, "root", "tls" or "device-cas"."""
    lines: list[str] = []

    def body(pem: str | None) -> None:
        if not pem:
            lines.append("(none)")
        elif pretty:
            lines.extend(pretty_bundle(pem))
        else:
            lines.append(pem.rstrip("\n"))

    if just is None:
        meta = certs.get("change-meta") or {}
        lines.append("## Change Metadata")
        lines.append(f"Created at: {meta.get('created-at') or ''}")
        for key, label in (("created-by", "Created by"), ("updated-at", "Updated at"), ("updated-by", "Updated by")):
            if meta.get(key):
                lines.append(f"{label}: {meta[key]}")
        lines.append("")
    if just in (None, "root"):
        lines.append("## Factory root certificate")
        body(certs.get("root-crt"))
    if just in (None, "tls"):
        lines.append("## Server TLS Certificate")
        body(certs.get("tls-crt"))
    if just in (None, "device-cas"):
        lines.append("")
        lines.append("## Device Authentication Certificate(s)")
        body(certs.get("ca-crt"))
        disabled = certs.get("disabled-ca-serials") or []
        if disabled:
            lines.append("## Disabled Device Authentication Certificate Serial(s)")
            lines.extend(f" -  {serial}" for serial in disabled)
    return "\n".join(lines)


def pretty_bundle(pem: str) -> list[str]:
    lines: list[str] = []
    for cert in profiles.load_cert_bundle(pem.encode(), "certificate"):
        lines.extend(pretty_cert(cert))
    return lines


def _name(name: x509.Name) -> str:
    return ",".join(f"{_NAME_LABELS.get(attr.oid, attr.oid.dotted_string)}={attr.value}" for attr in name)


def _hex_lines(data: bytes, indent: str) -> list[str]:
    octets = [f"{b:02x}" for b in data]
    return [indent + ":".join(octets[i : i + 15]) + (":" if i + 15 < len(octets) else "") for i in range(0, len(octets), 15)]


def pretty_cert(cert: x509.Certificate) -> list[str]:
    """One certificate, laid out as fioctl's `--pretty` does."""
    lines = [
        "Certificate:",
        f"\tVersion: {cert.version.value + 1}",
        f"\tSerial Number: {cert.serial_number}",
        f"\tSignature Algorithm: {_SIGNATURE_NAMES.get(cert.signature_algorithm_oid, cert.signature_algorithm_oid.dotted_string)}",
        f"\tIssuer: {_name(cert.issuer)}",
        "\tValidity",
        f"\t\tNot Before: {cert.not_valid_before_utc:%b %d %H:%M:%S %Y} UTC",
        f"\t\tNot After : {cert.not_valid_after_utc:%b %d %H:%M:%S %Y} UTC",
        f"\tSubject: {_name(cert.subject)}",
        "\tSubject Public Key Info:",
    ]
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        lines += ["\t\tPublic Key Algorithm: ECDSA", f"\t\tNIST CURVE: {_curve(key)}"]
        lines += _hex_lines(key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint), "\t\t\t")
    else:
        lines.append(f"\t\tPublic Key Algorithm: {key.__class__.__name__}")
    is_ca = _basic_constraints(cert)
    lines.append(f"\tIs CA: {'true' if is_ca else 'false'}")
    lines.append("\tExtensions:")
    for ext in cert.extensions:
        crit = " (critical)" if ext.critical else ""
        lines.append(f"\t\t{_ext_title(ext.value)}:{crit}")
        lines.extend(f"\t\t\t{value}" for value in _ext_values(ext.value))
    return lines


def _curve(key: ec.EllipticCurvePublicKey) -> str:
    return {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}.get(key.curve.name, key.curve.name)


def _basic_constraints(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _ext_title(value: x509.ExtensionType) -> str:
    return {
        x509.KeyUsage: "x509v3 Key Usage",
        x509.ExtendedKeyUsage: "x509v3 Extended Key Usage",
        x509.BasicConstraints: "x509v3 Basic Constraints",
        x509.SubjectAlternativeName: "x509v3 Subject Alternative Name",
        x509.SubjectKeyIdentifier: "x509v3 Subject Key Identifier",
        x509.AuthorityKeyIdentifier: "x509v3 Authority Key Identifier",
    }.get(type(value), value.oid.dotted_string)


def _ext_values(value: x509.ExtensionType) -> list[str]:
    if isinstance(value, x509.KeyUsage):
        names = [
            ("digital_signature", "Digital Signature"),
            ("content_commitment", "Non Repudiation"),
            ("key_encipherment", "Key Encipherment"),
            ("data_encipherment", "Data Encipherment"),
            ("key_agreement", "Key Agreement"),
            ("key_cert_sign", "Certificate Sign"),
            ("crl_sign", "CRL Sign"),
        ]
        return [", ".join(label for attr, label in names if getattr(value, attr))]
    if isinstance(value, x509.ExtendedKeyUsage):
        return [", ".join(_EKU_NAMES.get(oid, oid.dotted_string) for oid in value)]
    if isinstance(value, x509.BasicConstraints):
        text = f"CA:{'TRUE' if value.ca else 'FALSE'}"
        return [text + (f", pathlen:{value.path_length}" if value.path_length is not None else "")]
    if isinstance(value, x509.SubjectAlternativeName):
        return [", ".join(f"DNS:{name}" for name in value.get_values_for_type(x509.DNSName))]
    if isinstance(value, x509.SubjectKeyIdentifier):
        return [value.digest.hex(":").upper()]
    if isinstance(value, x509.AuthorityKeyIdentifier) and value.key_identifier:
        return [value.key_identifier.hex(":").upper()]
    return []


def create_summary(result: Any, hsm: HsmSettings | None = None) -> dict[str, Any]:
    """What `keys ca create` reports at the end, as data (printed as text or JSON)."""
    summary = {
        "factory": result.answer.factory,
        "root_fingerprint_sha256": result.root_fingerprint,
        "gateway_hosts": result.gateway_hosts,
        "patched_fields": list(result.patch_body),
        "scripts": "server" if result.answer.scripts_from_server else "bundled reference",
        "files": {path.name: str(path) for path in result.stored},
    }
    if hsm is not None:
        summary["root_key"] = hsm.key_uri
    return summary


def create_summary_text(summary: dict[str, Any], hsm: HsmSettings | None = None) -> str:
    """The summary as text, ending with advice on keeping the root key (a file, or on the HSM token)."""
    lines = [
        f"Factory {summary['factory']} now has its own PKI.",
        f"Root of trust SHA-256 fingerprint: {summary['root_fingerprint_sha256']}",
        "Device gateway host names: " + ", ".join(summary["gateway_hosts"]),
        "Files:",
    ]
    lines += [f"  {name:<20} {path}" for name, path in summary["files"].items()]
    if hsm is None:
        lines.append("Keep factory_ca.key offline and backed up: the root of trust can be set only once.")
    else:  # HSM mode never makes factory_ca.key
        lines += [
            f"The root key is on HSM token '{hsm.token_label}' (object root-ca, id 01); no factory_ca.key exists.",
            "Back up the token as your HSM's vendor documents (the key cannot be exported), and keep "
            "factory_ca.pem and local-ca.key: the root of trust can be set only once.",
        ]
    return "\n".join(lines)


def _hsm_dry_run_lines(info: dict[str, Any]) -> list[str]:
    """The HSM part of the dry-run text, from the plan's `hsm_settings` (HsmSettings.describe())."""
    env = ", ".join(f"{name}={value}" for name, value in info["script_env"].items())
    return [
        f"HSM mode: the root key is made and used on token '{info['token_label']}' "
        f"(module {info['module']}); object {info['key']}",
        "  create_ca runs its HSM branch: pkcs11-tool --keypairgen (label root-ca, id 01), "
        "then openssl req with the pkcs11 engine",
        "  the signing scripts run openssl with -engine pkcs11 -CAkeyform engine; the PIN is read from env:HSM_PIN",
        f"  script environment (HSM mode only): {env}",
    ]


def dry_run_text(scripts: dict[str, str], plan: dict[str, Any], audit_line: str) -> str:
    """The scripts with their sizes and digests, then the numbered plan (with its HSM part, if any)."""
    lines: list[str] = []
    for name, text in scripts.items():
        digest = hashlib.sha256(text.encode()).hexdigest()
        lines.append(f"==> {name}  ({len(text.encode())} bytes, sha256 {digest})")
        lines.append(text.rstrip("\n"))
        lines.append("")
    lines.append("==> plan")
    lines.append(f"work dir (private, 0700; removed when done): {plan['work_dir']}")
    lines.append(f"written into it first: {', '.join(plan['inputs'])} and the scripts (0700)")
    for number, step in enumerate(plan["steps"], 1):
        lines.append(f"{number}. {step['progress']}")
        lines.append(f"   run: {step['command']}   (cwd {step['cwd']})")
        lines.append(f"   produces: {', '.join(step['produces'])}")
    lines.append(f"{len(plan['steps']) + 1}. check every artifact against its profile")
    lines.append(f"{len(plan['steps']) + 2}. keep in {plan['pki_dir']} (0400): {', '.join(plan['kept'])}")
    lines.append(f"{len(plan['steps']) + 3}. PATCH certs/ with:")
    lines += [f"     {name}: {source}" for name, source in plan["patch"].items()]
    lines.append(audit_line)
    if plan.get("hsm_settings"):
        lines += _hsm_dry_run_lines(plan["hsm_settings"])
    lines.append("Dry run: no script was run, no key or certificate written, no PATCH sent.")
    return "\n".join(lines)
