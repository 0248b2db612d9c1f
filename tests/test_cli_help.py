"""Help that helps: at 80 columns no option name is cut, defaults show, examples print as
typed, usage lines name arguments in upper case, and --version names what fioca found."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from fioca.cli.app import command

ROOT = command()


def all_paths(group=ROOT, path=()):
    yield path
    for name in group.list_commands(None):
        sub = group.get_command(None, name)
        if hasattr(sub, "list_commands"):
            yield from all_paths(sub, (*path, name))
        else:
            yield (*path, name)


PATHS = list(all_paths())


def help_of(cli, path):
    result = cli(*path, "--help", env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    return result.stdout


def command_at(path):
    found = ROOT
    for name in path:
        found = found.get_command(None, name)
    return found


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "fioca")
def test_help_at_80_columns(cli, path):
    text = help_of(cli, path)
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    found = command_at(path)
    for param in found.params:
        for name in (*param.opts, *param.secondary_opts):
            if name.startswith("-") and not param.hidden:
                assert re.search(rf"(^|[\s,/]){re.escape(name)}($|[\s,/])", text, re.MULTILINE), f"{name} cut or missing"
    usage = text.splitlines()[0]
    assert "{" not in usage and "<" not in usage
    assert re.fullmatch(r"Usage: fioca[ a-z-]*( \[OPTIONS\])?( [A-Z_]+(\.\.\.)?| \[[A-Z_]+\]| COMMAND \[ARGS\]\.\.\.)*", usage), usage


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "fioca")
def test_every_group_and_command_has_examples_printed_as_typed(cli, path):
    text = help_of(cli, path)
    lines = (command_at(path).help or "").splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip().startswith("Example")), None)
    assert start is not None, f"{path}: no examples"
    # An example is a line from `fioca ` on (`Example: fioca ...` or one under `Examples:`).
    examples = [line[line.index("fioca "):] for line in lines[start:] if "fioca " in line]
    assert examples, path
    shown = [line.strip() for line in text.splitlines()]
    for example in examples:
        assert any(line.endswith(example.strip()) for line in shown), f"{path}: {example!r} not printed as typed"


def test_defaults_are_shown(cli):
    def help_text(path):
        return " ".join(help_of(cli, path).split())  # a default may wrap onto the next line

    create = help_text(("keys", "ca", "create"))
    assert "[default: 120.0; x>=1]" in create and "[default: text]" in create
    offline = help_text(("device", "create-offline"))
    assert "[default: (PKI_DIR/devices)]" in offline  # Rich used to drop these as markup
    assert "[default: (every core); x>=1]" in offline
    root = help_text(())
    assert "[default: (~/.config/fioctl.yaml)]" in root


def test_version_names_openssl_and_bubblewrap(cli):
    result = cli("--version")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"fioca \S+", lines[0])
    openssl = subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout.strip()
    assert lines[1].startswith(f"openssl: {openssl} (")
    assert lines[2].startswith("bubblewrap: ")


def test_help_starts_without_the_heavy_modules(tmp_path):
    """What `fioca --help`, `keys ca show --help`, `keys ca create --help` and `keys ca extract`
    import (speed: make bench)."""
    answer = tmp_path / "factory_certs.json"
    answer.write_text('{"create_ca": "#!/bin/sh\\n"}')
    heavy = ("requests", "cryptography", "sh", "yaml", "pydantic", "fioca.sandbox", "fioca.pki.audit.walker", "fioca.api",
             "fioca.pki.create")
    probe = (
        "import sys\nfrom fioca.cli import main\n"
        "code = main(sys.argv[1:])\n"
        f"print([m for m in {heavy!r} if m in sys.modules], file=sys.stderr)\n"
    )
    for argv in (["--help"], ["keys", "ca", "show", "--help"], ["keys", "ca", "--help"], ["keys", "ca", "create", "--help"],
                 ["keys", "ca", "extract", "create_ca", "--file", str(answer)]):
        done = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True)
        assert done.stderr.strip().splitlines()[-1] == "[]", (argv, done.stderr)
