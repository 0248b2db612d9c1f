"""Credentials as fioctl and lmp-device-register send them: OSF-TOKEN, a header renamed by
TOKEN_HEADER, and OAuth (fioctl login's client credentials and refresh; lmp-device-register's
device flow with `Authorization: Bearer base64(access_token)`), with the exact paths and form
bodies of their sources, driven with curl as well as requests."""

from __future__ import annotations

import base64
import json
import subprocess
import uuid as uuid_module
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sandbox_helpers import FACTORY
from test_gateway_support import make_csr, register_body

from fioca.sandbox import Sandbox

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


@pytest.fixture
def renamed(tmp_path: Path) -> Iterator[Sandbox]:
    with Sandbox(tmp_path / "renamed", factory=FACTORY, token_header="X-Test-Token") as box:
        yield box


def _certs(box: Sandbox, headers: dict[str, str]) -> requests.Response:
    return requests.get(f"{box.info.api_url}/ota/factories/{FACTORY}/certs/", headers=headers,
                        verify=box.info.cacert, timeout=10)


def _bearer(access_token: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + base64.b64encode(access_token.encode()).decode()}


def _form(box: Sandbox, path: str, body: str) -> requests.Response:
    """A form POST as the clients send it: fioctl's PostForm, lmp-device-register's raw string."""
    return requests.post(f"{box.info.oauth_url}{path}", data=body, verify=box.info.cacert, timeout=10,
                         headers={"Content-Type": "application/x-www-form-urlencoded"})


def _client_credentials(box: Sandbox, secret: str | None = None) -> requests.Response:
    info = box.info
    return _form(box, "/token/", f"grant_type=client_credentials&client_id={info.client_id}"
                                 f"&client_secret={secret or info.client_secret}")


# -- the API token ---------------------------------------------------------------------------------


def test_a_renamed_token_header_carries_the_token_verbatim(renamed: Sandbox, sandbox: Sandbox) -> None:
    token = renamed.info.token
    assert _certs(renamed, {"X-Test-Token": token}).status_code == 206
    assert _certs(renamed, {"x-test-token": token}).status_code == 206  # header names are case-blind
    assert _certs(renamed, {"OSF-TOKEN": token}).status_code == 206  # the service's own still works
    assert _certs(renamed, {"X-Test-Token": "Bearer " + token}).status_code == 401  # verbatim, no prefix
    assert _certs(renamed, {"X-Test-Token": token[:-1]}).status_code == 401
    # Twin: a sandbox not told of the header does not read it.
    assert _certs(sandbox, {"X-Test-Token": sandbox.info.token}).status_code == 401


def test_fioctl_style_token_header_with_curl(renamed: Sandbox) -> None:
    info = renamed.info
    url = f"{info.api_url}/ota/factories/{FACTORY}/users/self/"
    base = ["curl", "-sS", "--cacert", str(info.cacert), "-o", "/dev/null", "-w", "%{http_code}", url]
    assert subprocess.run([*base, "-H", f"X-Test-Token: {info.token}"], capture_output=True, text=True).stdout == "200"
    assert subprocess.run([*base, "-H", "X-Test-Token: wrong"], capture_output=True, text=True).stdout == "401"


# -- fioctl login: client credentials and refresh --------------------------------------------------


def test_client_credentials_token_works_as_fioctl_sends_it(sandbox: Sandbox) -> None:
    answer = _client_credentials(sandbox)
    assert answer.status_code == 200, answer.text  # fioctl accepts exactly 200
    body = answer.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert body["orgs"] == [{"name": FACTORY}] and body["refresh_token"] and body["scope"] == f"{FACTORY}:all"
    assert _certs(sandbox, _bearer(body["access_token"])).status_code == 206
    # Twins: the raw (not base64) token, and a wrong secret, are refused.
    assert _certs(sandbox, {"Authorization": f"Bearer {body['access_token']}"}).status_code == 401
    wrong = _client_credentials(sandbox, secret="not-the-secret")
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"


