"""Online registration (server side): `POST <api>/ota/devices/` as lmp-device-register speaks
it (PKI-SPEC sections 2, 4 and 9), its answer's files checked one by one, and its refusals."""

from __future__ import annotations

import base64
import subprocess
import textwrap
import uuid as uuid_module
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sandbox_helpers import FACTORY, make_crl, serial_of
from test_gateway_support import (
    Factory,
    fresh_factory,  # noqa: F401  (pytest fixture)
    make_csr,
    new_uuid,
    post_device,
    register_body,
    running_factory,
    save_registered,
    start_factory,
)

from fioca import sota_toml
from fioca.sandbox import shared_pki


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Factory]:
    with running_factory(tmp_path_factory.mktemp("registration")) as made:
        yield made


def _message(response) -> str:
    body = response.json()
    return " ".join([body["message"], *body.get("errors", [])])


def test_registration_answers_the_device_files(factory: Factory, tmp_path: Path) -> None:
    device_uuid = new_uuid()
    csr, key = make_csr(device_uuid)
    response = post_device(factory.client, register_body(device_uuid, csr, name="kitchen-1"))

    assert response.status_code == 201, response.text
    answer = response.json()
    assert set(answer) == {"client.pem", "root.crt", "sota.toml", "client.chained"}
    online = factory.sandbox.backend.online_ca()
    online_cert = x509.load_pem_x509_certificate(online.cert_pem.encode())

    cert = x509.load_pem_x509_certificate(answer["client.pem"].encode())
    # The profile of PKI-SPEC section 4, "device (lmp-device-register / registration server)".
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == device_uuid
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == FACTORY
    assert not cert.subject.get_attributes_for_oid(NameOID.BUSINESS_CATEGORY)
    assert cert.issuer == online_cert.subject
    cert.verify_directly_issued_by(online_cert)
    assert cert.public_key() == key.public_key()
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=7300)
    assert cert.serial_number == uuid_module.UUID(device_uuid).int
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature
    assert not (usage.value.key_cert_sign or usage.value.key_agreement or usage.value.key_encipherment)
    extended = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert extended.critical and list(extended.value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    akid = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    skid = online_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert akid.key_identifier == skid.digest

    assert answer["root.crt"] == factory.flow.root_crt
    assert answer["client.chained"] == answer["client.pem"] + online.cert_pem
    gateway = f"{factory.gateway.host}:{factory.gateway.port}"  # the port the gateway listens on
    ostree = gateway.replace(".ota-lite.", ".ostree.")
    assert answer["sota.toml"] == (
        "[tls]\n"
        f'server = "https://{gateway}"\n'
        'ca_source = "file"\npkey_source = "file"\ncert_source = "file"\n\n'
        "[provision]\n"
        f'server = "https://{gateway}"\n'
        'primary_ecu_hardware_id = "intel-corei7-64"\n\n'
        "[uptane]\n"
        f'repo_server = "https://{gateway}/repo"\n'
        'key_source = "file"\n\n'
        "[pacman]\n"
        'type = "ostree+compose_apps"\n'
        f'ostree_server = "https://{ostree}/ostree"\n\n'
        "[storage]\n"
        'type = "sqlite"\npath = "/var/sota/"\n\n'
        "[import]\n"
        'tls_cacert_path = "/var/sota/root.crt"\n'
        'tls_pkey_path = "/var/sota/pkey.pem"\n'
        'tls_clientcert_path = "/var/sota/client.pem"\n'
    )

    record = factory.sandbox.store.device(device_uuid)
    assert record.name == "kitchen-1" and record.ca_serial == online.serial
    assert record.owner == factory.client.user_self()["polis-id"]
    assert record.pubkey == factory.get(save_registered(tmp_path, device_uuid, answer, key)).json()["pubkey"]


def test_registered_device_connects_with_its_files_and_curl(factory: Factory, tmp_path: Path) -> None:
    device_uuid = new_uuid()
    csr, key = make_csr(device_uuid)
    answer = post_device(factory.client, register_body(device_uuid, csr)).json()
    sota = tmp_path / "sota"
    device = save_registered(sota, device_uuid, answer, key)
    done = factory.gateway.curl(device, "/device", cafile=sota / "root.crt", cwd=sota)
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith("\n200") and device_uuid in done.stdout
    # Twin: a key that is not the CSR's does not make a working device.
    _, other_key = make_csr(device_uuid)
    impostor = save_registered(tmp_path / "impostor", device_uuid, answer, other_key)
    failed = factory.gateway.curl(impostor, "/device", cafile=sota / "root.crt", cwd=sota)
    assert failed.returncode != 0


def test_production_csr_gives_a_production_device(factory: Factory) -> None:
    device_uuid = new_uuid()
    csr, _ = make_csr(device_uuid, production=True)
    answer = post_device(factory.client, register_body(device_uuid, csr)).json()
    cert = x509.load_pem_x509_certificate(answer["client.pem"].encode())
    assert cert.subject.get_attributes_for_oid(NameOID.BUSINESS_CATEGORY)[0].value == "production"
    assert factory.sandbox.store.device(device_uuid).is_prod is True


def test_overrides_merge_unset_and_add_sections(factory: Factory) -> None:
    device_uuid = new_uuid()
    csr, _ = make_csr(device_uuid)
    overrides = {"tls": {"pkey_source": '"pkcs11"', "cert_source": ""}, "p11": {"module": '"/usr/lib/softhsm.so"'}}
    body = register_body(device_uuid, csr, overrides=overrides, **{"sota-config-dir": "/etc/sota/"})
    text = post_device(factory.client, body).json()["sota.toml"]
    assert 'pkey_source = "pkcs11"\n# cert_source is not set\n' in text
    assert text.endswith('[p11]\nmodule = "/usr/lib/softhsm.so"\n')
    assert 'path = "/etc/sota/"' in text and 'tls_cacert_path = "/etc/sota/root.crt"' in text


def test_without_ostree_server_the_gateway_serves_ostree(factory: Factory) -> None:
    device_uuid = new_uuid()
    csr, _ = make_csr(device_uuid)
    text = post_device(factory.client, register_body(device_uuid, csr, **{"use-ostree-server": "false"})).json()["sota.toml"]
    assert f'ostree_server = "https://{factory.gateway.host}:{factory.gateway.port}/treehub"' in text


def test_head_probe_answers_below_500(factory: Factory) -> None:
    api = factory.client.base.split("/ota/factories/")[0]
    session, verify = factory.client.session, factory.client.verify
    assert session.head(f"{api}/ota/devices/", headers={"OSF-TOKEN": factory.client.token}, verify=verify).status_code == 200
    assert session.head(f"{api}/ota/devices/", verify=verify).status_code == 401


@pytest.mark.parametrize("token", ["", "not-the-token"], ids=["no-token", "wrong-token"])
def test_registration_needs_the_token(factory: Factory, token: str) -> None:
    device_uuid = new_uuid()
    csr, _ = make_csr(device_uuid)
    response = post_device(factory.client, register_body(device_uuid, csr), token=token)
    assert response.status_code == 401
    assert factory.sandbox.store.device(device_uuid) is None


def test_duplicate_uuid_is_a_conflict(factory: Factory) -> None:
    device_uuid = new_uuid()
    csr, _ = make_csr(device_uuid)
    assert post_device(factory.client, register_body(device_uuid, csr)).status_code == 201
    again, _ = make_csr(device_uuid)
    response = post_device(factory.client, register_body(device_uuid, again))
    assert response.status_code == 409 and "already" in _message(response)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"csr": "-----BEGIN CERTIFICATE REQUEST-----\nnot base64\n-----END CERTIFICATE REQUEST-----\n"}, "not a PEM"),
        ({"csr": 42}, "csr: must be a string"),
        ({"hardware-id": None}, "hardware-id: this field is required"),
        ({"uuid": "1234"}, "is not a lower-case hyphenated UUID"),
        ({"overrides": {"tls": {"server": 1}}}, "overrides: must map"),
        ({"overrides": {"tls": {"server": '"x"\n[evil]'}}}, "must fit on one line"),
    ],
    ids=["garbage-csr", "csr-not-string", "missing-field", "bad-uuid", "override-not-string", "override-newline"],
)
def test_malformed_requests_are_bad_requests(factory: Factory, change: dict, words: str) -> None:
    device_uuid = new_uuid()
    csr, _ = make_csr(device_uuid)
    response = post_device(factory.client, {k: v for k, v in {**register_body(device_uuid, csr), **change}.items() if v is not None})
    assert response.status_code == 400, response.text
    assert words in _message(response)
    assert factory.sandbox.store.device(device_uuid) is None


