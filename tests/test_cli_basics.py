"""Global options, settings precedence, error rendering, `show`, and the token's secrecy."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import yaml

from fioca.api import NOT_CONFIGURED
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


def test_missing_factory_and_token(cli, tmp_path):
    result = cli("keys", "ca", "show", env={"FIOCTL_TOKEN": "t"})
    assert result.exit_code == 1
    assert result.stderr.strip() == 'ERROR: Required flag "factory" not set'
    no_token = cli("-f", "acme", "keys", "ca", "show")
    assert "no API token" in no_token.stderr and no_token.exit_code == 1


# -- the API's answers and errors ------------------------------------------------------------

def test_show_before_create_says_not_configured(cli, sandbox_env):
    result = cli("keys", "ca", "show", env=sandbox_env)
    assert result.exit_code == 1
    assert result.stderr.strip() == f"ERROR: {NOT_CONFIGURED}"


def test_bad_token_is_rendered_as_fioctl_renders_http_errors(cli, sandbox, sandbox_env):
    result = cli("-t", "wrong-token", "keys", "ca", "show", env=sandbox_env)
    assert result.exit_code == 6
    url = f"{sandbox.info.api_url}/ota/factories/{FACTORY}/certs/"
    assert result.stderr.splitlines()[0] == f"ERROR: HTTP error during GET '{url}': 401 Unauthorized"
    assert result.stderr.splitlines()[1].startswith("= ")
    assert "wrong-token" not in result.output


def test_unreachable_server_is_one_line(cli, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connection refused
        result = cli("-f", "acme", "-t", "tok", "--server", f"http://127.0.0.1:{port}", "keys", "ca", "show")
    assert result.exit_code == 6
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("ERROR: cannot reach the server during GET")


def test_wrong_ca_for_the_api_is_a_tls_error(cli, sandbox, tmp_path):
    config = write_config(tmp_path / "c.yaml", factory=FACTORY, token=sandbox.info.token,
                          server={"url": sandbox.info.api_url})  # no cacert: the system store
    result = cli("-c", config, "keys", "ca", "show")
    assert result.exit_code == 6
    assert result.stderr.startswith("ERROR: TLS error during GET")
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


def test_show_in_fioctl_layout(cli, sandbox_env, configured):
    result = cli("keys", "ca", "show", env=sandbox_env)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    headers = [line for line in lines if line.startswith("## ")]
    assert headers == ["## Change Metadata", "## Factory root certificate", "## Server TLS Certificate",
                       "## Device Authentication Certificate(s)"]
    assert lines[1].startswith("Created at: ")
    assert any(line.startswith("Created by: ") for line in lines)
    assert not any(line.startswith("Updated at: ") for line in lines)
    root_at = lines.index("## Factory root certificate")
    assert lines[root_at + 1] == "-----BEGIN CERTIFICATE-----"
    assert (configured / "factory_ca.pem").read_text().strip() in result.stdout
    assert lines[lines.index("## Device Authentication Certificate(s)") - 1] == ""


def test_show_pretty_and_just_flags(cli, sandbox_env, configured):
    pretty = cli("keys", "ca", "show", "--pretty", "--just-root", env=sandbox_env)
    assert pretty.exit_code == 0
    out = pretty.stdout.splitlines()
    assert out[0] == "## Factory root certificate"
    assert out[1] == "Certificate:"
    assert "\tVersion: 3" in out and "\tSignature Algorithm: ECDSA-SHA256" in out
    assert f"\tIssuer: CN=Factory-CA,OU={FACTORY}" in out
    assert "\t\tNIST CURVE: P-256" in out
    assert "\tIs CA: true" in out
    assert "\t\tx509v3 Extended Key Usage: (critical)" in out
    point = [line for line in out if line.startswith("\t\t\t04:")][0]
    assert len(point.strip().rstrip(":").split(":")) == 15
    devices = cli("keys", "ca", "show", "--just-device-cas", env=sandbox_env).stdout
    assert devices.count("BEGIN CERTIFICATE") == 2 and "## Factory root" not in devices
    tls = cli("keys", "ca", "show", "--just-tls", env=sandbox_env).stdout
    assert tls.startswith("## Server TLS Certificate\n") and tls.count("BEGIN CERTIFICATE") == 1
    both = cli("keys", "ca", "show", "--just-root", "--just-tls", env=sandbox_env)
    assert both.exit_code == 2 and "Only one of" in both.stderr


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
