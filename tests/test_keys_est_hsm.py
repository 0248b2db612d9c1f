"""`keys est authorize` with the root key on a SoftHSM2 token, by script (openssl's pkcs11
engine) and in process (python-pkcs11): the certificate is the root's, the PIN in no output."""

from __future__ import annotations

import pytest

from fioca import facts
from fioca.pki import profiles
from tests.test_hsm import PIN, HsmPki, made, snapshot  # noqa: F401  (made: the module's HSM factory)


@pytest.mark.parametrize("via", ["script", "inprocess"])
def test_authorize_signs_on_the_token(made: HsmPki, via: str):
    result = made.run("keys", "est", "authorize", made.pki, "--via", via, "--yes", *made.token.flags())
    assert result.exit_code == 0, result.output
    cert = profiles.load_cert((made.pki / facts.EST_TLS_CERT).read_bytes(), facts.EST_TLS_CERT)
    csr = profiles.load_csr((made.pki / facts.EST_TLS_CSR).read_bytes(), facts.EST_TLS_CSR)
    profiles.check_gateway_tls(cert, root=made.root(), csr=csr, artifact=facts.EST_TLS_CERT)
    assert made.world.certs()["est-tls-crt"].strip() == (made.pki / facts.EST_TLS_CERT).read_text().strip()
    assert PIN not in result.output


def test_dry_run_opens_the_token_and_sends_nothing(made: HsmPki):
    before_files, before_server = snapshot(made.pki), made.world.certs()
    result = made.run("keys", "est", "authorize", made.pki, "--dry-run", *made.token.flags())
    assert result.exit_code == 0, result.output
    assert snapshot(made.pki) == before_files and made.world.certs() == before_server


def test_a_wrong_pin_is_one_line_and_changes_nothing(made: HsmPki):
    before_files, before_server = snapshot(made.pki), made.world.certs()
    result = made.run("keys", "est", "authorize", made.pki, "--yes", *made.token.flags(),
                      env={"FIOCA_HSM_PIN": "wrong-Pin-000"})  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "ERROR: HSM token 'factory-root' refused the PIN (wrong PIN); nothing was changed"
    ]
    assert snapshot(made.pki) == before_files and made.world.certs() == before_server


def test_without_the_hsm_flags_the_missing_key_file_is_explained(made: HsmPki):
    result = made.run("keys", "est", "authorize", made.pki, "--yes")
    assert result.exit_code == 3
    assert "factory_ca.key does not exist, but factory_ca.pem does" in result.stderr
