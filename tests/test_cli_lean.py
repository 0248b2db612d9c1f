"""Numbers, enums and repeated options are converted without pydantic when Typer would take the
value as it is, and refused in Typer's own words when it would not (fioca/cli/lean.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = (
    "import sys\n"
    "from fioca.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "print('pydantic' in sys.modules, code)\n"
)


def _run(*argv: str) -> tuple[bool, int, str]:
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=60)
    loaded, code = done.stdout.split()[-2:]
    return loaded == "True", int(code), done.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["device", "create-offline", "/nonexistent-pki", "--count", "2", "--days", "30", "--format", "json", "--workers", "1"],
        ["keys", "ca", "create", "/nonexistent-pki", "--dry-run", "--from-json", "/nonexistent.json", "--script-timeout", "2.5",
         "--expect-sha256", "create_ca=" + "0" * 64, "--expect-sha256", "sign_tls_csr=" + "1" * 64, "--format", "text"],
    ],
)
def test_valid_values_need_no_pydantic(argv: list[str]):
    loaded, code, stderr = _run(*argv)
    assert code == 1, stderr  # the command ran (and found no PKI dir / answer file)
    assert not loaded


@pytest.mark.parametrize(
    "argv, words",
    [
        (["device", "create-offline", "/p", "--count", "0"], "Input should be greater than or equal to 1"),
        (["device", "create-offline", "/p", "--count", "two"], "Input should be a valid integer"),
        (["device", "create-offline", "/p", "--format", "yaml"], "'yaml' is not one of 'text', 'json'"),
        (["keys", "ca", "create", "/p", "--script-timeout", "soon"], "Input should be a valid number"),
    ],
)
def test_other_values_are_refused_in_typers_words(argv: list[str], words: str):
    loaded, code, stderr = _run(*argv)
    assert code == 2 and words in stderr, stderr
    assert loaded