def test_refresh_replaces_the_pair_once(sandbox: Sandbox) -> None:
    first = _client_credentials(sandbox).json()
    info = sandbox.info
    refresh = (f"grant_type=refresh_token&client_id={info.client_id}&client_secret={info.client_secret}"
               f"&refresh_token={first['refresh_token']}")
    second = _form(sandbox, "/token/", refresh)
    assert second.status_code == 200, second.text
    new = second.json()
    assert new["access_token"] != first["access_token"] and new["refresh_token"] != first["refresh_token"]
    assert _certs(sandbox, _bearer(new["access_token"])).status_code == 206
    assert _certs(sandbox, _bearer(first["access_token"])).status_code == 401  # ended with its refresh token
    again = _form(sandbox, "/token/", refresh)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"  # a refresh token works once


def test_an_expired_access_token_is_refused(sandbox: Sandbox) -> None:
    token = _client_credentials(sandbox).json()["access_token"]
    assert _certs(sandbox, _bearer(token)).status_code == 206
    sandbox.store._execute("UPDATE oauth_tokens SET expires_at = 0")
    assert _certs(sandbox, _bearer(token)).status_code == 401


def test_fioctl_login_with_curl_and_the_oauth_config(sandbox: Sandbox) -> None:
    """The fioctl-oauth.yaml a sandbox writes, used as `fioctl login` uses its values."""
    import yaml

    config = yaml.safe_load((sandbox.data_dir / "fioctl-oauth.yaml").read_text())
    creds = config["clientcredentials"]
    done = subprocess.run(
        ["curl", "-sS", "--cacert", str(sandbox.info.cacert), f"{creds['url']}/token/",
         "--data-urlencode", "grant_type=client_credentials", "--data-urlencode", f"client_id={creds['client_id']}",
         "--data-urlencode", f"client_secret={creds['client_secret']}"],
        capture_output=True, text=True, timeout=30,
    )
    token = json.loads(done.stdout)["access_token"]
    probe = subprocess.run(
        ["curl", "-sS", "--cacert", str(sandbox.info.cacert), "-o", "/dev/null", "-w", "%{http_code}",
         "-H", "Authorization: Bearer " + base64.b64encode(token.encode()).decode(),
         f"{config['server']['url']}/ota/factories/{config['factory']}/certs/"],
        capture_output=True, text=True, timeout=30,
    )
    assert probe.stdout == "206"


@pytest.mark.parametrize("body", ["grant_type=password&username=a&password=b", "grant_type=client_credentials&grant_type=x",
                                  "%zz"], ids=["unsupported-grant", "repeated-parameter", "not-a-form"])
def test_bad_token_requests_are_rfc6749_errors(sandbox: Sandbox, body: str) -> None:
    answer = _form(sandbox, "/token/", body)
    assert answer.status_code == 400
    assert answer.json()["error"] in ("unsupported_grant_type", "invalid_request")


# -- lmp-device-register's device flow -------------------------------------------------------------


def _device_flow_start(box: Sandbox, client_id: str, scope: str | None = None) -> requests.Response:
    return _form(box, "/authorization/device/", f"client_id={client_id}&scope={scope or FACTORY + ':devices:create'}")


def _device_poll(box: Sandbox, device_code: str, client_id: str) -> requests.Response:
    return _form(box, "/token/", f"grant_type={DEVICE_GRANT}&device_code={device_code}&client_id={client_id}"
                                 f"&scope={FACTORY}:devices:create")


def test_device_flow_pending_approved_used(sandbox: Sandbox) -> None:
    device_uuid = str(uuid_module.uuid4())
    started = _device_flow_start(sandbox, device_uuid)
    assert started.status_code == 200, started.text
    grant = started.json()
    assert set(grant) >= {"device_code", "user_code", "verification_uri", "expires_in", "interval"}
    assert grant["verification_uri"] == f"{sandbox.info.oauth_url}/device/"
    page = requests.get(grant["verification_uri"], verify=sandbox.info.cacert, timeout=10)
    assert page.status_code == 200 and "approve-device" in page.json()["message"]

    pending = _device_poll(sandbox, grant["device_code"], device_uuid)
    assert pending.status_code == 400 and pending.json()["error"] == "authorization_pending"
    assert sandbox.approve_device(grant["user_code"])
    token = _device_poll(sandbox, grant["device_code"], device_uuid)
    assert token.status_code == 200, token.text
    access_token = token.json()["access_token"]
    used = _device_poll(sandbox, grant["device_code"], device_uuid)
    assert used.status_code == 400 and used.json()["error"] == "invalid_grant"  # once

    # The token creates devices (lmp-device-register's header) and does nothing else.
    csr, _ = make_csr(device_uuid)
    created = requests.post(f"{sandbox.info.api_url}/ota/devices/", json=register_body(device_uuid, csr),
                            headers=_bearer(access_token), verify=sandbox.info.cacert, timeout=10)
    assert created.status_code == 201, created.text
    assert _certs(sandbox, _bearer(access_token)).status_code == 403


