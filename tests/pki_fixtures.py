"""PKI dirs made to each named profile, the way each maker really makes them, for tests.

- fioca's own scripts and the API's scripts (2023 and 2026 revisions) run by the system OpenSSL
  3: the real scripts, run with `sh` in the PKI dir as script-era fioctl ran them.
- The API's 2023 scripts as OpenSSL 1.1 ran them: there is no OpenSSL 1.1 here, so the same
  certificates are built as 1.1 builds them: the config's extensions in order and nothing else
  (no subjectKeyIdentifier, no authorityKeyIdentifier), 159-bit random serials, `-days` exact,
  and the local CA's serial one above the online CA's (sign_ca_csr keeps factory_ca.srl).
- fioctl's Go PKI (v0.37 on): built as Go's crypto/x509 builds them, since no Go toolchain is
  here: keyUsage and basicConstraints critical, extendedKeyUsage not critical, Go's extension
  order, SKID on CAs only (SHA-1 of the key before Go 1.25, truncated SHA-256 after), AKID from
  the issuer's SKID, `AddDate(20, 0, 0)` / `(10, 0, 0)`, a copied subject re-encoded in Go's
  order and string types, and 160-bit random serials. Go draws below 2^160; these always take
  the half with the top bit set, whose DER takes 21 octets (what other tools trip on). No CSR
  files: fioctl's Go PKI writes none.

Written apart from `fioca.pki.profiles` on purpose: a misreading there must not be copied here.
`seed_sandbox` uploads a PKI made elsewhere to a sandbox through its PATCH, as any client would.
"""

from __future__ import annotations

import atexit
import calendar
import hashlib
import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fioca.pki import reference

# Every profile a fixture can be made to, as `fioca.pki.profiles.named` names them.
GO_PROFILES = ("fioctl-go-v0.37", "fioctl-go-v0.41", "fioctl-go-1.26")
SCRIPT_PROFILES = ("fioca", "api-2023-openssl-3", "api-2026-openssl-3")
OPENSSL_1_1_PROFILES = ("api-2023-openssl-1.1",)
FIXTURE_PROFILES = (*GO_PROFILES, *OPENSSL_1_1_PROFILES, *SCRIPT_PROFILES)

_SCRIPT_SETS = {"fioca": reference.FIOCA, "api-2023-openssl-3": "api-2023", "api-2026-openssl-3": "api-2026"}
_SCRIPT_NAMES = ("create_ca", "sign_tls_csr", "sign_ca_csr", "create_device_ca")


@dataclass
class BuiltPki:
    """A PKI dir made to `profile`, with what tests read from it."""

    profile: str
    path: Path
    factory: str
    local_ca_cn: str

    def read(self, name: str) -> bytes:
        return (self.path / name).read_bytes()

    def cert(self, name: str) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.read(name))

    def key(self, name: str) -> Any:
        return serialization.load_pem_private_key(self.read(name), password=None)

    def patch_body(self) -> dict[str, str]:
        """What create uploads: root-crt, tls-crt, and ca-crt = online CA + "\\n" + local CA."""
        ca_crt = self.read("online-crt").decode() + "\n" + self.read("local-ca.pem").decode()
        return {
            "root-crt": self.read("factory_ca.pem").decode(),
            "tls-crt": self.read("tls-crt").decode(),
            "ca-crt": ca_crt,
        }


def build_pki(
    profile: str, pki_dir: Path, *, factory: str, tls_csr_pem: str, ca_csr_pem: str, local_ca_cn: str
) -> BuiltPki:
    """Make `pki_dir` (which must not exist) to `profile`, signing the server's two CSRs."""
    pki_dir.mkdir(mode=0o700, parents=True)
    if profile in SCRIPT_PROFILES:
        _run_scripts(_SCRIPT_SETS[profile], pki_dir, factory=factory, tls_csr_pem=tls_csr_pem, ca_csr_pem=ca_csr_pem,
                     local_ca_cn=local_ca_cn)  # fmt: skip
    elif profile in OPENSSL_1_1_PROFILES:
        _openssl_1_1(pki_dir, factory=factory, tls_csr_pem=tls_csr_pem, ca_csr_pem=ca_csr_pem, local_ca_cn=local_ca_cn)
    elif profile in GO_PROFILES:
        _go(profile, pki_dir, factory=factory, tls_csr_pem=tls_csr_pem, ca_csr_pem=ca_csr_pem, local_ca_cn=local_ca_cn)
    else:
        raise ValueError(f"no fixture for profile {profile!r}")
    for path in pki_dir.iterdir():
        path.chmod(0o700 if path.name in _SCRIPT_NAMES else 0o400)
    return BuiltPki(profile, pki_dir, factory, local_ca_cn)


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _sec1(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )


