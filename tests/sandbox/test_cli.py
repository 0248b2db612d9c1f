"""`fioca sandbox serve | devices | delete-device | approve-device`, as a subprocess and with
CliRunner."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import uuid as uuid_module
from pathlib import Path

import pytest
import requests
from sandbox_helpers import FACTORY
from typer.testing import CliRunner

from fioca import facts
from fioca.cli import sandbox as sandbox_cli
from fioca.sandbox import Sandbox, SandboxError, read_info


def _serve(data: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "fioca", "sandbox", "serve", "--data", str(data), "--factory", FACTORY, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _stop(process: subprocess.Popen) -> tuple[str, str]:
    try:
        process.send_signal(signal.SIGTERM)
        return process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()


def test_cli_serve_runs_until_sigterm_and_never_prints_a_secret(tmp_path: Path) -> None:
    data = tmp_path / "sandbox"
    process = _serve(data)
    try:
        ready = process.stderr.readline()
        assert ready.startswith("sandbox ready: api https://127.0.0.1:"), ready
        assert f"config {data / 'fioctl.yaml'}" in ready
        info = read_info(data)
        assert f"api {info.api_url}, gateway {info.gateway_url} ({info.gateway_host})," in ready
    finally:
        stdout, stderr = _stop(process)
    assert process.returncode == 0
    assert "sandbox stopped" in stderr
    for secret in (info.token, info.client_secret):
        assert secret not in ready + stdout + stderr


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_cli_serve_options_scripts_gateway_port_and_token_header(tmp_path: Path) -> None:
    data, port = tmp_path / "sandbox", _free_port()
    process = _serve(data, "--scripts", "none", "--gateway-port", str(port), "--token-header", "X-Test-Token")
    try:
        assert process.stderr.readline().startswith("sandbox ready"), process.stderr.read()
        info = read_info(data)
        assert info.gateway_url == f"https://127.0.0.1:{port}"
        url = f"{info.api_url}/ota/factories/{FACTORY}/certs/"
        answer = requests.post(url, json={}, headers={"X-Test-Token": info.token}, verify=info.cacert, timeout=10)
        assert answer.status_code == 201, answer.text
        assert not set(facts.SCRIPT_NAMES) & set(answer.json())  # --scripts none: today's answer
        # Twin: without --token-header the renamed header is no credential (the next test's sandbox).
    finally:
        _stop(process)
    other = _serve(tmp_path / "other")
    try:
        assert other.stderr.readline().startswith("sandbox ready")
        info = read_info(tmp_path / "other")
        url = f"{info.api_url}/ota/factories/{FACTORY}/certs/"
        refused = requests.get(url, headers={"X-Test-Token": info.token}, verify=info.cacert, timeout=10)
        assert refused.status_code == 401
        answer = requests.post(url, json={}, headers={"OSF-TOKEN": info.token}, verify=info.cacert, timeout=10)
        assert set(facts.SCRIPT_NAMES) <= set(answer.json())  # the default: the API's scripts
    finally:
        _stop(other)


def test_cli_serve_refuses_an_unknown_script_set(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "fioca", "sandbox", "serve", "--data", str(tmp_path / "s"),
                           "--scripts", "api-1999"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--scripts" in done.stderr
    assert not (tmp_path / "s").exists()


def test_cli_devices_and_delete_device(sandbox: Sandbox) -> None:
    runner = CliRunner()
    data = str(sandbox.data_dir)
    first, second = str(uuid_module.uuid4()), str(uuid_module.uuid4())
    sandbox.store.add_device(uuid=first, name="first", pubkey="PEM", is_prod=True, ca_serial="7", owner="u", group="lab")
    sandbox.store.add_device(uuid=second, name="second", pubkey="PEM")

    listed = runner.invoke(sandbox_cli.app, ["devices", "--data", data, "--format", "json"])
    assert listed.exit_code == 0, listed.output
    assert {device["uuid"]: device["group"] for device in json.loads(listed.stdout)} == {first: "lab", second: None}

    # A device has one spelling: upper case names no device (twin: the canonical one does).
    upper = runner.invoke(sandbox_cli.app, ["delete-device", "--data", data, first.upper()])
    assert upper.exit_code == 2 and "lower-case hyphenated UUID" in upper.output
    assert sandbox.store.device(first).deny_listed is False
    deleted = runner.invoke(sandbox_cli.app, ["delete-device", "--data", data, first])
    assert deleted.exit_code == 0
    text = runner.invoke(sandbox_cli.app, ["devices", "--data", data])
    assert second in text.stdout and first not in text.stdout and "GROUP" in text.stdout
    assert sandbox.store.device(first).deny_listed is True

    missing = runner.invoke(sandbox_cli.app, ["delete-device", "--data", data, str(uuid_module.uuid4())])
    assert isinstance(missing.exception, SandboxError)
    nowhere = runner.invoke(sandbox_cli.app, ["devices", "--data", str(sandbox.data_dir / "nope")])
    assert isinstance(nowhere.exception, SandboxError)
    assert not (sandbox.data_dir / "nope").exists()


@pytest.mark.parametrize("deny", [False, True], ids=["approve", "deny"])
def test_cli_approve_device_decides_a_waiting_device(sandbox: Sandbox, deny: bool) -> None:
    info, client_id = sandbox.info, str(uuid_module.uuid4())
    scope = f"{FACTORY}:devices:create"
    asked = requests.post(f"{info.oauth_url}/authorization/device/", verify=info.cacert, timeout=10,
                          data=f"client_id={client_id}&scope={scope}").json()
    user_code = asked["user_code"]
    runner = CliRunner()
    args = ["approve-device", "--data", str(sandbox.data_dir), user_code.lower().replace("-", "")]
    decided = runner.invoke(sandbox_cli.app, args + (["--deny"] if deny else []))
    assert decided.exit_code == 0, decided.output
    poll = requests.post(f"{info.oauth_url}/token/", verify=info.cacert, timeout=10, data={
        "grant_type": "urn:ietf:params:oauth:grant-type:device_code", "device_code": asked["device_code"],
        "client_id": client_id, "scope": scope,
    })
    if deny:
        assert poll.status_code == 400 and poll.json()["error"] == "access_denied"
    else:
        assert poll.status_code == 200 and poll.json()["access_token"]
    again = runner.invoke(sandbox_cli.app, args)
    assert isinstance(again.exception, SandboxError)  # decided once, not twice
