"""fioca.pki.profiles, the trust tier and the loaders: every PKI the world makes (each fixture
profile) passes, and each rule that breaks trust has a negative twin that fails; what only
tells one maker from another passes here (test_profiles_named.py recognises it)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID
from pki_fixtures import FIXTURE_PROFILES, GATEWAY_HOSTS, Pki, shared_pki

from fioca.errors import CheckError, ExitCode
from fioca.pki import profiles

FACTORY = "acme"
LOCAL_CA_CN = "fio-42"
# The negative twins run on one PKI of each kind of maker: Go, OpenSSL 1.1, OpenSSL 3.
TWIN_PROFILES = ("fioctl-go-v0.41", "api-2023-openssl-1.1", "fioca")


@pytest.fixture(scope="module")
def made() -> dict[str, Pki]:
    return {profile: shared_pki(profile) for profile in FIXTURE_PROFILES}


@pytest.fixture(params=FIXTURE_PROFILES)
def any_pki(request, made) -> Pki:
    return made[request.param]


@pytest.fixture(params=TWIN_PROFILES)
def pki(request, made) -> Pki:
    return made[request.param]


# --- Twins: a valid certificate again with one thing changed ------------------------------------


def twin(
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


def name(cn: str, ou: str | None = FACTORY) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if ou is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    return x509.Name(attributes)


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


def openssl(args: list[str], cwd: Path) -> bytes:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


@pytest.fixture(scope="module")
def foreign_root() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Another factory's root with the very same subject: only the key tells them apart."""
    key = profiles.new_key()
    return profiles.build_root(key, factory=FACTORY), key


# --- Every profile passes ------------------------------------------------------------------------


def test_every_profile_passes_the_trust_tier(any_pki: Pki) -> None:
    pki = any_pki
    profiles.check_root(pki.root, factory=FACTORY)
    profiles.check_key_matches(pki.root_key, pki.root, "factory_ca.key")
    profiles.check_gateway_tls(pki.tls, root=pki.root, csr=pki.tls_csr)
    profiles.check_device_ca(pki.online_ca, root=pki.root, factory=FACTORY, csr=pki.online_csr, artifact="online-crt")
    profiles.check_device_ca(pki.local_ca, root=pki.root, factory=FACTORY, expected_cn=LOCAL_CA_CN)
    profiles.check_key_matches(pki.local_ca_key, pki.local_ca, "local-ca.key")
    assert profiles.gateway_hosts(pki.tls) == GATEWAY_HOSTS


def test_every_profile_chains_for_openssl(any_pki: Pki) -> None:
    """OpenSSL agrees: the gateway and both device CAs verify against the root, for their purposes."""
    folder = any_pki.path
    (folder.parent / "root.pem").write_bytes(profiles.cert_pem(any_pki.root))
    for name, purpose in (("tls-crt", "sslserver"), ("online-crt", "any"), ("local-ca.pem", "any")):
        out = openssl(
            ["verify", "-CAfile", str(folder.parent / "root.pem"), "-purpose", purpose, str(folder / name)], folder
        )
        assert out.strip().endswith(b": OK")


# --- Root ----------------------------------------------------------------------------------------


def test_root_wrong_ou_fails(pki: Pki) -> None:
    with fails("OU must be the factory name 'other', got 'acme'"):
        profiles.check_root(pki.root, factory="other")


def test_root_without_ou_fails(pki: Pki) -> None:
    bare = name("Factory-CA", None)
    with fails("subject must have exactly one OU, got 0"):
        profiles.check_root(twin(pki.root, pki.root_key, subject=bare, issuer=bare), factory=FACTORY)


def test_root_not_self_signed_fails(pki: Pki, foreign_root: tuple[x509.Certificate, Any]) -> None:
    with fails("its signature does not verify with its own key"):
        profiles.check_root(twin(pki.root, foreign_root[1]), factory=FACTORY)  # same names, another key
    with fails("must be self-signed, got issuer CN=Factory-CA,OU=other"):
        profiles.check_root(twin(pki.root, pki.root_key, issuer=name("Factory-CA", "other")), factory=FACTORY)


def test_root_not_a_ca_fails(pki: Pki) -> None:
    not_ca = twin(pki.root, pki.root_key, replace=[(x509.BasicConstraints(ca=False, path_length=None), True)])
    with fails("basicConstraints must be CA:TRUE, got CA:FALSE"):
        profiles.check_root(not_ca, factory=FACTORY)
    with fails("basicConstraints is missing"):
        profiles.check_root(twin(pki.root, pki.root_key, drop=[ExtensionOID.BASIC_CONSTRAINTS]), factory=FACTORY)


def test_root_without_key_cert_sign_fails(pki: Pki) -> None:
    with fails("keyUsage must include keyCertSign .*got cRLSign"):
        profiles.check_root(twin(pki.root, pki.root_key, replace=[(key_usage(crl_sign=True), True)]), factory=FACTORY)
    with fails("keyUsage is missing"):
        profiles.check_root(twin(pki.root, pki.root_key, drop=[ExtensionOID.KEY_USAGE]), factory=FACTORY)