# --- The scripts, run by the system OpenSSL ----------------------------------------------------


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> bytes:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, f"{args} failed: {done.stderr.decode(errors='replace')}"
    return done.stdout


def _run_scripts(
    script_set: str, pki_dir: Path, *, factory: str, tls_csr_pem: str, ca_csr_pem: str, local_ca_cn: str
) -> None:
    """Script-era fioctl's steps (PKI-SPEC section 3): scripts 0700 and CSRs in the PKI dir, run there."""
    scripts = reference.known_sets(factory=factory, local_ca_cn=local_ca_cn)[script_set]
    for name, text in scripts.items():
        (pki_dir / name).write_text(text)
        (pki_dir / name).chmod(0o700)
    _write(pki_dir / "tls-csr", tls_csr_pem.encode())
    _write(pki_dir / "ca-csr", ca_csr_pem.encode())
    env = {"PATH": os.environ["PATH"], "FACTORY": factory, "LOCAL_CA_CN": local_ca_cn}
    _run(["./create_ca"], pki_dir, env)
    _write(pki_dir / "tls-crt", _run(["./sign_tls_csr", "tls-csr"], pki_dir, env))
    _write(pki_dir / "online-crt", _run(["./sign_ca_csr", "ca-csr"], pki_dir, env))
    _run(["./create_device_ca", "local-ca.key", "local-ca.pem"], pki_dir, env)
    (pki_dir / "factory_ca.srl").unlink(missing_ok=True)


# --- OpenSSL 1.1 ------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _openssl_serial() -> int:
    # OpenSSL's rand_serial: 159 random bits (SERIAL_RAND_BITS); never 0.
    return secrets.randbits(159) or 1


def _key_usage(*names: str) -> x509.KeyUsage:
    bits = dict.fromkeys(
        ["digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
         "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"], False,
    )  # fmt: skip
    bits.update(dict.fromkeys(names, True))
    return x509.KeyUsage(**bits)


def _name(*pairs: tuple[x509.ObjectIdentifier, str, _ASN1Type]) -> x509.Name:
    return x509.Name(
        [x509.RelativeDistinguishedName([x509.NameAttribute(oid, value, kind)]) for oid, value, kind in pairs]
    )


def _cn_ou_utf8(cn: str, ou: str) -> x509.Name:
    utf8 = _ASN1Type.UTF8String
    return _name((NameOID.COMMON_NAME, cn, utf8), (NameOID.ORGANIZATIONAL_UNIT_NAME, ou, utf8))


def _openssl_1_1(pki_dir: Path, *, factory: str, tls_csr_pem: str, ca_csr_pem: str, local_ca_cn: str) -> None:
    """The API's 2023 scripts as OpenSSL 1.1 ran them."""
    tls_csr = x509.load_pem_x509_csr(tls_csr_pem.encode())
    ca_csr = x509.load_pem_x509_csr(ca_csr_pem.encode())
    root_key = ec.generate_private_key(ec.SECP256R1())
    start = _now()
    root_name = _cn_ou_utf8("Factory-CA", factory)
    root = (
        x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name).public_key(root_key.public_key())
        .serial_number(_openssl_serial()).not_valid_before(start).not_valid_after(start + timedelta(days=7300))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=False)
        .add_extension(_key_usage("key_cert_sign"), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]), critical=True)
        .sign(root_key, hashes.SHA256())
    )  # fmt: skip

    def signed(
        csr: x509.CertificateSigningRequest, serial: int, extensions: list[tuple[Any, bool]]
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder().subject_name(csr.subject).issuer_name(root.subject).public_key(csr.public_key())
            .serial_number(serial).not_valid_before(start).not_valid_after(start + timedelta(days=3650))
        )  # fmt: skip
        for value, critical in extensions:
            builder = builder.add_extension(value, critical=critical)
        return builder.sign(root_key, hashes.SHA256())

    san = tls_csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    tls = signed(tls_csr, _openssl_serial(), [
        (_key_usage("digital_signature", "key_encipherment", "key_agreement"), True),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), True),
        (san, False),
    ])  # fmt: skip
    ca_lines = [(_key_usage("key_cert_sign"), True), (x509.BasicConstraints(ca=True, path_length=0), True)]
    online_serial = _openssl_serial()
    online = signed(ca_csr, online_serial, ca_lines)
    local_key = ec.generate_private_key(ec.SECP256R1())
    local_csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_cn_ou_utf8(local_ca_cn, factory))
        .sign(local_key, hashes.SHA256())
    )
    local = signed(local_csr, online_serial + 1, ca_lines)  # factory_ca.srl was kept and incremented
    for name, text in reference.api_scripts("api-2023", factory=factory, local_ca_cn=local_ca_cn).items():
        (pki_dir / name).write_text(text)
    _write(pki_dir / "tls-csr", tls_csr_pem.encode())
    _write(pki_dir / "ca-csr", ca_csr_pem.encode())
    _write(pki_dir / "factory_ca.key", _sec1(root_key))
    _write(pki_dir / "factory_ca.pem", _pem(root))
    _write(pki_dir / "tls-crt", _pem(tls))
    _write(pki_dir / "online-crt", _pem(online))
    _write(pki_dir / "local-ca.key", _sec1(local_key))
    _write(pki_dir / "local-ca.pem", _pem(local))


