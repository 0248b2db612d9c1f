"""fioctl's settings (client credentials and their refresh, TOKEN_HEADER, CACERT added to the
system's CAs) and the HTTP client's promises (a total deadline, masked echoes, errors with a
way forward), against a small local HTTPS stub: the sandbox does not serve OAuth or honour
TOKEN_HEADER yet.
"""

from __future__ import annotations

import base64
import ssl
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
import yaml

from fioca import http_trust
from fioca.api import HttpClient, _ssl_context
from fioca.config import ClientCredentials, load_settings
from fioca.errors import ConfigError
from tests.conftest import FACTORY, KNOWN_SECRETS
from tests.http_stub import Answer, Stub

CERTS = ("GET", f"/ota/factories/{FACTORY}/certs/")
TOKEN_URL = ("POST", "/oauth/token/")
ACCESS = "access-token-0123456789"
REFRESHED = "refreshed-access-token-9876543210"
SECRET = "client-secret-0123456789"
REFRESH = "refresh-token-0123456789"


def not_configured(_request) -> Answer:
    return Answer(206, {"root-crt": None, "ca-crt": None, "tls-crt": None})


@pytest.fixture
def stub(tmp_path):
    routes = {CERTS: not_configured}
    with Stub(tmp_path / "stub", routes) as server:
        yield server


def write_config(path: Path, stub: Stub, **extra) -> Path:
    data = {"factory": FACTORY, "server": {"url": stub.url, "cacert": str(stub.cacert)}, **extra}
    path.write_text(yaml.safe_dump(data))
    return path


def credentials(stub: Stub, **overrides) -> dict:
    values = {
        "client_id": "cid", "client_secret": SECRET, "access_token": ACCESS, "refresh_token": REFRESH,
        "token_type": "bearer", "expires_in": 3600, "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "url": f"{stub.url}/oauth",
    }
    values.update(overrides)
    return values


@pytest.fixture(autouse=True)
def _secrets_are_scanned():
    KNOWN_SECRETS.update({ACCESS, REFRESHED, SECRET, REFRESH})
    yield
    KNOWN_SECRETS.difference_update({ACCESS, REFRESHED, SECRET, REFRESH})


def bearer(token: str) -> str:
    return "Bearer " + base64.b64encode(token.encode()).decode()  # fioctl sends base64(access token)


# -- client credentials (fioctl login) -------------------------------------------------------------


def test_a_valid_access_token_is_sent_as_fioctl_sends_it(cli, stub, tmp_path):
    config = write_config(tmp_path / "fioctl.yaml", stub, clientcredentials=credentials(stub))
    result = cli("-c", config, "keys", "ca", "show")
    assert result.exit_code == 1 and "Factory PKI is not configured" in result.stderr
    [request] = stub.requests
    assert request.headers["Authorization"] == bearer(ACCESS)
    assert "OSF-TOKEN" not in request.headers


