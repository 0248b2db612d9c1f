"""`fioca keys ca create` end to end against the real sandbox, with real openssl and sh."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from fioca import facts
from fioca.pki import profiles, reference
from tests.conftest import FACTORY, answer_with, server_certs

KEY_FILES = (facts.ROOT_KEY, facts.LOCAL_CA_KEY)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(
    "online, local",
    [(True, True), (True, False), (False, True), (False, False)],
    ids=["online+local", "online-only", "local-only", "neither"],
)
def test_create_runs_the_documented_flow(cli, sandbox, sandbox_env, recorder, tmp_path, online, local):
    pki = tmp_path / "pki"
    flags = ["--online-ca" if online else "--no-online-ca", "--local-ca" if local else "--no-local-ca"]
    result = cli("keys", "ca", "create", pki, *flags, "--yes", env=sandbox_env)
    assert result.exit_code == 0, result.output

    # Progress lines as fioctl prints them today, in the documented order.
    expected = ["Creating offline root CA for Factory", "Signing Foundries.io TLS CSR"]
    expected += ["Signing Foundries.io CSR for online use"] if online else []
    expected += ["Creating local device CA"] if local else []
    expected += ["Uploading signed certs to Foundries.io"]
    progress = [line for line in result.stderr.splitlines() if line in expected]
    assert progress == expected
    for absent in {"Signing Foundries.io CSR for online use", "Creating local device CA"} - set(expected):
        assert absent not in result.stderr

    # The requests: one POST with today's body, one PATCH with exactly these fields.
    assert [method for method, _ in recorder] == ["POST", "PATCH"]
    assert recorder[0][1] == {"first-time-init": True, "ca-csr": online, "est-tls-csr": False, "tls-csr": True}
    patch = recorder[1][1]
    read = lambda name: (pki / name).read_text()
    want = {"root-crt": read(facts.ROOT_CERT), "tls-crt": read(facts.TLS_CERT), "change-meta": {}}
    bundle = [read(name) for name, on in ((facts.ONLINE_CA_CERT, online), (facts.LOCAL_CA_CERT, local)) if on]
    if bundle:
        want["ca-crt"] = "\n".join(bundle)
    assert patch == want

    # Files: 0400 (the scripts 0700, as script-era fioctl stored them) in a 0700 folder; the
    # answer saved as jq . would; no stray work files.
    assert mode(pki) == 0o700
    kept = {p.name for p in pki.iterdir()}
    expected_files = {facts.FACTORY_CERTS_JSON, facts.ROOT_KEY, facts.ROOT_CERT, facts.TLS_CERT, facts.TLS_CSR}
    expected_files |= set(facts.SCRIPT_NAMES)
    if online:
        expected_files |= {facts.ONLINE_CA_CERT, facts.ONLINE_CA_CSR}
    if local:
        expected_files |= {facts.LOCAL_CA_KEY, facts.LOCAL_CA_CERT}
    assert kept == expected_files
    for name in kept:
        assert mode(pki / name) == (0o700 if name in facts.SCRIPT_NAMES else 0o400), name
    answer = json.loads((pki / facts.FACTORY_CERTS_JSON).read_text())
    assert (pki / facts.FACTORY_CERTS_JSON).read_text() == json.dumps(answer, indent=2, ensure_ascii=False) + "\n"

    # The server holds what was uploaded, and every artifact meets its profile.
    status, certs = server_certs(sandbox)
    assert status == 200
    assert certs["root-crt"] == want["root-crt"]
    root = profiles.load_cert(read(facts.ROOT_CERT), "root")
    profiles.check_root(root, factory=FACTORY)
    profiles.check_key_matches(profiles.load_private_key(read(facts.ROOT_KEY), "key"), root, "key")
    tls = profiles.load_cert(read(facts.TLS_CERT), "tls")
    profiles.check_gateway_tls(tls, root=root, csr=profiles.load_csr(read(facts.TLS_CSR), "csr"))
    if local:
        local_ca = profiles.load_cert(read(facts.LOCAL_CA_CERT), "local")
        polis = sandbox.backend.user_self()["polis-id"]
        profiles.check_device_ca(local_ca, root=root, factory=FACTORY, expected_cn=f"fio-{polis}")

    # The summary names the root's fingerprint and the gateway hosts.
    assert profiles.fingerprint_sha256(root) in result.stdout
    assert profiles.gateway_hosts(tls)[0] in result.stdout


def test_summary_as_json(cli, sandbox_env, tmp_path):
    result = cli("keys", "ca", "create", tmp_path / "pki", "--yes", "--format", "json", env=sandbox_env)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["factory"] == FACTORY
    assert summary["patched_fields"] == ["root-crt", "tls-crt", "ca-crt"]
    assert summary["files"]["factory_ca.key"] == str(tmp_path / "pki" / "factory_ca.key")
    assert len(summary["gateway_hosts"]) == 2


def test_second_create_is_refused_with_nothing_changed(cli, sandbox, sandbox_env, recorder, tmp_path):
    assert cli("keys", "ca", "create", tmp_path / "first", "--yes", env=sandbox_env).exit_code == 0
    before = server_certs(sandbox)
    result = cli("keys", "ca", "create", tmp_path / "second", "--yes", env=sandbox_env)
    assert result.exit_code == 3
    assert f"factory '{FACTORY}' already has a root of trust" in result.stderr
    assert "nothing was written" in result.stderr
    assert not (tmp_path / "second").exists()
    assert server_certs(sandbox) == before
    assert [m for m, _ in recorder] == ["POST", "PATCH"]  # only the first run's


def test_pki_dir_with_a_root_is_refused_before_any_post(cli, sandbox_env, recorder, tmp_path):
    pki = tmp_path / "pki"
    pki.mkdir()
    (pki / facts.ROOT_KEY).write_text("mine, do not touch")
    result = cli("keys", "ca", "create", pki, "--yes", env=sandbox_env)
    assert result.exit_code == 3
    assert "already holds a root of trust (factory_ca.key)" in result.stderr
    assert (pki / facts.ROOT_KEY).read_text() == "mine, do not touch"
    assert recorder == []


def test_without_a_terminal_and_without_yes_it_refuses_before_posting(cli, sandbox_env, recorder, tmp_path):
    result = cli("keys", "ca", "create", tmp_path / "pki", env=sandbox_env)
    assert result.exit_code == 3
    assert "needs confirmation: run it in a terminal, or pass --yes" in result.stderr
    assert recorder == []
    assert not (tmp_path / "pki").exists()


def test_declined_confirmation_uploads_nothing(cli, sandbox, sandbox_env, recorder, tmp_path, monkeypatch):
    from tests.terminal import answering_tty

    with answering_tty(monkeypatch, "n\n") as tty:
        result = cli("keys", "ca", "create", tmp_path / "pki", env=sandbox_env)
        screen = tty.screen()
    assert result.exit_code == 3
    assert "Upload? [y/N]" in screen  # asked on the terminal, not on stderr
    assert "upload not confirmed; nothing was sent" in result.stderr
    assert [m for m, _ in recorder] == ["POST"]
    assert server_certs(sandbox)[0] == 206


def test_confirmed_upload(cli, sandbox, sandbox_env, tmp_path, monkeypatch):
    from tests.terminal import answering_tty

    with answering_tty(monkeypatch, "y\n"):
        result = cli("keys", "ca", "create", tmp_path / "pki", env=sandbox_env)
    assert result.exit_code == 0, result.output
    assert "Root of trust SHA-256 fingerprint:" in result.stderr
    assert server_certs(sandbox)[0] == 200


def test_failing_script_stops_before_upload(cli, sandbox, sandbox_env, recorder, tmp_path, monkeypatch):
    broken = reference.bundled()["sign_ca_csr"].replace(
        'csr=$1', 'csr=$1\necho "cannot open the CA key" >&2\nexit 7'
    )
    answer_with(monkeypatch, sandbox, {"sign_ca_csr": broken})
    result = cli("keys", "ca", "create", tmp_path / "pki", "--yes", env=sandbox_env)
    assert result.exit_code == 5
    assert "script sign_ca_csr exited with status 7: cannot open the CA key" in result.stderr
    assert "Uploading" not in result.stderr
    assert [m for m, _ in recorder] == ["POST"]
    # The root made before is kept, 0400, and journalled: `--resume` finishes the run.
    assert mode(tmp_path / "pki" / facts.ROOT_KEY) == 0o400
    assert (tmp_path / "pki" / facts.JOURNAL_FILE).exists()


def test_answer_without_scripts_uses_the_bundled_ones(cli, sandbox, sandbox_env, tmp_path, monkeypatch):
    backend = sandbox.backend
    real_post = backend.post_certs

    def modern_post(body):
        answer = real_post(body)
        for name in facts.SCRIPT_NAMES:
            answer.pop(name)
        return answer

    monkeypatch.setattr(backend, "post_certs", modern_post)
    result = cli("keys", "ca", "create", tmp_path / "pki", "--yes", env=sandbox_env)
    assert result.exit_code == 0, result.output
    assert "using fioca's bundled scripts" in result.stderr
    polis = backend.user_self()["polis-id"]
    want = reference.bundled()["create_ca"]
    assert (tmp_path / "pki" / "create_ca").read_text() == want


def test_extract_prints_a_field_as_jq_r_does(cli, sandbox_env, tmp_path):
    pki = tmp_path / "pki"
    assert cli("keys", "ca", "create", pki, "--dry-run", env=sandbox_env).exit_code == 0
    saved = pki / facts.FACTORY_CERTS_JSON
    answer = json.loads(saved.read_text())
    result = cli("keys", "ca", "extract", "create_ca", "--file", saved)
    assert result.exit_code == 0
    assert result.stdout == answer["create_ca"] + "\n"  # jq -r adds one newline to the raw string
    csr = cli("keys", "ca", "extract", "tls-csr", "--file", saved)
    assert csr.stdout.startswith("-----BEGIN CERTIFICATE REQUEST-----")
    missing = cli("keys", "ca", "extract", "no-such-field", "--file", saved)
    assert missing.stdout == "null\n"
    assert cli("keys", "ca", "extract", "create_ca", "--file", tmp_path / "nope.json").exit_code == 1