@pytest.mark.parametrize(
    ("csr_args", "words"),
    [
        ({"unit": "other-factory"}, "OU must equal the factory"),
        ({"common_name": "6a1c7f0e-0000-4000-8000-000000000000"}, "CN must be the device uuid"),
    ],
    ids=["wrong-ou", "cn-not-the-uuid"],
)
def test_csr_must_name_this_device_and_factory(factory: Factory, csr_args: dict, words: str) -> None:
    device_uuid = new_uuid()
    csr, _ = make_csr(device_uuid, **csr_args)
    response = post_device(factory.client, register_body(device_uuid, csr))
    assert response.status_code == 400 and words in _message(response)
    assert factory.sandbox.store.device(device_uuid) is None


def test_tampered_csr_is_refused(factory: Factory) -> None:
    device_uuid = new_uuid()
    csr, _ = make_csr(device_uuid)
    der = x509.load_pem_x509_csr(csr.encode()).public_bytes(serialization.Encoding.DER)
    # The DER ends with the signature's last byte: flipping it keeps the CSR parseable.
    tampered_der = der[:-1] + bytes([der[-1] ^ 0x01])
    tampered = "-----BEGIN CERTIFICATE REQUEST-----\n" + "\n".join(
        textwrap.wrap(base64.b64encode(tampered_der).decode(), 64)
    ) + "\n-----END CERTIFICATE REQUEST-----\n"
    response = post_device(factory.client, register_body(device_uuid, tampered))
    assert response.status_code == 400 and "signature" in _message(response)
    assert factory.sandbox.store.device(device_uuid) is None


