"""The server-side rules of PKI-SPEC section 2, each with its positive case and negative twins.
Certificates come from the rendered reference scripts run with real openssl."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from sandbox_helpers import (
    FACTORY,
    Client,
    Flow,
    make_crl,
    name,
    run,
    run_create_flow,
    serial_of,
    sign_with_root,
    write_scripts,
)

from fioca.pki import reference
from fioca.sandbox import Sandbox

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def _refused(response: requests.Response, status: int, *words: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    text = " ".join([body["message"], *body["errors"]])
    for word in words:
        assert word in text, (word, text)
    return body


def _foreign_scripts(flow: Flow, *, factory: str = FACTORY, local_ca_cn: str) -> Path:
    """The flow's PKI dir with create_device_ca rendered differently (same root)."""
    scripts = reference.api_scripts("api-2026", factory=factory, local_ca_cn=local_ca_cn)
    write_scripts(flow.pki_dir, {"create_device_ca": scripts["create_device_ca"]})
    return flow.pki_dir


# -- the happy path ----------------------------------------------------------------------------


def test_documented_flow_is_accepted_and_served_back(sandbox: Sandbox, client: Client, flow: Flow) -> None:
    response = client.patch_certs(flow.patch_body())
    assert response.status_code == 200, response.text

    got = client.get_certs()
    assert got.status_code == 200
    body = got.json()
    assert body["root-crt"] == flow.root_crt
    assert body["tls-crt"] == flow.tls_crt
    assert body["ca-crt"] == flow.ca_crt
    assert body["est-tls-crt"] is None
    assert body["disabled-ca-serials"] == []
    meta = body["change-meta"]
    assert meta["created-by"] == client.user_self()["name"]
    assert ISO_UTC.match(meta["created-at"])
    assert meta["updated-by"] is None and meta["updated-at"] is None

    # What the gateway and registration will use: the backend key behind tls-crt, the online CA.
    identity = sandbox.backend.gateway_identity()
    assert identity is not None and identity.cert_pem == flow.tls_crt and "PRIVATE KEY" in identity.key_pem
    online = sandbox.backend.online_ca()
    assert online is not None and online.serial == serial_of(flow.online_crt)
    assert [(ca.serial, ca.online) for ca in sandbox.backend.device_cas()] == [
        (serial_of(flow.online_crt), True),
        (serial_of(flow.local_crt), False),
    ]


def test_script_era_echo_of_the_post_answer_is_ignored(client: Client, tmp_path: Path) -> None:
    answer = client.post_certs({}).json()
    flow = run_create_flow(tmp_path / "pki", answer)
    response = client.patch_certs({**answer, **flow.patch_body(), "est-tls-crt": "", "ca-revoke-crl": None})
    assert response.status_code == 200, response.text


def test_root_is_set_once(client: Client, configured: Flow, tmp_path: Path) -> None:
    _refused(client.patch_certs({"root-crt": configured.root_crt}), 409, "only be set once")
    _refused(client.post_certs({}), 409, "already configured")
    _refused(client.post_certs({"first-time-init": True, "tls-csr": True}), 409, "already configured")
    _refused(client.post_certs({"first-time-init": True}), 409, "already configured")
    # The twin: adding to an existing PKI is allowed.
    assert client.post_certs({"first-time-init": False, "ca-csr": True}).status_code == 201