def test_root_eku_shutting_out_a_purpose_fails(pki: Pki) -> None:
    # The root's extendedKeyUsage limits the gateway (serverAuth) and devices (clientAuth) below it.
    only_clients = twin(pki.root, pki.root_key, replace=[(eku(ExtendedKeyUsageOID.CLIENT_AUTH), False)])
    with fails("extendedKeyUsage must allow serverAuth\\+clientAuth .*got clientAuth"):
        profiles.check_root(only_clients, factory=FACTORY)
    # Twin: no extendedKeyUsage at all limits nothing.
    profiles.check_root(twin(pki.root, pki.root_key, drop=[ExtensionOID.EXTENDED_KEY_USAGE]), factory=FACTORY)


def test_root_pathlen_zero_fails(pki: Pki) -> None:
    constraints = x509.BasicConstraints(ca=True, path_length=0)
    with fails("pathlen:0 on the root leaves no room for the device CAs"):
        profiles.check_root(twin(pki.root, pki.root_key, replace=[(constraints, True)]), factory=FACTORY)
    # Twin: a pathlen that leaves room is fine.
    roomy = x509.BasicConstraints(ca=True, path_length=1)
    profiles.check_root(twin(pki.root, pki.root_key, replace=[(roomy, True)]), factory=FACTORY)


def test_root_weak_key_fails() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with fails("public key RSA 1024 is too weak"):
        profiles.check_root(profiles.build_root(key, factory=FACTORY), factory=FACTORY)
    # Twins: strong keys that no named profile uses still pass the trust tier.
    for strong in (
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec.generate_private_key(ec.SECP384R1()),
    ):
        profiles.check_root(profiles.build_root(strong, factory=FACTORY), factory=FACTORY)


def test_root_sha1_signature_fails(made: dict[str, Pki]) -> None:
    pki = made["fioca"]
    # cryptography refuses to sign with SHA-1, so openssl re-signs the root.
    pem = openssl(["x509", "-in", "factory_ca.pem", "-signkey", "factory_ca.key", "-sha1", "-days", "7300"], pki.path)
    sha1 = profiles.load_cert(pem, "root-crt")
    assert sha1.public_key() == pki.root.public_key()
    with fails("signature algorithm ecdsa-with-SHA1 is too weak"):
        profiles.check_root(sha1, factory=FACTORY)
    # Twin: SHA-384 is no named profile's, and no weakness.
    profiles.check_root(twin(pki.root, pki.root_key, algorithm=hashes.SHA384()), factory=FACTORY)


def test_root_expired_and_not_yet_valid_fail(pki: Pki) -> None:
    with fails("has expired"):
        profiles.check_root(pki.root, factory=FACTORY, now=pki.root.not_valid_after_utc + timedelta(hours=1))
    with fails("is not yet valid"):
        profiles.check_root(pki.root, factory=FACTORY, now=pki.root.not_valid_before_utc - timedelta(hours=1))
    # Within the clock skew both ends still pass.
    profiles.check_root(pki.root, factory=FACTORY, now=pki.root.not_valid_before_utc - timedelta(minutes=1))


def test_root_unknown_critical_extension_fails(pki: Pki) -> None:
    with fails("critical extension OCSPNoCheck is one TLS verifiers do not understand"):
        profiles.check_root(twin(pki.root, pki.root_key, replace=[(x509.OCSPNoCheck(), True)]), factory=FACTORY)
    # Twin: the same extension, not critical, is ignored by verifiers.
    profiles.check_root(twin(pki.root, pki.root_key, replace=[(x509.OCSPNoCheck(), False)]), factory=FACTORY)


def test_root_akid_pointing_elsewhere_fails(pki: Pki) -> None:
    wrong = twin(pki.root, pki.root_key, replace=[(x509.AuthorityKeyIdentifier(b"\x01" * 20, None, None), False)])
    if profiles.subject_key_identifier(pki.root) is None:
        # OpenSSL compares a keyid only with the issuer's SKID; a root made by 1.1 has none.
        profiles.check_root(wrong, factory=FACTORY)
        return
    with fails("authorityKeyIdentifier does not match the root's subjectKeyIdentifier"):
        profiles.check_root(wrong, factory=FACTORY)


@pytest.mark.parametrize("variant", ["eku-not-critical", "no-skid", "7305-days", "other-cn", "no-crl-sign"])
def test_root_profile_details_pass_the_trust_tier(pki: Pki, variant: str) -> None:
    """What tells makers apart is never refused here."""
    changes: dict[str, Any] = {
        "eku-not-critical": {
            "replace": [(eku(ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH), False)]
        },
        "no-skid": {"drop": [ExtensionOID.SUBJECT_KEY_IDENTIFIER, ExtensionOID.AUTHORITY_KEY_IDENTIFIER]},
        "7305-days": {"days": 7305},
        "other-cn": {"subject": name("Root of acme"), "issuer": name("Root of acme")},
        "no-crl-sign": {"replace": [(key_usage(key_cert_sign=True), True)]},
    }
    profiles.check_root(twin(pki.root, pki.root_key, **changes[variant]), factory=FACTORY)


