"""fioca.pki.profiles: every profile passes when made by the real reference scripts (run with
openssl) and when made by the in-process builders, and each rule has a negative twin."""

from __future__ import annotations

import os
import subprocess
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from fioca.errors import CheckError, ExitCode
from fioca.pki import profiles
from fioca.pki.reference import rendered

FACTORY = "acme"
LOCAL_CA_CN = "fio-abc"
GATEWAY_ID = "a1b2c3"
GATEWAY_HOSTS = [f"{GATEWAY_ID}.ota-lite.foundries.io", f"{GATEWAY_ID}.ostree.foundries.io"]


# --- Artifacts -------------------------------------------------------------------------------


@dataclass
class Pki:
    """One factory PKI: the root, the gateway cert and both device CAs, with keys and CSRs."""

    root: x509.Certificate
    root_key: ec.EllipticCurvePrivateKey
    tls: x509.Certificate
    tls_csr: x509.CertificateSigningRequest
    online_ca: x509.Certificate
    online_csr: x509.CertificateSigningRequest
    local_ca: x509.Certificate
    local_ca_key: ec.EllipticCurvePrivateKey
    local_ca_csr: x509.CertificateSigningRequest | None


def gateway_csr(key: ec.EllipticCurvePrivateKey) -> x509.CertificateSigningRequest:
    """The backend's gateway CSR: CN=<id>.ota-lite.foundries.io, OU=<factory>, both hosts as SAN."""
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, GATEWAY_HOSTS[0]),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, FACTORY),
        ]
    )
    san = x509.SubjectAlternativeName([x509.DNSName(host) for host in GATEWAY_HOSTS])
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        .add_extension(san, critical=False)
        .sign(key, hashes.SHA256())
    )


def online_ca_csr(key: ec.EllipticCurvePrivateKey) -> x509.CertificateSigningRequest:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "online-ca"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, FACTORY),
        ]
    )
    return x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())


def run(args: list[str], cwd: Path) -> bytes:
    result = subprocess.run(args, cwd=cwd, capture_output=True, check=False, timeout=60)
    assert result.returncode == 0, f"{args} failed: {result.stderr.decode(errors='replace')}"
    return result.stdout


@pytest.fixture(scope="module")
def script_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The script-era create flow (PKI-SPEC section 3), run once with the real scripts."""
    work = tmp_path_factory.mktemp("pki-scripts")
    for name, text in rendered(factory=FACTORY, local_ca_cn=LOCAL_CA_CN).items():
        (work / name).write_text(text)
        (work / name).chmod(0o700)
    (work / "tls-csr").write_bytes(profiles.csr_pem(gateway_csr(profiles.new_key())))
    (work / "ca-csr").write_bytes(profiles.csr_pem(online_ca_csr(profiles.new_key())))
    run(["./create_ca"], work)
    (work / "tls-crt").write_bytes(run(["./sign_tls_csr", "tls-csr"], work))
    (work / "online-crt").write_bytes(run(["./sign_ca_csr", "ca-csr"], work))
    run(["./create_device_ca", "local-ca.key", "local-ca.pem"], work)
    return work


@pytest.fixture(scope="module")
def script_pki(script_dir: Path) -> Pki:
    def read(name: str) -> bytes:
        return (script_dir / name).read_bytes()

    return Pki(
        root=profiles.load_cert(read("factory_ca.pem"), "root-crt"),
        root_key=profiles.load_private_key(read("factory_ca.key"), "factory_ca.key"),
        tls=profiles.load_cert(read("tls-crt"), "tls-crt"),
        tls_csr=profiles.load_csr(read("tls-csr"), "tls-csr"),
        online_ca=profiles.load_cert(read("online-crt"), "online-crt"),
        online_csr=profiles.load_csr(read("ca-csr"), "ca-csr"),
        local_ca=profiles.load_cert(read("local-ca.pem"), "local-ca.pem"),
        local_ca_key=profiles.load_private_key(read("local-ca.key"), "local-ca.key"),
        local_ca_csr=None,
    )


@pytest.fixture(scope="module")
def built_pki() -> Pki:
    """The same PKI made by the in-process builders."""
    root_key = profiles.new_key()
    root = profiles.build_root(root_key, factory=FACTORY)
    tls_csr = gateway_csr(profiles.new_key())
    online_csr = profiles.build_device_ca_csr(profiles.new_key(), cn="online-ca", factory=FACTORY)
    local_ca_key = profiles.new_key()
    local_ca_csr = profiles.build_device_ca_csr(local_ca_key, cn=LOCAL_CA_CN, factory=FACTORY)
    return Pki(
        root=root,
        root_key=root_key,
        tls=profiles.sign_gateway_tls(tls_csr, root_cert=root, root_key=root_key),
        tls_csr=tls_csr,
        online_ca=profiles.sign_device_ca(online_csr, root_cert=root, root_key=root_key),
        online_csr=online_csr,
        local_ca=profiles.sign_device_ca(local_ca_csr, root_cert=root, root_key=root_key),
        local_ca_key=local_ca_key,
        local_ca_csr=local_ca_csr,
    )


@pytest.fixture(scope="module", params=["script", "built"])
def pki(request: pytest.FixtureRequest) -> Pki:
    return request.getfixturevalue(f"{request.param}_pki")


@pytest.fixture(scope="module")
def offline_device(script_dir: Path) -> tuple[Path, str]:
    """The documented offline device procedure (PKI-SPEC section 8), run with openssl."""
    device_uuid = str(uuid.uuid4())  # what `uuidgen` puts in the config
    device = script_dir / "devices" / "offline-device"
    device.mkdir(parents=True)
    (device / "device-cert.conf").write_text(
        "[req]\nprompt = no\ndays=3650\ndistinguished_name = req_dn\n\n"
        f'[req_dn]\n# Device ID\ncommonName="{device_uuid}"\norganizationalUnitName="{FACTORY}"\n'
    )
    (device / "device-cert.ext").write_text(
        "keyUsage=critical,digitalSignature,keyAgreement\nextendedKeyUsage=critical,clientAuth\n"
    )
    prefix = "devices/offline-device"
    run(["openssl", "ecparam", "-genkey", "-name", "prime256v1", "-out", f"{prefix}/pkey.pem"], script_dir)
    run(
        ["openssl", "req", "-new", "-config", f"{prefix}/device-cert.conf", "-key", f"{prefix}/pkey.pem",
         "-out", f"{prefix}/device-cert.csr"],
        script_dir,
    )  # fmt: skip
    run(
        ["openssl", "x509", "-req", "-in", f"{prefix}/device-cert.csr", "-CAcreateserial",
         "-extfile", f"{prefix}/device-cert.ext", "-CAkey", "local-ca.key", "-CA", "local-ca.pem",
         "-sha256", "-out", f"{prefix}/client.pem"],
        script_dir,
    )  # fmt: skip
    return device, device_uuid


# --- Twins: re-issue a valid cert with one thing changed -------------------------------------


def reissue(
    cert: x509.Certificate,
    signer_key: Any,
    *,
    issuer: x509.Name | None = None,
    subject: x509.Name | None = None,
    public_key: Any = None,
    replace: Sequence[tuple[x509.ExtensionType, bool]] = (),
    drop: Sequence[x509.ObjectIdentifier] = (),
    days: float | None = None,
    not_before: datetime | None = None,
    algorithm: hashes.HashAlgorithm | None = None,
) -> x509.Certificate:
    """`cert` with the named parts changed, signed by `signer_key` (SHA-256 unless told)."""
    start = not_before or cert.not_valid_before_utc
    length = timedelta(days=days) if days is not None else cert.not_valid_after_utc - cert.not_valid_before_utc
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject or cert.subject)
        .issuer_name(issuer or cert.issuer)
        .public_key(public_key or cert.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + length)
    )
    replaced = {value.oid: (value, critical) for value, critical in replace}
    for extension in cert.extensions:
        if extension.oid in drop:
            continue
        value, critical = replaced.pop(extension.oid, (extension.value, extension.critical))
        builder = builder.add_extension(value, critical=critical)
    for value, critical in replaced.values():
        builder = builder.add_extension(value, critical=critical)
    return builder.sign(signer_key, algorithm or hashes.SHA256())


def name(cn: str, ou: str = FACTORY) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou)]
    )


def eku(*purposes: x509.ObjectIdentifier) -> x509.ExtendedKeyUsage:
    return x509.ExtendedKeyUsage(list(purposes))


def key_usage(**bits: bool) -> x509.KeyUsage:
    fields = dict.fromkeys(
        ["digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
         "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"],
        False,
    )  # fmt: skip
    fields.update(bits)
    return x509.KeyUsage(**fields)


def fails(rule_part: str) -> Any:
    """pytest.raises(CheckError) whose message matches the regex `rule_part`."""
    return pytest.raises(CheckError, match=rule_part)


@pytest.fixture(scope="module")
def foreign_root() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Another factory's root with the very same subject: only the key tells them apart."""
    key = profiles.new_key()
    return profiles.build_root(key, factory=FACTORY), key


