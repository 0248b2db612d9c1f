"""Global options, settings precedence, error rendering, `show`, and the token's secrecy."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import yaml

from fioca.api import NOT_CONFIGURED, NOT_CONFIGURED_HINT
from fioca.config import load_settings
from fioca.errors import ConfigError
from tests.conftest import FACTORY


def write_config(path: Path, **values) -> Path:
    path.write_text(yaml.safe_dump(values))
    return path


# -- settings: flag > environment > file ---------------------------------------------------

def test_precedence_flag_over_env_over_file(tmp_path):
    config = write_config(tmp_path / "c.yaml", factory="from-file", token="file-token",
                          server={"url": "https://file.example"})
    env = {"FIOCTL_FACTORY": "from-env", "FIOCTL_TOKEN": "env-token", "FIOCA_SERVER": "https://env.example"}
    assert load_settings(config=config, environ={}).factory == "from-file"
    both = load_settings(config=config, environ=env)
    assert (both.factory, both.token, both.server_url) == ("from-env", "env-token", "https://env.example")
    flags = load_settings(config=config, environ=env, factory="from-flag", token="flag-token", server="http://flag:1")
    assert (flags.factory, flags.token, flags.server_url) == ("from-flag", "flag-token", "http://flag:1")


def test_fioctl_config_env_names_the_file_and_defaults_apply(tmp_path):
    config = write_config(tmp_path / "c.yaml", factory="f")
    settings = load_settings(environ={"FIOCTL_CONFIG": str(config)}, config=tmp_path / "ignored.yaml")
    assert settings.config_path == config and settings.factory == "f"
    assert settings.server_url == "https://api.foundries.io"
    assert settings.token_header == "OSF-TOKEN"
    assert load_settings(environ={"TOKEN_HEADER": "X-Other"}, config=config).token_header == "X-Other"


def test_cacert_relative_to_the_config_file_and_env_override(tmp_path):
    (tmp_path / "ca.pem").write_text("x")
    config = write_config(tmp_path / "c.yaml", server={"url": "https://h", "cacert": "ca.pem"})
    assert load_settings(config=config, environ={}).cacert == tmp_path / "ca.pem"
    other = tmp_path / "other.pem"
    other.write_text("y")
    assert load_settings(config=config, environ={"CACERT": str(other)}).cacert == other
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(config=config, environ={"CACERT": str(tmp_path / "missing.pem")})


def test_token_is_not_in_the_settings_repr():
    settings = load_settings(environ={"HOME": "/nonexistent"}, factory="f", token="s3cr3t-token")
    assert "s3cr3t-token" not in repr(settings)


@pytest.mark.parametrize(
    "content, message",
    [
        ("factory: [unclosed", "is not valid YAML"),
        ("- a\n- b\n", "must hold a mapping"),
        ("server: 3\n", '"server" must be a mapping'),
        ("factory: {a: 1}\n", '"factory" must be a string'),
    ],
)
def test_bad_config_files_are_one_clear_line(cli, tmp_path, content, message):
    config = tmp_path / "bad.yaml"
    config.write_text(content)
    result = cli("-c", config, "keys", "ca", "show")
    assert result.exit_code == 1
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_missing_factory_says_how_to_set_it(cli, home):
    result = cli("keys", "ca", "show", env={"FIOCTL_TOKEN": "t"})
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0] == 'ERROR: Required flag "factory" not set'  # fioctl's words first
    assert lines[1] == (
        f'  set it with -f/--factory, FIOCTL_FACTORY, or "factory:" in {home}/.config/fioctl.yaml (there is no such file)'
    )
    assert "fioca sandbox serve --data ./sandbox" in lines[2]


def test_no_config_at_all_says_how_to_configure(cli, home):
    for argv in (("keys", "ca", "show"), ("-f", "acme", "keys", "ca", "show")):
        result = cli(*argv)
        assert result.exit_code == 1
        lines = result.stderr.splitlines()
        assert lines[0] == 'ERROR: Please run: "fioctl login" first, or give fioca an API token'
        assert "FIOCTL_TOKEN" in lines[1] and f"{home}/.config/fioctl.yaml" in lines[1]
        assert "fioctl login" in lines[2]
        assert "fioca sandbox serve --data ./sandbox &" in lines[3] and "FIOCTL_CONFIG=./sandbox/fioctl.yaml" in lines[3]
        assert "Traceback" not in result.output


# -- the API's answers and errors ------------------------------------------------------------

def test_show_before_create_says_not_configured(cli, sandbox_env):
    result = cli("keys", "ca", "show", env=sandbox_env)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [f"ERROR: {NOT_CONFIGURED}", NOT_CONFIGURED_HINT]
    assert "fioca keys ca create" in NOT_CONFIGURED and "fioctl" not in NOT_CONFIGURED


def test_bad_token_is_rendered_as_fioctl_renders_http_errors(cli, sandbox, sandbox_env):
    result = cli("-t", "wrong-token", "keys", "ca", "show", env=sandbox_env)
    assert result.exit_code == 6
    url = f"{sandbox.info.api_url}/ota/factories/{FACTORY}/certs/"
    lines = result.stderr.splitlines()
    assert lines[0] == f"ERROR: HTTP error during GET '{url}': 401 Unauthorized"
    assert lines[1].startswith("= ")
    # Where the token came from, so the user knows what to fix.
    assert lines[-1] == (
        "  the server did not accept the credentials from -t/--token (sent as OSF-TOKEN); "
        "check them, or run `fioctl login` again"
    )
    assert "wrong-token" not in result.output


def test_unreachable_server_is_one_line(cli, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connection refused
        result = cli("-f", "acme", "-t", "tok", "--server", f"http://127.0.0.1:{port}", "keys", "ca", "show")
    assert result.exit_code == 6
    lines = result.stderr.splitlines()
    assert lines[0].startswith("ERROR: cannot reach the server during GET")
    assert lines[1:] == ["  nothing listens there; if it is a fioca sandbox, start it with `fioca sandbox serve --data DIR`"]


def test_wrong_ca_for_the_api_is_a_tls_error(cli, sandbox, tmp_path):
    config = write_config(tmp_path / "c.yaml", factory=FACTORY, token=sandbox.info.token,
                          server={"url": sandbox.info.api_url})  # no cacert: the system store
    result = cli("-c", config, "keys", "ca", "show")
    assert result.exit_code == 6
    lines = result.stderr.splitlines()
    assert lines[0].startswith("ERROR: TLS error during GET") and "certificate verify failed" in lines[0]
    assert "CACERT" in lines[1] and "adds it to the system's CAs" in lines[1]
    assert sandbox.info.token not in result.output


def test_verbose_shows_requests_never_the_token(cli, sandbox, sandbox_env, tmp_path):
    result = cli("-v", "keys", "ca", "create", tmp_path / "pki", "--yes", env=sandbox_env)
    assert result.exit_code == 0, result.output
    assert f"POST {sandbox.info.api_url}/ota/factories/{FACTORY}/certs/ -> 201" in result.stderr
    assert f"PATCH {sandbox.info.api_url}/ota/factories/{FACTORY}/certs/ -> 200" in result.stderr
    token = sandbox.info.token
    for text in (result.stdout, result.stderr):
        assert token not in text
    for path in (tmp_path / "pki").iterdir():
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path.name


def test_usage_errors_exit_2(cli):
    result = cli("keys", "ca", "create")
    assert result.exit_code == 2
    assert "Missing argument" in result.stderr


# -- show ------------------------------------------------------------------------------------

@pytest.fixture
def configured(cli, sandbox, sandbox_env, tmp_path):
    pki = tmp_path / "pki"
    assert cli("keys", "ca", "create", pki, "--yes", env=sandbox_env).exit_code == 0
    return pki


def _certs(cli, env) -> dict:
    return json.loads(cli("keys", "ca", "show", "--format", "json", env=env).stdout)


def test_show_is_fioctls_layout_byte_for_byte(cli, sandbox_env, configured):
    body = _certs(cli, sandbox_env)
    meta = body["change-meta"]
    # fioctl's doShowCA: fmt.Println of each heading and of each PEM as the server sent it
    # (which ends in a newline, so a blank line follows), "\n## Device ..." for two more.
    expected = (
        "## Change Metadata\n"
        f"Created at: {meta['created-at']}\n"
        f"Created by: {meta['created-by']}\n"
        "## Factory root certificate\n"
        f"{body['root-crt']}\n"
        "## Server TLS Certificate\n"
        f"{body['tls-crt']}\n"
        "\n## Device Authentication Certificate(s)\n"
        f"{body['ca-crt']}\n"
    )
    result = cli("keys", "ca", "show", env=sandbox_env)
    assert result.exit_code == 0
    assert result.stdout == expected
    assert body["root-crt"] == (configured / "factory_ca.pem").read_text()


def test_show_just_flags_print_only_pem_that_update_takes_back(cli, sandbox_env, configured, tmp_path):
    body = _certs(cli, sandbox_env)
    for flag, field in (("--just-root", "root-crt"), ("--just-tls", "tls-crt"), ("--just-device-cas", "ca-crt")):
        result = cli("keys", "ca", "show", flag, env=sandbox_env)
        assert result.exit_code == 0
        assert result.stdout == body[field] + "\n", flag  # no heading: the PEM alone
    cas = tmp_path / "cas.pem"
    cas.write_text(cli("keys", "ca", "show", "--just-device-cas", env=sandbox_env).stdout)
    # `update` reads it whole: the same two CAs, so there is nothing to change.
    again = cli("keys", "ca", "update", cas, "--dry-run", env=sandbox_env)
    assert again.exit_code == 3 and "holds exactly the factory's device CAs" in again.stderr
    both = cli("keys", "ca", "show", "--just-root", "--just-tls", env=sandbox_env)
    assert both.exit_code == 2 and "--just-root and --just-tls are mutually exclusive" in both.stderr


def test_show_pretty_is_fioctls_go_layout(cli, sandbox_env, configured):
    pretty = cli("keys", "ca", "show", "--pretty", "--just-root", env=sandbox_env)
    assert pretty.exit_code == 0
    out = pretty.stdout.splitlines()
    assert out[0] == "Certificate:"
    assert "\tVersion: 3" in out and "\tSignature Algorithm: ECDSA-SHA256" in out
    assert f"\tIssuer: CN=Factory-CA,OU={FACTORY}" in out
    assert "\tSubject Public Key Info" in out and "\t\tNIST CURVE: P-256" in out
    assert "\tIs CA: true" in out
    assert "\t\tx509v3 Extended Key Usage: (critical)" in out and "\t\t\t ClientAuth ServerAuth " in out
    assert "\t\t\t keyCertSign cRLSign " in out
    assert any(line.startswith("\t\tNot After: ") and line.endswith(" +0000 UTC") for line in out)
    points = [line for line in out if line.startswith("\t\t\t04:")]
    assert len(points[0].rstrip(":").split(":")) == 15


def test_show_json_is_the_api_object(cli, sandbox_env, configured):
    data = json.loads(cli("keys", "ca", "show", "--format", "json", env=sandbox_env).stdout)
    assert data["root-crt"] == (configured / "factory_ca.pem").read_text()
    assert set(data) >= {"root-crt", "ca-crt", "tls-crt", "change-meta", "disabled-ca-serials"}


def test_the_newcomer_path_as_subprocesses(fioca_subprocess, tmp_path):
    """`fioca sandbox serve` in the background, then `fioca keys ca create` with its config."""
    import subprocess
    import sys
    import time

    data = tmp_path / "sandbox"
    server = subprocess.Popen([sys.executable, "-m", "fioca", "sandbox", "serve", "--data", str(data),
                               "--factory", FACTORY], stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(200):
            if (data / "sandbox.json").exists():
                break
            time.sleep(0.05)
        env = {"FIOCTL_CONFIG": str(data / "fioctl.yaml")}
        created = fioca_subprocess("keys", "ca", "create", tmp_path / "pki", "--yes", env=env)
        assert created.returncode == 0, created.stderr
        assert "Root of trust SHA-256 fingerprint:" in created.stdout
        shown = fioca_subprocess("keys", "ca", "show", "--just-root", env=env)
        assert shown.returncode == 0 and "BEGIN CERTIFICATE" in shown.stdout
        token = json.loads((data / "sandbox.json").read_text())["token"]
        assert token not in created.stdout + created.stderr + shown.stdout + shown.stderr
    finally:
        server.terminate()
        _, err = server.communicate(timeout=10)
    assert server.returncode == 0
    assert "sandbox ready" in err and token not in err


def test_the_secret_scan_catches_a_leak():
    """The negative twin of every output scan in the suite: a leaked token is caught."""
    from tests.conftest import KNOWN_SECRETS, assert_no_secret

    KNOWN_SECRETS.add("leaky-token-0123456789")
    try:
        with pytest.raises(AssertionError, match="appeared in fioca's output"):
            assert_no_secret("ok", "ERROR: bad token leaky-token-0123456789")
        assert_no_secret("nothing to see")
    finally:
        KNOWN_SECRETS.discard("leaky-token-0123456789")