def test_only_one_of_concurrent_root_uploads_wins(sandbox: Sandbox, flow: Flow) -> None:
    clients = [Client(sandbox) for _ in range(6)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = sorted(pool.map(lambda c: c.patch_certs({"root-crt": flow.root_crt}).status_code, clients))
    assert statuses == [200, 409, 409, 409, 409, 409]


# -- rule 2: OU and self-signed root ------------------------------------------------------------


def test_root_with_another_factory_ou_is_refused(client: Client, tmp_path: Path) -> None:
    answer = {**client.post_certs({}).json()}
    answer.update(reference.api_scripts("api-2026", factory="other-factory", local_ca_cn="fio-x"))
    flow = run_create_flow(tmp_path / "pki", answer)
    _refused(client.patch_certs(flow.patch_body()), 400, "root-crt", "OU must equal the factory name", "other-factory")
    assert client.get_certs().status_code == 206  # all or nothing: nothing was stored


def test_root_that_is_not_self_signed_is_refused(client: Client, flow: Flow) -> None:
    # The online CA is a CA with the right OU, but signed by the root, not by itself.
    _refused(client.patch_certs({"root-crt": flow.online_crt}), 400, "self-signed")


def test_device_ca_with_another_ou_is_refused(client: Client, flow: Flow) -> None:
    polis = client.user_self()["polis-id"]
    pki = _foreign_scripts(flow, factory="other-factory", local_ca_cn=f"fio-{polis}")
    run(["./create_device_ca", "foreign-ou.key", "foreign-ou.pem"], pki)
    bundle = flow.online_crt + "\n" + (pki / "foreign-ou.pem").read_text()
    _refused(client.patch_certs({**flow.patch_body(), "ca-crt": bundle}), 400, "ca-crt", "OU", "other-factory")


# -- rule 3: chains to the root, backend keys ---------------------------------------------------


def test_ca_from_a_foreign_root_is_refused(client: Client, configured: Flow, tmp_path: Path) -> None:
    # Another root (same factory name and CN, different key) signs a local CA.
    foreign = run_create_flow(tmp_path / "foreign", {**client.post_certs({"first-time-init": False, "ca-csr": True}).json(),
                                                      "tls-csr": (configured.pki_dir / "tls-csr").read_text()})
    _refused(
        client.patch_certs({"ca-crt": configured.ca_crt + "\n" + foreign.local_crt}), 400, "ca-crt", "signed by the factory root"
    )
    _refused(client.patch_certs({"tls-crt": foreign.tls_crt}), 400, "tls-crt", "signed by the factory root")
    # The twin: the same backend CSR signed by the right root is accepted.
    (configured.pki_dir / "ca-csr-2").write_text((foreign.pki_dir / "ca-csr").read_text())
    second_online = run(["./sign_ca_csr", "ca-csr-2"], configured.pki_dir)
    assert client.patch_certs({"ca-crt": configured.ca_crt + "\n" + second_online}).status_code == 200


def test_tls_crt_must_certify_a_backend_key(client: Client, flow: Flow) -> None:
    assert client.patch_certs({"root-crt": flow.root_crt}).status_code == 200
    own_key = ec.generate_private_key(ec.SECP256R1())
    forged = sign_with_root(flow, own_key.public_key(), name("x.ota-lite.foundries.io", FACTORY), ca=False)
    _refused(client.patch_certs({"tls-crt": forged}), 400, "tls-crt", "key the backend generated")
    assert client.patch_certs({"tls-crt": flow.tls_crt}).status_code == 200  # the twin


def test_rotated_tls_key_becomes_the_served_one(sandbox: Sandbox, client: Client, configured: Flow) -> None:
    answer = client.post_certs({"first-time-init": False, "tls-csr": True}).json()
    (configured.pki_dir / "tls-csr").write_text(answer["tls-csr"])
    rotated = run(["./sign_tls_csr", "tls-csr"], configured.pki_dir)
    assert client.patch_certs({"tls-crt": rotated}).status_code == 200
    assert sandbox.backend.gateway_identity().cert_pem == rotated
    assert client.get_certs().json()["change-meta"]["updated-by"] == client.user_self()["name"]
    # The twin: the replaced key is retired, its old certificate cannot come back.
    _refused(client.patch_certs({"tls-crt": configured.tls_crt}), 400, "key the backend generated")


def test_certs_need_a_root(client: Client, flow: Flow) -> None:
    _refused(client.patch_certs({"tls-crt": flow.tls_crt, "ca-crt": flow.ca_crt}), 400, "root-crt")
    assert client.get_certs().status_code == 206


def test_a_device_ca_must_be_a_ca(client: Client, flow: Flow) -> None:
    _refused(client.patch_certs({**flow.patch_body(), "ca-crt": flow.tls_crt}), 400, "CA:TRUE")


# -- rule 4: a local CA's CN ------------------------------------------------------------------


def test_local_ca_with_another_cn_is_refused(client: Client, flow: Flow) -> None:
    pki = _foreign_scripts(flow, local_ca_cn="fio-someone-else")
    run(["./create_device_ca", "other-cn.key", "other-cn.pem"], pki)
    bundle = flow.online_crt + "\n" + (pki / "other-cn.pem").read_text()
    _refused(client.patch_certs({**flow.patch_body(), "ca-crt": bundle}), 400, "fio-someone-else", "CN")


# -- rule 5: ca-crt only grows -------------------------------------------------------------


def test_dropping_a_ca_needs_a_crl(client: Client, configured: Flow) -> None:
    local_serial = serial_of(configured.local_crt)
    _refused(client.patch_certs({"ca-crt": configured.online_crt}), 400, "keep every device CA", local_serial)
    # The twin: the same ca-crt with a CRL revoking the dropped CA in the same PATCH.
    crl = make_crl(configured, [(local_serial, x509.ReasonFlags.key_compromise)])
    response = client.patch_certs({"ca-crt": configured.online_crt, "ca-revoke-crl": crl})
    assert response.status_code == 200, response.text
    assert client.get_certs().json()["ca-crt"] == configured.online_crt


def test_adding_a_local_ca_keeps_the_others(client: Client, configured: Flow) -> None:
    run(["./create_device_ca", "local-ca-2.key", "local-ca-2.pem"], configured.pki_dir)
    bundle = configured.ca_crt + "\n" + (configured.pki_dir / "local-ca-2.pem").read_text()
    assert client.patch_certs({"ca-crt": bundle}).status_code == 200
    assert client.get_certs().json()["ca-crt"] == bundle
    _refused(client.patch_certs({"ca-crt": bundle + "\n" + configured.local_crt}), 400, "appear once")


# -- rule 6: CRLs ------------------------------------------------------------------------------


def test_crl_disable_enable_and_revoke(sandbox: Sandbox, client: Client, configured: Flow) -> None:
    online, local = serial_of(configured.online_crt), serial_of(configured.local_crt)

    hold = make_crl(configured, [(local, x509.ReasonFlags.certificate_hold), (online, x509.ReasonFlags.certificate_hold)])
    assert client.patch_certs({"ca-revoke-crl": hold}).status_code == 200
    body = client.get_certs().json()
    assert sorted(body["disabled-ca-serials"]) == sorted([local, online])
    assert body["ca-crt"] == configured.ca_crt  # disabled CAs stay
    assert sandbox.backend.online_ca() is None  # a disabled online CA signs no new device

    unhold = make_crl(configured, [(online, x509.ReasonFlags.remove_from_crl)])
    assert client.patch_certs({"ca-revoke-crl": unhold}).status_code == 200
    assert client.get_certs().json()["disabled-ca-serials"] == [local]
    assert sandbox.backend.online_ca().serial == online

    revoke = make_crl(configured, [(local, x509.ReasonFlags.cessation_of_operation)])
    assert client.patch_certs({"ca-revoke-crl": revoke}).status_code == 200
    body = client.get_certs().json()
    assert body["ca-crt"] == configured.online_crt
    assert body["disabled-ca-serials"] == []

    # A revoked CA is out of ca-crt: a CRL cannot name it any more ...
    again = make_crl(configured, [(local, x509.ReasonFlags.remove_from_crl)])
    _refused(client.patch_certs({"ca-revoke-crl": again}), 400, f"There is no active device CA with serial {local}")
    # ... but `keys ca update` with its certificate re-adds it, as fioctl's help says.
    assert client.patch_certs({"ca-crt": configured.ca_crt}).status_code == 200
    body = client.get_certs().json()
    assert body["ca-crt"] == configured.ca_crt and body["disabled-ca-serials"] == []
    assert sandbox.store.revoked_ca_serials() == set()


def test_crl_for_an_unknown_serial_is_refused(client: Client, configured: Flow) -> None:
    crl = make_crl(configured, [("12345", x509.ReasonFlags.certificate_hold)])
    _refused(client.patch_certs({"ca-revoke-crl": crl}), 400, "There is no active device CA with serial 12345")
    assert client.get_certs().json()["disabled-ca-serials"] == []


def test_crl_signed_by_a_foreign_key_is_refused(client: Client, configured: Flow) -> None:
    local = serial_of(configured.local_crt)
    forged = make_crl(configured, [(local, x509.ReasonFlags.key_compromise)], signer=ec.generate_private_key(ec.SECP256R1()))
    _refused(client.patch_certs({"ca-revoke-crl": forged}), 400, "CRL must be signed by the factory root")
    _refused(client.patch_certs({"ca-revoke-crl": "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"}), 400, "CRL")
    assert client.get_certs().json()["ca-crt"] == configured.ca_crt