# --- Gateway TLS -------------------------------------------------------------------------------


def test_gateway_tls_cn_only_csr_passes(pki: Pki) -> None:
    assert pki.tls_csr.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME) == []
    profiles.check_gateway_tls(pki.tls, root=pki.root, csr=pki.tls_csr)


def test_gateway_tls_signed_by_foreign_root_fails(pki: Pki, foreign_root: tuple[x509.Certificate, Any]) -> None:
    with fails("signature does not verify with the root's key"):
        profiles.check_gateway_tls(twin(pki.tls, foreign_root[1]), root=pki.root, csr=pki.tls_csr)
    other = twin(pki.tls, foreign_root[1], issuer=name("Factory-CA", "other"))
    with fails("must be issued by the root CN=Factory-CA,OU=acme, got issuer CN=Factory-CA,OU=other"):
        profiles.check_gateway_tls(other, root=pki.root, csr=pki.tls_csr)


def test_gateway_tls_key_not_the_csrs_fails(pki: Pki) -> None:
    stranger = twin(pki.tls, pki.root_key, public_key=profiles.new_key().public_key())
    with fails("public key does not match the tls-csr's public key"):
        profiles.check_gateway_tls(stranger, root=pki.root, csr=pki.tls_csr)


def test_gateway_tls_is_ca_fails(pki: Pki) -> None:
    ca = twin(pki.tls, pki.root_key, replace=[(x509.BasicConstraints(ca=True, path_length=None), True)])
    with fails("must not be a CA"):
        profiles.check_gateway_tls(ca, root=pki.root, csr=pki.tls_csr)
    # Twin: an explicit CA:FALSE says what the profiles say by leaving it out.
    leaf = twin(pki.tls, pki.root_key, replace=[(x509.BasicConstraints(ca=False, path_length=None), True)])
    profiles.check_gateway_tls(leaf, root=pki.root, csr=pki.tls_csr)


def test_gateway_tls_without_digital_signature_fails(pki: Pki) -> None:
    no_signing = twin(pki.tls, pki.root_key, replace=[(key_usage(key_encipherment=True), True)])
    with fails("keyUsage must include digitalSignature, got keyEncipherment"):
        profiles.check_gateway_tls(no_signing, root=pki.root, csr=pki.tls_csr)
    with fails("keyUsage is missing"):
        profiles.check_gateway_tls(
            twin(pki.tls, pki.root_key, drop=[ExtensionOID.KEY_USAGE]), root=pki.root, csr=pki.tls_csr
        )


def test_gateway_tls_without_server_auth_fails(pki: Pki) -> None:
    client = twin(pki.tls, pki.root_key, replace=[(eku(ExtendedKeyUsageOID.CLIENT_AUTH), True)])
    with fails("extendedKeyUsage must include serverAuth, got clientAuth"):
        profiles.check_gateway_tls(client, root=pki.root, csr=pki.tls_csr)
    with fails("extendedKeyUsage is missing; must include serverAuth"):
        profiles.check_gateway_tls(
            twin(pki.tls, pki.root_key, drop=[ExtensionOID.EXTENDED_KEY_USAGE]), root=pki.root, csr=pki.tls_csr
        )


@pytest.mark.parametrize(
    "hosts", [list(reversed(GATEWAY_HOSTS)), GATEWAY_HOSTS[:1], [*GATEWAY_HOSTS, "evil.example.com"]],
    ids=["swapped", "dropped", "added"],
)  # fmt: skip
def test_gateway_tls_names_not_the_csrs_fail(pki: Pki, hosts: list[str]) -> None:
    san = x509.SubjectAlternativeName([x509.DNSName(host) for host in hosts])
    changed = twin(pki.tls, pki.root_key, replace=[(san, False)])
    got = ", ".join(f"DNS:{host}" for host in hosts)
    with fails(f"subjectAltName must be the tls-csr's .* \\(same order\\), got {got}"):
        profiles.check_gateway_tls(changed, root=pki.root, csr=pki.tls_csr)


def test_gateway_tls_wrong_akid_fails(pki: Pki) -> None:
    wrong = twin(pki.tls, pki.root_key, replace=[(x509.AuthorityKeyIdentifier(b"\x01" * 20, None, None), False)])
    if profiles.subject_key_identifier(pki.root) is None:
        # OpenSSL compares a keyid only with the issuer's SKID; a root made by 1.1 has none.
        profiles.check_gateway_tls(wrong, root=pki.root, csr=pki.tls_csr)
        return
    with fails("authorityKeyIdentifier does not match the root's subjectKeyIdentifier"):
        profiles.check_gateway_tls(wrong, root=pki.root, csr=pki.tls_csr)


