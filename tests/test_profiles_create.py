"""`keys ca create` with the two tiers: it accepts what the server really sends (a CN-only
gateway CSR, the API's own scripts) and still refuses what differs from what a script set asks
for, and the upload check reads the stored files right before the PATCH."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fioca import facts
from fioca.pki import profiles, reference
from fioca.sandbox import backend as sandbox_backend
from tests.conftest import answer_with, server_certs

Role = profiles.Role


def _cn_only_gateway_csrs(monkeypatch) -> None:
    """The sandbox's gateway CSR with a CN only, as fioctl's own tests model the backend's."""
    real = sandbox_backend._new_key_and_csr

    def new_key_and_csr(factory, common_name, dns_names, *, ca):
        if ca or not dns_names:
            return real(factory, common_name, dns_names, ca=ca)
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name) for name in dns_names]), critical=False)
            .sign(key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        spki = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return key_pem.decode(), csr.public_bytes(serialization.Encoding.PEM).decode(), spki

    monkeypatch.setattr(sandbox_backend, "_new_key_and_csr", new_key_and_csr)


def test_create_accepts_a_cn_only_gateway_csr(cli, sandbox, sandbox_env, tmp_path, monkeypatch):
    _cn_only_gateway_csrs(monkeypatch)
    pki = tmp_path / "pki"
    result = cli("keys", "ca", "create", pki, "--yes", env=sandbox_env)
    assert result.exit_code == 0, result.output
    tls = profiles.load_cert((pki / facts.TLS_CERT).read_bytes(), facts.TLS_CERT)
    assert [attribute.oid for attribute in tls.subject] == [NameOID.COMMON_NAME]
    assert server_certs(sandbox)[1]["tls-crt"] == (pki / facts.TLS_CERT).read_text()


def test_create_refuses_an_online_ca_csr_for_another_factory(cli, sandbox, sandbox_env, tmp_path, monkeypatch):
    """The negative twin: a device CA's OU must be the factory, so its CSR's must be too."""
    key = ec.generate_private_key(ec.SECP256R1())
    foreign = profiles.build_device_ca_csr(key, cn="online-ca", factory="other-factory")
    answer_with(monkeypatch, sandbox, {"ca-csr": profiles.csr_pem(foreign).decode()})
    result = cli("keys", "ca", "create", tmp_path / "pki", "--yes", env=sandbox_env)
    assert result.exit_code == 4, result.output
    assert "ca-csr: subject OU is 'other-factory', not the factory 'acme'" in result.stderr
    assert server_certs(sandbox)[0] == 206


@pytest.mark.parametrize("revision", reference.API_REVISIONS)
def test_create_with_the_apis_own_scripts(cli, sandbox, sandbox_env, tmp_path, monkeypatch, revision):
    polis = sandbox.backend.user_self()["polis-id"]
    scripts = reference.api_scripts(revision, factory=sandbox.info.factory, local_ca_cn=f"fio-{polis}")
    answer_with(monkeypatch, sandbox, scripts)
    pki = tmp_path / "pki"
    # No --allow-unaudited: the genuine scripts pass the audit (their `--pin $HSM_PIN` is MEDIUM).
    result = cli("keys", "ca", "create", pki, "--yes", env=sandbox_env)
    assert result.exit_code == 0, result.output
    root = profiles.load_cert((pki / facts.ROOT_CERT).read_bytes(), facts.ROOT_CERT)
    issued = [(name, profiles.load_cert((pki / name).read_bytes(), name), role, None)
              for name, role in ((facts.TLS_CERT, Role.GATEWAY_TLS), (facts.ONLINE_CA_CERT, Role.DEVICE_CA),
                                 (facts.LOCAL_CA_CERT, Role.DEVICE_CA))]  # fmt: skip
    notes = profiles.pki_notes(root, issued)
    assert all(f"matches the named profile {revision}-openssl-3 " in note for note in notes), notes


@pytest.mark.parametrize(
    ("script", "old", "new", "message"),
    [
        ("create_ca", "-days 7300", "-days 7310", "factory_ca.pem: notAfter .* is later than any named profile allows"),
        ("sign_ca_csr", "keyUsage = critical, keyCertSign", "keyUsage = critical, keyCertSign, cRLSign",
         "online-crt: keyUsage is not as any named profile has it"),
    ],
    ids=["root-longer-than-any-profile", "ca-with-crl-sign"],
)  # fmt: skip
def test_create_refuses_what_no_script_set_asks_for(
    cli, sandbox, sandbox_env, tmp_path, monkeypatch, script, old, new, message
):
    """Trust is not broken (the tier-one checks pass) and the script made what it asked for,
    but no named profile makes this: refused right before the upload."""
    polis = sandbox.backend.user_self()["polis-id"]
    text = reference.bundled()[script]
    assert old in text
    answer_with(monkeypatch, sandbox, {script: text.replace(old, new)})  # both branches (HSM and file)
    result = cli("keys", "ca", "create", tmp_path / "pki", "--yes", "--allow-unaudited", env=sandbox_env)
    assert result.exit_code == 4, result.output
    assert re.search(message, result.stderr), result.stderr
    assert server_certs(sandbox)[0] == 206


def test_the_upload_check_reads_the_stored_files(cli, sandbox, sandbox_env, tmp_path, monkeypatch):
    """A root whose notBefore is far from when its step ran is refused right before the PATCH
    (here: the journal says create_ca ran a day later); the twin, the real record, goes up."""
    from tests.terminal import answering_tty

    pki = tmp_path / "pki"
    with answering_tty(monkeypatch, "n\n"):
        declined = cli("keys", "ca", "create", pki, env=sandbox_env)
    assert declined.exit_code == 3, declined.output
    journal_path = pki / facts.JOURNAL_FILE
    journal = json.loads(journal_path.read_text())
    real = journal["made"]["create_ca"]
    late = datetime.fromisoformat(real) + timedelta(days=1)
    journal_path.write_text(json.dumps({**journal, "made": {**journal["made"], "create_ca": late.isoformat()}}))
    refused = cli("keys", "ca", "create", pki, "--resume", "--yes", env=sandbox_env)
    assert refused.exit_code == 4, refused.output
    assert "factory_ca.pem: notBefore" in refused.stderr and "of when it was made" in refused.stderr
    assert server_certs(sandbox)[0] == 206
    journal_path.write_text(json.dumps(journal))
    resumed = cli("keys", "ca", "create", pki, "--resume", "--yes", env=sandbox_env)
    assert resumed.exit_code == 0, resumed.output
    assert server_certs(sandbox)[1]["root-crt"] == (pki / facts.ROOT_CERT).read_text()
