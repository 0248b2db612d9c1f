"""`make demo` and `make test` set up a fresh machine (issue 13.1): the Debian packages they need
are installed when run as root, and otherwise one line names the `apt-get install` to run,
before anything else happens. Driven with stand-ins for dpkg-query (nothing installed),
apt-get (records what it was asked) and id (root or not), on the real Makefile."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TEST_PACKAGES = "openssl bubblewrap curl jq nginx-light softhsm2 opensc libengine-pkcs11-openssl tmux"


def _stubs(folder: Path, *, uid: int, installed: bool) -> Path:
    folder.mkdir()
    record = folder / "apt-get.log"
    scripts = {
        # dpkg-query -W -f='${Status}' PKG: installed, or not known at all.
        "dpkg-query": "echo -n 'install ok installed'" if installed else "exit 1",
        "apt-get": f'echo "$@" >> {record}',
        "id": f"echo {uid}",
    }
    for name, body in scripts.items():
        path = folder / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    return record


def _make(target: str, stubs: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}"}
    # VENV elsewhere: a stamp made by this repo's own .venv must not satisfy the real target.
    return subprocess.run(["make", "-C", str(REPO), target, f"VENV={tmp_path / 'venv'}"],
                          env=env, capture_output=True, text=True, timeout=60)  # fmt: skip


@pytest.mark.parametrize(("target", "packages"), [("test", TEST_PACKAGES), ("demo", "openssl bubblewrap")])
def test_a_user_is_told_the_one_apt_get_line_and_nothing_else_happens(tmp_path, target, packages):
    record = _stubs(tmp_path / "bin", uid=1000, installed=False)
    done = _make(target, tmp_path / "bin", tmp_path)
    assert done.returncode == 2
    message = [line for line in done.stdout.splitlines() if "apt-get" in line]
    assert message == [f"fioca needs Debian packages that are missing; run: sudo apt-get install {packages}"]
    assert not record.exists()  # nothing installed
    assert not (tmp_path / "venv").exists()  # and nothing else done before it


def test_root_gets_the_packages_installed(tmp_path):
    record = _stubs(tmp_path / "bin", uid=0, installed=False)
    done = _make("test-packages", tmp_path / "bin", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    calls = record.read_text().splitlines()
    assert calls == ["update -qq", f"install -y -qq --no-install-recommends {TEST_PACKAGES}"]


def test_nothing_is_installed_when_everything_is_there(tmp_path):
    record = _stubs(tmp_path / "bin", uid=1000, installed=True)
    done = _make("test-packages", tmp_path / "bin", tmp_path)
    assert done.returncode == 0 and "apt-get" not in done.stdout
    assert not record.exists()


def test_ci_runs_exactly_the_readmes_test_command():
    run = (REPO / ".ci" / "run").read_text().splitlines()
    assert [line for line in run if line and not line.startswith(("#", "set ", "cd "))] == ["make test"]
    assert "make test" in (REPO / "README.md").read_text()