def test_before_the_pki_exists_the_shared_pki_signs(tmp_path: Path) -> None:
    factory = start_factory(tmp_path, patch=False)
    try:
        device_uuid = new_uuid()
        csr, _ = make_csr(device_uuid)
        response = post_device(factory.client, register_body(device_uuid, csr, group="lab"))
        assert response.status_code == 201, response.text
        answer = response.json()
        data = factory.sandbox.data_dir
        shared_ca = x509.load_pem_x509_certificate((data / shared_pki.DEVICE_CA_CERT).read_bytes())
        assert answer["root.crt"] == (data / shared_pki.ROOT_CERT).read_text()
        cert = x509.load_pem_x509_certificate(answer["client.pem"].encode())
        cert.verify_directly_issued_by(shared_ca)
        assert answer["client.chained"] == answer["client.pem"] + (data / shared_pki.DEVICE_CA_CERT).read_text()
        record = factory.sandbox.store.device(device_uuid)
        assert record.ca_serial == str(shared_ca.serial_number) and record.group == "lab"
        # Twin: once the factory's PKI is uploaded, its online CA signs and its root is answered.
        assert factory.client.patch_certs(factory.flow.patch_body()).status_code == 200
        other = new_uuid()
        csr, _ = make_csr(other)
        answer = post_device(factory.client, register_body(other, csr)).json()
        assert answer["root.crt"] == factory.flow.root_crt
        online = x509.load_pem_x509_certificate(factory.flow.online_crt.encode())
        x509.load_pem_x509_certificate(answer["client.pem"].encode()).verify_directly_issued_by(online)
    finally:
        factory.sandbox.stop()