# --- Root --------------------------------------------------------------------------------------


def test_root_passes(pki: Pki) -> None:
    profiles.check_root(pki.root, factory=FACTORY)
    profiles.check_key_matches(pki.root_key, pki.root, "factory_ca.key")


def test_root_has_every_profile_extension(pki: Pki) -> None:
    extensions = pki.root.extensions
    assert extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    usage = extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    purposes = extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert purposes.critical
    assert set(purposes.value) == {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH}
    skid = extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert skid.digest == x509.SubjectKeyIdentifier.from_public_key(pki.root.public_key()).digest
    assert pki.root.not_valid_after_utc - pki.root.not_valid_before_utc == timedelta(days=7300)


def test_root_wrong_ou_fails(pki: Pki) -> None:
    with fails("OU must be the factory name 'other', got 'acme'"):
        profiles.check_root(pki.root, factory="other")


def test_root_wrong_cn_fails(pki: Pki) -> None:
    twin = reissue(pki.root, pki.root_key, subject=name("Other-CA"), issuer=name("Other-CA"))
    with fails("subject CN must be 'Factory-CA', got 'Other-CA'"):
        profiles.check_root(twin, factory=FACTORY)


def test_root_extra_subject_attribute_fails(pki: Pki) -> None:
    subject = x509.Name([*pki.root.subject, x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Evil")])
    twin = reissue(pki.root, pki.root_key, subject=subject, issuer=subject)
    with fails("subject has attribute.* O=Evil"):
        profiles.check_root(twin, factory=FACTORY)


def test_root_not_self_signed_fails(pki: Pki, foreign_root: tuple[x509.Certificate, Any]) -> None:
    twin = reissue(pki.root, foreign_root[1])  # same names, another key signs
    with fails("its signature does not verify with its own key"):
        profiles.check_root(twin, factory=FACTORY)


def test_root_eku_not_critical_fails(pki: Pki) -> None:
    twin = reissue(
        pki.root,
        pki.root_key,
        replace=[(eku(ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH), False)],
    )
    with fails("extendedKeyUsage must be critical clientAuth\\+serverAuth only, got non-critical"):
        profiles.check_root(twin, factory=FACTORY)


def test_root_eku_missing_server_auth_fails(pki: Pki) -> None:
    twin = reissue(pki.root, pki.root_key, replace=[(eku(ExtendedKeyUsageOID.CLIENT_AUTH), True)])
    with fails("extendedKeyUsage must be critical clientAuth\\+serverAuth only, got clientAuth"):
        profiles.check_root(twin, factory=FACTORY)


def test_root_without_crl_sign_passes_older_profile(pki: Pki) -> None:
    twin = reissue(pki.root, pki.root_key, replace=[(key_usage(key_cert_sign=True), False)])
    profiles.check_root(twin, factory=FACTORY)


def test_root_missing_key_usage_fails(pki: Pki) -> None:
    twin = reissue(pki.root, pki.root_key, drop=[ExtensionOID.KEY_USAGE])
    with fails("keyUsage is missing"):
        profiles.check_root(twin, factory=FACTORY)


def test_root_not_ca_fails(pki: Pki) -> None:
    twin = reissue(pki.root, pki.root_key, replace=[(x509.BasicConstraints(ca=False, path_length=None), False)])
    with fails("basicConstraints must be CA:TRUE"):
        profiles.check_root(twin, factory=FACTORY)


def test_root_missing_skid_fails(pki: Pki) -> None:
    twin = reissue(pki.root, pki.root_key, drop=[ExtensionOID.SUBJECT_KEY_IDENTIFIER])
    with fails("subjectKeyIdentifier is missing"):
        profiles.check_root(twin, factory=FACTORY)


@pytest.mark.parametrize("days", [365, 3650, 7302])
def test_root_wrong_validity_fails(pki: Pki, days: int) -> None:
    twin = reissue(pki.root, pki.root_key, days=days)
    with fails(f"validity must be 7300 days \\(±1\\), got {days} days"):
        profiles.check_root(twin, factory=FACTORY)


def test_root_validity_slack_of_one_day_passes(pki: Pki) -> None:
    profiles.check_root(reissue(pki.root, pki.root_key, days=7301), factory=FACTORY)
    profiles.check_root(reissue(pki.root, pki.root_key, days=7299), factory=FACTORY)


def test_root_expired_and_not_yet_valid_fail(pki: Pki) -> None:
    with fails("has expired"):
        profiles.check_root(pki.root, factory=FACTORY, now=pki.root.not_valid_after_utc + timedelta(hours=1))
    with fails("is not yet valid"):
        profiles.check_root(pki.root, factory=FACTORY, now=pki.root.not_valid_before_utc - timedelta(hours=1))
    # Within the clock skew both ends still pass.
    profiles.check_root(pki.root, factory=FACTORY, now=pki.root.not_valid_before_utc - timedelta(minutes=1))


def test_root_extra_extension_fails(pki: Pki) -> None:
    twin = reissue(pki.root, pki.root_key, replace=[(x509.OCSPNoCheck(), False)])
    with fails("extension\\(s\\) its profile does not allow: OCSPNoCheck"):
        profiles.check_root(twin, factory=FACTORY)


def test_root_p384_key_fails() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    root = profiles.build_root(key, factory=FACTORY)
    with fails("public key must be EC P-256 \\(prime256v1\\), got EC secp384r1"):
        profiles.check_root(root, factory=FACTORY)


def test_root_rsa_key_fails() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    root = profiles.build_root(key, factory=FACTORY)
    with fails("public key must be EC P-256 \\(prime256v1\\), got RSA 2048"):
        profiles.check_root(root, factory=FACTORY)


def test_root_sha384_signature_fails(pki: Pki) -> None:
    twin = reissue(pki.root, pki.root_key, algorithm=hashes.SHA384())
    with fails("signature algorithm must be ecdsa-with-SHA256, got ecdsa-with-SHA384"):
        profiles.check_root(twin, factory=FACTORY)


def test_root_sha1_signature_fails(script_dir: Path, script_pki: Pki) -> None:
    # cryptography refuses to sign with SHA-1, so openssl re-signs the script's root.
    pem = run(
        ["openssl", "x509", "-in", "factory_ca.pem", "-signkey", "factory_ca.key", "-sha1", "-days", "7300"],
        script_dir,
    )
    twin = profiles.load_cert(pem, "root-crt")
    assert twin.public_key() == script_pki.root.public_key()
    with fails("signature algorithm must be ecdsa-with-SHA256, got ecdsa-with-SHA1"):
        profiles.check_root(twin, factory=FACTORY)


# --- Gateway TLS -----------------------------------------------------------------------------


def test_gateway_tls_passes(pki: Pki) -> None:
    profiles.check_gateway_tls(pki.tls, root=pki.root, csr=pki.tls_csr)
    assert profiles.gateway_hosts(pki.tls) == GATEWAY_HOSTS


def test_gateway_tls_has_every_profile_extension(pki: Pki) -> None:
    extensions = pki.tls.extensions
    usage = extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    purposes = extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert purposes.critical and list(purposes.value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    akid = extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert akid.key_identifier == profiles.subject_key_identifier(pki.root)
    assert pki.tls.subject == pki.tls_csr.subject
    assert pki.tls.not_valid_after_utc - pki.tls.not_valid_before_utc == timedelta(days=3650)


def test_gateway_tls_older_key_usage_passes(pki: Pki) -> None:
    older = key_usage(digital_signature=True, key_encipherment=True, key_agreement=True)
    twin = reissue(pki.tls, pki.root_key, replace=[(older, True)])
    profiles.check_gateway_tls(twin, root=pki.root, csr=pki.tls_csr)


def test_gateway_tls_client_auth_eku_fails(pki: Pki) -> None:
    twin = reissue(pki.tls, pki.root_key, replace=[(eku(ExtendedKeyUsageOID.CLIENT_AUTH), True)])
    with fails("extendedKeyUsage must be critical serverAuth only, got clientAuth"):
        profiles.check_gateway_tls(twin, root=pki.root, csr=pki.tls_csr)


def test_gateway_tls_eku_with_client_auth_added_fails(pki: Pki) -> None:
    both = eku(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)
    twin = reissue(pki.tls, pki.root_key, replace=[(both, True)])
    with fails("must be critical serverAuth only, got serverAuth, clientAuth"):
        profiles.check_gateway_tls(twin, root=pki.root, csr=pki.tls_csr)


def test_gateway_tls_key_usage_not_critical_fails(pki: Pki) -> None:
    twin = reissue(pki.tls, pki.root_key, replace=[(key_usage(digital_signature=True), False)])
    with fails("keyUsage must be critical digitalSignature.*got non-critical"):
        profiles.check_gateway_tls(twin, root=pki.root, csr=pki.tls_csr)


def test_gateway_tls_missing_key_usage_fails(pki: Pki) -> None:
    twin = reissue(pki.tls, pki.root_key, drop=[ExtensionOID.KEY_USAGE])
    with fails("keyUsage is missing; must be critical digitalSignature"):
        profiles.check_gateway_tls(twin, root=pki.root, csr=pki.tls_csr)


def test_gateway_tls_key_cert_sign_fails(pki: Pki) -> None:
    twin = reissue(pki.tls, pki.root_key, replace=[(key_usage(digital_signature=True, key_cert_sign=True), True)])
    with fails("keyUsage must be digitalSignature .*got digitalSignature, keyCertSign"):
        profiles.check_gateway_tls(twin, root=pki.root, csr=pki.tls_csr)


def test_gateway_tls_signed_by_foreign_root_fails(pki: Pki, foreign_root: tuple[x509.Certificate, Any]) -> None:
    twin = reissue(pki.tls, foreign_root[1])  # same issuer name: only the signature can tell
    with fails("signature does not verify with the root's key"):
        profiles.check_gateway_tls(twin, root=pki.root, csr=pki.tls_csr)
    # And the foreign root's own, properly issued, certificate is refused by issuer name.
    other = reissue(pki.tls, foreign_root[1], issuer=name("Factory-CA", "other"))
    with fails("must be issued by the root CN=Factory-CA,OU=acme, got issuer CN=Factory-CA,OU=other"):
        profiles.check_gateway_tls(other, root=pki.root, csr=pki.tls_csr)


def test_gateway_tls_wrong_akid_fails(pki: Pki) -> None:
    wrong = x509.AuthorityKeyIdentifier(b"\x01" * 20, None, None)
    twin = reissue(pki.tls, pki.root_key, replace=[(wrong, False)])
    with fails("authorityKeyIdentifier does not match the root's subjectKeyIdentifier"):
        profiles.check_gateway_tls(twin, root=pki.root, csr=pki.tls_csr)


def test_gateway_tls_key_not_matching_csr_fails(pki: Pki) -> None:
    twin = reissue(pki.tls, pki.root_key, public_key=profiles.new_key().public_key())
    with fails("public key does not match the tls-csr's public key"):
        profiles.check_gateway_tls(twin, root=pki.root, csr=pki.tls_csr)


def test_gateway_tls_subject_changed_fails(pki: Pki) -> None:
    twin = reissue(pki.tls, pki.root_key, subject=name("evil.example.com"))
    with fails("subject must be the tls-csr's CN=a1b2c3.ota-lite.foundries.io,OU=acme, got CN=evil.example.com"):
        profiles.check_gateway_tls(twin, root=pki.root, csr=pki.tls_csr)


@pytest.mark.parametrize(
    "hosts",
    [list(reversed(GATEWAY_HOSTS)), GATEWAY_HOSTS[:1], [*GATEWAY_HOSTS, "evil.example.com"]],
    ids=["swapped", "dropped", "added"],
)
def test_gateway_tls_sans_changed_fails(pki: Pki, hosts: list[str]) -> None:
    san = x509.SubjectAlternativeName([x509.DNSName(host) for host in hosts])
    twin = reissue(pki.tls, pki.root_key, replace=[(san, False)])
    with fails(f"subjectAltName DNS names must be the tls-csr's .* \\(same order\\), got {', '.join(hosts)}"):
        profiles.check_gateway_tls(twin, root=pki.root, csr=pki.tls_csr)


def test_gateway_tls_is_ca_fails(pki: Pki) -> None:
    twin = reissue(pki.tls, pki.root_key, replace=[(x509.BasicConstraints(ca=True, path_length=None), True)])
    with fails("must not be a CA"):
        profiles.check_gateway_tls(twin, root=pki.root, csr=pki.tls_csr)


def test_gateway_tls_wrong_validity_fails(pki: Pki) -> None:
    twin = reissue(pki.tls, pki.root_key, days=7300)
    with fails("validity must be 3650 days \\(±1\\), got 7300 days"):
        profiles.check_gateway_tls(twin, root=pki.root, csr=pki.tls_csr)


def test_gateway_tls_extra_extension_fails(pki: Pki) -> None:
    twin = reissue(pki.tls, pki.root_key, replace=[(x509.TLSFeature([x509.TLSFeatureType.status_request]), False)])
    with fails("extension\\(s\\) its profile does not allow: TLSFeature"):
        profiles.check_gateway_tls(twin, root=pki.root, csr=pki.tls_csr)


def test_gateway_tls_p384_and_rsa_keys_fail(pki: Pki) -> None:
    # The CSR carries the same odd key, so only the curve rule can refuse it.
    for key, got in [
        (ec.generate_private_key(ec.SECP384R1()), "EC secp384r1"),
        (rsa.generate_private_key(public_exponent=65537, key_size=2048), "RSA 2048"),
    ]:
        csr = gateway_csr(key)
        twin = reissue(pki.tls, pki.root_key, public_key=key.public_key())
        with fails(f"public key must be EC P-256 \\(prime256v1\\), got {got}"):
            profiles.check_gateway_tls(twin, root=pki.root, csr=csr)


def test_gateway_tls_sha384_signature_fails(pki: Pki) -> None:
    twin = reissue(pki.tls, pki.root_key, algorithm=hashes.SHA384())
    with fails("signature algorithm must be ecdsa-with-SHA256, got ecdsa-with-SHA384"):
        profiles.check_gateway_tls(twin, root=pki.root, csr=pki.tls_csr)


def test_sign_gateway_tls_refuses_csr_without_dns_names(built_pki: Pki) -> None:
    csr = online_ca_csr(profiles.new_key())
    with fails("has no DNS names"):
        profiles.sign_gateway_tls(csr, root_cert=built_pki.root, root_key=built_pki.root_key)


# --- Device CAs ----------------------------------------------------------------------------


def test_online_ca_passes(pki: Pki) -> None:
    profiles.check_device_ca(pki.online_ca, root=pki.root, factory=FACTORY, csr=pki.online_csr, artifact="online-crt")


def test_local_ca_passes(pki: Pki) -> None:
    profiles.check_device_ca(
        pki.local_ca, root=pki.root, factory=FACTORY, expected_cn=LOCAL_CA_CN, csr=pki.local_ca_csr
    )
    profiles.check_key_matches(pki.local_ca_key, pki.local_ca, "local-ca.key")


def test_device_ca_has_every_profile_extension(pki: Pki) -> None:
    for ca in (pki.online_ca, pki.local_ca):
        constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
        assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
        usage = ca.extensions.get_extension_for_class(x509.KeyUsage)
        assert usage.critical and usage.value.key_cert_sign and not usage.value.digital_signature
        assert profiles.is_ca(ca)


def test_device_ca_wrong_ou_fails(pki: Pki) -> None:
    with fails("OU must be the factory name 'other', got 'acme'"):
        profiles.check_device_ca(pki.local_ca, root=pki.root, factory="other")


def test_device_ca_wrong_cn_fails(pki: Pki) -> None:
    with fails("subject CN must be 'fio-someone-else', got 'fio-abc'"):
        profiles.check_device_ca(pki.local_ca, root=pki.root, factory=FACTORY, expected_cn="fio-someone-else")


def test_device_ca_not_matching_csr_fails(pki: Pki) -> None:
    with fails("subject must be the CSR's CN=online-ca,OU=acme, got CN=fio-abc,OU=acme"):
        profiles.check_device_ca(pki.local_ca, root=pki.root, factory=FACTORY, csr=pki.online_csr)
    twin = reissue(pki.online_ca, pki.root_key, public_key=profiles.new_key().public_key())
    with fails("public key does not match the CSR's public key"):
        profiles.check_device_ca(twin, root=pki.root, factory=FACTORY, csr=pki.online_csr)


def test_device_ca_false_fails(pki: Pki) -> None:
    twin = reissue(pki.local_ca, pki.root_key, replace=[(x509.BasicConstraints(ca=False, path_length=None), True)])
    with fails("basicConstraints must be CA:TRUE, got CA:FALSE"):
        profiles.check_device_ca(twin, root=pki.root, factory=FACTORY)


def test_device_ca_pathlen_missing_fails(pki: Pki) -> None:
    twin = reissue(pki.local_ca, pki.root_key, replace=[(x509.BasicConstraints(ca=True, path_length=None), True)])
    with fails("basicConstraints pathlen must be 0, got missing"):
        profiles.check_device_ca(twin, root=pki.root, factory=FACTORY)


def test_device_ca_constraints_not_critical_fails(pki: Pki) -> None:
    twin = reissue(pki.local_ca, pki.root_key, replace=[(x509.BasicConstraints(ca=True, path_length=0), False)])
    with fails("basicConstraints must be critical"):
        profiles.check_device_ca(twin, root=pki.root, factory=FACTORY)


def test_device_ca_missing_constraints_fails(pki: Pki) -> None:
    twin = reissue(pki.local_ca, pki.root_key, drop=[ExtensionOID.BASIC_CONSTRAINTS])
    with fails("basicConstraints is missing"):
        profiles.check_device_ca(twin, root=pki.root, factory=FACTORY)


def test_device_ca_missing_key_usage_fails(pki: Pki) -> None:
    twin = reissue(pki.local_ca, pki.root_key, drop=[ExtensionOID.KEY_USAGE])
    with fails("keyUsage is missing; must be critical keyCertSign"):
        profiles.check_device_ca(twin, root=pki.root, factory=FACTORY)


def test_device_ca_wrong_validity_fails(pki: Pki) -> None:
    twin = reissue(pki.local_ca, pki.root_key, days=3648)
    with fails("validity must be 3650 days \\(±1\\), got 3648 days"):
        profiles.check_device_ca(twin, root=pki.root, factory=FACTORY)


def test_device_ca_signed_by_foreign_root_fails(pki: Pki, foreign_root: tuple[x509.Certificate, Any]) -> None:
    twin = reissue(pki.local_ca, foreign_root[1])
    with fails("signature does not verify with the root's key"):
        profiles.check_device_ca(twin, root=pki.root, factory=FACTORY)


def test_device_ca_extra_extension_fails(pki: Pki) -> None:
    constraints = x509.NameConstraints(permitted_subtrees=[x509.DNSName("example.com")], excluded_subtrees=None)
    twin = reissue(pki.local_ca, pki.root_key, replace=[(constraints, True)])
    with fails("extension\\(s\\) its profile does not allow: nameConstraints"):
        profiles.check_device_ca(twin, root=pki.root, factory=FACTORY)


# --- Devices -------------------------------------------------------------------------------


def test_offline_device_by_openssl_passes(pki: Pki, script_pki: Pki, offline_device: tuple[Path, str]) -> None:
    device, device_uuid = offline_device
    cert = profiles.load_cert((device / "client.pem").read_bytes(), "client.pem")
    # pkey.pem starts with an EC PARAMETERS block (ecparam without -noout): accepted.
    key_pem = (device / "pkey.pem").read_bytes()
    assert key_pem.startswith(b"-----BEGIN EC PARAMETERS-----")
    key = profiles.load_private_key(key_pem, "pkey.pem")
    profiles.check_device_cert(cert, ca=script_pki.local_ca, factory=FACTORY, uuid=device_uuid)
    profiles.check_key_matches(key, cert, "pkey.pem")
    # OpenSSL's default 30 days: `days=3650` in [req] has no effect on `x509 -req`.
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=30)
    # The negative twin: the same cert against the other PKI's device CA.
    if pki is not script_pki:
        # Both local CAs are named CN=fio-abc,OU=acme: only the signature tells them apart.
        with fails("signature does not verify with the device CA's key"):
            profiles.check_device_cert(cert, ca=pki.local_ca, factory=FACTORY, uuid=device_uuid)


@pytest.fixture(scope="module")
def device(pki: Pki) -> tuple[x509.Certificate, str, ec.EllipticCurvePrivateKey]:
    key = profiles.new_key()
    device_uuid = str(uuid.uuid4())
    csr = profiles.build_device_csr(key, uuid=device_uuid, factory=FACTORY)
    cert = profiles.sign_device_cert(csr, ca_cert=pki.local_ca, ca_key=pki.local_ca_key, days=30)
    return cert, device_uuid, key


def test_built_device_passes(pki: Pki, device: tuple[x509.Certificate, str, Any]) -> None:
    cert, device_uuid, key = device
    profiles.check_device_cert(cert, ca=pki.local_ca, factory=FACTORY, uuid=device_uuid)
    profiles.check_device_cert(cert, ca=pki.local_ca, factory=FACTORY)  # any non-empty CN
    profiles.check_key_matches(key, cert, "pkey.pem")
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and usage.value.key_agreement


def test_registered_production_device_passes(pki: Pki) -> None:
    key = profiles.new_key()
    device_uuid = str(uuid.uuid4())
    csr = profiles.build_device_csr(key, uuid=device_uuid, factory=FACTORY, production=True)
    cert = profiles.sign_device_cert(
        csr, ca_cert=pki.online_ca, ca_key=pki.local_ca_key, days=profiles.REGISTERED_DEVICE_DAYS,
        key_usage_agreement=False,
    )  # fmt: skip
    assert cert.subject.get_attributes_for_oid(NameOID.BUSINESS_CATEGORY)[0].value == "production"
    assert not cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_agreement
    # Signed with the local CA's key under the online CA's name: the online CA must refuse it.
    with fails("signature does not verify with the device CA's key"):
        profiles.check_device_cert(cert, ca=pki.online_ca, factory=FACTORY, uuid=device_uuid)
    good = profiles.sign_device_cert(
        csr, ca_cert=pki.local_ca, ca_key=pki.local_ca_key, days=profiles.REGISTERED_DEVICE_DAYS,
        key_usage_agreement=False,
    )  # fmt: skip
    profiles.check_device_cert(good, ca=pki.local_ca, factory=FACTORY, uuid=device_uuid)


def test_device_wrong_uuid_fails(pki: Pki, device: tuple[x509.Certificate, str, Any]) -> None:
    other = str(uuid.uuid4())
    with fails(f"subject CN must be the device UUID '{other}'"):
        profiles.check_device_cert(device[0], ca=pki.local_ca, factory=FACTORY, uuid=other)
    with pytest.raises(ValueError, match="is not a UUID"):
        profiles.check_device_cert(device[0], ca=pki.local_ca, factory=FACTORY, uuid="not-a-uuid")


def test_device_wrong_ou_fails(pki: Pki, device: tuple[x509.Certificate, str, Any]) -> None:
    with fails("OU must be the factory name 'other', got 'acme'"):
        profiles.check_device_cert(device[0], ca=pki.local_ca, factory="other")


def test_device_wrong_business_category_fails(pki: Pki, device: tuple[x509.Certificate, str, Any]) -> None:
    subject = x509.Name([*device[0].subject, x509.NameAttribute(NameOID.BUSINESS_CATEGORY, "lab")])
    twin = reissue(device[0], pki.local_ca_key, subject=subject)
    with fails("businessCategory may only be 'production', got 'lab'"):
        profiles.check_device_cert(twin, ca=pki.local_ca, factory=FACTORY)


def test_device_server_auth_eku_fails(pki: Pki, device: tuple[x509.Certificate, str, Any]) -> None:
    twin = reissue(device[0], pki.local_ca_key, replace=[(eku(ExtendedKeyUsageOID.SERVER_AUTH), True)])
    with fails("extendedKeyUsage must be critical clientAuth only, got serverAuth"):
        profiles.check_device_cert(twin, ca=pki.local_ca, factory=FACTORY)


def test_device_eku_not_critical_fails(pki: Pki, device: tuple[x509.Certificate, str, Any]) -> None:
    twin = reissue(device[0], pki.local_ca_key, replace=[(eku(ExtendedKeyUsageOID.CLIENT_AUTH), False)])
    with fails("extendedKeyUsage must be critical clientAuth only, got non-critical clientAuth"):
        profiles.check_device_cert(twin, ca=pki.local_ca, factory=FACTORY)


def test_device_missing_key_usage_fails(pki: Pki, device: tuple[x509.Certificate, str, Any]) -> None:
    twin = reissue(device[0], pki.local_ca_key, drop=[ExtensionOID.KEY_USAGE])
    with fails("keyUsage is missing; must be critical digitalSignature"):
        profiles.check_device_cert(twin, ca=pki.local_ca, factory=FACTORY)


def test_device_is_ca_fails(pki: Pki, device: tuple[x509.Certificate, str, Any]) -> None:
    twin = reissue(device[0], pki.local_ca_key, replace=[(x509.BasicConstraints(ca=True, path_length=0), True)])
    with fails("must not be a CA"):
        profiles.check_device_cert(twin, ca=pki.local_ca, factory=FACTORY)


def test_device_expired_fails(pki: Pki, device: tuple[x509.Certificate, str, Any]) -> None:
    later = device[0].not_valid_after_utc + timedelta(days=1)
    with fails("has expired"):
        profiles.check_device_cert(device[0], ca=pki.local_ca, factory=FACTORY, now=later)


def test_device_signed_by_root_fails(pki: Pki, device: tuple[x509.Certificate, str, Any]) -> None:
    twin = reissue(device[0], pki.root_key, issuer=pki.root.subject)
    with fails("must be issued by the device CA CN=fio-abc,OU=acme, got issuer CN=Factory-CA,OU=acme"):
        profiles.check_device_cert(twin, ca=pki.local_ca, factory=FACTORY)


# --- Keys ------------------------------------------------------------------------------------


def test_key_mismatch_fails(pki: Pki) -> None:
    with fails("private key does not belong to the certificate CN=Factory-CA,OU=acme"):
        profiles.check_key_matches(pki.local_ca_key, pki.root, "factory_ca.key")


def test_private_key_pem_is_sec1_and_round_trips() -> None:
    key = profiles.new_key()
    pem = profiles.private_key_pem(key)
    assert pem.startswith(b"-----BEGIN EC PRIVATE KEY-----")
    loaded = profiles.load_private_key(pem, "key")
    assert loaded.private_numbers() == key.private_numbers()


def test_pkcs8_key_loads() -> None:
    key = profiles.new_key()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert profiles.load_private_key(pem.decode(), "key").private_numbers() == key.private_numbers()


def test_ec_parameters_block_accepted_and_checked() -> None:
    key = profiles.new_key()
    parameters = b"-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"
    loaded = profiles.load_private_key(parameters + profiles.private_key_pem(key), "pkey.pem")
    assert loaded.private_numbers() == key.private_numbers()
    # secp384r1's parameters in front of the key: refused, the file says two different things.
    p384 = b"-----BEGIN EC PARAMETERS-----\nBgUrgQQAIg==\n-----END EC PARAMETERS-----\n"
    with fails("EC PARAMETERS block must name prime256v1"):
        profiles.load_private_key(p384 + profiles.private_key_pem(key), "pkey.pem")
    with fails("holds no private key block"):
        profiles.load_private_key(parameters, "pkey.pem")


def test_p384_and_rsa_private_keys_fail() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    with fails("private key must be EC P-256, got EC secp384r1"):
        profiles.load_private_key(profiles.private_key_pem(p384), "key")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_pem = rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with fails("private key must be EC P-256, got RSA 2048"):
        profiles.load_private_key(rsa_pem, "key")


def test_encrypted_key_refused_without_leaking() -> None:
    key = profiles.new_key()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")
    )
    with fails("private key is encrypted") as caught:
        profiles.load_private_key(pem, "key")
    assert "BEGIN" not in str(caught.value) and pem.decode().split("\n")[1] not in str(caught.value)


def test_broken_key_error_carries_no_key_material() -> None:
    der = profiles.new_key().private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    truncated = profiles.PemBlock("EC PRIVATE KEY", der[:40]).pem()  # scalar kept, structure cut
    with fails("EC PRIVATE KEY block does not parse as a private key") as caught:
        profiles.load_private_key(truncated, "factory_ca.key")
    assert caught.value.artifact == "factory_ca.key"
    assert der[7:39].hex() not in caught.value.message.lower().replace(":", "")
    assert truncated.decode().split("\n")[1] not in caught.value.message


# --- Loading -----------------------------------------------------------------------------------


def test_load_errors_are_check_errors(pki: Pki) -> None:
    with pytest.raises(CheckError) as caught:
        profiles.load_cert(b"garbage", "tls-crt")
    assert caught.value.artifact == "tls-crt"
    assert caught.value.exit_code == ExitCode.CHECK_FAILED
    assert "is not PEM" in caught.value.rule


def test_garbage_pem_fails() -> None:
    with fails("is not PEM: no -----BEGIN"):
        profiles.load_cert("hello", "tls-crt")
    with fails("broken base64"):
        profiles.load_cert("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n", "tls-crt")
    with fails("CERTIFICATE block does not parse"):
        profiles.load_cert("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "tls-crt")
    with fails("no -----BEGIN"):
        profiles.load_csr(b"", "tls-csr")


def test_invalid_utf8_fails(pki: Pki) -> None:
    with fails("is not PEM text: invalid UTF-8 byte at offset 1"):
        profiles.load_cert(b"-\xff" + profiles.cert_pem(pki.root), "root-crt")
    with fails("non-ASCII character"):
        profiles.load_cert("é" + profiles.cert_pem(pki.root).decode(), "root-crt")


def test_stray_text_fails(pki: Pki) -> None:
    with fails("text outside PEM blocks: 'subject=CN"):
        profiles.load_cert(b"subject=CN = x\n" + profiles.cert_pem(pki.root), "tls-crt")
    # Whitespace and Windows line ends are fine.
    assert profiles.load_cert(b"\n" + profiles.cert_pem(pki.root).replace(b"\n", b"\r\n") + b"\n\n", "x") == pki.root


def test_wrong_type_fails(pki: Pki) -> None:
    with fails("must be a PEM CERTIFICATE, got a CERTIFICATE REQUEST block"):
        profiles.load_cert(profiles.csr_pem(pki.tls_csr), "tls-crt")
    with fails("must be a PEM CERTIFICATE REQUEST or NEW CERTIFICATE REQUEST, got a CERTIFICATE block"):
        profiles.load_csr(profiles.cert_pem(pki.tls), "tls-csr")
    with fails("must be a PEM EC PRIVATE KEY or PRIVATE KEY, got a CERTIFICATE block"):
        profiles.load_private_key(profiles.cert_pem(pki.root), "factory_ca.key")
    with fails("must hold only PEM CERTIFICATE blocks, got a CERTIFICATE REQUEST block"):
        profiles.load_cert_bundle(profiles.cert_pem(pki.root) + profiles.csr_pem(pki.tls_csr), "ca-crt")


def test_multiple_blocks_where_one_expected_fail(pki: Pki) -> None:
    two = profiles.certs_pem([pki.online_ca, pki.local_ca])
    with fails("must hold exactly one PEM CERTIFICATE block, found 2"):
        profiles.load_cert(two, "tls-crt")
    with fails("exactly one PEM EC PRIVATE KEY or PRIVATE KEY block, found 2"):
        profiles.load_private_key(profiles.private_key_pem(pki.root_key) * 2, "factory_ca.key")


def test_bundle_loads_in_order(pki: Pki) -> None:
    bundle = profiles.certs_pem([pki.online_ca, pki.local_ca])
    assert bundle.count(b"\n-----BEGIN") == 1  # joined with one "\n", as fioctl does
    assert profiles.load_cert_bundle(bundle, "ca-crt") == [pki.online_ca, pki.local_ca]
    assert profiles.load_cert_bundle(bundle.decode(), "ca-crt") == [pki.online_ca, pki.local_ca]
    with fails("no -----BEGIN"):
        profiles.load_cert_bundle("\n", "ca-crt")


def test_csr_with_bad_signature_fails(pki: Pki) -> None:
    der = bytearray(pki.tls_csr.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # inside the signature value
    pem = profiles.PemBlock("CERTIFICATE REQUEST", bytes(der)).pem()
    with pytest.raises(CheckError, match="CSR self-signature does not verify|does not parse"):
        profiles.load_csr(pem, "tls-csr")


# --- Facts -------------------------------------------------------------------------------------


def test_fingerprint_matches_openssl(script_dir: Path, script_pki: Pki) -> None:
    output = run(["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in", "factory_ca.pem"], script_dir)
    assert output.decode().strip() == f"sha256 Fingerprint={profiles.fingerprint_sha256(script_pki.root)}"


def test_serial_and_names_match_openssl(script_dir: Path, script_pki: Pki) -> None:
    output = run(["openssl", "x509", "-noout", "-serial", "-in", "local-ca.pem"], script_dir).decode()
    assert int(output.strip().removeprefix("serial="), 16) == int(profiles.serial_decimal(script_pki.local_ca))
    assert profiles.subject_cn(script_pki.local_ca) == LOCAL_CA_CN
    assert profiles.subject_ou(script_pki.local_ca) == FACTORY
    assert profiles.subject_cn(script_pki.root) == "Factory-CA"


def test_gateway_hosts_from_openssl_cert(script_pki: Pki) -> None:
    assert profiles.gateway_hosts(script_pki.tls) == GATEWAY_HOSTS
    assert profiles.gateway_hosts(script_pki.root) == []


def test_describe(pki: Pki) -> None:
    facts = profiles.describe(pki.local_ca)
    assert facts["subject"] == f"CN={LOCAL_CA_CN},OU={FACTORY}"
    assert facts["issuer"] == f"CN=Factory-CA,OU={FACTORY}"
    assert facts["serial"] == str(pki.local_ca.serial_number)
    assert facts["is_ca"] is True
    assert facts["fingerprint"] == profiles.fingerprint_sha256(pki.local_ca)
    assert datetime.fromisoformat(facts["not_after"]) == pki.local_ca.not_valid_after_utc
    assert profiles.describe(pki.tls)["is_ca"] is False


def test_builders_use_random_159_bit_serials(built_pki: Pki) -> None:
    serials = {built_pki.root.serial_number, built_pki.tls.serial_number, built_pki.local_ca.serial_number}
    assert len(serials) == 3
    assert all(0 < serial < 2**159 for serial in serials)


def test_csr_asks_for_ca(built_pki: Pki) -> None:
    assert profiles.csr_asks_for_ca(built_pki.local_ca_csr)  # type: ignore[arg-type]
    assert not profiles.csr_asks_for_ca(built_pki.tls_csr)


# --- CRL -----------------------------------------------------------------------------------------


def test_crl_verifies_against_root(pki: Pki, script_dir: Path, tmp_path: Path) -> None:
    serials_reasons = [
        (pki.online_ca.serial_number, x509.ReasonFlags.certificate_hold),
        (pki.local_ca.serial_number, x509.ReasonFlags.privilege_withdrawn),
    ]
    now = datetime.now(timezone.utc).replace(microsecond=0)
    crl = profiles.build_crl(root_cert=pki.root, root_key=pki.root_key, serials_reasons=serials_reasons, now=now)
    pem = profiles.crl_pem(crl)
    loaded = profiles.load_crl(pem, "ca-revoke-crl")
    assert loaded.is_signature_valid(pki.root.public_key())
    profiles.check_crl(loaded, root=pki.root)
    assert loaded.next_update_utc - loaded.last_update_utc == timedelta(minutes=15)
    assert [(entry.serial_number, profiles.crl_reason(entry)) for entry in loaded] == serials_reasons
    # OpenSSL agrees the root signed it.
    (tmp_path / "crl.pem").write_bytes(pem)
    (tmp_path / "root.pem").write_bytes(profiles.cert_pem(pki.root))
    result = subprocess.run(
        ["openssl", "crl", "-in", "crl.pem", "-CAfile", "root.pem", "-noout"],
        cwd=tmp_path, capture_output=True, check=False, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0 and b"verify OK" in result.stderr


def test_crl_from_foreign_root_fails(pki: Pki, foreign_root: tuple[x509.Certificate, Any]) -> None:
    crl = profiles.build_crl(
        root_cert=foreign_root[0], root_key=foreign_root[1],
        serials_reasons=[(pki.local_ca.serial_number, x509.ReasonFlags.remove_from_crl)],
    )  # fmt: skip
    assert not crl.is_signature_valid(pki.root.public_key())
    with fails("signature does not verify with the root's key"):
        profiles.check_crl(crl, root=pki.root)


def test_crl_entry_without_reason_fails(pki: Pki) -> None:
    now = datetime.now(timezone.utc)
    entry = x509.RevokedCertificateBuilder().serial_number(pki.local_ca.serial_number).revocation_date(now).build()
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(pki.root.subject)
        .last_update(now)
        .next_update(now + timedelta(minutes=15))
        .add_revoked_certificate(entry)
        .sign(pki.root_key, hashes.SHA256())
    )
    with fails(f"entry for serial {pki.local_ca.serial_number} has no reason code"):
        profiles.check_crl(crl, root=pki.root)


def test_load_crl_refuses_a_cert(pki: Pki) -> None:
    with fails("must be a PEM X509 CRL, got a CERTIFICATE block"):
        profiles.load_crl(profiles.cert_pem(pki.root), "ca-revoke-crl")


# --- Builders and scripts agree --------------------------------------------------------------


def test_builders_and_scripts_make_the_same_extensions(script_pki: Pki, built_pki: Pki) -> None:
    """Same extension set, criticality and values (bar key identifiers) for every profile."""

    def shape(cert: x509.Certificate) -> dict[str, tuple[bool, Any]]:
        return {
            extension.oid._name: (extension.critical, None if extension.oid in KEY_IDS else extension.value)
            for extension in cert.extensions
        }

    KEY_IDS = {ExtensionOID.SUBJECT_KEY_IDENTIFIER, ExtensionOID.AUTHORITY_KEY_IDENTIFIER}
    assert shape(built_pki.root) == shape(script_pki.root)
    assert shape(built_pki.tls) == shape(script_pki.tls)
    assert shape(built_pki.local_ca) == shape(script_pki.local_ca)
    assert shape(built_pki.online_ca) == shape(script_pki.online_ca)


def test_builder_root_works_with_openssl_scripts(built_pki: Pki, tmp_path: Path) -> None:
    """An in-process root can sign with the reference scripts (the files are interchangeable)."""
    (tmp_path / "factory_ca.pem").write_bytes(profiles.cert_pem(built_pki.root))
    (tmp_path / "factory_ca.key").write_bytes(profiles.private_key_pem(built_pki.root_key))
    (tmp_path / "factory_ca.key").chmod(0o400)
    script = rendered(factory=FACTORY, local_ca_cn=LOCAL_CA_CN)["create_device_ca"]
    (tmp_path / "create_device_ca").write_text(script)
    os.chmod(tmp_path / "create_device_ca", 0o700)
    run(["./create_device_ca", "local-ca.key", "local-ca.pem"], tmp_path)
    local_ca = profiles.load_cert((tmp_path / "local-ca.pem").read_bytes(), "local-ca.pem")
    profiles.check_device_ca(local_ca, root=built_pki.root, factory=FACTORY, expected_cn=LOCAL_CA_CN)


class WrappedKey(ec.EllipticCurvePrivateKey):
    """A signer that is not a cryptography key object, the shape a later HSM key will have."""

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self._key = key
        self.signatures = 0

    def sign(self, data: bytes, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        self.signatures += 1
        return self._key.sign(data, signature_algorithm)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._key.curve

    @property
    def key_size(self) -> int:
        return self._key.key_size

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        raise NotImplementedError("a signer only signs")

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        raise NotImplementedError("the key never leaves the token")

    def private_bytes(self, *args: Any) -> bytes:
        raise NotImplementedError("the key never leaves the token")

    def __copy__(self) -> WrappedKey:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> WrappedKey:
        return self


def test_builders_sign_with_a_duck_typed_key() -> None:
    signer = WrappedKey(profiles.new_key())
    root = profiles.build_root(signer, factory=FACTORY)
    profiles.check_root(root, factory=FACTORY)
    profiles.check_key_matches(signer, root, "root-ca (HSM)")
    tls_csr = gateway_csr(profiles.new_key())
    tls = profiles.sign_gateway_tls(tls_csr, root_cert=root, root_key=signer)
    profiles.check_gateway_tls(tls, root=root, csr=tls_csr)
    ca_csr = profiles.build_device_ca_csr(profiles.new_key(), cn=LOCAL_CA_CN, factory=FACTORY)
    ca = profiles.sign_device_ca(ca_csr, root_cert=root, root_key=signer)
    profiles.check_device_ca(ca, root=root, factory=FACTORY, csr=ca_csr, expected_cn=LOCAL_CA_CN)
    crl = profiles.build_crl(
        root_cert=root, root_key=signer, serials_reasons=[(ca.serial_number, x509.ReasonFlags.certificate_hold)]
    )
    profiles.check_crl(crl, root=root)
    assert signer.signatures == 4
