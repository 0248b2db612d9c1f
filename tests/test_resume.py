"""Nothing lost: a fault at every step boundary of `keys ca create`, then `--resume`.

In every case the root key is either absent (nothing was created) or present and usable, and
`--resume` (or a plain re-run where nothing was created) ends with the server holding the
root that is on disk. Faults come from the sandbox's switches, from scripts that fail once,
and from a real SIGKILL of the fioca process.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fioca import facts
from fioca.facts import JOURNAL_FILE, WORK_DIR
from fioca.pki import profiles, reference
from fioca.pki.files import PkiDir
from fioca.pki.plan import PROGRESS
from tests.conftest import FACTORY, server_certs


def root_key_state(pki: Path) -> str:
    """'absent'; 'usable' when the PKI dir holds a root key and the root certificate it belongs
    to; 'unfinished' when a run died between keeping the key and keeping the certificate (the
    journal does not count that step as done: --resume makes the root again)."""
    key_path, cert_path = pki / facts.ROOT_KEY, pki / facts.ROOT_CERT
    if not key_path.exists():
        return "absent"
    if not cert_path.exists():
        return "unfinished"
    key = profiles.load_private_key(key_path.read_bytes(), "key")
    profiles.check_key_matches(key, profiles.load_cert(cert_path.read_bytes(), "cert"), "key")
    return "usable"


def fail_once(monkeypatch, script: str, text: str) -> None:
    """The first run of `script` is `text` instead (a transient failure, or a bad result);
    later runs are the real script. A marker file cannot do it: every script gets a fresh
    work dir, removed after it."""
    from fioca.pki.scripts import ScriptRunner

    real, done = ScriptRunner.run, []

    def run(self, name, args=()):
        if name == script and not done:
            done.append(name)
            self.put(name, text.encode(), mode=0o700, replace=True)
        return real(self, name, args)

    monkeypatch.setattr(ScriptRunner, "run", run)


def assert_server_holds_disk_root(sandbox, pki: Path) -> None:
    status, certs = server_certs(sandbox)
    assert status == 200
    assert certs["root-crt"] == (pki / facts.ROOT_CERT).read_text()
    assert root_key_state(pki) == "usable"
    assert not (pki / JOURNAL_FILE).exists() and not (pki / WORK_DIR).exists()


def create(cli, env, pki, *extra):
    return cli("keys", "ca", "create", pki, "--yes", *extra, env=env)


# -- faults before anything is created: a plain re-run is the fix --------------------------

def test_post_refused_leaves_nothing_and_a_plain_rerun_works(cli, sandbox, sandbox_env, tmp_path):
    pki = tmp_path / "pki"
    sandbox.inject_fault(method="POST", route="certs", status=500, message="database is down")
    failed = create(cli, sandbox_env, pki)
    assert failed.exit_code == 6
    assert "500" in failed.stderr and "= database is down" in failed.stderr
    assert root_key_state(pki) == "absent" and not (pki / JOURNAL_FILE).exists()
    assert create(cli, sandbox_env, pki).exit_code == 0
    assert_server_holds_disk_root(sandbox, pki)


def test_post_timing_out_leaves_nothing(cli, sandbox, sandbox_env, tmp_path):
    pki = tmp_path / "pki"
    sandbox.inject_fault(method="POST", route="certs", status=504, stall=3)
    failed = create(cli, {**sandbox_env, "FIOCA_HTTP_TIMEOUT": "1"}, pki)
    assert failed.exit_code == 6
    assert "timed out during POST" in failed.stderr
    assert root_key_state(pki) == "absent"
    assert create(cli, sandbox_env, pki).exit_code == 0
    assert_server_holds_disk_root(sandbox, pki)


# -- a script failing or killed, once: --resume redoes only what is missing ----------------

FAIL_ONCE = {
    "exit": '#!/bin/sh\necho "transient failure" >&2\nexit 1\n',
    "killed": "#!/bin/sh\nkill -9 $$\n",
}


@pytest.mark.parametrize("how", sorted(FAIL_ONCE))
@pytest.mark.parametrize("script", facts.SCRIPT_NAMES)
def test_script_failing_once_then_resume(cli, sandbox, sandbox_env, recorder, tmp_path, monkeypatch, script, how):
    fail_once(monkeypatch, script, FAIL_ONCE[how])
    pki = tmp_path / "pki"

    failed = create(cli, sandbox_env, pki)
    assert failed.exit_code == 5
    assert f"script {script}" in failed.stderr
    assert root_key_state(pki) in ("absent", "usable")
    assert [m for m, _ in recorder] == ["POST"]

    again = create(cli, sandbox_env, pki)
    assert again.exit_code == 3
    assert f"finish it with: fioca keys ca create {pki} --resume" in again.stderr

    done_before = [s for s in facts.SCRIPT_NAMES[: facts.SCRIPT_NAMES.index(script)]]
    resumed = create(cli, sandbox_env, pki, "--resume")
    assert resumed.exit_code == 0, resumed.output
    for earlier in done_before:
        assert f"{PROGRESS[earlier]} (done before, verified)" in resumed.stderr
    assert [m for m, _ in recorder] == ["POST", "PATCH"]  # no second POST: no second root
    assert_server_holds_disk_root(sandbox, pki)


def test_a_failed_check_is_redone_on_resume(cli, sandbox, sandbox_env, tmp_path, monkeypatch):
    polis = sandbox.backend.user_self()["polis-id"]
    text = reference.api_scripts("api-2026", factory=FACTORY, local_ca_cn=f"fio-{polis}")["sign_tls_csr"]
    # The first time, the gateway certificate is made a CA: its check must fail.
    fail_once(monkeypatch, "sign_tls_csr", text.replace(
        "extendedKeyUsage=critical, serverAuth", "extendedKeyUsage=critical, serverAuth\nbasicConstraints=CA:TRUE"))
    pki = tmp_path / "pki"
    failed = create(cli, sandbox_env, pki)
    assert failed.exit_code == 4
    assert failed.stderr.splitlines()[-1].startswith("ERROR: tls-crt:")
    assert root_key_state(pki) == "usable"
    resumed = create(cli, sandbox_env, pki, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert_server_holds_disk_root(sandbox, pki)


# -- SIGKILL while the files move into the PKI dir ------------------------------------------

KILLER = """
import os, signal, sys
import fioca.pki.files as files
real, count = files.PkiDir.write_new, [0]
def write_new(*args, **kwargs):
    count[0] += 1
    if count[0] > {after}:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)