# --- fioctl's Go PKI ------------------------------------------------------------------------------


def _go_serial() -> int:
    # Go's rand.Int(rand.Reader, 2^160), from the half with the top bit set (21 DER octets).
    return (1 << 159) | secrets.randbits(159)


def _go_add_date(start: datetime, years: int) -> datetime:
    """time.AddDate(years, 0, 0) in UTC: the same date, 29 February normalised to 1 March."""
    year = start.year + years
    if start.month == 2 and start.day == 29 and not calendar.isleap(year):
        return start.replace(year=year, month=3, day=1)
    return start.replace(year=year)


def _go_public_key_bits(public_key: ec.EllipticCurvePublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def _go_key_id(public_key: ec.EllipticCurvePublicKey, method: str) -> bytes:
    bits = _go_public_key_bits(public_key)
    return hashlib.sha1(bits).digest() if method == "sha1" else hashlib.sha256(bits).digest()[:20]


_GO_NAME_ORDER = (
    NameOID.COUNTRY_NAME, NameOID.STATE_OR_PROVINCE_NAME, NameOID.LOCALITY_NAME, NameOID.STREET_ADDRESS,
    NameOID.POSTAL_CODE, NameOID.ORGANIZATION_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME, NameOID.COMMON_NAME,
    NameOID.SERIAL_NUMBER,
)  # fmt: skip
_PRINTABLE = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 '()+,-./:=?")


def _go_copied_subject(subject: x509.Name) -> x509.Name:
    """pkix.Name.ToRDNSequence of a parsed CSR subject: Go's fixed order, PrintableString when it
    can, UTF8String otherwise; attributes outside Go's fields are dropped."""
    pairs = []
    for oid in _GO_NAME_ORDER:
        for attribute in subject.get_attributes_for_oid(oid):
            value = str(attribute.value)
            kind = _ASN1Type.PrintableString if set(value) <= _PRINTABLE else _ASN1Type.UTF8String
            pairs.append((oid, value, kind))
    return _name(*pairs)


@dataclass(frozen=True)
class _GoTemplate:
    subject: x509.Name
    public_key: Any
    years: int
    key_usage: x509.KeyUsage
    extended_key_usage: list[x509.ObjectIdentifier] | None = None
    ca: bool = False
    max_path_len_zero: bool = False
    dns_names: list[str] | None = None


def _go_create_certificate(
    template: _GoTemplate, parent: x509.Certificate | None, signer: Any, method: str
) -> x509.Certificate:
    """x509.CreateCertificate: extensions in Go's order (keyUsage, extKeyUsage, basicConstraints,
    subjectKeyId, authorityKeyId, subjectAltName)."""
    start = _now()
    skid = _go_key_id(template.public_key, method) if template.ca else None
    parent_skid = None
    if parent is not None:
        try:
            parent_skid = parent.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        except x509.ExtensionNotFound:
            parent_skid = None
    builder = (
        x509.CertificateBuilder()
        .subject_name(template.subject)
        .issuer_name(parent.subject if parent is not None else template.subject)  # parent.RawSubject
        .public_key(template.public_key)
        .serial_number(1)  # replaced by a 160-bit serial below
        .not_valid_before(start)
        .not_valid_after(_go_add_date(start, template.years))
        .add_extension(template.key_usage, critical=True)
    )
    if template.extended_key_usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(template.extended_key_usage), critical=False)
    if template.ca:
        constraints = x509.BasicConstraints(ca=True, path_length=0 if template.max_path_len_zero else None)
        builder = builder.add_extension(constraints, critical=True)
    if skid is not None:
        builder = builder.add_extension(x509.SubjectKeyIdentifier(skid), critical=False)
    if parent_skid is not None:
        builder = builder.add_extension(x509.AuthorityKeyIdentifier(parent_skid, None, None), critical=False)
    if template.dns_names:
        san = x509.SubjectAlternativeName([x509.DNSName(name) for name in template.dns_names])
        builder = builder.add_extension(san, critical=False)
    placeholder = builder.sign(signer, hashes.SHA256())
    return _with_serial(placeholder, _go_serial(), signer)


