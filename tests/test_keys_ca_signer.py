"""The root signer (fioca.pki.signer): one seam, two ways to sign, every result checked."""

from __future__ import annotations

import shutil

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fioca import facts
from fioca.errors import CheckError, ConfigError, RefusedError, ScriptError
from fioca.pki import files, profiles, reference, signer

FACTORY = "acme"


def tls_csr(key=None, *, names=("gw.ota-lite.foundries.io", "gw.ostree.foundries.io"), extra=()):
    key = key or profiles.new_key()
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateway"), x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, FACTORY)])
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    for ext, critical in extra:
        builder = builder.add_extension(ext, critical=critical)
    return builder.sign(key, hashes.SHA256())


def ca_csr(path_length=0, ca=True):
    key = profiles.new_key()
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "line-3"), x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, FACTORY)])
    ).add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True)
    return builder.sign(key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory):
    """A PKI dir holding a root of the create profile (made in process: no sandbox needed)."""
    path = tmp_path_factory.mktemp("pki")
    key = profiles.new_key()
    files.write_file(path / facts.ROOT_KEY, profiles.private_key_pem(key))
    files.write_file(path / facts.ROOT_CERT, profiles.cert_pem(profiles.build_root(key, factory=FACTORY)))
    return path


@pytest.fixture(scope="module")
def root_signer(pki_dir):
    return signer.load_root_signer(files.PkiDir.open(pki_dir), factory=FACTORY)


def root_of(pki_dir):
    return profiles.load_cert((pki_dir / facts.ROOT_CERT).read_bytes(), "root")


def test_file_signer_loads_the_root_and_hides_its_key(root_signer, pki_dir):
    assert root_signer.certificate == root_of(pki_dir)
    assert root_signer.factory == FACTORY
    assert "key hidden" in repr(root_signer)
    assert "PRIVATE" not in repr(root_signer)


def test_signer_refuses_a_key_that_is_not_the_roots(pki_dir, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(pki_dir, other)
    (other / "factory_ca.key").chmod(0o600)
    (other / "factory_ca.key").write_bytes(profiles.private_key_pem(profiles.new_key()))
    with pytest.raises(CheckError, match="private key does not belong to the certificate"):
        signer.load_root_signer(files.PkiDir.open(other))


def test_signer_refuses_a_dir_without_a_root(tmp_path):
    with pytest.raises(RefusedError, match="factory_ca.pem does not exist"):
        signer.load_root_signer(files.PkiDir.open(tmp_path))


def test_signer_refuses_another_factorys_root(pki_dir):
    with pytest.raises(CheckError, match="subject OU must be the factory name 'other'"):
        signer.load_root_signer(files.PkiDir.open(pki_dir), factory="other")


def test_hsm_signer_refuses_a_token_that_is_not_there(pki_dir):
    hsm = signer.HsmSettings(module="/usr/lib/softhsm/libsofthsm2.so", token_label="no-such-token", pin="1234")
    assert "1234" not in repr(hsm)
    with pytest.raises(ConfigError, match="HSM"):
        signer.load_root_signer(files.PkiDir.open(pki_dir), hsm=hsm)


@pytest.mark.parametrize("via", ["script", "inprocess"])
def test_sign_tls_both_ways_gives_the_gateway_profile(root_signer, via):
    csr = tls_csr()
    cert = signer.sign_csr(root_signer, csr, "tls", via=via)
    profiles.check_gateway_tls(cert, root=root_signer.certificate, csr=csr)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    # Negative twin: the same cert is not a device CA.
    with pytest.raises(CheckError):
        profiles.check_device_ca(cert, root=root_signer.certificate, factory=FACTORY)


@pytest.mark.parametrize("via", ["script", "inprocess"])
def test_sign_ca_both_ways_gives_the_device_ca_profile(root_signer, via):
    csr = ca_csr()
    cert = signer.sign_csr(root_signer, csr, "ca", via=via)
    profiles.check_device_ca(cert, root=root_signer.certificate, factory=FACTORY, csr=csr)
    with pytest.raises(CheckError):
        profiles.check_gateway_tls(cert, root=root_signer.certificate, csr=csr)


@pytest.mark.parametrize("via", ["script", "inprocess"])
def test_local_ca_both_ways(root_signer, via):
    local = signer.create_local_ca(root_signer, cn="fio-42", via=via)
    profiles.check_device_ca(local.cert, root=root_signer.certificate, factory=FACTORY, expected_cn="fio-42")
    profiles.check_key_matches(profiles.load_private_key(local.key_pem, "k"), local.cert, "k")
    assert "PRIVATE" not in repr(local)
    with pytest.raises(CheckError, match="subject CN must be 'fio-43'"):
        profiles.check_device_ca(local.cert, root=root_signer.certificate, factory=FACTORY, expected_cn="fio-43")


def _bundled_with(monkeypatch, name: str, change) -> None:
    """fioca's bundled `name` script, changed: what the signer then runs in the jail."""
    real = reference.bundled()
    monkeypatch.setattr(reference, "bundled", lambda: {**real, name: change(real[name])})


def test_script_path_result_is_checked(root_signer, monkeypatch):
    """A script that prints a cert of the wrong profile is caught before anyone uses it."""
    # sign_tls_csr, but granting CA:TRUE instead of a server cert.
    _bundled_with(monkeypatch, "sign_tls_csr", lambda text: text.replace(
        "keyUsage = critical, digitalSignature", "basicConstraints = CA:TRUE"))
    with pytest.raises(CheckError, match="tls-crt"):
        signer.sign_csr(root_signer, tls_csr(), "tls", via="script")


def test_script_failure_is_a_script_error(root_signer, monkeypatch):
    _bundled_with(monkeypatch, "sign_tls_csr", lambda _text: "#!/bin/sh -e\necho broken >&2\nexit 3\n")
    with pytest.raises(ScriptError, match="exited with status 3"):
        signer.sign_csr(root_signer, tls_csr(), "tls", via="script")


@pytest.mark.parametrize(
    ("csr_factory", "profile", "message"),
    [
        (lambda: ca_csr(), "tls", "asks for CA:TRUE"),
        (lambda: ca_csr(path_length=1), "ca", "asks for pathlen 1"),
        (lambda: ca_csr(path_length=None), "ca", "asks for pathlen unlimited"),
        (lambda: ca_csr(ca=False), "ca", "asks for CA:FALSE"),
        (lambda: tls_csr(names=()), "tls", "no DNS names"),
        (lambda: tls_csr(extra=[(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), True)]), "tls", "clientAuth"),
        (lambda: tls_csr(extra=[(profiles.key_usage(key_cert_sign=True), True)]), "tls", "keyCertSign|key_cert_sign"),
        (lambda: tls_csr(), "ca", "subjectAltName"),
    ],
)
def test_a_csr_asking_for_more_than_the_profile_is_refused(root_signer, csr_factory, profile, message):
    with pytest.raises(CheckError, match=message):
        signer.sign_csr(root_signer, csr_factory(), profile)


def test_crl_is_signed_by_the_root_with_the_reasons(root_signer, pki_dir):
    crl = signer.sign_crl(root_signer, [(7, 6), (8, 9)])
    assert crl.is_signature_valid(root_of(pki_dir).public_key())
    assert [profiles.crl_reason(entry) for entry in crl] == [
        x509.ReasonFlags.certificate_hold,
        x509.ReasonFlags.privilege_withdrawn,
    ]
    assert not crl.is_signature_valid(profiles.new_key().public_key())