def test_gateway_tls_akid_naming_another_serial_fails(pki: Pki) -> None:
    named = x509.AuthorityKeyIdentifier(None, [x509.DirectoryName(pki.root.issuer)], pki.root.serial_number + 1)
    with fails("authorityKeyIdentifier names serial"):
        profiles.check_gateway_tls(
            twin(pki.tls, pki.root_key, replace=[(named, False)]), root=pki.root, csr=pki.tls_csr
        )
    # Twin: the root's own name and serial, as OpenSSL 3 writes them under a root without SKID.
    right = x509.AuthorityKeyIdentifier(None, [x509.DirectoryName(pki.root.issuer)], pki.root.serial_number)
    profiles.check_gateway_tls(twin(pki.tls, pki.root_key, replace=[(right, False)]), root=pki.root, csr=pki.tls_csr)


def test_gateway_tls_expired_fails(pki: Pki) -> None:
    with fails("has expired"):
        profiles.check_gateway_tls(
            pki.tls, root=pki.root, csr=pki.tls_csr, now=pki.tls.not_valid_after_utc + timedelta(days=1)
        )


@pytest.mark.parametrize("variant", ["eku-not-critical", "ku-extras", "3653-days", "subject-reordered"])
def test_gateway_tls_profile_details_pass_the_trust_tier(pki: Pki, variant: str) -> None:
    changes: dict[str, Any] = {
        "eku-not-critical": {"replace": [(eku(ExtendedKeyUsageOID.SERVER_AUTH), False)]},
        "ku-extras": {
            "replace": [(key_usage(digital_signature=True, key_encipherment=True, key_agreement=True), True)]
        },
        "3653-days": {"days": 3653},
        "subject-reordered": {"subject": x509.Name(list(reversed(list(name(GATEWAY_HOSTS[0], FACTORY)))))},
    }
    profiles.check_gateway_tls(twin(pki.tls, pki.root_key, **changes[variant]), root=pki.root, csr=pki.tls_csr)


# --- Device CAs ------------------------------------------------------------------------------


def test_device_ca_wrong_ou_fails(pki: Pki) -> None:
    with fails("OU must be the factory name 'other', got 'acme'"):
        profiles.check_device_ca(pki.local_ca, root=pki.root, factory="other")


def test_device_ca_wrong_cn_fails(pki: Pki) -> None:
    with fails(f"subject CN must be 'fio-someone-else', got '{LOCAL_CA_CN}'"):
        profiles.check_device_ca(pki.local_ca, root=pki.root, factory=FACTORY, expected_cn="fio-someone-else")


def test_device_ca_key_not_the_csrs_fails(pki: Pki) -> None:
    with fails("public key does not match the CSR's public key"):
        profiles.check_device_ca(pki.local_ca, root=pki.root, factory=FACTORY, csr=pki.online_csr)


def test_device_ca_not_a_ca_fails(pki: Pki) -> None:
    not_ca = twin(pki.local_ca, pki.root_key, replace=[(x509.BasicConstraints(ca=False, path_length=None), True)])
    with fails("basicConstraints must be CA:TRUE, got CA:FALSE"):
        profiles.check_device_ca(not_ca, root=pki.root, factory=FACTORY)
    with fails("basicConstraints is missing"):
        profiles.check_device_ca(
            twin(pki.local_ca, pki.root_key, drop=[ExtensionOID.BASIC_CONSTRAINTS]), root=pki.root, factory=FACTORY
        )


def test_device_ca_without_key_cert_sign_fails(pki: Pki) -> None:
    signing = twin(pki.local_ca, pki.root_key, replace=[(key_usage(digital_signature=True), True)])
    with fails("keyUsage must include keyCertSign .*got digitalSignature"):
        profiles.check_device_ca(signing, root=pki.root, factory=FACTORY)


def test_device_ca_eku_shutting_out_devices_fails(pki: Pki) -> None:
    servers = twin(pki.local_ca, pki.root_key, replace=[(eku(ExtendedKeyUsageOID.SERVER_AUTH), False)])
    with fails("extendedKeyUsage must allow clientAuth"):
        profiles.check_device_ca(servers, root=pki.root, factory=FACTORY)
    clients = twin(pki.local_ca, pki.root_key, replace=[(eku(ExtendedKeyUsageOID.CLIENT_AUTH), False)])
    profiles.check_device_ca(clients, root=pki.root, factory=FACTORY)


def test_device_ca_signed_by_foreign_root_fails(pki: Pki, foreign_root: tuple[x509.Certificate, Any]) -> None:
    with fails("signature does not verify with the root's key"):
        profiles.check_device_ca(twin(pki.local_ca, foreign_root[1]), root=pki.root, factory=FACTORY)