def test_an_expired_token_is_refreshed_and_written_back(cli, stub, tmp_path):
    stub.routes[TOKEN_URL] = lambda _r: Answer(
        200, {"access_token": REFRESHED, "refresh_token": "new-refresh-token-000000", "token_type": "bearer", "expires_in": 7200}
    )
    KNOWN_SECRETS.add("new-refresh-token-000000")
    old = (datetime.now(UTC) - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    config = write_config(tmp_path / "fioctl.yaml", stub, clientcredentials=credentials(stub, created=old), note="kept")
    result = cli("-c", config, "keys", "ca", "show")
    assert "Factory PKI is not configured" in result.stderr, result.output
    token_request, certs_request = stub.requests
    assert (token_request.method, token_request.path) == TOKEN_URL
    form = dict(pair.split("=", 1) for pair in token_request.body.decode().split("&"))
    assert form == {"grant_type": "refresh_token", "refresh_token": REFRESH, "client_id": "cid", "client_secret": SECRET}
    assert "Authorization" not in token_request.headers
    assert certs_request.headers["Authorization"] == bearer(REFRESHED)
    saved = yaml.safe_load(config.read_text())
    assert saved["note"] == "kept" and saved["factory"] == FACTORY  # the rest of the file stays
    assert saved["clientcredentials"]["access_token"] == REFRESHED
    assert saved["clientcredentials"]["refresh_token"] == "new-refresh-token-000000"
    assert saved["clientcredentials"]["expires_in"] == 7200
    assert stat.S_IMODE(config.stat().st_mode) == 0o600  # it holds secrets


def test_no_access_token_yet_asks_for_one_with_the_client_credentials_grant(cli, stub, tmp_path):
    stub.routes[TOKEN_URL] = lambda _r: Answer(200, {"access_token": REFRESHED, "expires_in": 60})
    config = write_config(tmp_path / "fioctl.yaml", stub, clientcredentials=credentials(stub, access_token="", refresh_token=""))
    cli("-c", config, "keys", "ca", "show")
    form = dict(pair.split("=", 1) for pair in stub.requests[0].body.decode().split("&"))
    assert form["grant_type"] == "client_credentials" and "refresh_token" not in form
    assert stub.requests[1].headers["Authorization"] == bearer(REFRESHED)


def test_an_expired_token_without_refresh_token_is_fioctls_error(cli, stub, tmp_path):
    old = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    config = write_config(tmp_path / "fioctl.yaml", stub, clientcredentials=credentials(stub, created=old, refresh_token=""))
    result = cli("-c", config, "keys", "ca", "show")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == "ERROR: Missing refresh token"
    assert stub.requests == []


def test_a_refused_refresh_says_so_and_sends_nothing_else(cli, stub, tmp_path):
    stub.routes[TOKEN_URL] = lambda _r: Answer(401, {"message": f"bad client secret {SECRET}"})
    old = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    config = write_config(tmp_path / "fioctl.yaml", stub, clientcredentials=credentials(stub, created=old))
    before = config.read_text()
    result = cli("-c", config, "keys", "ca", "show")
    assert result.exit_code == 6
    assert "HTTP error during POST" in result.stderr and "/oauth/token/" in result.stderr
    assert "= bad client secret ********" in result.stderr  # the echoed secret is masked
    assert [r.path for r in stub.requests] == ["/oauth/token/"]
    assert config.read_text() == before


def test_a_token_wins_over_client_credentials(cli, stub, tmp_path):
    config = write_config(tmp_path / "fioctl.yaml", stub, token="file-token-0123456789", clientcredentials=credentials(stub))
    KNOWN_SECRETS.add("file-token-0123456789")
    cli("-c", config, "keys", "ca", "show")
    assert stub.requests[0].headers["OSF-TOKEN"] == "file-token-0123456789"
    assert "Authorization" not in stub.requests[0].headers


def test_client_credentials_are_read_as_fioctl_writes_them(tmp_path):
    config = tmp_path / "fioctl.yaml"
    config.write_text(
        "clientcredentials:\n  client_id: cid\n  client_secret: s3\n  access_token: a1\n  refresh_token: r2\n"
        "  token_type: bearer\n  expires_in: 3600\n  created: '2024-01-01T00:00:00Z'\n  url: https://app.foundries.io/oauth\n"
    )
    settings = load_settings(config=config, environ={})
    creds = settings.client_credentials
    assert creds == ClientCredentials("cid", "s3", "a1", "r2", "bearer", 3600.0, "2024-01-01T00:00:00Z", "https://app.foundries.io/oauth")
    assert creds.is_expired()
    assert not any(secret in repr(settings) for secret in ("'s3'", "'a1'", "'r2'"))
    assert not ClientCredentials("cid", access_token="a", expires_in=0, created="").is_expired()  # no lifetime: never
    assert settings.auth_source == f'"clientcredentials" in {config} (fioctl login)'
    with pytest.raises(ConfigError, match="creation date"):
        ClientCredentials("cid", expires_in=10, created="yesterday").is_expired()


# -- TOKEN_HEADER and CACERT -----------------------------------------------------------------------


def test_token_header_renames_the_header(cli, stub, tmp_path):
    config = write_config(tmp_path / "fioctl.yaml", stub)
    cli("-c", config, "-t", "tok-0123456789", "keys", "ca", "show", env={"TOKEN_HEADER": "X-Factory-Token"})
    headers = stub.requests[0].headers
    assert headers["X-Factory-Token"] == "tok-0123456789" and "OSF-TOKEN" not in headers


def test_cacert_is_added_to_the_system_cas_not_put_in_their_place(stub, tmp_path):
    config = write_config(tmp_path / "fioctl.yaml", stub)
    # What requests trusts on every verified connection: the system's CAs and certifi's bundle.
    reference = ssl.create_default_context()
    reference.load_verify_locations(cafile=requests.utils.DEFAULT_CA_BUNDLE_PATH)
    trusted = reference.cert_store_stats()["x509_ca"]
    with_bundle = _ssl_context(load_settings(config=config, environ={})).cert_store_stats()["x509_ca"]
    assert with_bundle == trusted + 1
    assert ssl.create_default_context().cert_store_stats()["x509_ca"] > 0, "the machine has a system CA store"


def test_certifis_bundle_is_loaded_once_into_the_context_not_again_per_connection(stub, tmp_path):
    # The context holds the bundle requests would have urllib3 load at each new connection.
    assert http_trust.certifi_bundle() == requests.utils.DEFAULT_CA_BUNDLE_PATH
    api = HttpClient(load_settings(config=write_config(tmp_path / "fioctl.yaml", stub), environ={}))
    pool = api._session.get_adapter(stub.url).get_connection_with_tls_context(
        requests.Request("GET", stub.url).prepare(), verify=True
    )
    api._session.get_adapter(stub.url).cert_verify(pool, stub.url, True, None)
    assert pool.cert_reqs == "CERT_REQUIRED" and pool.ca_certs is None


def test_without_cacert_the_stubs_private_ca_is_not_trusted(cli, stub, tmp_path):
    config = tmp_path / "fioctl.yaml"
    config.write_text(yaml.safe_dump({"factory": FACTORY, "server": {"url": stub.url}}))
    result = cli("-c", config, "-t", "tok-0123456789", "keys", "ca", "show")
    assert result.exit_code == 6 and "certificate verify failed" in result.stderr and "CACERT" in result.stderr
    ok = cli("-c", config, "-t", "tok-0123456789", "keys", "ca", "show", env={"CACERT": str(stub.cacert)})
    assert "Factory PKI is not configured" in ok.stderr


# -- the HTTP client ---------------------------------------------------------------------------------


def test_a_trickled_answer_is_cut_at_the_total_deadline(cli, stub, tmp_path):
    # 40 bytes at 0.2 s each: every read succeeds within the read timeout, the whole takes 8 s.
    stub.routes[CERTS] = lambda _r: Answer(200, b'{"root-crt": null, "padding": "xxxxxxx"}', trickle_seconds=0.2)
    config = write_config(tmp_path / "fioctl.yaml", stub)
    result = cli("-c", config, "-t", "tok-0123456789", "keys", "ca", "show", env={"FIOCA_HTTP_TIMEOUT": "1"})
    assert result.exit_code == 6
    assert result.stderr.splitlines()[0] == (
        f"ERROR: timed out during GET '{stub.url}/ota/factories/{FACTORY}/certs/': no complete answer within 1 s"
    )
    assert "FIOCA_HTTP_TIMEOUT" in result.stderr


def test_an_answer_within_the_deadline_is_read_whole(cli, stub, tmp_path):
    stub.routes[CERTS] = lambda _r: Answer(206, b'{"root-crt": null}', trickle_seconds=0.01)
    config = write_config(tmp_path / "fioctl.yaml", stub)
    result = cli("-c", config, "-t", "tok-0123456789", "keys", "ca", "show", env={"FIOCA_HTTP_TIMEOUT": "30"})
    assert result.exit_code == 1 and "Factory PKI is not configured" in result.stderr


def test_a_token_echoed_in_an_error_body_is_masked(cli, stub, tmp_path):
    token = "echoed-token-0123456789"
    stub.routes[CERTS] = lambda r: Answer(
        403, {"message": f"token {r.headers['OSF-TOKEN']} lacks scope", "errors": [f"got {r.headers['OSF-TOKEN']}"]}
    )
    config = write_config(tmp_path / "fioctl.yaml", stub)
    result = cli("-c", config, "-t", token, "keys", "ca", "show")
    assert result.exit_code == 6
    lines = result.stderr.splitlines()
    assert lines[1:3] == ["= token ******** lacks scope", " * got ********"]
    assert "the server did not accept the credentials from -t/--token" in lines[3]


def test_a_body_without_msg_is_shown_as_fioctl_shows_it(cli, stub, tmp_path):
    config = write_config(tmp_path / "fioctl.yaml", stub)
    stub.routes[CERTS] = lambda _r: Answer(500, {"detail": "boom"})
    short = cli("-c", config, "-t", "tok-0123456789", "keys", "ca", "show")
    assert short.stderr.splitlines()[1] == '= {"detail": "boom"}'
    stub.routes[CERTS] = lambda _r: Answer(500, {"detail": "x" * 600})
    long = cli("-c", config, "-t", "tok-0123456789", "keys", "ca", "show")
    assert long.stderr.splitlines()[1] == "= Error body too long, try to use the --verbose option"


def test_control_characters_from_the_server_are_made_visible(cli, stub, tmp_path):
    stub.routes[CERTS] = lambda _r: Answer(400, {"message": "bad\x1b[2J\x1b[1;1HUpload? [y/N]\rok\u202e"})
    config = write_config(tmp_path / "fioctl.yaml", stub)
    result = cli("-c", config, "-t", "tok-0123456789", "keys", "ca", "show")
    assert "= bad\\x1b[2J\\x1b[1;1HUpload? [y/N]\\rok\\u202e" in result.stderr
    assert "\x1b" not in result.output and "\r" not in result.output and "\u202e" not in result.output


def test_a_stopped_sandbox_suggests_starting_it(cli, tmp_path):
    from fioca.sandbox.server import Sandbox

    with Sandbox(tmp_path / "sandbox", factory=FACTORY) as box:
        config = box.data_dir / "fioctl.yaml"
    result = cli("-c", config, "keys", "ca", "show")
    assert result.exit_code == 6
    lines = result.stderr.splitlines()
    assert "cannot reach the server" in lines[0] and "Connection refused" in lines[0]
    assert lines[1] == f"  is the sandbox running? Start it with `fioca sandbox serve --data {box.data_dir}`"


def test_verbose_never_shows_a_token_or_bearer(cli, stub, tmp_path):
    config = write_config(tmp_path / "fioctl.yaml", stub, clientcredentials=credentials(stub))
    result = cli("-c", config, "keys", "ca", "show", "-v")  # -v anywhere, as fioctl takes it
    assert f"GET {stub.url}/ota/factories/{FACTORY}/certs/ -> 206" in result.stderr
    assert base64.b64encode(ACCESS.encode()).decode() not in result.output


def test_device_registration_api_is_lmp_device_registers(stub, tmp_path):
    """HEAD without a token (below 500 is fine), then POST with it; DEVICE_API names the endpoint."""
    from fioca.api import DeviceRegistrationApi

    stub.routes[("HEAD", "/sign")] = lambda _r: Answer(401, {})
    stub.routes[("POST", "/sign")] = lambda _r: Answer(201, {"client.pem": "..."})
    config = write_config(tmp_path / "fioctl.yaml", stub, token="tok-0123456789")
    settings = load_settings(config=config, environ={"DEVICE_API": f"{stub.url}/sign", "DEVICE_FACTORY": "other"})
    api = DeviceRegistrationApi(settings)
    assert api.factory == "other" and api.probe() == 401
    assert api.create({"name": "d"}).status == 201
    head, post = stub.requests
    assert "OSF-TOKEN" not in head.headers and post.headers["OSF-TOKEN"] == "tok-0123456789"
    default = DeviceRegistrationApi(load_settings(config=config, environ={}))
    assert default.devices_url == f"{stub.url}/ota/devices/" and default.factory == FACTORY
