"""The gateway follows the backend without a restart: the shared PKI before the factory owns
one, then tls-crt and the device CAs; disabled, re-enabled and revoked CAs; a rotated tls-crt;
a device CA added later. Each test has a factory of its own (these changes are for good)."""

from __future__ import annotations

import socket
import ssl
import stat
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID
from sandbox_helpers import make_crl, run, serial_of
from test_gateway_support import (
    Device,
    Factory,
    fresh_factory,  # noqa: F401  (pytest fixture)
    load_ca,
    make_csr,
    make_device,
    new_uuid,
    post_device,
    register_body,
    save_registered,
    start_factory,
)

from fioca.sandbox import Sandbox, shared_pki
from fioca.sandbox.tuf import REPO_ROOT

HOLD = x509.ReasonFlags.certificate_hold
UNHOLD = x509.ReasonFlags.remove_from_crl
REVOKE = x509.ReasonFlags.privilege_withdrawn  # fioctl's revoke-device-ca sends reason 9


def served_certificate(factory: Factory, cafile: Path) -> x509.Certificate:
    """The gateway's certificate, verified against `cafile` for the gateway host name.
    No client certificate is sent: in TLS 1.3 the client's side of the handshake completes
    before the gateway refuses it, which is enough to see what it serves."""
    context = ssl.create_default_context(cafile=str(cafile))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    with socket.create_connection(("127.0.0.1", factory.gateway.port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=factory.gateway.host) as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def registered_online_device(factory: Factory, folder: Path) -> Device:
    device_uuid = new_uuid()
    csr, key = make_csr(device_uuid)
    response = post_device(factory.client, register_body(device_uuid, csr))
    assert response.status_code == 201, response.text
    return save_registered(folder, device_uuid, response.json(), key)


def test_shared_pki_before_the_patch_then_tls_crt_without_restart(tmp_path: Path) -> None:
    factory = start_factory(tmp_path, patch=False)
    try:
        shared_root = factory.sandbox.data_dir / shared_pki.ROOT_CERT
        before = served_certificate(factory, shared_root)
        names = before.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert names.get_values_for_type(x509.DNSName) == [factory.gateway.host, factory.gateway.host.replace(".ota-lite.", ".ostree.")]
        # The shared phase: a device registers and reaches the gateway with the files it got.
        shared_device = registered_online_device(factory, tmp_path / "shared")
        assert (tmp_path / "shared" / "root.crt").read_bytes() == shared_root.read_bytes()
        reply = factory.gateway.get(shared_device, cafile=tmp_path / "shared" / "root.crt")
        assert reply.status == 200 and reply.json()["uuid"] == shared_device.uuid
        # A factory device (its local CA not uploaded yet) is not trusted by the shared PKI ...
        device = make_device(tmp_path / "devices", factory.local_ca())
        factory.gateway.refused_handshake(device, cafile=shared_root)
        assert factory.stored(device) is None
        # ... and the factory root does not verify the shared certificate.
        factory.gateway.refused_handshake(device, cafile=factory.root_file)

        port = factory.gateway.port
        assert factory.client.patch_certs(factory.flow.patch_body()).status_code == 200

        after = served_certificate(factory, factory.root_file)
        assert after == x509.load_pem_x509_certificate(factory.flow.tls_crt.encode())
        assert factory.get(device).status == 200  # same gateway, same port, no restart
        assert factory.gateway.port == port
        assert factory.stored(device) is not None
        # The shared-phase device no longer trusts the gateway, nor the gateway it.
        factory.gateway.refused_handshake(shared_device, cafile=tmp_path / "shared" / "root.crt")
        factory.gateway.refused_handshake(shared_device, cafile=factory.root_file)
    finally:
        factory.sandbox.stop()


def test_shared_pki_and_repo_key_are_made_once_and_private(tmp_path: Path) -> None:
    data = tmp_path / "sandbox"
    kept = (shared_pki.ROOT_CERT, shared_pki.ROOT_KEY, shared_pki.DEVICE_CA_CERT, shared_pki.DEVICE_CA_KEY,
            shared_pki.GATEWAY_CERT, REPO_ROOT)
    with Sandbox(data, factory="acme-factory"):
        first = {name: (data / name).read_bytes() for name in kept}
    with Sandbox(data, factory="acme-factory"):
        again = {name: (data / name).read_bytes() for name in kept}
    assert again == first
    for name in (shared_pki.ROOT_KEY, shared_pki.DEVICE_CA_KEY, shared_pki.GATEWAY_KEY, "gateway-repo.key"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600
    assert not list(data.glob(".gateway-chain.*"))  # the temp file for the served key is gone


def test_disabled_ca_keeps_known_devices_refuses_new_until_re_enabled(fresh_factory: Factory, tmp_path: Path) -> None:
    factory, devices = fresh_factory, tmp_path / "devices"
    known = make_device(devices, factory.local_ca())
    assert factory.get(known).status == 200
    local_serial = serial_of(factory.flow.local_crt)

    assert factory.client.patch_certs({"ca-revoke-crl": make_crl(factory.flow, [(local_serial, HOLD)])}).status_code == 200
    assert factory.get(known).status == 200
    newcomer = make_device(devices, factory.local_ca())
    reply = factory.get(newcomer)
    assert reply.status == 403 and f"device CA serial {local_serial} is disabled" in reply.json()["message"]
    assert factory.stored(newcomer) is None
    # Twin: the online CA is not disabled, its new devices still register.
    assert factory.get(registered_online_device(factory, tmp_path / "online")).status == 200

    assert factory.client.patch_certs({"ca-revoke-crl": make_crl(factory.flow, [(local_serial, UNHOLD)])}).status_code == 200
    assert factory.get(newcomer).status == 200
    assert factory.stored(newcomer).ca_serial == local_serial


def test_revoked_ca_refuses_all_its_devices(fresh_factory: Factory, tmp_path: Path) -> None:
    factory, devices = fresh_factory, tmp_path / "devices"
    known = make_device(devices, factory.local_ca())
    assert factory.get(known).status == 200
    online_device = registered_online_device(factory, tmp_path / "online")
    assert factory.get(online_device).status == 200

    local_serial = serial_of(factory.flow.local_crt)
    assert factory.client.patch_certs({"ca-revoke-crl": make_crl(factory.flow, [(local_serial, REVOKE)])}).status_code == 200

    factory.refused_handshake(known)
    newcomer = make_device(devices, factory.local_ca())
    factory.refused_handshake(newcomer)
    assert factory.stored(newcomer) is None
    assert factory.get(online_device).status == 200  # twin: another CA's device is unaffected


def test_rotated_tls_crt_is_served_without_restart(fresh_factory: Factory, tmp_path: Path) -> None:
    factory = fresh_factory
    device = make_device(tmp_path / "devices", factory.local_ca())
    old = factory.get(device)
    assert old.status == 200

    answer = factory.client.post_certs({"first-time-init": False, "tls-csr": True}).json()
    (factory.flow.pki_dir / "tls-csr").write_text(answer["tls-csr"])
    new_tls = run(["./sign_tls_csr", "tls-csr"], factory.flow.pki_dir)
    assert factory.client.patch_certs({"tls-crt": new_tls}).status_code == 200

    new = factory.get(device)
    assert new.status == 200  # the device keeps connecting, with the same root.crt
    served = x509.load_der_x509_certificate(new.server_cert_der)
    assert served == x509.load_pem_x509_certificate(new_tls.encode())
    assert new.server_cert_der != old.server_cert_der
    newcomer = make_device(tmp_path / "devices", factory.local_ca())
    assert factory.get(newcomer).status == 200


def test_added_device_ca_is_trusted_and_told_apart_from_its_namesake(fresh_factory: Factory, tmp_path: Path) -> None:
    """A second local CA has the same subject as the first: the signature tells them apart."""
    factory = fresh_factory
    pki = factory.flow.pki_dir
    run(["./create_device_ca", "local-ca-2.key", "local-ca-2.pem"], pki)
    second = load_ca(pki / "local-ca-2.pem", pki / "local-ca-2.key")
    assert second[0].subject == factory.local_ca()[0].subject
    device = make_device(tmp_path / "devices", second)
    factory.refused_handshake(device)  # not uploaded yet

    ca_crt = factory.flow.ca_crt + "\n" + (pki / "local-ca-2.pem").read_text()
    assert factory.client.patch_certs({"ca-crt": ca_crt}).status_code == 200

    assert factory.get(device).status == 200
    assert factory.stored(device).ca_serial == str(second[0].serial_number)
    first = make_device(tmp_path / "devices", factory.local_ca())
    assert factory.get(first).status == 200
    assert factory.stored(first).ca_serial == serial_of(factory.flow.local_crt)
    assert second[0].subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value.startswith("fio-")