@pytest.mark.parametrize("variant", ["no-pathlen", "constraints-not-critical", "3652-days", "no-key-ids"])
def test_device_ca_profile_details_pass_the_trust_tier(pki: Pki, variant: str) -> None:
    changes: dict[str, Any] = {
        "no-pathlen": {"replace": [(x509.BasicConstraints(ca=True, path_length=None), True)]},
        "constraints-not-critical": {"replace": [(x509.BasicConstraints(ca=True, path_length=0), False)]},
        "3652-days": {"days": 3652},
        "no-key-ids": {"drop": [ExtensionOID.SUBJECT_KEY_IDENTIFIER, ExtensionOID.AUTHORITY_KEY_IDENTIFIER]},
    }
    profiles.check_device_ca(twin(pki.local_ca, pki.root_key, **changes[variant]), root=pki.root, factory=FACTORY)


# --- Devices -------------------------------------------------------------------------------


@pytest.fixture
def device(pki: Pki) -> tuple[x509.Certificate, str, ec.EllipticCurvePrivateKey]:
    key = profiles.new_key()
    device_uuid = str(uuid.uuid4())
    csr = profiles.build_device_csr(key, uuid=device_uuid, factory=FACTORY)
    cert = profiles.sign_device_cert(csr, ca_cert=pki.local_ca, ca_key=pki.local_ca_key, days=30)
    return cert, device_uuid, key


def test_device_passes(pki: Pki, device: tuple[x509.Certificate, str, Any]) -> None:
    cert, device_uuid, key = device
    profiles.check_device_cert(cert, ca=pki.local_ca, factory=FACTORY, uuid=device_uuid)
    profiles.check_device_cert(cert, ca=pki.local_ca, factory=FACTORY)  # any non-empty CN
    profiles.check_key_matches(key, cert, "pkey.pem")


def test_offline_device_by_openssl_passes(pki: Pki, tmp_path: Path) -> None:
    """The documented procedure (PKI-SPEC section 8) with openssl, under each maker's local CA."""
    device_uuid = str(uuid.uuid4())
    (tmp_path / "local-ca.pem").write_bytes(profiles.cert_pem(pki.local_ca))
    (tmp_path / "local-ca.key").write_bytes(profiles.private_key_pem(pki.local_ca_key))
    (tmp_path / "device-cert.conf").write_text(
        "[req]\nprompt = no\ndays=3650\ndistinguished_name = req_dn\n\n"
        f'[req_dn]\ncommonName="{device_uuid}"\norganizationalUnitName="{FACTORY}"\n'
    )
    (tmp_path / "device-cert.ext").write_text(
        "keyUsage=critical,digitalSignature,keyAgreement\nextendedKeyUsage=critical,clientAuth\n"
    )
    openssl(["ecparam", "-genkey", "-name", "prime256v1", "-out", "pkey.pem"], tmp_path)
    openssl(["req", "-new", "-config", "device-cert.conf", "-key", "pkey.pem", "-out", "device-cert.csr"], tmp_path)
    openssl(["x509", "-req", "-in", "device-cert.csr", "-CAcreateserial", "-extfile", "device-cert.ext",
             "-CAkey", "local-ca.key", "-CA", "local-ca.pem", "-sha256", "-out", "client.pem"], tmp_path)  # fmt: skip
    cert = profiles.load_cert((tmp_path / "client.pem").read_bytes(), "client.pem")
    profiles.check_device_cert(cert, ca=pki.local_ca, factory=FACTORY, uuid=device_uuid)
    profiles.check_key_matches(
        profiles.load_private_key((tmp_path / "pkey.pem").read_bytes(), "pkey.pem"), cert, "pkey.pem"
    )
    # The negative twin: the same device against the online CA, which did not sign it.
    with fails("must be issued by the device CA .*online-ca"):
        profiles.check_device_cert(cert, ca=pki.online_ca, factory=FACTORY, uuid=device_uuid)


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
    with fails("businessCategory may only be 'production', got 'lab'"):
        profiles.check_device_cert(twin(device[0], pki.local_ca_key, subject=subject), ca=pki.local_ca, factory=FACTORY)


def test_device_without_client_auth_fails(pki: Pki, device: tuple[x509.Certificate, str, Any]) -> None:
    server = twin(device[0], pki.local_ca_key, replace=[(eku(ExtendedKeyUsageOID.SERVER_AUTH), True)])
    with fails("extendedKeyUsage must include clientAuth, got serverAuth"):
        profiles.check_device_cert(server, ca=pki.local_ca, factory=FACTORY)
    # Twin: clientAuth not critical is a detail, not a break.
    loose = twin(device[0], pki.local_ca_key, replace=[(eku(ExtendedKeyUsageOID.CLIENT_AUTH), False)])
    profiles.check_device_cert(loose, ca=pki.local_ca, factory=FACTORY)


def test_device_is_ca_fails(pki: Pki, device: tuple[x509.Certificate, str, Any]) -> None:
    ca = twin(device[0], pki.local_ca_key, replace=[(x509.BasicConstraints(ca=True, path_length=0), True)])
    with fails("must not be a CA"):
        profiles.check_device_cert(ca, ca=pki.local_ca, factory=FACTORY)


