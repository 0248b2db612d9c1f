"""Shared fixtures: a real sandbox on a random loopback port, and the real CLI.

`cli(...)` runs fioca's `main()` in process with its streams captured (fast, and it goes
through the same error handling as the installed command); `fioca_subprocess(...)` runs the
installed `fioca` command for the main flows. `recorder` and the helpers below it watch and
bend what the sandbox answers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from typer.testing import CliRunner

from fioca.cli import main
from fioca.sandbox.server import Sandbox

FACTORY = "acme"

# Every token a sandbox in this test session handed out, and every HSM PIN a test passed:
# every output of every command run through `cli` or `fioca_subprocess` is scanned for them.
KNOWN_SECRETS: set[str] = set()
MIN_SECRET_LENGTH = 8  # shorter values (a PIN like 1234) would match by chance in a serial number


def assert_no_secret(*texts: str) -> None:
    for secret in KNOWN_SECRETS:
        for text in texts:
            assert secret not in text, "a token or PIN appeared in fioca's output"


def _remember_secrets(env: dict[str, str] | None) -> None:
    for name in ("FIOCTL_TOKEN", "FIOCA_HSM_PIN"):
        value = (env or {}).get(name)
        if value and len(value) >= MIN_SECRET_LENGTH:
            KNOWN_SECRETS.add(value)


@pytest.fixture(autouse=True, scope="session")
def _collect_sandbox_tokens():
    real_start = Sandbox.start

    def start(self):
        info = real_start(self)
        KNOWN_SECRETS.add(info.token)
        return info

    Sandbox.start = start
    yield
    Sandbox.start = real_start


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def _clean_env(extra: dict[str, str] | None) -> dict[str, str | None]:
    # Settings must come from the test, never from the developer's own environment.
    env: dict[str, str | None] = {name: None for name in (
        "FIOCTL_FACTORY", "FIOCTL_TOKEN", "FIOCTL_CONFIG", "CACERT", "FIOCA_SERVER", "TOKEN_HEADER",
        "FIOCA_HTTP_TIMEOUT", "FIOCA_HSM_PIN", "DEVICE_API", "DEVICE_FACTORY", "PRODUCTION", "OAUTH_BASE",
    )}
    env.update(extra or {})
    return env


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A private HOME, so no test reads or writes the real ~/.config/fioctl.yaml."""
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("HOME", str(path))
    return path


@pytest.fixture
def cli(home):
    def run(*argv: str, env: dict[str, str] | None = None, input: str | None = None) -> CliResult:
        runner = CliRunner()
        _remember_secrets(env)
        with runner.isolation(input=input, env=_clean_env(env)) as (out, err, _mixed):
            code = main([str(arg) for arg in argv])
            result = CliResult(code, out.getvalue().decode(), err.getvalue().decode())
        assert_no_secret(result.stdout, result.stderr)
        return result

    return run


@pytest.fixture
def sandbox(tmp_path):
    """A fresh sandbox factory, served on free loopback ports for one test."""
    # scripts="api-2026": the answer carries fioca's own scripts, which the audit passes, until it
    # accepts the API's (issue 11.2; the sandbox's default is the API's 2026 scripts).
    with Sandbox(tmp_path / "sandbox", factory=FACTORY, scripts="api-2026") as box:
        yield box


def config_env(sandbox: Sandbox) -> dict[str, str]:
    """The environment a user gets from a sandbox: FIOCTL_CONFIG=DIR/fioctl.yaml."""
    return {"FIOCTL_CONFIG": str(sandbox.data_dir / "fioctl.yaml")}


@pytest.fixture
def sandbox_env(sandbox) -> dict[str, str]:
    return config_env(sandbox)


def record_certs_calls(sandbox: Sandbox, monkeypatch) -> list[tuple[str, Any]]:
    """A list that gets every POST and PATCH body the sandbox receives, in order."""
    calls: list[tuple[str, Any]] = []
    backend = sandbox.backend
    real_post, real_patch = backend.post_certs, backend.patch_certs

    def post(body):
        calls.append(("POST", body))
        return real_post(body)

    def patch(body):
        calls.append(("PATCH", body))
        return real_patch(body)

    monkeypatch.setattr(backend, "post_certs", post)
    monkeypatch.setattr(backend, "patch_certs", patch)
    return calls


@pytest.fixture
def recorder(sandbox, monkeypatch) -> list[tuple[str, Any]]:
    """Every POST and PATCH body the sandbox receives, in order."""
    return record_certs_calls(sandbox, monkeypatch)


def answer_with(monkeypatch, sandbox: Sandbox, replacements: dict[str, str]) -> None:
    """Make the sandbox's POST answer carry other scripts (a compromised or broken server)."""
    backend = sandbox.backend
    real_post = backend.post_certs

    def post(body):
        answer = real_post(body)
        answer.update(replacements)
        return answer

    monkeypatch.setattr(backend, "post_certs", post)


def server_certs(sandbox: Sandbox) -> tuple[int, dict]:
    """GET certs/ as a client sees it: (status, body)."""
    info = sandbox.info
    resp = requests.get(
        f"{info.api_url}/ota/factories/{info.factory}/certs/",
        headers={"OSF-TOKEN": info.token},
        verify=info.cacert,
        timeout=10,
    )
    return resp.status_code, resp.json()


@pytest.fixture
def fioca_subprocess(home):
    def run(*argv: str, env: dict[str, str] | None = None, input: str | None = None, timeout: float = 120):
        full_env = {k: v for k, v in os.environ.items() if k not in _clean_env(None)}
        full_env.update(env or {})
        full_env["HOME"] = str(home)
        _remember_secrets(env)
        done = subprocess.run(
            [sys.executable, "-m", "fioca", *map(str, argv)],
            env=full_env,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert_no_secret(done.stdout, done.stderr)
        return done

    return run
