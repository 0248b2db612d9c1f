"""`fioca sandbox serve | devices | delete-device`, driven as a subprocess and with CliRunner."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from sandbox_helpers import FACTORY
from typer.testing import CliRunner

from fioca.cli import sandbox as sandbox_cli
from fioca.sandbox import Sandbox, SandboxError, read_info


def test_cli_serve_runs_until_sigterm_and_never_prints_the_token(tmp_path: Path) -> None:
    data = tmp_path / "sandbox"
    process = subprocess.Popen(
        [sys.executable, "-m", "fioca", "sandbox", "serve", "--data", str(data), "--factory", FACTORY],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        ready = process.stderr.readline()
        assert ready.startswith("sandbox ready: api https://127.0.0.1:"), ready
        assert f"config {data / 'fioctl.yaml'}" in ready
        info = read_info(data)
        assert f"api {info.api_url}, gateway {info.gateway_url}," in ready
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0
    assert "sandbox stopped" in stderr
    assert info.token not in ready + stdout + stderr


def test_cli_devices_and_delete_device(sandbox: Sandbox) -> None:
    runner = CliRunner()
    data = str(sandbox.data_dir)
    sandbox.store.add_device(uuid="dev-1", name="first", pubkey="PEM", is_prod=True, ca_serial="7", owner="u")
    sandbox.store.add_device(uuid="dev-2", name="second", pubkey="PEM")

    listed = runner.invoke(sandbox_cli.app, ["devices", "--data", data, "--format", "json"])
    assert listed.exit_code == 0, listed.output
    assert [device["uuid"] for device in json.loads(listed.stdout)] == ["dev-1", "dev-2"]

    deleted = runner.invoke(sandbox_cli.app, ["delete-device", "--data", data, "dev-1"])
    assert deleted.exit_code == 0
    text = runner.invoke(sandbox_cli.app, ["devices", "--data", data])
    assert "dev-2" in text.stdout and "dev-1" not in text.stdout
    assert sandbox.store.device("dev-1").deny_listed is True

    missing = runner.invoke(sandbox_cli.app, ["delete-device", "--data", data, "dev-9"])
    assert isinstance(missing.exception, SandboxError)
    nowhere = runner.invoke(sandbox_cli.app, ["devices", "--data", str(sandbox.data_dir / "nope")])
    assert isinstance(nowhere.exception, SandboxError)
    assert not (sandbox.data_dir / "nope").exists()
