"""The device API: groups kept, `PUT /ota/devices/` pre-registration (as
factory-registration-ref calls it), the HEAD probe, one spelling per UUID on registration,
fioctl's device calls and the deny-list (`devices delete`, `list-denied`, `delete-denied`)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec
from sandbox_helpers import FACTORY, make_crl, serial_of
from test_gateway import foreign_ca
from test_gateway_lifecycle import HOLD
from test_gateway_support import (
    Device,
    Factory,
    fresh_factory,  # noqa: F401  (pytest fixture)
    make_csr,
    make_device,
    new_uuid,
    post_device,
    register_body,
    running_factory,
    start_factory,
)

SPELLINGS = [str.upper, lambda u: "{" + u + "}", lambda u: "urn:uuid:" + u, lambda u: u.replace("-", "")]
SPELLING_IDS = ["upper", "braces", "urn", "no-hyphens"]


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Factory]:
    with running_factory(tmp_path_factory.mktemp("devices-api")) as made:
        yield made


def _api(factory: Factory) -> str:
    return factory.client.base.split("/ota/factories/")[0]


def _call(factory: Factory, method: str, path: str, *, body=None, token: str | None = None) -> requests.Response:
    headers = {"OSF-TOKEN": factory.client.token if token is None else token} if token != "" else {}
    return factory.client.session.request(method, f"{_api(factory)}{path}", json=body, headers=headers,
                                          verify=factory.client.verify, timeout=10)


def _put(factory: Factory, device: Device, **fields) -> requests.Response:
    return _call(factory, "PUT", "/ota/devices/", body={"client.pem": device.cert_pem, **fields})


def _message(response: requests.Response) -> str:
    body = response.json()
    return " ".join([body["message"], *body.get("errors", [])])


# -- groups -----------------------------------------------------------------------------------------


def test_registration_keeps_the_group(factory: Factory) -> None:
    device_uuid = new_uuid()
    csr, _ = make_csr(device_uuid)
    assert post_device(factory.client, register_body(device_uuid, csr, group="kitchen")).status_code == 201
    assert factory.sandbox.store.device(device_uuid).group == "kitchen"
    shown = _call(factory, "GET", f"/ota/devices/{device_uuid}/?factory={FACTORY}&by-uuid=1").json()
    assert shown["device-group"] == "kitchen" and shown["group"] == {"name": "kitchen"}
    # Twin: without a group there is none; a group with a control character is refused.
    other = new_uuid()
    csr, _ = make_csr(other)
    assert post_device(factory.client, register_body(other, csr)).status_code == 201
    assert factory.sandbox.store.device(other).group is None
    bad = new_uuid()
    csr, _ = make_csr(bad)
    refused = post_device(factory.client, register_body(bad, csr, group="lab\x1b[2J"))
    assert refused.status_code == 400 and "group:" in _message(refused)


# -- PUT /ota/devices/ ---------------------------------------------------------------------------


def test_pre_registration_records_a_device_signed_elsewhere(factory: Factory, tmp_path: Path) -> None:
    device = make_device(tmp_path, factory.local_ca())  # as factory-registration-ref signs with a local CA
    answer = _put(factory, device, name="line-3", group="factory-floor")
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert (body["uuid"], body["name"], body["device-group"]) == (device.uuid, "line-3", "factory-floor")
    record = factory.stored(device)
    assert record.pubkey == device.public_key_pem() and record.last_seen is None
    assert record.ca_serial == serial_of(factory.flow.local_crt)
    # The pre-registered device connects with the same certificate: the same record.
    assert factory.get(device).json()["name"] == "line-3"
    again = _put(factory, device)
    assert again.status_code == 409 and "already exists" in _message(again)


def test_pre_registration_names_the_device_after_its_uuid_by_default(factory: Factory, tmp_path: Path) -> None:
    device = make_device(tmp_path, factory.local_ca())
    assert _put(factory, device).status_code == 201
    assert factory.stored(device).name == device.uuid


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda f, d: make_device(d, foreign_ca("fio-x", FACTORY)), "not signed by a device CA"),
        (lambda f, d: make_device(d, f.local_ca(), ca=True), "must not be a CA"),
        (lambda f, d: make_device(d, f.local_ca(), unit="other"), "not factory"),
        (lambda f, d: make_device(d, f.local_ca(), device_uuid=new_uuid().upper()), "lower-case"),
        (lambda f, d: make_device(d, f.local_ca(), usages=[]), "clientAuth"),
        (lambda f, d: make_device(d, f.local_ca(), not_before=datetime.now(UTC) - timedelta(days=9),
                                  not_after=datetime.now(UTC) - timedelta(days=1)), "expired"),
    ],
    ids=["foreign-ca", "ca-true", "wrong-ou", "upper-case-uuid", "no-client-auth", "expired"],
)
def test_pre_registration_holds_the_certificate_to_the_gateway_rules(factory: Factory, tmp_path: Path, make, words) -> None:
    device = make(factory, tmp_path)
    refused = _put(factory, device)
    assert refused.status_code == 400 and words in _message(refused)
    assert factory.sandbox.store.device(device.uuid) is None
    # Twin: a good certificate for the same purpose goes through.
    assert _put(factory, make_device(tmp_path / "good", factory.local_ca())).status_code == 201


@pytest.mark.parametrize("body", [{}, {"client.pem": 7}, {"client.pem": "not a pem"}, {"client.pem": "x", "name": ""}],
                         ids=["missing", "not-a-string", "not-pem", "empty-name"])
def test_malformed_pre_registrations_are_bad_requests(factory: Factory, body: dict) -> None:
    assert _call(factory, "PUT", "/ota/devices/", body=body).status_code == 400


def test_pre_registration_needs_the_token(factory: Factory, tmp_path: Path) -> None:
    device = make_device(tmp_path, factory.local_ca())
    assert _call(factory, "PUT", "/ota/devices/", body={"client.pem": device.cert_pem}, token="").status_code == 401
    assert factory.stored(device) is None


def test_pre_registration_under_a_disabled_ca_is_refused(fresh_factory: Factory, tmp_path: Path) -> None:
    factory = fresh_factory
    local = serial_of(factory.flow.local_crt)
    assert factory.client.patch_certs({"ca-revoke-crl": make_crl(factory.flow, [(local, HOLD)])}).status_code == 200
    refused = _put(factory, make_device(tmp_path / "a", factory.local_ca()))
    assert refused.status_code == 400 and "disabled" in _message(refused)


def test_pre_registration_before_the_pki_exists_is_a_conflict(tmp_path: Path) -> None:
    factory = start_factory(tmp_path, patch=False)
    try:
        device = make_device(tmp_path / "devices", factory.local_ca())
        refused = _put(factory, device)
        assert refused.status_code == 409 and "not configured" in _message(refused)
        assert factory.client.patch_certs(factory.flow.patch_body()).status_code == 200
        assert _put(factory, device).status_code == 201  # twin
    finally:
        factory.sandbox.stop()


def test_pre_registration_with_curl_as_factory_registration_ref_sends_it(factory: Factory, tmp_path: Path) -> None:
    device = make_device(tmp_path, factory.local_ca())
    body = tmp_path / "put.json"
    body.write_text(json.dumps({"client.pem": device.cert_pem, "name": "from-ref"}))
    done = subprocess.run(
        ["curl", "-sS", "--cacert", factory.client.verify, "-X", "PUT", "-H", f"OSF-TOKEN: {factory.client.token}",
         "-H", "Content-Type: application/json", "--data-binary", f"@{body}", "-o", "/dev/null", "-w", "%{http_code}",
         f"{_api(factory)}/ota/devices/"], capture_output=True, text=True, timeout=30,
    )
    assert done.stdout == "201" and factory.stored(device).name == "from-ref"


# -- HEAD, the probe --------------------------------------------------------------------------------


def test_head_probe_is_below_500_with_and_without_credentials(factory: Factory) -> None:
    assert _call(factory, "HEAD", "/ota/devices/", token="").status_code == 401  # what lmp-device-register sends
    head = _call(factory, "HEAD", "/ota/devices/")
    assert head.status_code == 200 and head.content == b""


# -- one spelling per uuid, on registration ---------------------------------------------------------


@pytest.mark.parametrize("spelling", SPELLINGS, ids=SPELLING_IDS)
def test_a_deleted_device_cannot_register_again_under_another_spelling(factory: Factory, spelling) -> None:
    device_uuid = new_uuid()
    csr, key = make_csr(device_uuid)
    assert post_device(factory.client, register_body(device_uuid, csr)).status_code == 201
    factory.sandbox.store.set_device_deny_listed(device_uuid)
    again = post_device(factory.client, register_body(device_uuid, make_csr(device_uuid)[0]))
    assert again.status_code == 409 and "deny-list" in _message(again)
    respelled = spelling(device_uuid)
    csr, _ = make_csr(respelled)
    refused = post_device(factory.client, register_body(respelled, csr))
    assert refused.status_code == 400 and "lower-case hyphenated" in _message(refused)
    assert factory.sandbox.store.device(respelled) is None


# -- fioctl's device calls and the deny-list --------------------------------------------------------


def test_fioctl_delete_list_denied_and_delete_denied(fresh_factory: Factory, tmp_path: Path) -> None:
    factory = fresh_factory
    key = ec.generate_private_key(ec.SECP256R1())
    device = make_device(tmp_path / "one", factory.local_ca(), key=key)
    assert factory.get(device).status == 200
    by_uuid = f"/ota/devices/{device.uuid}/?factory={FACTORY}&by-uuid=1"
    assert _call(factory, "GET", by_uuid).json()["uuid"] == device.uuid
    listed = _call(factory, "GET", f"/ota/devices/?factory={FACTORY}").json()
    assert device.uuid in {d["uuid"] for d in listed["devices"]} and listed["total"] == len(listed["devices"])

    assert _call(factory, "DELETE", by_uuid).status_code == 200  # fioctl devices delete
    assert factory.get(device).status == 403
    assert _call(factory, "GET", by_uuid).status_code == 404
    denied = _call(factory, "GET", f"/ota/factories/{FACTORY}/denied-devices/").json()
    assert [d["uuid"] for d in denied["devices"]] == [device.uuid]

    # delete-denied frees the uuid: the device registers again, even with a new key.
    upper = _call(factory, "DELETE", f"/ota/factories/{FACTORY}/denied-devices/{device.uuid.upper()}/")
    assert upper.status_code == 404  # twin: only the canonical spelling names it
    assert _call(factory, "DELETE", f"/ota/factories/{FACTORY}/denied-devices/{device.uuid}/").status_code == 200
    renewed = make_device(tmp_path / "two", factory.local_ca(), device_uuid=device.uuid)
    assert factory.get(renewed).status == 200
    assert _call(factory, "GET", f"/ota/factories/{FACTORY}/denied-devices/").json()["devices"] == []


def test_device_calls_by_name_and_their_refusals(factory: Factory) -> None:
    device_uuid = new_uuid()
    csr, _ = make_csr(device_uuid)
    post_device(factory.client, register_body(device_uuid, csr, name=f"named-{device_uuid}"))
    assert _call(factory, "GET", f"/ota/devices/named-{device_uuid}/?factory={FACTORY}").json()["uuid"] == device_uuid
    assert _call(factory, "GET", f"/ota/devices/nobody/?factory={FACTORY}").status_code == 404
    assert _call(factory, "GET", f"/ota/devices/named-{device_uuid}/?factory=other").status_code == 404
    assert _call(factory, "GET", f"/ota/devices/named-{device_uuid}/", token="").status_code == 401
