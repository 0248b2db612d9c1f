"""The sandbox API's HTTP surface: TLS, auth, routing, JSON errors, POST CSRs, users/self."""

from __future__ import annotations

import base64
import re
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sandbox_helpers import FACTORY, Client

from fioca import facts
from fioca.pki import reference
from fioca.sandbox import Sandbox


def test_https_is_verified_with_the_api_ca_and_not_without(sandbox: Sandbox) -> None:
    url = f"{sandbox.info.api_url}/ota/factories/{FACTORY}/certs/"
    headers = {"OSF-TOKEN": sandbox.info.token}
    assert requests.get(url, headers=headers, verify=str(sandbox.info.cacert), timeout=5).status_code == 206
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(url, headers=headers, verify=True, timeout=5)  # system CAs do not know the sandbox


@pytest.mark.parametrize("token", ["", "wrong-token"], ids=["missing", "wrong"])
def test_a_missing_or_wrong_token_is_401_json(sandbox: Sandbox, token: str) -> None:
    for method, path in (("GET", "certs/"), ("POST", "certs/"), ("PATCH", "certs/"), ("GET", "users/self/")):
        response = Client(sandbox, token=token).request(method, path, {})
        assert response.status_code == 401, (method, path)
        assert response.headers["Content-Type"] == "application/json"
        assert response.json()["message"] == "Unauthorized"
    assert Client(sandbox).get_certs().status_code == 206  # the twin: the right token passes


def test_the_api_token_is_not_a_bearer_token(sandbox: Sandbox) -> None:
    """Bearer carries base64(OAuth access token) (test_oauth.py), never the API token."""
    client = Client(sandbox, token="")
    for value in (sandbox.info.token, base64.b64encode(sandbox.info.token.encode()).decode(), "nope"):
        assert client.request("GET", "certs/", headers={"Authorization": f"Bearer {value}"}).status_code == 401
    assert client.request("GET", "certs/", headers={"OSF-TOKEN": sandbox.info.token}).status_code == 206


def test_unknown_factory_path_and_method(sandbox: Sandbox, client: Client) -> None:
    headers = {"OSF-TOKEN": sandbox.info.token}
    base = sandbox.info.api_url
    verify = client.verify
    other = requests.get(f"{base}/ota/factories/other-factory/certs/", headers=headers, verify=verify, timeout=5)
    assert other.status_code == 404 and "other-factory" in other.json()["message"]
    assert requests.get(f"{base}/ota/factories/{FACTORY}/nothing/", headers=headers, verify=verify, timeout=5).status_code == 404
    assert requests.get(f"{base}/ota/factories/{FACTORY}/certs", headers=headers, verify=verify, timeout=5).status_code == 404
    deleted = client.request("DELETE", "certs/")
    assert deleted.status_code == 405 and deleted.headers["Allow"] == "GET, PATCH, POST"


def test_bad_json_is_400(client: Client) -> None:
    for method in ("POST", "PATCH"):
        response = client.session.request(
            method, f"{client.base}/certs/", data=b"{not json", verify=client.verify,
            headers={"OSF-TOKEN": client.token, "Content-Type": "application/json"}, timeout=5,
        )
        assert response.status_code == 400
        assert response.json()["message"] == "Invalid JSON body"
    assert client.post_certs([]).status_code == 400  # JSON, but not an object
    assert client.patch_certs({"root-crt": 42}).status_code == 400
    assert client.patch_certs({"root-crt": "not a pem"}).status_code == 400
    assert client.patch_certs({}).status_code == 400  # nothing to update


def test_get_unconfigured_is_206_with_nulls(client: Client) -> None:
    response = client.get_certs()
    assert response.status_code == 206
    body = response.json()
    assert body["root-crt"] is None and body["ca-crt"] is None and body["tls-crt"] is None
    assert body["disabled-ca-serials"] == []


