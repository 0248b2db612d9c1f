"""`keys est show | authorize` through the real CLI against the real sandbox: fioctl's requests
and words, the checks, the files kept (0400, never overwritten), the undo of a refused PATCH."""

from __future__ import annotations

import json
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from test_keys_ca_helpers import Created, created, created_template  # noqa: F401  (fixtures)

from fioca import facts
from fioca.pki import profiles
from fioca.sandbox.backend import _new_key_and_csr
from tests.conftest import record_certs_calls

EST_POST = {"first-time-init": False, "ca-csr": False, "est-tls-csr": True, "tls-csr": False}


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def certs(cli, created: Created) -> dict:
    result = cli("keys", "ca", "show", "--format", "json", env=created.env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def est_host(created: Created) -> str:
    return f"{created.sandbox.store.factory().gateway_id}.{facts.EST_DOMAIN}"


def test_show_before_authorize_says_so_as_fioctl(cli, created):
    result = cli("keys", "est", "show", env=created.env)
    assert (result.exit_code, result.stdout, result.stderr) == (
        0, "EST TLS certificate has not been configured for this Factory.\n", ""
    )


def test_show_on_a_factory_without_pki_is_the_not_configured_error(cli, sandbox_env):
    result = cli("keys", "est", "show", env=sandbox_env)
    assert result.exit_code == 1
    assert result.stderr.startswith("ERROR: Factory PKI is not configured. Please, see `fioca keys ca create`.")


@pytest.mark.parametrize("via", ["script", "inprocess"])
def test_authorize_posts_signs_keeps_and_patches(cli, created, monkeypatch, via):
    calls = record_certs_calls(created.sandbox, monkeypatch)
    result = cli("keys", "est", "authorize", created.pki, "--yes", "--via", via, env=created.env)
    assert result.exit_code == 0, result.output
    # fioctl's requests: the POST asks for an EST CSR only; the PATCH sends est-tls-crt only.
    assert [method for method, _ in calls] == ["POST", "PATCH"]
    assert calls[0][1] == EST_POST
    pem = created.read(facts.EST_TLS_CERT).decode()
    assert calls[1][1] == {"est-tls-crt": pem}
    # fioctl's words, then the certificate printed as its Println prints it.
    assert "Uploading new EST certificate:" in result.stderr.splitlines()
    assert result.stdout == pem + "\n"
    for name in (facts.EST_TLS_CERT, facts.EST_TLS_CSR):
        assert mode(created.pki / name) == 0o400
    cert, csr = created.cert(facts.EST_TLS_CERT), profiles.load_csr(created.read(facts.EST_TLS_CSR), facts.EST_TLS_CSR)
    # A TLS server certificate for the EST host, signed by the root, for the key the backend holds.
    profiles.check_gateway_tls(cert, root=created.root(), csr=csr, artifact=facts.EST_TLS_CERT)
    assert profiles.gateway_hosts(cert) == [est_host(created)]
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    identity = created.sandbox.backend.est_identity()
    assert identity is not None and identity.cert_pem.strip() == pem.strip()
    key = serialization.load_pem_private_key(identity.key_pem.encode(), None)
    assert key.public_key() == cert.public_key()
    assert certs(cli, created)["est-tls-crt"].strip() == pem.strip()


def test_show_prints_the_certificate_as_fioctl(cli, created):
    assert cli("keys", "est", "authorize", created.pki, "--yes", "--via", "inprocess", env=created.env).exit_code == 0
    plain = cli("keys", "est", "show", env=created.env)
    assert plain.exit_code == 0 and plain.stdout == created.read(facts.EST_TLS_CERT).decode() + "\n"
    pretty = cli("keys", "est", "show", "--pretty", env=created.env)
    assert pretty.exit_code == 0
    assert pretty.stdout.startswith("Certificate:\n")
    assert f"DNS:{est_host(created)}" in pretty.stdout or est_host(created) in pretty.stdout


def test_authorize_again_keeps_the_old_files_aside(cli, created):
    first = cli("keys", "est", "authorize", created.pki, "--yes", "--via", "inprocess", env=created.env)
    assert first.exit_code == 0, first.output
    old_cert, old_csr = created.read(facts.EST_TLS_CERT), created.read(facts.EST_TLS_CSR)
    second = cli("keys", "est", "authorize", created.pki, "--yes", "--via", "inprocess", env=created.env)
    assert second.exit_code == 0, second.output
    assert created.read("est-tls-crt.bak") == old_cert and created.read("est-tls-csr.bak") == old_csr
    assert created.read(facts.EST_TLS_CERT) != old_cert
    assert "Moving existing EST TLS cert file from est-tls-crt to est-tls-crt.bak" in second.stderr
    assert f"old: serial {created.cert('est-tls-crt.bak').serial_number}" in second.stderr
    assert certs(cli, created)["est-tls-crt"].strip() == created.read(facts.EST_TLS_CERT).decode().strip()
    second_cert = created.read(facts.EST_TLS_CERT)
    third = cli("keys", "est", "authorize", created.pki, "--yes", "--via", "inprocess", env=created.env)
    assert third.exit_code == 0 and created.read("est-tls-crt.bak.1") == second_cert
    assert created.read("est-tls-crt.bak") == old_cert  # a backup is never clobbered


def test_dry_run_checks_the_root_and_sends_nothing(cli, created, monkeypatch):
    calls = record_certs_calls(created.sandbox, monkeypatch)
    result = cli("keys", "est", "authorize", created.pki, "--dry-run", env=created.env)
    assert result.exit_code == 0, result.output
    assert calls == []
    assert "files to write (0400): est-tls-csr, est-tls-crt" in result.stdout
    assert result.stdout.rstrip().endswith("PATCH est-tls-crt; nothing was sent.")
    assert not (created.pki / facts.EST_TLS_CERT).exists()
    as_json = json.loads(cli("keys", "est", "authorize", created.pki, "--dry-run", "--format", "json",
                             env=created.env).stdout)  # fmt: skip
    assert as_json["dry_run"] is True and as_json["post_body"] == EST_POST and as_json["new"] is None


def test_a_refused_patch_puts_the_pki_dir_back(cli, created):
    assert cli("keys", "est", "authorize", created.pki, "--yes", "--via", "inprocess", env=created.env).exit_code == 0
    before = {path.name: path.read_bytes() for path in created.pki.iterdir() if path.is_file()}
    created.sandbox.inject_fault(method="PATCH", route="certs", status=400, message="no EST for you")
    result = cli("keys", "est", "authorize", created.pki, "--yes", "--via", "inprocess", env=created.env)
    assert result.exit_code == 6
    assert "The server refused the change: the PKI dir was put back as it was." in result.stderr
    after = {path.name: path.read_bytes() for path in created.pki.iterdir() if path.is_file()}
    assert after == before


def test_another_root_is_refused_before_anything_is_sent(cli, created, monkeypatch, tmp_path):
    other = tmp_path / "other-pki"
    other.mkdir(mode=0o700)
    key = profiles.new_key()
    (other / facts.ROOT_KEY).write_bytes(profiles.private_key_pem(key))
    (other / facts.ROOT_CERT).write_bytes(profiles.cert_pem(profiles.build_root(key, factory="acme")))
    calls = record_certs_calls(created.sandbox, monkeypatch)
    result = cli("keys", "est", "authorize", other, "--yes", env=created.env)
    assert result.exit_code == 3
    assert "is not factory 'acme's root of trust" in result.stderr
    assert calls == [] and not (other / facts.EST_TLS_CERT).exists()


def test_an_est_csr_naming_two_hosts_is_refused_and_nothing_is_written(cli, created, monkeypatch):
    backend = created.sandbox.backend
    real_post = backend.post_certs

    def post(body):
        answer = real_post(body)
        _key, csr_pem, _spki = _new_key_and_csr("acme", "est", ["a.est.foundries.io", "b.est.foundries.io"], ca=False)
        return {**answer, "est-tls-csr": csr_pem}

    monkeypatch.setattr(backend, "post_certs", post)
    calls = record_certs_calls(created.sandbox, monkeypatch)
    result = cli("keys", "est", "authorize", created.pki, "--yes", env=created.env)
    assert result.exit_code == 4
    assert "est-tls-csr: must name exactly one DNS host" in result.stderr and "got 2" in result.stderr
    assert [method for method, _ in calls] == ["POST"]
    assert not (created.pki / facts.EST_TLS_CERT).exists() and not (created.pki / facts.EST_TLS_CSR).exists()


def test_an_est_csr_asking_for_a_ca_is_refused(cli, created, monkeypatch):
    backend = created.sandbox.backend
    real_post = backend.post_certs

    def post(body):
        answer = real_post(body)
        _key, csr_pem, _spki = _new_key_and_csr("acme", "est", ["x.est.foundries.io"], ca=True)
        return {**answer, "est-tls-csr": csr_pem}

    monkeypatch.setattr(backend, "post_certs", post)
    result = cli("keys", "est", "authorize", created.pki, "--yes", env=created.env)
    assert result.exit_code == 4
    assert "asks for CA:TRUE" in result.stderr
    assert not (created.pki / facts.EST_TLS_CERT).exists()


def test_the_server_refuses_an_est_certificate_of_another_key(cli, created):
    """The backend rule the check mirrors: est-tls-crt must certify the key it generated."""
    root, root_key = created.root(), created.root_key()
    stranger = profiles.new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x.est.foundries.io")])
    csr = (
        x509.CertificateSigningRequestBuilder().subject_name(name)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("x.est.foundries.io")]), critical=False)
        .sign(stranger, hashes.SHA256())
    )
    forged = profiles.sign_gateway_tls(csr, root_cert=root, root_key=root_key)
    from fioca.sandbox.backend import SandboxApiError

    with pytest.raises(SandboxApiError, match="must certify a key the backend generated"):
        created.sandbox.backend.patch_certs({"est-tls-crt": profiles.cert_pem(forged).decode()})
    assert created.sandbox.backend.est_identity() is None


def test_authorize_without_yes_and_without_a_terminal_refuses_first(cli, created, monkeypatch):
    calls = record_certs_calls(created.sandbox, monkeypatch)
    result = cli("keys", "est", "authorize", created.pki, env=created.env)
    assert result.exit_code == 3
    assert "authorizing the EST server needs confirmation: run it in a terminal, or pass --yes" in result.stderr
    assert calls == []


def test_authorize_json_result(cli, created):
    result = cli("keys", "est", "authorize", created.pki, "--yes", "--format", "json", "--via", "inprocess",
                 env=created.env)  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["factory"] == "acme" and summary["dry_run"] is False
    assert summary["new"]["hosts"] == [est_host(created)]
    assert summary["new"]["pem"] == created.read(facts.EST_TLS_CERT).decode()
    assert set(summary["files"]) == {facts.EST_TLS_CERT, facts.EST_TLS_CSR}


def test_fioctl_command_line_with_factory_after_the_command(cli, created):
    config = created.env
    result = cli("keys", "est", "show", "-f", "acme", env=config)
    assert result.exit_code == 0, result.output
    wrong = cli("keys", "est", "show", "-f", "other", env=config)
    assert wrong.exit_code == 6 and "404" in wrong.stderr
