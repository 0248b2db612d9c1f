"""fioca in a real terminal (tmux): the upload question is asked on the terminal itself, so a
redirected stderr does not hide it, and nothing a script prints can overwrite it or the
fingerprint. Plus the HSM hint and the PIN prompt's hidden input on a pseudo-terminal."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fioca.text import quote_path, visible
from tests.conftest import answer_with, server_certs


class Tmux:
    """One tmux server of our own (its own socket), one window of 160x50."""

    def __init__(self, name: str, command: str):
        self.socket = f"fioca-test-{name}-{os.getpid()}"
        self._run("new-session", "-d", "-s", "t", "-x", "160", "-y", "50", command)

    def _run(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True, capture_output=True, text=True).stdout

    def screen(self) -> str:
        return self._run("capture-pane", "-p", "-J", "-t", "t")

    def wait_for(self, text: str, seconds: float = 90) -> str:
        return self.wait_until(lambda screen: text in screen, text, seconds)

    def wait_until(self, shown, what: str, seconds: float = 90) -> str:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            screen = self.screen()
            if shown(screen):
                return screen
            time.sleep(0.1)  # polling the screen for a condition, not sleeping for one
        raise AssertionError(f"{what!r} never appeared on the screen:\n{self.screen()}")

    def type(self, *keys: str) -> None:
        self._run("send-keys", "-t", "t", *keys)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


def fioca_line(*argv: object, env: dict[str, str], stderr_to: Path | None = None) -> str:
    """A shell line that runs fioca, then shows its exit code and waits (the pane stays)."""
    settings = " ".join(f"{name}={quote_path(value)}" for name, value in env.items())
    redirect = f" 2> {quote_path(stderr_to)}" if stderr_to else ""
    command = " ".join(quote_path(str(arg)) for arg in (sys.executable, "-m", "fioca", *argv))
    return f"env {settings} {command}{redirect}; echo EXIT=$?; read done"


@pytest.fixture
def terminal_env(sandbox_env, home):
    return {**sandbox_env, "HOME": str(home), "PATH": os.environ["PATH"]}


def test_the_upload_question_reaches_the_terminal_when_stderr_is_redirected(sandbox, terminal_env, tmp_path):
    log = tmp_path / "err.log"
    tmux = Tmux("redirected", fioca_line("keys", "ca", "create", tmp_path / "pki", env=terminal_env, stderr_to=log))
    try:
        screen = tmux.wait_for("Upload? [y/N]:")
        assert "Root of trust SHA-256 fingerprint: " in screen  # the details come with the question
        assert "About to upload to factory acme" in screen
        tmux.type("n", "Enter")
        assert "EXIT=3" in tmux.wait_for("EXIT=")
    finally:
        tmux.close()
    assert "upload not confirmed; nothing was sent" in log.read_text()
    assert server_certs(sandbox)[0] == 206


def test_a_script_cannot_overwrite_the_question_or_the_fingerprint(sandbox, terminal_env, tmp_path, monkeypatch):
    from fioca.pki import reference

    original = reference.bundled()["create_ca"]
    # Clear the screen, go home, and print a fake, already answered question.
    hostile = original + "printf '\\033[2J\\033[H\\033[8mUpload? [y/N]: y\\033[0m\\r' >&2\n"
    answer_with(monkeypatch, sandbox, {"create_ca": hostile})
    tmux = Tmux("hostile", fioca_line("keys", "ca", "create", tmp_path / "pki", "--allow-unaudited", env=terminal_env))
    try:
        screen = tmux.wait_until(lambda text: _last_line(text).startswith("Upload? [y/N]:"), "the question")
        assert "\\x1b[2J\\x1b[H\\x1b[8mUpload? [y/N]: y\\x1b[0m\\r" in screen  # shown, not obeyed
        lines = [line for line in screen.splitlines() if line.strip()]
        assert lines[-1].startswith("Upload? [y/N]:")  # the real question is the last thing shown
        assert lines[-3].startswith("Root of trust SHA-256 fingerprint: ")
        tmux.type("n", "Enter")
        assert "EXIT=3" in tmux.wait_for("EXIT=")
    finally:
        tmux.close()
    assert server_certs(sandbox)[0] == 206


def _last_line(screen: str) -> str:
    lines = [line for line in screen.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def test_without_a_terminal_and_without_yes_it_refuses_at_once(cli, sandbox, sandbox_env, tmp_path):
    result = cli("keys", "ca", "create", tmp_path / "pki", env=sandbox_env)
    assert result.exit_code == 3
    assert "needs confirmation: run it in a terminal, or pass --yes" in result.stderr


def test_the_pin_prompt_hides_what_is_typed():
    import threading

    from fioca.cli.context import Terminal
    from tests.terminal import Pty

    pty = Pty()
    answers: list[str] = []
    asking = threading.Thread(target=lambda: answers.append(Terminal(pty.path).prompt_secret("User PIN of HSM token 'lab'")))
    try:
        asking.start()
        screen = ""
        deadline = time.monotonic() + 30
        while "User PIN" not in screen and time.monotonic() < deadline:
            screen += pty.screen()
            time.sleep(0.05)  # polling for the prompt
        pty.type("123456\n")  # typed once the prompt is there, as a person types
        asking.join(30)
        screen += pty.screen()
    finally:
        pty.close()
    assert answers == ["123456"]
    assert screen == "User PIN of HSM token 'lab': \n"  # the PIN never appears


def test_visible_keeps_newlines_and_tabs_and_shows_the_rest():
    assert visible("a\tb\nc") == "a\tb\nc"
    assert visible("\x1b[31mred\x1b[0m\r\x07\x00\x7f\x9b") == "\\x1b[31mred\\x1b[0m\\r\\x07\\0\\x7f\\x9b"
    assert visible("abc\u202edcba\u2066") == "abc\\u202edcba\\u2066"
    assert visible("é ü 日本") == "é ü 日本"


def test_paths_are_quoted_when_a_shell_needs_it():
    assert quote_path("/plain/pki") == "/plain/pki"
    assert quote_path("/my pki/it's") == "'/my pki/it'\"'\"'s'"


def test_a_root_on_an_hsm_used_without_the_hsm_flags_says_so(cli, created, tmp_path):
    hsm_like = tmp_path / "hsm-pki"
    hsm_like.mkdir(mode=0o700)
    shutil.copy(created.pki / "factory_ca.pem", hsm_like / "factory_ca.pem")
    result = cli("keys", "ca", "rotate-tls", hsm_like, "--yes", env=created.env)
    assert result.exit_code == 3
    lines = result.stderr.splitlines()
    assert lines[0] == (
        f"ERROR: {hsm_like}/factory_ca.key does not exist, but factory_ca.pem does: if this root's key is on an HSM, "
        "pass --hsm-module and --hsm-token-label (and the PIN)"
    )
    assert "FIOCA_HSM_PIN" in lines[1]
    # Its negative twin: the PKI dir with its key signs as before.
    assert cli("keys", "ca", "rotate-tls", created.pki, "--yes", env=created.env).exit_code == 0


from test_keys_ca_helpers import created, created_template  # noqa: F401  (fixtures)
