"""Ctrl-C, anywhere, is one line and exit 130: while fioca imports, while a command runs, and
when compiled code swallowed the KeyboardInterrupt and turned it into a false fault."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from fioca.errors import CheckError, Interrupted
from tests.conftest import FACTORY
from tests.http_stub import Answer, Stub

ANSWER = '{"create_ca": "#!/bin/sh\\n"}'


def default_sigint() -> None:
    # A test runner's worker may start children with SIGINT ignored; Ctrl-C must reach them.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_an_interrupt_while_fioca_imports_is_one_line(tmp_path):
    probe = (
        "import os, signal, sys\n"
        "class Interrupting:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'fioca.cli.app':\n"
        "            os.kill(os.getpid(), signal.SIGINT)\n"
        "        return None\n"
        "sys.meta_path.insert(0, Interrupting())\n"
        "from fioca.cli import main\n"
        "sys.exit(main(['keys', 'ca', 'show', '--help']))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, preexec_fn=default_sigint)
    assert (done.returncode, done.stderr, done.stdout) == (130, "Interrupted.\n", "")


@pytest.fixture
def answer_file(tmp_path) -> Path:
    path = tmp_path / "factory_certs.json"
    path.write_text(ANSWER)
    return path


def test_an_interrupt_in_a_command_is_one_line(cli, answer_file, monkeypatch):
    from fioca import jq_text

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(jq_text, "run", interrupted)
    result = cli("keys", "ca", "extract", "create_ca", "--file", answer_file)
    assert (result.exit_code, result.stderr) == (130, "Interrupted.\n")


def test_a_swallowed_interrupt_is_not_reported_as_a_fault(cli, answer_file, monkeypatch):
    """cryptography's signature checks call back into Python and turn a KeyboardInterrupt into
    "does not verify"; the CLI sees that Ctrl-C was pressed and says so instead."""
    from fioca import jq_text

    def swallowing(*_args, **_kwargs):
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt:
            pass  # what compiled code does with it
        raise CheckError("tls-csr", "CSR self-signature does not verify")

    monkeypatch.setattr(jq_text, "run", swallowing)
    result = cli("keys", "ca", "extract", "create_ca", "--file", answer_file)
    assert (result.exit_code, result.stderr) == (130, "Interrupted.\n")


def test_the_same_fault_without_an_interrupt_is_reported(cli, answer_file, monkeypatch):
    from fioca import jq_text

    def failing(*_args, **_kwargs):
        raise CheckError("tls-csr", "CSR self-signature does not verify")

    monkeypatch.setattr(jq_text, "run", failing)
    result = cli("keys", "ca", "extract", "create_ca", "--file", answer_file)
    assert (result.exit_code, result.stderr) == (4, "ERROR: tls-csr: CSR self-signature does not verify\n")


def test_a_flow_says_what_state_it_left(cli, answer_file, monkeypatch):
    """The hook for create: raise Interrupted with the line to show (what is left, what to run)."""
    from fioca import jq_text

    line = "Interrupted while create_ca ran; nothing was sent: run `fioca keys ca create ./pki --resume`"

    def flow(*_args, **_kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise Interrupted(line) from None

    monkeypatch.setattr(jq_text, "run", flow)
    result = cli("keys", "ca", "extract", "create_ca", "--file", answer_file)
    assert (result.exit_code, result.stderr) == (130, line + "\n")


def test_ctrl_c_while_waiting_for_the_server(tmp_path):
    asked = threading.Event()

    def stall(_request):
        asked.set()
        return Answer(200, b'{"root-crt": null}' + b" " * 200, trickle_seconds=0.5)

    with Stub(tmp_path / "stub", {("GET", f"/ota/factories/{FACTORY}/certs/"): stall}) as stub:
        config = tmp_path / "fioctl.yaml"
        config.write_text(yaml.safe_dump({"factory": FACTORY, "token": "tok-0123456789",
                                          "server": {"url": stub.url, "cacert": str(stub.cacert)}}))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FIOCTL_", "FIOCA_"))}
        process = subprocess.Popen(
            [sys.executable, "-m", "fioca", "-c", str(config), "keys", "ca", "show"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=default_sigint,
        )
        try:
            assert asked.wait(60), "fioca never asked"
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=60)
        finally:
            process.kill()
    assert (process.returncode, err, out) == (130, "Interrupted.\n", "")