# A little DER, to give a certificate the serial `cryptography`'s builder will not take (> 159 bits).


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _der_length(len(content)) + content


def _read_tlv(data: bytes, offset: int) -> tuple[int, int, int]:
    """(tag, start of content, end) of the element at `offset`."""
    tag, first = data[offset], data[offset + 1]
    if first < 0x80:
        return tag, offset + 2, offset + 2 + first
    count = first & 0x7F
    length = int.from_bytes(data[offset + 2 : offset + 2 + count], "big")
    start = offset + 2 + count
    return tag, start, start + length


def _with_serial(cert: x509.Certificate, serial: int, signer: Any) -> x509.Certificate:
    """`cert` with another serial, signed again: TBSCertificate = [0] version, serial, ..."""
    tbs = cert.tbs_certificate_bytes
    _tag, body, _end = _read_tlv(tbs, 0)
    _tag, _start, version_end = _read_tlv(tbs, body)  # [0] EXPLICIT version
    _tag, _start, serial_end = _read_tlv(tbs, version_end)
    serial_content = serial.to_bytes(serial.bit_length() // 8 + 1, "big")  # a leading 0x00 keeps it positive
    new_tbs = _tlv(0x30, tbs[body:version_end] + _tlv(0x02, serial_content) + tbs[serial_end:])
    der = cert.public_bytes(serialization.Encoding.DER)
    _tag, outer, _end = _read_tlv(der, 0)
    _tag, _start, tbs_end = _read_tlv(der, outer)
    _tag, _start, algorithm_end = _read_tlv(der, tbs_end)
    signature = signer.sign(new_tbs, ec.ECDSA(hashes.SHA256()))
    return x509.load_der_x509_certificate(
        _tlv(0x30, new_tbs + der[tbs_end:algorithm_end] + _tlv(0x03, b"\x00" + signature))
    )


def _go(profile: str, pki_dir: Path, *, factory: str, tls_csr_pem: str, ca_csr_pem: str, local_ca_cn: str) -> None:
    """fioctl's CreateFactoryCa, SignTlsCsr, SignCaCsr and CreateDeviceCa, in create's order."""
    method = "sha256" if profile == "fioctl-go-1.26" else "sha1"
    older = profile == "fioctl-go-v0.37"  # before v0.39 (no cRLSign) and v0.41 (TLS keyEncipherment, keyAgreement)
    tls_csr = x509.load_pem_x509_csr(tls_csr_pem.encode())
    ca_csr = x509.load_pem_x509_csr(ca_csr_pem.encode())
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = _go_create_certificate(_GoTemplate(
        subject=_cn_ou_utf8("Factory-CA", factory), public_key=root_key.public_key(), years=20,
        key_usage=_key_usage("key_cert_sign") if older else _key_usage("key_cert_sign", "crl_sign"),
        extended_key_usage=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH], ca=True,
    ), None, root_key, method)  # fmt: skip
    tls_usage = ("digital_signature", "key_encipherment", "key_agreement") if older else ("digital_signature",)
    dns_names = tls_csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    )
    tls = _go_create_certificate(_GoTemplate(
        subject=_go_copied_subject(tls_csr.subject), public_key=tls_csr.public_key(), years=10,
        key_usage=_key_usage(*tls_usage), extended_key_usage=[ExtendedKeyUsageOID.SERVER_AUTH], dns_names=dns_names,
    ), root, root_key, method)  # fmt: skip

    def device_ca(subject: x509.Name, public_key: Any) -> x509.Certificate:
        template = _GoTemplate(subject=subject, public_key=public_key, years=10, key_usage=_key_usage("key_cert_sign"),
                               ca=True, max_path_len_zero=True)  # fmt: skip
        return _go_create_certificate(template, root, root_key, method)

    online = device_ca(_go_copied_subject(ca_csr.subject), ca_csr.public_key())
    local_key = ec.generate_private_key(ec.SECP256R1())
    local = device_ca(_cn_ou_utf8(local_ca_cn, factory), local_key.public_key())
    _write(pki_dir / "factory_ca.key", _sec1(root_key))
    _write(pki_dir / "factory_ca.pem", _pem(root))
    _write(pki_dir / "tls-crt", _pem(tls))
    _write(pki_dir / "online-crt", _pem(online))
    _write(pki_dir / "local-ca.key", _sec1(local_key))
    _write(pki_dir / "local-ca.pem", _pem(local))