def test_users_self(sandbox: Sandbox, client: Client) -> None:
    me = client.user_self()
    assert me["role"] == "owner" and me["name"]
    assert len(me["polis-id"]) == 24 and int(me["polis-id"], 16) >= 0
    assert sandbox.store is not None and sandbox.store.factory().polis_id == me["polis-id"]


def _csr(pem: str) -> x509.CertificateSigningRequest:
    csr = x509.load_pem_x509_csr(pem.encode())
    assert csr.is_signature_valid
    assert isinstance(csr.public_key(), ec.EllipticCurvePublicKey)
    assert csr.public_key().curve.name == "secp256r1"
    return csr


def _ou(csr: x509.CertificateSigningRequest) -> str:
    return csr.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value


UUID_LIKE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def test_post_empty_returns_real_csrs_and_the_api_scripts(sandbox: Sandbox, client: Client) -> None:
    response = client.post_certs({})
    assert response.status_code == 201
    answer = response.json()
    gateway_id = sandbox.store.factory().gateway_id
    assert UUID_LIKE.match(gateway_id)  # as real ones: ec056c71-...

    tls = _csr(answer["tls-csr"])
    assert tls.subject.rfc4514_string() == f"CN={gateway_id}.ota-lite.foundries.io"  # a CN only, as fioctl models it
    sans = tls.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [
        f"{gateway_id}.ota-lite.foundries.io",
        f"{gateway_id}.ostree.foundries.io",
    ]
    ca = _csr(answer["ca-csr"])
    assert _ou(ca) == FACTORY
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert tls.public_key() != ca.public_key()

    local_ca_cn = f"fio-{client.user_self()['polis-id']}"
    expected = reference.api_scripts("api-2026", factory=FACTORY, local_ca_cn=local_ca_cn)  # the default
    assert {name: answer[name] for name in facts.SCRIPT_NAMES} == expected
    assert f"OU = {FACTORY}" in answer["create_ca"]
    assert "est-tls-csr" not in answer

    # The twin: another POST makes new keys, for the same stable gateway names.
    again = client.post_certs({}).json()
    assert _csr(again["tls-csr"]).public_key() != tls.public_key()
    assert _csr(again["tls-csr"]).subject == tls.subject


def test_post_modern_body_returns_only_what_was_asked(sandbox: Sandbox, client: Client) -> None:
    answer = client.post_certs({"first-time-init": True, "tls-csr": True, "ca-csr": False, "est-tls-csr": True})
    assert answer.status_code == 201
    body = answer.json()
    assert "tls-csr" in body and "ca-csr" not in body
    est = _csr(body["est-tls-csr"])
    gateway_id = sandbox.store.factory().gateway_id
    assert est.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    ) == [f"{gateway_id}.est.foundries.io"]
    assert client.post_certs({"first-time-init": True}).status_code == 400  # asked for nothing
    assert client.post_certs({"first-time-init": "yes", "tls-csr": True}).status_code == 400


def test_post_not_first_time_needs_a_root(client: Client) -> None:
    response = client.post_certs({"first-time-init": False, "ca-csr": True, "tls-csr": False, "est-tls-csr": False})
    assert response.status_code == 409
    assert "not configured" in response.json()["message"]


def test_injected_fault_fails_the_next_matching_request_once(sandbox: Sandbox, client: Client) -> None:
    sandbox.inject_fault(method="GET", route="certs", status=503, message="try later")
    assert client.user_self()["role"] == "owner"  # another route: untouched
    failed = client.get_certs()
    assert failed.status_code == 503 and failed.json()["message"] == "try later"
    assert client.get_certs().status_code == 206


def test_concurrent_requests_are_served(client: Client) -> None:
    clients = [Client.__new__(Client) for _ in range(8)]
    for other in clients:
        other.__dict__.update(client.__dict__, session=requests.Session())
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda c: c.get_certs().status_code, clients * 4))
    assert statuses == [206] * 32