def test_device_expired_fails(pki: Pki, device: tuple[x509.Certificate, str, Any]) -> None:
    with fails("has expired"):
        profiles.check_device_cert(
            device[0], ca=pki.local_ca, factory=FACTORY, now=device[0].not_valid_after_utc + timedelta(days=1)
        )


def test_device_signed_by_root_fails(pki: Pki, device: tuple[x509.Certificate, str, Any]) -> None:
    by_root = twin(device[0], pki.root_key, issuer=pki.root.subject)
    with fails(f"must be issued by the device CA CN={LOCAL_CA_CN},OU=acme, got issuer CN=Factory-CA,OU=acme"):
        profiles.check_device_cert(by_root, ca=pki.local_ca, factory=FACTORY)


# --- Keys and CRLs ---------------------------------------------------------------------------


def test_key_mismatch_fails(pki: Pki) -> None:
    with fails("private key does not belong to the certificate CN=Factory-CA,OU=acme"):
        profiles.check_key_matches(pki.local_ca_key, pki.root, "factory_ca.key")


def test_crl_with_go_sized_serials_verifies(made: dict[str, Pki], tmp_path: Path) -> None:
    """fioctl's Go PKI draws 160-bit serials (21 DER octets), which `cryptography`'s CRL builder
    refuses; build_crl still lists them exactly, and OpenSSL agrees the root signed it."""
    pki = made["fioctl-go-v0.41"]
    serials_reasons = [(pki.online_ca.serial_number, 6), (pki.local_ca.serial_number, 9), (5, 8)]
    assert all(serial.bit_length() == 160 for serial, _ in serials_reasons[:2])
    crl = profiles.build_crl(root_cert=pki.root, root_key=pki.root_key, serials_reasons=serials_reasons)
    loaded = profiles.load_crl(profiles.crl_pem(crl), "ca-revoke-crl")
    profiles.check_crl(loaded, root=pki.root)
    assert loaded.next_update_utc - loaded.last_update_utc == timedelta(minutes=15)
    assert [(entry.serial_number, profiles.REASON_CODES[profiles.crl_reason(entry)]) for entry in loaded] == serials_reasons
    (tmp_path / "crl.pem").write_bytes(profiles.crl_pem(crl))
    (tmp_path / "root.pem").write_bytes(profiles.cert_pem(pki.root))
    done = subprocess.run(["openssl", "crl", "-in", "crl.pem", "-CAfile", "root.pem", "-noout"], cwd=tmp_path,
                          capture_output=True, check=False, timeout=30)  # fmt: skip
    assert done.returncode == 0 and b"verify OK" in done.stderr


def test_crl_from_foreign_root_fails(pki: Pki, foreign_root: tuple[x509.Certificate, Any]) -> None:
    crl = profiles.build_crl(root_cert=foreign_root[0], root_key=foreign_root[1],
                             serials_reasons=[(pki.local_ca.serial_number, 8)])  # fmt: skip
    with fails("signature does not verify with the root's key"):
        profiles.check_crl(crl, root=pki.root)
    profiles.check_crl(  # twin: the right root
        profiles.build_crl(
            root_cert=pki.root, root_key=pki.root_key, serials_reasons=[(7, 6)]
        ),
        root=pki.root,
    )


def test_crl_entry_without_reason_fails(pki: Pki) -> None:
    now = datetime.now(UTC)
    entry = x509.RevokedCertificateBuilder().serial_number(7).revocation_date(now).build()
    crl = (
        x509.CertificateRevocationListBuilder().issuer_name(pki.root.subject).last_update(now)
        .next_update(now + timedelta(minutes=15)).add_revoked_certificate(entry).sign(pki.root_key, hashes.SHA256())
    )  # fmt: skip
    with fails("entry for serial 7 has no reason code"):
        profiles.check_crl(crl, root=pki.root)


# --- Loading -----------------------------------------------------------------------------------


def test_load_errors_are_check_errors() -> None:
    with pytest.raises(CheckError) as caught:
        profiles.load_cert(b"garbage", "tls-crt")
    assert caught.value.artifact == "tls-crt" and caught.value.exit_code == ExitCode.CHECK_FAILED
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


def test_invalid_utf8_fails(made: dict[str, Pki]) -> None:
    root = made["fioca"].root
    with fails("is not PEM text: invalid UTF-8 byte at offset 1"):
        profiles.load_cert(b"-\xff" + profiles.cert_pem(root), "root-crt")
    with fails("non-ASCII character"):
        profiles.load_cert("é" + profiles.cert_pem(root).decode(), "root-crt")