def test_no_online_ca_when_it_is_disabled_or_was_never_uploaded(fresh_factory: Factory, tmp_path: Path) -> None:
    factory = fresh_factory
    online = serial_of(factory.flow.online_crt)
    hold = make_crl(factory.flow, [(online, x509.ReasonFlags.certificate_hold)])
    assert factory.client.patch_certs({"ca-revoke-crl": hold}).status_code == 200
    device_uuid = new_uuid()
    csr, _ = make_csr(device_uuid)
    response = post_device(factory.client, register_body(device_uuid, csr))
    assert response.status_code == 409 and "no usable online device CA" in _message(response)

    unhold = make_crl(factory.flow, [(online, x509.ReasonFlags.remove_from_crl)])
    assert factory.client.patch_certs({"ca-revoke-crl": unhold}).status_code == 200
    assert post_device(factory.client, register_body(device_uuid, csr)).status_code == 201


def test_local_ca_only_factory_has_no_online_ca(tmp_path: Path) -> None:
    factory = start_factory(tmp_path, patch=False)
    try:
        body = {"root-crt": factory.flow.root_crt, "tls-crt": factory.flow.tls_crt, "ca-crt": factory.flow.local_crt}
        assert factory.client.patch_certs(body).status_code == 200
        device_uuid = new_uuid()
        csr, _ = make_csr(device_uuid)
        response = post_device(factory.client, register_body(device_uuid, csr))
        assert response.status_code == 409 and "no usable online device CA" in _message(response)
    finally:
        factory.sandbox.stop()


# -- sota.toml on its own ------------------------------------------------------------------------


def test_sota_toml_empty_override_is_a_comment_and_quoted_empty_is_a_value() -> None:
    text = sota_toml.render(
        gateway_url="https://gw:8443", ostree_url="https://os:8443/ostree", hardware_id="hw",
        sota_config_dir="/var/sota", overrides={"uptane": {"key_source": "", "polling_sec": '""'}},
    )
    assert "# key_source is not set\n" in text and 'polling_sec = ""\n' in text
    assert '\nkey_source = "file"' not in text


def test_sota_toml_refuses_keys_that_would_inject_syntax() -> None:
    with pytest.raises(sota_toml.SotaTomlError):
        sota_toml.render(gateway_url="g", ostree_url="o", hardware_id="h", sota_config_dir="/s",
                         overrides={"tls]\n[x": {"a": '"b"'}})


# -- the files as lmp-device-register writes them ----------------------------------------------------


def _tls_server(sota_toml_text: str) -> str:
    import tomllib

    return tomllib.loads(sota_toml_text)["tls"]["server"]


@pytest.mark.parametrize("phase", ["shared", "factory"])
def test_the_sota_dir_works_as_written(tmp_path: Path, phase: str) -> None:
    """sota.toml names the gateway's real port: curl with the sota dir's files, at the URL
    sota.toml gives, reaches the gateway, in the shared phase and with the factory's PKI."""
    factory = start_factory(tmp_path, patch=phase == "factory")
    try:
        device_uuid = new_uuid()
        csr, key = make_csr(device_uuid)
        answer = post_device(factory.client, register_body(device_uuid, csr)).json()
        sota = tmp_path / "sota"
        save_registered(sota, device_uuid, answer, key)
        url = _tls_server(answer["sota.toml"])
        host, port = url.removeprefix("https://").split(":")
        assert (host, int(port)) == (factory.gateway.host, factory.gateway.port)
        done = subprocess.run(
            ["curl", "-sS", "--cacert", "root.crt", "--cert", "client.pem", "--key", "pkey.pem",
             "--resolve", f"{host}:{port}:127.0.0.1", "-w", "\n%{http_code}", f"{url}/device"],
            cwd=sota, capture_output=True, text=True, timeout=30,
        )
        assert done.stdout.endswith("\n200"), done.stderr
        # Twin: another device's key with these files does not make a working device.
        _, other_key = make_csr(device_uuid)
        save_registered(tmp_path / "impostor", device_uuid, answer, other_key)
        failed = subprocess.run(
            ["curl", "-sS", "--cacert", str(sota / "root.crt"), "--cert", "client.pem", "--key", "pkey.pem",
             "--resolve", f"{host}:{port}:127.0.0.1", f"{url}/device"],
            cwd=tmp_path / "impostor", capture_output=True, text=True, timeout=30,
        )
        assert failed.returncode != 0
    finally:
        factory.sandbox.stop()
