"""fioca as a person uses it, in a real terminal (tmux): Ctrl-C during a script and at the upload
question, the hidden PIN prompt, and the progress bar of a large batch. Each test asserts what
the screen shows (issue 13.8)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fioca import facts
from fioca.pki import reference
from tests.conftest import FACTORY, answer_with, server_certs
from tests.test_cli_terminal import Tmux, fioca_line, terminal_env  # noqa: F401  (fixture)
from tests.test_hostile_server import _processes_with
from tests.test_hsm import MODULE, new_token

MARKER = "fioca-terminal-marker"
# A sleep no other test (or other run on this machine) starts: it is looked for after Ctrl-C.
SLEEP = f"sleep {60 + os.getpid() % 997 / 1000:.3f}"


def _scripts_with_a_slow_create_ca(sandbox) -> dict[str, str]:
    cn = f"fio-{sandbox.backend.user_self()['polis-id']}"
    scripts = reference.api_scripts("api-2026", factory=FACTORY, local_ca_cn=cn)
    # A step that takes long enough to press Ctrl-C in (sleep is one of the jail's tools).
    slow = scripts["create_ca"].replace("rm ca.cnf", f"echo {MARKER} >&2\n{SLEEP}\nrm ca.cnf")
    return {**scripts, "create_ca": slow}


def test_ctrl_c_during_a_script_is_one_line_that_says_what_to_run(sandbox, terminal_env, tmp_path, monkeypatch):
    answer_with(monkeypatch, sandbox, _scripts_with_a_slow_create_ca(sandbox))
    pki = tmp_path / "pki"
    tmux = Tmux("ctrlc-script", fioca_line("keys", "ca", "create", pki, "--yes", "--allow-unaudited", env=terminal_env))
    try:
        tmux.wait_for(MARKER)
        tmux.type("C-c")
        screen = tmux.wait_for("EXIT=")
    finally:
        tmux.close()
    assert "EXIT=130" in screen
    assert "Traceback" not in screen
    [line] = [line for line in screen.splitlines() if line.startswith("Interrupted")]
    assert "no key was made" in line and f"fioca keys ca create {pki} --resume" in line
    assert not (pki / facts.WORK_DIR).exists()  # the work dir (the root key's copy) is gone
    assert (pki / facts.JOURNAL_FILE).exists()
    assert _processes_with(SLEEP) == []  # nothing the script started outlived it
    assert server_certs(sandbox)[0] == 206


def test_ctrl_c_at_the_upload_question_keeps_the_pki_and_says_how_to_finish(sandbox, terminal_env, tmp_path):
    pki = tmp_path / "pki"
    tmux = Tmux("ctrlc-question", fioca_line("keys", "ca", "create", pki, env=terminal_env))
    try:
        tmux.wait_for("Upload? [y/N]:")
        tmux.type("C-c")
        screen = tmux.wait_for("EXIT=")
    finally:
        tmux.close()
    assert "EXIT=130" in screen and "Traceback" not in screen and "Aborted" not in screen
    [line] = [line for line in screen.splitlines() if line.startswith("Interrupted")]
    assert f"the root key is kept in {pki / facts.ROOT_KEY}" in line and "--resume" in line
    assert server_certs(sandbox)[0] == 206
    assert (pki / facts.ROOT_KEY).stat().st_mode & 0o777 == 0o400


@pytest.fixture
def token(tmp_path):
    return new_token(tmp_path / "token", "terminal")


def test_the_hsm_pin_is_asked_on_the_terminal_and_never_shown(sandbox, terminal_env, tmp_path, token):
    secret = "wrong-pin-typed-here"
    line = fioca_line("keys", "ca", "create", tmp_path / "pki", "--yes", "--hsm-module", MODULE,
                      "--hsm-token-label", token.label, env={**terminal_env, **token.env})  # fmt: skip
    tmux = Tmux("pin", line)
    try:
        tmux.wait_for("PIN")
        tmux.type(secret, "Enter")
        screen = tmux.wait_for("EXIT=")
    finally:
        tmux.close()
    assert secret not in screen  # not echoed, not in any message
    assert "EXIT=0" not in screen and "Traceback" not in screen
    assert "PIN" in screen and "ERROR:" in screen
    assert server_certs(sandbox)[0] == 206 and not (tmp_path / "pki").exists()


def test_a_large_batch_shows_a_progress_bar(cli, sandbox_env, terminal_env, tmp_path):
    pki = tmp_path / "pki"
    assert cli("keys", "ca", "create", pki, "--yes", env=sandbox_env).exit_code == 0
    count = 2000
    # The list of folders goes to a file, as people do for a large batch: the screen keeps the bar.
    listing = tmp_path / "devices.txt"
    line = fioca_line("device", "create-offline", pki, "--count", count, "--out", tmp_path / "devices", env=terminal_env)
    tmux = Tmux("batch", line.replace("; echo EXIT=", f" > {listing}; echo EXIT=", 1))
    try:
        screen = tmux.wait_for("EXIT=", seconds=180)
    finally:
        tmux.close()
    assert "EXIT=0" in screen
    assert "100%" in screen or f"{count}/{count}" in screen  # the bar, at its end
    assert f"created {count} device folder(s)" in screen
    assert len(list(Path(tmp_path / "devices").iterdir())) == count