def test_strict_loaders_refuse_text_around_blocks_the_server_loaders_skip(made: dict[str, Pki]) -> None:
    pki = made["fioctl-go-v0.41"]
    noisy = b"subject=CN = x\n" + profiles.cert_pem(pki.root) + b"trailing words\n"
    with fails("text outside PEM blocks: 'subject=CN"):
        profiles.load_cert(noisy, "factory_ca.pem")
    assert profiles.load_server_cert(noisy, "root-crt") == pki.root
    # Around the blocks the server's bytes need not even be UTF-8.
    assert profiles.load_server_cert(b"\xe9t\xe9\n" + noisy, "root-crt") == pki.root
    bundle = b"# online\n" + profiles.cert_pem(pki.online_ca) + b"\n# local\n" + profiles.cert_pem(pki.local_ca)
    with fails("text outside PEM blocks: '# online'"):
        profiles.load_cert_bundle(bundle, "cas.pem")
    assert profiles.load_server_cert_bundle(bundle.decode(), "ca-crt") == [pki.online_ca, pki.local_ca]
    # Whitespace and Windows line ends are fine for both.
    spaced = b"\n" + profiles.cert_pem(pki.root).replace(b"\n", b"\r\n") + b"\n\n"
    assert profiles.load_cert(spaced, "x") == profiles.load_server_cert(spaced, "x") == pki.root


def test_server_loaders_still_check_the_blocks(made: dict[str, Pki]) -> None:
    pki = made["fioca"]
    with fails("is not PEM: no -----BEGIN"):
        profiles.load_server_cert_bundle("just words", "ca-crt")
    with fails("broken base64"):
        profiles.load_server_cert("note\n-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n", "tls-crt")
    with fails("must hold only PEM CERTIFICATE blocks, got a EC PRIVATE KEY block"):
        profiles.load_server_cert_bundle(profiles.cert_pem(pki.root) + profiles.private_key_pem(pki.root_key), "ca-crt")
    with fails("exactly one PEM CERTIFICATE block, found 2"):
        profiles.load_server_cert(profiles.certs_pem([pki.online_ca, pki.local_ca]), "root-crt")
    # A BEGIN line inside other text only counts at the start of a line, as Go's pem.Decode reads it.
    with fails("no -----BEGIN"):
        profiles.load_server_cert(b"see: " + profiles.cert_pem(pki.root), "root-crt")


def test_pem_only_keeps_the_blocks_as_the_server_loaders_find_them(made: dict[str, Pki]) -> None:
    pki = made["fioca"]
    clean = profiles.certs_pem([pki.online_ca, pki.local_ca]).decode()
    assert profiles.pem_only(clean) == clean  # a clean bundle comes back byte for byte
    noisy = "# the online CA\n" + profiles.cert_pem(pki.online_ca).decode() + "and the local one:\n" + \
        profiles.cert_pem(pki.local_ca).decode() + "-- end"  # fmt: skip
    # Each run of other text becomes one newline.
    assert profiles.pem_only(noisy) == profiles.cert_pem(pki.online_ca).decode() + profiles.cert_pem(pki.local_ca).decode()
    assert profiles.load_cert_bundle(profiles.pem_only(noisy), "ca-crt") == [pki.online_ca, pki.local_ca]
    assert len(profiles.pem_spans(noisy)) == 2 and profiles.pem_only("no blocks here") == ""


def test_wrong_type_fails(made: dict[str, Pki]) -> None:
    pki = made["fioca"]
    with fails("must be a PEM CERTIFICATE, got a CERTIFICATE REQUEST block"):
        profiles.load_cert(profiles.csr_pem(pki.tls_csr), "tls-crt")
    with fails("must be a PEM CERTIFICATE REQUEST or NEW CERTIFICATE REQUEST, got a CERTIFICATE block"):
        profiles.load_csr(profiles.cert_pem(pki.tls), "tls-csr")
    with fails("must be a PEM EC PRIVATE KEY or PRIVATE KEY, got a CERTIFICATE block"):
        profiles.load_private_key(profiles.cert_pem(pki.root), "factory_ca.key")
    with fails("must hold only PEM CERTIFICATE blocks, got a CERTIFICATE REQUEST block"):
        profiles.load_cert_bundle(profiles.cert_pem(pki.root) + profiles.csr_pem(pki.tls_csr), "ca-crt")


def test_multiple_blocks_where_one_expected_fail(made: dict[str, Pki]) -> None:
    pki = made["fioca"]
    with fails("must hold exactly one PEM CERTIFICATE block, found 2"):
        profiles.load_cert(profiles.certs_pem([pki.online_ca, pki.local_ca]), "tls-crt")
    with fails("exactly one PEM EC PRIVATE KEY or PRIVATE KEY block, found 2"):
        profiles.load_private_key(profiles.private_key_pem(pki.root_key) * 2, "factory_ca.key")


def test_bundle_loads_in_order(made: dict[str, Pki]) -> None:
    pki = made["fioca"]
    bundle = profiles.certs_pem([pki.online_ca, pki.local_ca])
    assert bundle.count(b"\n-----BEGIN") == 1  # joined with one "\n", as fioctl does
    assert profiles.load_cert_bundle(bundle, "ca-crt") == [pki.online_ca, pki.local_ca]
    with fails("no -----BEGIN"):
        profiles.load_cert_bundle("\n", "ca-crt")


