"""The sandbox under load and through a crash.

200 devices make their first mTLS request concurrently (25 at a time, twice each): each is
registered exactly once and every request is answered. Then the sandbox process is killed
with SIGKILL and restarted on the same data dir: its state survives, and its other gateway
processes (one per core) end with it. Bounded in count and time; loopback only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fioca.device.check import locate, probe, target_for
from tests.conftest import FACTORY

DEVICES = 200
AT_ONCE = 25


def start_sandbox(data: Path) -> tuple[subprocess.Popen, dict]:
    (data / "sandbox.json").unlink(missing_ok=True)
    process = subprocess.Popen([sys.executable, "-m", "fioca", "sandbox", "serve", "--data", str(data),
                                "--factory", FACTORY], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not (data / "sandbox.json").exists():
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "the sandbox did not start within 30 s"
        time.sleep(0.05)
    return process, json.loads((data / "sandbox.json").read_text())


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _running(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def registered(cli, data: Path) -> list[dict]:
    result = cli("sandbox", "devices", "--data", data, "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_200_first_requests_at_once_then_sigkill_and_restart(cli, tmp_path):
    data, pki, out = tmp_path / "sandbox", tmp_path / "pki", tmp_path / "devices"
    process, info = start_sandbox(data)
    try:
        env = {"FIOCTL_CONFIG": str(data / "fioctl.yaml")}
        assert cli("keys", "ca", "create", pki, "--yes", env=env).exit_code == 0
        made = cli("device", "create-offline", pki, "--count", DEVICES + 1, "--out", out, env=env)
        assert made.exit_code == 0, made.output
        folders = sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))
        assert len(folders) == DEVICES + 1
        devices, spare = [locate(f, pki) for f in folders[:DEVICES]], locate(folders[-1], pki)

        def first_request(device):
            return probe(device, target_for(device, gateway_url=info["gateway_url"]))

        with ThreadPoolExecutor(max_workers=AT_ONCE) as pool:
            results = list(pool.map(first_request, devices * 2))  # every device twice, interleaved
        refused = [r.reason for r in results if not r.accepted]
        assert not refused, refused[:3]
        assert all(r.status == 200 for r in results)
        uuids = [d["uuid"] for d in registered(cli, data)]
        assert len(uuids) == len(set(uuids)) == DEVICES
        assert set(uuids) == {d.uuid for d in devices}
    finally:
        helpers = _children(process.pid)
        assert len(helpers) == (os.cpu_count() or 1) - 1  # one gateway process per core, this one included
        process.send_signal(signal.SIGKILL)  # no clean shutdown: state must already be on disk
        process.wait(timeout=10)
        process.stderr.close()
    deadline = time.monotonic() + 30
    while [pid for pid in helpers if _running(pid)]:  # their stdin ended with the sandbox
        assert time.monotonic() < deadline, "a gateway process outlived its sandbox"
        time.sleep(0.05)

    assert len(registered(cli, data)) == DEVICES  # read straight from the data dir
    process, info = start_sandbox(data)
    try:
        known = probe(devices[0], target_for(devices[0], gateway_url=info["gateway_url"]))
        assert known.accepted and known.body["uuid"] == devices[0].uuid
        new = probe(spare, target_for(spare, gateway_url=info["gateway_url"]))
        assert new.accepted
        assert len(registered(cli, data)) == DEVICES + 1
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stderr.close()
    assert process.returncode == 0
