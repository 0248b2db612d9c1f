"""Rules that must hold on connections already open (keep-alive), CA:TRUE device
certificates, one spelling per device UUID at the gateway, and a revoked CA re-added by
`keys ca update` (issues 10.9 and 11.6). Each change has its twin on the same connection."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from sandbox_helpers import make_crl, serial_of
from test_gateway_support import (
    Factory,
    fresh_factory,  # noqa: F401  (pytest fixture)
    make_csr,
    make_device,
    new_uuid,
    post_device,
    register_body,
    save_registered,
)

HOLD = x509.ReasonFlags.certificate_hold
UNHOLD = x509.ReasonFlags.remove_from_crl
REVOKE = x509.ReasonFlags.privilege_withdrawn


def test_a_deletion_applies_to_an_open_connection(fresh_factory: Factory, tmp_path: Path) -> None:
    factory = fresh_factory
    device = make_device(tmp_path, factory.local_ca())
    kept = factory.gateway.session(device, cafile=factory.root_file)
    try:
        assert kept.get()[0] == 200
        factory.sandbox.store.set_device_deny_listed(device.uuid)
        status, body, _ = kept.get()
        assert status == 403 and "deleted" in body["message"]
        factory.sandbox.store.set_device_deny_listed(device.uuid, False)
        assert kept.get()[0] == 200  # twin: cleared, the same connection is served again
    finally:
        kept.close()


def test_a_revocation_applies_to_an_open_connection_and_closes_it(fresh_factory: Factory, tmp_path: Path) -> None:
    factory = fresh_factory
    device = make_device(tmp_path / "local", factory.local_ca())
    online_uuid = new_uuid()
    csr, key = make_csr(online_uuid)
    online = save_registered(tmp_path / "online", online_uuid,
                             post_device(factory.client, register_body(online_uuid, csr)).json(), key)
    kept = factory.gateway.session(device, cafile=factory.root_file)
    online_kept = factory.gateway.session(online, cafile=factory.root_file)
    try:
        assert kept.get()[0] == 200 and online_kept.get()[0] == 200
        crl = make_crl(factory.flow, [(serial_of(factory.flow.local_crt), REVOKE)])
        assert factory.client.patch_certs({"ca-revoke-crl": crl}).status_code == 200
        status, body, connection = kept.get()
        assert status == 403 and "not signed by a device CA" in body["message"]
        assert connection == "close"
        assert online_kept.get()[0] == 200  # twin: another CA's device on its open connection
    finally:
        kept.close()
        online_kept.close()


def test_a_disable_applies_to_a_new_device_on_an_open_connection(fresh_factory: Factory, tmp_path: Path) -> None:
    factory = fresh_factory
    known, newcomer = make_device(tmp_path / "a", factory.local_ca()), make_device(tmp_path / "b", factory.local_ca())
    known_kept = factory.gateway.session(known, cafile=factory.root_file)
    new_kept = factory.gateway.session(newcomer, cafile=factory.root_file)  # handshake before the disable
    try:
        assert known_kept.get()[0] == 200
        local = serial_of(factory.flow.local_crt)
        assert factory.client.patch_certs({"ca-revoke-crl": make_crl(factory.flow, [(local, HOLD)])}).status_code == 200
        status, body, _ = new_kept.get()  # its first request comes after the disable
        assert status == 403 and f"device CA serial {local} is disabled" in body["message"]
        assert factory.stored(newcomer) is None
        assert known_kept.get()[0] == 200  # twin: a known device keeps working
        assert factory.client.patch_certs({"ca-revoke-crl": make_crl(factory.flow, [(local, UNHOLD)])}).status_code == 200
        assert new_kept.get()[0] == 200  # re-enabled: the same connection registers it
        assert factory.stored(newcomer) is not None
    finally:
        known_kept.close()
        new_kept.close()


def test_a_device_certificate_that_is_a_ca_is_refused(fresh_factory: Factory, tmp_path: Path) -> None:
    factory = fresh_factory
    ca_device = make_device(tmp_path / "ca", factory.local_ca(), ca=True)
    reply = factory.get(ca_device)
    assert reply.status == 403 and "must not be a CA" in reply.json()["message"]
    assert factory.stored(ca_device) is None
    # Twin: the same uuid with basicConstraints CA:FALSE is a device.
    leaf = make_device(tmp_path / "leaf", factory.local_ca(), device_uuid=ca_device.uuid, ca=False)
    assert factory.get(leaf).status == 200


def test_a_ca_device_certificate_is_refused_by_curl_too(fresh_factory: Factory, tmp_path: Path) -> None:
    factory = fresh_factory
    ca_device = make_device(tmp_path, factory.local_ca(), ca=True)
    done = factory.gateway.curl(ca_device, "/device", cafile=factory.root_file, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.endswith("\n403"), done.stderr


@pytest.mark.parametrize("spelling", [str.upper, lambda u: "{" + u + "}", lambda u: "urn:uuid:" + u,
                                      lambda u: u.replace("-", "")], ids=["upper", "braces", "urn", "no-hyphens"])
def test_one_spelling_per_uuid_at_the_gateway(fresh_factory: Factory, tmp_path: Path, spelling) -> None:
    factory = fresh_factory
    key = ec.generate_private_key(ec.SECP256R1())
    device = make_device(tmp_path / "canonical", factory.local_ca(), key=key)
    assert factory.get(device).status == 200
    factory.sandbox.store.set_device_deny_listed(device.uuid)
    # A deleted device cannot come back under another spelling of its uuid ...
    respelled = make_device(tmp_path / "respelled", factory.local_ca(), device_uuid=spelling(device.uuid), key=key)
    reply = factory.get(respelled)
    assert reply.status == 403 and "lower-case and hyphenated" in reply.json()["message"]
    # ... nor a known uuid get a second key that way.
    known = make_device(tmp_path / "known", factory.local_ca())
    assert factory.get(known).status == 200
    thief = make_device(tmp_path / "thief", factory.local_ca(), device_uuid=spelling(known.uuid))
    assert factory.get(thief).status == 403
    spelled = {spelling(device.uuid), spelling(known.uuid)}
    assert not [d for d in factory.sandbox.store.devices(include_deny_listed=True) if d.uuid in spelled]
    # Twin: a fresh canonical uuid registers.
    assert factory.get(make_device(tmp_path / "fresh", factory.local_ca())).status == 200


def test_a_revoked_ca_re_added_by_update_lets_its_devices_back(fresh_factory: Factory, tmp_path: Path) -> None:
    factory = fresh_factory
    device = make_device(tmp_path, factory.local_ca())
    assert factory.get(device).status == 200
    local = serial_of(factory.flow.local_crt)
    assert factory.client.patch_certs({"ca-revoke-crl": make_crl(factory.flow, [(local, REVOKE)])}).status_code == 200
    factory.refused_handshake(device)
    # `fioctl keys ca update` with a file that has the CA again (fioctl's revoke help says so).
    assert factory.client.patch_certs({"ca-crt": factory.flow.ca_crt}).status_code == 200
    assert factory.get(device).status == 200
    assert factory.client.get_certs().json()["ca-crt"] == factory.flow.ca_crt


def test_a_revoked_online_ca_re_added_signs_again(fresh_factory: Factory, tmp_path: Path) -> None:
    factory = fresh_factory
    online = serial_of(factory.flow.online_crt)
    assert factory.client.patch_certs({"ca-revoke-crl": make_crl(factory.flow, [(online, REVOKE)])}).status_code == 200
    assert factory.sandbox.backend.online_ca() is None
    assert factory.client.patch_certs({"ca-crt": factory.flow.ca_crt}).status_code == 200
    assert factory.sandbox.backend.online_ca().serial == online  # twin: it signs registrations again


def test_openssl_s_client_sees_the_served_certificate(fresh_factory: Factory, tmp_path: Path) -> None:
    """openssl as a device would use it: the chain verifies against factory_ca.pem."""
    factory = fresh_factory
    device = make_device(tmp_path, factory.local_ca())
    done = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{factory.gateway.port}", "-servername", factory.gateway.host,
         "-verify_hostname", factory.gateway.host, "-CAfile", str(factory.root_file), "-cert", str(device.cert),
         "-key", str(device.key), "-verify_return_error", "-brief", "-ign_eof"],
        input="GET /device HTTP/1.0\r\n\r\n", capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert f"Verified peername: {factory.gateway.host}" in done.stderr
    assert "HTTP/1.1 200 OK" in done.stdout and device.uuid in done.stdout
    wrong = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{factory.gateway.port}", "-servername", factory.gateway.host,
         "-CAfile", str(tmp_path / f"{device.uuid}.pem"), "-verify_return_error", "-brief"],
        input="", capture_output=True, text=True, timeout=30,
    )
    assert wrong.returncode != 0  # twin: another CA file does not verify the gateway