def test_go_serials_of_21_octets_load(made: dict[str, Pki]) -> None:
    pki = made["fioctl-go-v0.41"]
    assert pki.root.serial_number.bit_length() == 160
    assert profiles.load_cert(profiles.cert_pem(pki.root), "factory_ca.pem") == pki.root


def test_csr_with_bad_signature_fails(made: dict[str, Pki]) -> None:
    der = bytearray(made["fioca"].tls_csr.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # inside the signature value
    with pytest.raises(CheckError, match="CSR self-signature does not verify|does not parse"):
        profiles.load_csr(profiles.PemBlock("CERTIFICATE REQUEST", bytes(der)).pem(), "tls-csr")


def test_private_keys_of_every_maker_load(any_pki: Pki) -> None:
    for name, key in (("factory_ca.key", any_pki.root_key), ("local-ca.key", any_pki.local_ca_key)):
        loaded = profiles.load_private_key((any_pki.path / name).read_bytes(), name)
        assert loaded.private_numbers() == key.private_numbers()


def test_pkcs8_key_loads_and_sec1_round_trips() -> None:
    key = profiles.new_key()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    assert profiles.load_private_key(pem.decode(), "key").private_numbers() == key.private_numbers()
    sec1 = profiles.private_key_pem(key)
    assert sec1.startswith(b"-----BEGIN EC PRIVATE KEY-----")
    assert profiles.load_private_key(sec1, "key").private_numbers() == key.private_numbers()


def test_ec_parameters_block_accepted_and_checked() -> None:
    key = profiles.new_key()
    parameters = b"-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"
    assert (
        profiles.load_private_key(parameters + profiles.private_key_pem(key), "pkey.pem").private_numbers()
        == key.private_numbers()
    )
    p384 = b"-----BEGIN EC PARAMETERS-----\nBgUrgQQAIg==\n-----END EC PARAMETERS-----\n"
    with fails("EC PARAMETERS block must name prime256v1"):
        profiles.load_private_key(p384 + profiles.private_key_pem(key), "pkey.pem")
    with fails("holds no private key block"):
        profiles.load_private_key(parameters, "pkey.pem")


def test_p384_and_rsa_private_keys_fail() -> None:
    with fails("private key must be EC P-256, got EC secp384r1"):
        profiles.load_private_key(profiles.private_key_pem(ec.generate_private_key(ec.SECP384R1())), "key")
    rsa_pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with fails("private key must be EC P-256, got RSA 2048"):
        profiles.load_private_key(rsa_pem, "key")


def test_encrypted_key_refused_without_leaking() -> None:
    pem = profiles.new_key().private_bytes(
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


# --- Facts -------------------------------------------------------------------------------------


def test_fingerprint_and_serial_match_openssl(any_pki: Pki) -> None:
    out = openssl(
        ["x509", "-noout", "-fingerprint", "-sha256", "-serial", "-in", "local-ca.pem"], any_pki.path
    ).decode()
    fingerprint, serial = out.strip().splitlines()
    assert fingerprint == f"sha256 Fingerprint={profiles.fingerprint_sha256(any_pki.local_ca)}"
    assert int(serial.removeprefix("serial="), 16) == int(profiles.serial_decimal(any_pki.local_ca))


def test_names_and_description(made: dict[str, Pki]) -> None:
    pki = made["fioctl-go-v0.41"]
    assert profiles.subject_cn(pki.local_ca) == LOCAL_CA_CN and profiles.subject_ou(pki.local_ca) == FACTORY
    # Go re-encodes a copied subject in its own order: OU first.
    assert profiles.name_text(pki.online_ca.subject) == f"OU={FACTORY},CN=online-ca"
    described = profiles.describe(pki.local_ca)
    assert described["subject"] == f"CN={LOCAL_CA_CN},OU={FACTORY}" and described["is_ca"] is True
    assert described["serial"] == str(pki.local_ca.serial_number)
    assert datetime.fromisoformat(described["not_after"]) == pki.local_ca.not_valid_after_utc
    assert profiles.describe(pki.tls)["is_ca"] is False
    assert profiles.gateway_hosts(pki.root) == []


def test_key_identifier_methods(any_pki: Pki) -> None:
    """SHA-1 of the key (RFC 5280 method 1) for OpenSSL and Go before 1.25, truncated SHA-256
    (RFC 7093) for Go from 1.25; OpenSSL 1.1 and the scripts' root made none."""
    skid = profiles.subject_key_identifier(any_pki.root)
    if any_pki.profile == "api-2023-openssl-1.1":
        assert skid is None
        return
    method = profiles.key_id_sha256 if any_pki.profile == "fioctl-go-1.26" else profiles.key_id_sha1
    assert skid == method(any_pki.root.public_key())
    assert (
        skid == x509.SubjectKeyIdentifier.from_public_key(any_pki.root.public_key()).digest
        or method is profiles.key_id_sha256
    )