files.PkiDir.write_new = write_new
from fioca.cli import main
sys.exit(main(sys.argv[1:]))
"""


# Files kept, in order: factory_certs.json (1), the CSRs and scripts (2-7), the root key (8) and
# certificate (9), tls-crt (10), online-crt (11), the local CA's key (12) and certificate (13).
@pytest.mark.parametrize("after", [1, 3, 8, 9, 12], ids=lambda n: f"after-{n}-files")
def test_sigkill_between_moving_files_then_resume(cli, sandbox, sandbox_env, home, tmp_path, after):
    pki = tmp_path / "pki"
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", **sandbox_env}
    killed = subprocess.run([sys.executable, "-c", KILLER.format(after=after), "keys", "ca", "create", str(pki), "--yes"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9
    assert root_key_state(pki) == ("absent" if after < 8 else "unfinished" if after == 8 else "usable")
    assert server_certs(sandbox)[0] == 206
    # Before the journal began (only the answer kept) a plain re-run is the fix; after, --resume.
    resumed = create(cli, sandbox_env, pki, *(["--resume"] if (pki / JOURNAL_FILE).exists() else []))
    assert resumed.exit_code == 0, resumed.output
    assert_server_holds_disk_root(sandbox, pki)


# -- the upload ------------------------------------------------------------------------------

def test_patch_500_keeps_everything_and_resume_uploads(cli, sandbox, sandbox_env, recorder, tmp_path):
    pki = tmp_path / "pki"
    sandbox.inject_fault(method="PATCH", route="certs", status=500)
    failed = create(cli, sandbox_env, pki)
    assert failed.exit_code == 6
    assert f"retry the upload with: fioca keys ca create {pki} --resume" in failed.stderr
    assert root_key_state(pki) == "usable" and server_certs(sandbox)[0] == 206
    resumed = create(cli, sandbox_env, pki, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert [m for m, _ in recorder] == ["POST", "PATCH"]  # the faulted PATCH never reached the backend
    assert_server_holds_disk_root(sandbox, pki)


def test_patch_answer_lost_after_it_applied(cli, sandbox, sandbox_env, recorder, tmp_path):
    pki = tmp_path / "pki"
    sandbox.inject_fault(method="PATCH", route="certs", status=504, stall=3, apply=True)
    result = create(cli, {**sandbox_env, "FIOCA_HTTP_TIMEOUT": "1"}, pki)
    assert result.exit_code == 0, result.output
    assert "already holds this root of trust: the earlier upload went through" in result.stderr
    assert [m for m, _ in recorder] == ["POST", "PATCH"]  # looked with a GET, did not PATCH again
    assert_server_holds_disk_root(sandbox, pki)


def test_patch_timing_out_before_it_applied_is_retried_once(cli, sandbox, sandbox_env, recorder, tmp_path):
    pki = tmp_path / "pki"
    sandbox.inject_fault(method="PATCH", route="certs", status=504, stall=3)
    result = create(cli, {**sandbox_env, "FIOCA_HTTP_TIMEOUT": "1"}, pki)
    assert result.exit_code == 0, result.output
    assert "did not apply; trying it once more" in result.stderr
    assert_server_holds_disk_root(sandbox, pki)


def test_resume_finds_the_upload_went_through(cli, sandbox, sandbox_env, tmp_path, monkeypatch):
    from fioca.errors import ApiError
    from fioca.pki.create import Upload

    pki = tmp_path / "pki"
    sandbox.inject_fault(method="PATCH", route="certs", status=504, stall=3, apply=True)

    real_look, look_fails = Upload.server_has_our_root, [True]

    def the_look_fails_too(self, result):
        if look_fails[0]:
            raise ApiError("cannot reach the server during GET (simulated)")
        return real_look(self, result)

    monkeypatch.setattr(Upload, "server_has_our_root", the_look_fails_too)
    failed = create(cli, {**sandbox_env, "FIOCA_HTTP_TIMEOUT": "1"}, pki)
    assert failed.exit_code == 6
    look_fails[0] = False
    resumed = create(cli, sandbox_env, pki, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "the earlier upload went through" in resumed.stderr
    assert_server_holds_disk_root(sandbox, pki)


def test_resume_stops_when_the_factory_has_another_root(cli, sandbox, sandbox_env, tmp_path):
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    sandbox.inject_fault(method="PATCH", route="certs", status=500)
    assert create(cli, sandbox_env, mine).exit_code == 6
    assert create(cli, sandbox_env, theirs).exit_code == 0
    resumed = create(cli, sandbox_env, mine, "--resume")
    assert resumed.exit_code == 3
    assert "already has a different root of trust" in resumed.stderr
    assert root_key_state(mine) == "usable"
    assert server_certs(sandbox)[1]["root-crt"] == (theirs / facts.ROOT_CERT).read_text()


def test_resume_refuses_tampered_files(cli, sandbox, sandbox_env, tmp_path):
    pki = tmp_path / "pki"
    sandbox.inject_fault(method="PATCH", route="certs", status=500)
    assert create(cli, sandbox_env, pki).exit_code == 6
    tls = pki / facts.TLS_CERT
    tls.chmod(0o600)
    tls.write_text(tls.read_text().replace("A", "B", 1))
    resumed = create(cli, sandbox_env, pki, "--resume")
    assert resumed.exit_code == 3
    assert "tls-crt changed since sign_tls_csr made it" in resumed.stderr
    assert server_certs(sandbox)[0] == 206


def test_resume_with_nothing_to_resume(cli, sandbox_env, tmp_path):
    result = create(cli, sandbox_env, tmp_path / "pki", "--resume")
    assert result.exit_code == 3
    assert "nothing to resume" in result.stderr


# -- concurrency -----------------------------------------------------------------------------

def test_a_second_run_on_the_same_dir_is_refused_by_the_lock(cli, sandbox_env, tmp_path):
    pki, _notes = PkiDir.prepare(tmp_path / "pki")
    with pki, pki.locked():
        result = create(cli, sandbox_env, pki.path)
    assert result.exit_code == 3
    assert "in use by another fioca run" in result.stderr


def test_racing_creates_on_two_dirs_one_root_wins(fioca_subprocess, sandbox, sandbox_env, tmp_path):
    results = {}

    def run(name):
        results[name] = fioca_subprocess("keys", "ca", "create", tmp_path / name, "--yes", env=sandbox_env)

    threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    codes = sorted(r.returncode for r in results.values())
    assert codes[0] == 0 and codes[1] != 0, {k: (r.returncode, r.stderr[-300:]) for k, r in results.items()}
    winner = next(name for name, r in results.items() if r.returncode == 0)
    loser = results["b" if winner == "a" else "a"]
    assert ("already has a root of trust" in loser.stderr) or ("different root of trust" in loser.stderr)
    assert server_certs(sandbox)[1]["root-crt"] == (tmp_path / winner / facts.ROOT_CERT).read_text()


def test_resume_with_fresh_csrs_when_the_server_forgot_the_first_ones(cli, sandbox, sandbox_env, tmp_path):
    from fioca.sandbox.store import KEY_PENDING, KEY_RETIRED

    pki = tmp_path / "pki"
    sandbox.inject_fault(method="PATCH", route="certs", status=500)
    assert create(cli, sandbox_env, pki).exit_code == 6
    root_before = (pki / facts.ROOT_CERT).read_bytes()
    tls_before = (pki / facts.TLS_CERT).read_bytes()
    for kind in ("tls", "ca"):  # the server drops the keys behind the first run's CSRs
        for key in sandbox.store.backend_keys(kind, KEY_PENDING):
            sandbox.store.set_backend_key_state(key.id, KEY_RETIRED)

    refused = create(cli, sandbox_env, pki, "--resume")
    assert refused.exit_code == 6
    assert f"fioca keys ca create {pki} --resume --fresh-csrs" in refused.stderr
    assert cli("keys", "ca", "create", pki, "--fresh-csrs", "--yes", env=sandbox_env).exit_code == 2

    resumed = create(cli, sandbox_env, pki, "--resume", "--fresh-csrs")
    assert resumed.exit_code == 0, resumed.output
    assert (pki / facts.ROOT_CERT).read_bytes() == root_before  # the same root, never a second one
    assert (pki / facts.TLS_CERT).read_bytes() != tls_before
    assert (pki / f"{facts.TLS_CERT}.stale").read_bytes() == tls_before
    assert (pki / f"{facts.FACTORY_CERTS_JSON}.1").exists()
    assert_server_holds_disk_root(sandbox, pki)
    status, certs = server_certs(sandbox)
    assert certs["tls-crt"] == (pki / facts.TLS_CERT).read_text()