# --- A sandbox holding a PKI made elsewhere ----------------------------------------------------


def _request(sandbox: Any, method: str, path: str, body: Any = None) -> requests.Response:
    info = sandbox.info
    return requests.request(
        method, f"{info.api_url}/ota/factories/{info.factory}/{path}", json=body,
        headers={"OSF-TOKEN": info.token}, verify=str(info.cacert), timeout=10,
    )  # fmt: skip


def seed_sandbox(sandbox: Any, profile: str, pki_dir: Path) -> BuiltPki:
    """What a client of `profile` does against the sandbox: POST certs/ for the two CSRs, make
    the PKI dir with them, PATCH root-crt, tls-crt and ca-crt."""
    answer = _request(
        sandbox, "POST", "certs/", {"first-time-init": True, "tls-csr": True, "ca-csr": True, "est-tls-csr": False}
    )
    assert answer.status_code in (200, 201), answer.text
    polis_id = _request(sandbox, "GET", "users/self/").json()["polis-id"]
    csrs = answer.json()
    built = build_pki(profile, pki_dir, factory=sandbox.info.factory, tls_csr_pem=csrs["tls-csr"],
                      ca_csr_pem=csrs["ca-csr"], local_ca_cn=f"fio-{polis_id}")  # fmt: skip
    patched = _request(sandbox, "PATCH", "certs/", built.patch_body())
    assert patched.status_code == 200, f"the sandbox refused a {profile} PKI: {patched.text}"
    return built


# --- A PKI without a sandbox: the server's CSRs made here ----------------------------------------

GATEWAY_ID = "ec056c71-5d4b-4c3e-9b0e-6d1f0a2b3c4d"  # real gateway ids look like UUIDs
GATEWAY_HOSTS = [f"{GATEWAY_ID}.ota-lite.foundries.io", f"{GATEWAY_ID}.ostree.foundries.io"]


def gateway_csr(*, ou: str | None = None) -> tuple[x509.CertificateSigningRequest, Any]:
    """The backend's gateway CSR as fioctl's tests model it: CN=<gateway host> (an OU only when
    asked), the gateway and OSTree hosts as DNS names. Returns (CSR, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, GATEWAY_HOSTS[0])]
    if ou is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name(attributes))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host) for host in GATEWAY_HOSTS]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr, key


def online_ca_csr(factory: str) -> tuple[x509.CertificateSigningRequest, Any]:
    """The backend's online CA CSR: CN=online-ca, OU=<factory>, asking for CA:TRUE. (CSR, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_cn_ou_utf8("online-ca", factory))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return csr, key


@dataclass
class Pki:
    """A PKI made to `profile`, loaded: every certificate, the keys the user holds, the CSRs."""

    profile: str
    path: Path
    root: x509.Certificate
    root_key: Any
    tls: x509.Certificate
    tls_csr: x509.CertificateSigningRequest
    online_ca: x509.Certificate
    online_csr: x509.CertificateSigningRequest
    local_ca: x509.Certificate
    local_ca_key: Any


def make_pki(profile: str, pki_dir: Path, *, factory: str = "acme", local_ca_cn: str = "fio-42") -> Pki:
    """A PKI dir made to `profile` for CSRs made here, loaded."""
    tls_csr, _ = gateway_csr()
    ca_csr, _ = online_ca_csr(factory)
    pem = lambda csr: csr.public_bytes(serialization.Encoding.PEM).decode()
    built = build_pki(profile, pki_dir, factory=factory, tls_csr_pem=pem(tls_csr), ca_csr_pem=pem(ca_csr),
                      local_ca_cn=local_ca_cn)  # fmt: skip
    return Pki(
        profile, pki_dir, built.cert("factory_ca.pem"), built.key("factory_ca.key"), built.cert("tls-crt"), tls_csr,
        built.cert("online-crt"), ca_csr, built.cert("local-ca.pem"), built.key("local-ca.key"),
    )  # fmt: skip


_MADE: dict[str, Pki] = {}


def shared_pki(profile: str) -> Pki:
    """A PKI made to `profile` once per test process and shared by every module that only reads
    it (making the script profiles runs openssl a dozen times)."""
    if profile not in _MADE:
        base = Path(tempfile.mkdtemp(prefix=f"fioca-{profile}-"))
        atexit.register(shutil.rmtree, base, ignore_errors=True)
        _MADE[profile] = make_pki(profile, base / "pki")
    return _MADE[profile]