def test_device_flow_refusals(sandbox: Sandbox) -> None:
    device_uuid = str(uuid_module.uuid4())
    wrong_scope = _device_flow_start(sandbox, device_uuid, scope="other-factory:devices:create")
    assert wrong_scope.status_code == 400 and wrong_scope.json()["error"] == "invalid_scope"
    assert _device_flow_start(sandbox, "").json()["error"] == "invalid_request"
    grant = _device_flow_start(sandbox, device_uuid).json()
    # Another client cannot take this device's code.
    assert _device_poll(sandbox, grant["device_code"], str(uuid_module.uuid4())).json()["error"] == "invalid_grant"
    assert not sandbox.approve_device("BCDF-GHJK")  # nobody waits with that code
    assert sandbox.approve_device(grant["user_code"], approve=False)
    assert _device_poll(sandbox, grant["device_code"], device_uuid).json()["error"] == "access_denied"
    late = _device_flow_start(sandbox, device_uuid).json()
    sandbox.store._execute("UPDATE device_authorizations SET expires_at = 0")
    assert not sandbox.approve_device(late["user_code"])
    assert _device_poll(sandbox, late["device_code"], device_uuid).json()["error"] == "expired_token"


def test_lmp_device_register_device_flow_with_curl(sandbox: Sandbox, tmp_path: Path) -> None:
    """The requests lmp-device-register makes, byte for byte as its source builds them (raw
    form strings, the JSON body with `Content-type: application/json`, the HEAD probe)."""
    info, device_uuid = sandbox.info, str(uuid_module.uuid4())
    curl = ["curl", "-sS", "--cacert", str(info.cacert)]
    probe = subprocess.run([*curl, "-I", "-o", "/dev/null", "-w", "%{http_code}", f"{info.api_url}/ota/devices/"],
                           capture_output=True, text=True, timeout=30)
    assert probe.stdout == "401"  # "401 or 400 is returned under normal circumstances": below 500
    scope = f"{FACTORY}:devices:create"
    started = subprocess.run([*curl, "-d", f"client_id={device_uuid}&scope={scope}",
                              f"{info.oauth_url}/authorization/device/"], capture_output=True, text=True, timeout=30)
    grant = json.loads(started.stdout)
    assert sandbox.approve_device(grant["user_code"])
    poll = subprocess.run([*curl, "-d", f"grant_type={DEVICE_GRANT}&device_code={grant['device_code']}"
                           f"&client_id={device_uuid}&scope={scope}", f"{info.oauth_url}/token/"],
                          capture_output=True, text=True, timeout=30)
    token = json.loads(poll.stdout)["access_token"]
    csr, _ = make_csr(device_uuid)
    body = tmp_path / "device.json"
    # lmp-device-register's ptree writes every leaf as a string, booleans included.
    body.write_text(json.dumps(register_body(device_uuid, csr, **{"use-ostree-server": "true"})))
    created = subprocess.run(
        [*curl, "-o", str(tmp_path / "answer.json"), "-w", "%{http_code}", "-H", "Content-type: application/json",
         "-H", "Authorization: Bearer " + base64.b64encode(token.encode()).decode(), "--data-binary", f"@{body}",
         f"{info.api_url}/ota/devices/"], capture_output=True, text=True, timeout=30,
    )
    assert created.stdout == "201", (tmp_path / "answer.json").read_text()
    assert set(json.loads((tmp_path / "answer.json").read_text())) == {"client.pem", "root.crt", "sota.toml", "client.chained"}
