"""A fioctl user's command lines work unchanged: -f/-t anywhere after `keys`, -c/-v anywhere,
cobra's `--flag=false`, `-f=VALUE`; and the rewriting never takes an option's value for an
option or a command name."""

from __future__ import annotations

import json

import pytest

from fioca.cli.app import command
from fioca.cli.argv import fioctl_style
from tests.conftest import FACTORY


@pytest.fixture(scope="module")
def tree():
    return command()


@pytest.mark.parametrize(
    "line, expected",
    [
        # -f/-t after `keys`, anywhere: moved to the root, where fioca keeps them.
        ("keys ca create ./pki -f acme", "-f acme keys ca create ./pki"),
        ("keys ca show --factory=acme --pretty", "--factory acme keys ca show --pretty"),
        ("keys -t TOK ca show", "-t TOK keys ca show"),
        ("keys ca show -facme", "-f acme keys ca show"),
        ("keys ca show -f=acme", "-f acme keys ca show"),
        # -c/-v anywhere at all.
        ("sandbox serve --data d -v", "-v sandbox serve --data d"),
        ("keys ca show -c my.yaml", "-c my.yaml keys ca show"),
        # cobra booleans.
        ("keys ca create ./pki --online-ca=false", "keys ca create ./pki --no-online-ca"),
        ("keys ca create ./pki --local-ca=true --online-ca=0", "keys ca create ./pki --local-ca --no-online-ca"),
        ("keys ca create ./pki --dry-run=true", "keys ca create ./pki --dry-run"),
        ("keys ca create ./pki --dry-run=false", "keys ca create ./pki"),
        ("keys ca create ./pki --no-online-ca=true", "keys ca create ./pki --no-online-ca"),
        # A group of short flags: -v from the root, -y from the command.
        ("keys ca update cas.pem -vy", "-v keys ca update cas.pem -y"),
    ],
)
def test_fioctl_lines_become_click_lines(tree, line, expected):
    assert fioctl_style(line.split(), tree) == expected.split()


@pytest.mark.parametrize(
    "line",
    [
        "device register -t main --sota-dir /var/sota",  # -t is lmp-device-register's --tags here
        "sandbox serve --factory other --data d",  # the sandbox's own --factory
        "keys ca create ./pki --hsm-token-label -f",  # a value that looks like an option stays a value
        "keys ca extract -- -f",  # after `--`, nothing is an option
        "keys ca create ./pki --online-ca=maybe",  # not a bool: left for Click to refuse
        "-f acme keys ca show",  # already in place
    ],
)
def test_what_is_not_fioctls_is_left_alone(tree, line):
    assert fioctl_style(line.split(), tree) == line.split()


def test_a_global_option_without_its_value_is_a_usage_error(cli):
    result = cli("keys", "ca", "show", "-f")
    assert result.exit_code == 2 and "'-f'" in result.stderr and "needs a value" in result.stderr


def test_a_bool_that_is_not_one_is_a_usage_error(cli):
    result = cli("keys", "ca", "create", "./pki", "--online-ca=maybe")
    assert result.exit_code == 2 and "--online-ca" in result.stderr


def test_create_as_a_fioctl_user_types_it(cli, sandbox, sandbox_env, recorder, tmp_path):
    """`fioctl keys ca create ./pki --online-ca=false -f acme -t TOKEN -c FILE`, unchanged."""
    config = sandbox.data_dir / "fioctl.yaml"
    result = cli(
        "keys", "ca", "create", tmp_path / "pki", "--online-ca=false", "-f", FACTORY, "-t", sandbox.info.token,
        "-c", config, "--yes",
    )
    assert result.exit_code == 0, result.output
    patch = [body for method, body in recorder if method == "PATCH"][0]
    assert patch["ca-crt"].count("BEGIN CERTIFICATE") == 1  # the local CA only: no online CA
    assert not (tmp_path / "pki" / "online-crt").exists()
    shown = cli("keys", "ca", "show", "--format", "json", "-c", config)
    assert json.loads(shown.stdout)["root-crt"] == (tmp_path / "pki" / "factory_ca.pem").read_text()
