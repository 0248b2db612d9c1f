"""The mTLS device gateway (PKI-SPEC section 7): every acceptance rule and every refusal, each
with its twin, against a real sandbox whose PKI was made by the reference scripts."""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID
from test_gateway_support import (
    SERVER_AUTH,
    Factory,
    load_ca,
    make_device,
    make_documented_device,
    new_uuid,
    running_factory,
)

from fioca.sandbox.tuf import canonical_json

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Factory]:
    """One configured factory for the rules that leave its CAs alone (fresh uuids per test)."""
    with running_factory(tmp_path_factory.mktemp("gateway")) as made:
        yield made


@pytest.fixture
def devices_dir(tmp_path: Path) -> Path:
    return tmp_path / "devices"


def foreign_ca(common_name: str, unit: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-made CA that looks like the factory's local CA but was never uploaded."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                         x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


# -- acceptance: registered on the first request, served in the same round trip -------------------


def test_documented_offline_device_registers_on_first_request_with_curl(factory: Factory) -> None:
    device = make_documented_device(factory.flow.pki_dir, new_uuid())
    assert factory.stored(device) is None

    done = factory.gateway.curl(device, "/device", cafile=factory.root_file, cwd=factory.flow.pki_dir)

    assert done.returncode == 0, done.stderr
    body, status = done.stdout.rsplit("\n", 1)
    assert status == "200"
    answer = json.loads(body)
    assert answer["uuid"] == device.uuid
    assert answer["pubkey"] == device.public_key_pem()
    assert answer["is_prod"] is False
    assert ISO_UTC.match(answer["created_at"]) and ISO_UTC.match(answer["last_seen"])
    record = factory.stored(device)
    assert record is not None and record.pubkey == device.public_key_pem()
    assert record.ca_serial == str(factory.local_ca()[0].serial_number)
    assert record.owner == factory.client.user_self()["polis-id"]  # the local CA's user owns it


def test_documented_probe_of_the_tuf_root_with_curl(factory: Factory) -> None:
    device = make_documented_device(factory.flow.pki_dir, new_uuid())
    done = factory.gateway.curl(device, "/repo/1.root.json", cafile=factory.root_file, cwd=factory.flow.pki_dir)
    body, status = done.stdout.rsplit("\n", 1)
    assert status == "200", done.stderr
    assert json.loads(body)["signed"]["_type"] == "root"
    # Twin: without the factory root curl does not trust the gateway (its cert is tls-crt).
    untrusted = factory.gateway.curl(device, "/device", cafile=factory.flow.pki_dir / "local-ca.pem",
                                     cwd=factory.flow.pki_dir)
    assert untrusted.returncode == 60, untrusted.stderr  # CURLE_PEER_FAILED_VERIFICATION


def test_gateway_serves_tls_crt(factory: Factory, devices_dir: Path) -> None:
    device = make_device(devices_dir, factory.local_ca())
    served = x509.load_der_x509_certificate(factory.get(device).server_cert_der)
    assert served == x509.load_pem_x509_certificate(factory.flow.tls_crt.encode())


def test_known_device_is_served_again_and_last_seen_moves(factory: Factory, devices_dir: Path) -> None:
    device = make_device(devices_dir, factory.local_ca())
    first = factory.get(device).json()
    factory.sandbox.store._execute(  # pretend the first visit was long ago
        "UPDATE devices SET last_seen = '2000-01-01T00:00:00Z' WHERE uuid = ?", (device.uuid,)
    )
    second = factory.get(device).json()
    assert second["created_at"] == first["created_at"]
    assert second["last_seen"] != "2000-01-01T00:00:00Z"
    assert factory.stored(device).last_seen == second["last_seen"]
    assert len([d for d in factory.sandbox.store.devices() if d.uuid == device.uuid]) == 1


def test_production_device_is_marked_production(factory: Factory, devices_dir: Path) -> None:
    production = make_device(devices_dir, factory.local_ca(), production=True)
    plain = make_device(devices_dir, factory.local_ca())
    assert factory.get(production).json()["is_prod"] is True
    assert factory.get(plain).json()["is_prod"] is False
    assert factory.stored(production).is_prod and not factory.stored(plain).is_prod


# -- refusals ---------------------------------------------------------------------------------------


def test_untrusted_ca_fails_the_handshake(factory: Factory, devices_dir: Path) -> None:
    local_cert, _ = factory.local_ca()
    impostor = foreign_ca(local_cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value, "acme-factory")
    device = make_device(devices_dir, impostor)
    factory.refused_handshake(device)
    assert factory.stored(device) is None
    # Twin: the same certificate from the uploaded local CA is served.
    twin = make_device(devices_dir, factory.local_ca())
    assert factory.get(twin).status == 200


def test_untrusted_ca_is_refused_by_curl(factory: Factory, devices_dir: Path) -> None:
    device = make_device(devices_dir, foreign_ca("fio-nobody", "acme-factory"))
    done = factory.gateway.curl(device, "/device", cafile=factory.root_file, cwd=devices_dir)
    assert done.returncode != 0 and not done.stdout.endswith("200")
    assert factory.stored(device) is None


def test_root_signed_leaf_is_not_a_device(factory: Factory, devices_dir: Path) -> None:
    """The root is trusted by devices, not by the gateway: only device CAs vouch for devices."""
    root = load_ca(factory.flow.pki_dir / "factory_ca.pem", factory.flow.pki_dir / "factory_ca.key")
    device = make_device(devices_dir, root)
    factory.refused_handshake(device)
    assert factory.stored(device) is None


@pytest.mark.parametrize(
    ("shift", "words"),
    [
        ({"not_after": -timedelta(days=1), "not_before": -timedelta(days=30)}, "has expired"),
        ({"not_before": timedelta(days=1), "not_after": timedelta(days=30)}, "not valid yet"),
    ],
    ids=["expired", "not-yet-valid"],
)
def test_certificate_outside_its_validity_is_refused(factory: Factory, devices_dir: Path, shift: dict,
                                                     words: str) -> None:
    now = datetime.now(UTC)
    device = make_device(devices_dir, factory.local_ca(), **{k: now + v for k, v in shift.items()})
    reply = factory.get(device)
    assert reply.status == 403
    assert words in reply.json()["message"]
    assert factory.stored(device) is None
    # Twin: the same device with a current certificate is served.
    current = make_device(devices_dir, factory.local_ca(), device_uuid=device.uuid)
    assert factory.get(current).status == 200


def test_certificate_without_extended_key_usage_is_refused(factory: Factory, devices_dir: Path) -> None:
    device = make_device(devices_dir, factory.local_ca(), usages=[])
    reply = factory.get(device)
    assert reply.status == 403 and "clientAuth" in reply.json()["message"]
    assert factory.stored(device) is None


def test_server_only_certificate_fails_the_handshake(factory: Factory, devices_dir: Path) -> None:
    """extendedKeyUsage without clientAuth: OpenSSL's purpose check refuses it in the handshake."""
    device = make_device(devices_dir, factory.local_ca(), usages=[SERVER_AUTH])
    factory.refused_handshake(device)
    assert factory.stored(device) is None
    twin = make_device(devices_dir, factory.local_ca(), usages=[SERVER_AUTH, x509.ExtendedKeyUsageOID.CLIENT_AUTH])
    assert factory.get(twin).status == 200


@pytest.mark.parametrize("unit", ["other-factory", None], ids=["other-factory", "no-ou"])
def test_another_factorys_ou_is_refused(factory: Factory, devices_dir: Path, unit: str | None) -> None:
    device = make_device(devices_dir, factory.local_ca(), unit=unit)
    reply = factory.get(device)
    assert reply.status == 403
    assert "not factory 'acme-factory'" in reply.json()["message"]
    assert factory.stored(device) is None


def test_common_name_must_be_a_uuid(factory: Factory, devices_dir: Path) -> None:
    device = make_device(devices_dir, factory.local_ca(), device_uuid="not-a-uuid")
    reply = factory.get(device)
    assert reply.status == 403 and "UUID" in reply.json()["message"]
    assert factory.sandbox.store.device("not-a-uuid") is None


def test_deleted_device_is_refused_until_cleared(factory: Factory, devices_dir: Path) -> None:
    device = make_device(devices_dir, factory.local_ca())
    neighbour = make_device(devices_dir, factory.local_ca())
    assert factory.get(device).status == 200 and factory.get(neighbour).status == 200

    assert factory.sandbox.store.set_device_deny_listed(device.uuid)
    reply = factory.get(device)
    assert reply.status == 403 and "deleted" in reply.json()["message"]
    assert factory.get(neighbour).status == 200  # twin: others unaffected

    factory.sandbox.store.set_device_deny_listed(device.uuid, False)
    assert factory.get(device).status == 200


def test_known_uuid_with_a_new_key_is_refused(factory: Factory, devices_dir: Path) -> None:
    device = make_device(devices_dir, factory.local_ca())
    assert factory.get(device).status == 200
    thief = make_device(devices_dir / "thief", factory.local_ca(), device_uuid=device.uuid)
    reply = factory.get(thief)
    assert reply.status == 403 and "another public key" in reply.json()["message"]
    assert factory.stored(device).pubkey == device.public_key_pem()
    # Twin: a renewed certificate for the same key is the same device.
    key = ec.generate_private_key(ec.SECP256R1())
    owner = make_device(devices_dir / "own", factory.local_ca(), key=key)
    assert factory.get(owner).status == 200
    renewed = make_device(devices_dir / "renewed", factory.local_ca(), device_uuid=owner.uuid, key=key)
    assert factory.get(renewed).status == 200


# -- the probes ---------------------------------------------------------------------------------------


def test_tuf_root_is_signed_by_its_root_key(factory: Factory, devices_dir: Path) -> None:
    device = make_device(devices_dir, factory.local_ca())
    metadata = factory.get(device, "/repo/1.root.json").json()
    signed = metadata["signed"]
    assert signed["_type"] == "root" and signed["version"] == 1
    assert set(signed["roles"]) == {"root", "targets", "snapshot", "timestamp"}
    key_id = signed["roles"]["root"]["keyids"][0]
    key = signed["keys"][key_id]
    assert hashlib.sha256(canonical_json(key)).hexdigest() == key_id
    public = ed25519.Ed25519PublicKey.from_public_bytes(bytes.fromhex(key["keyval"]["public"]))
    signature = bytes.fromhex(metadata["signatures"][0]["sig"])
    public.verify(signature, canonical_json(signed))  # raises when wrong
    # Twin: a changed field no longer matches the signature.
    tampered = dict(signed, version=2)
    with pytest.raises(InvalidSignature):
        public.verify(signature, canonical_json(tampered))


def test_targets_need_a_tag(factory: Factory, devices_dir: Path) -> None:
    device = make_device(devices_dir, factory.local_ca())
    tagged = factory.get(device, "/repo/targets.json", headers={"x-ats-tags": "main"})
    assert tagged.status == 200
    assert tagged.json()["signed"]["_type"] == "targets"
    assert factory.get(device, "/repo/targets.json").status == 400


def test_unknown_path_and_method(factory: Factory, devices_dir: Path) -> None:
    device = make_device(devices_dir, factory.local_ca())
    assert factory.get(device, "/nothing-here").status == 404
    assert factory.get(device, "/device", method="POST").status == 405
    head = factory.get(device, "/device", method="HEAD")
    assert head.status == 200 and head.body == b""


def test_keep_alive_serves_several_requests_on_one_connection(factory: Factory, devices_dir: Path) -> None:
    device = make_device(devices_dir, factory.local_ca())
    context = ssl.create_default_context(cafile=str(factory.root_file))
    context.load_cert_chain(str(device.cert), str(device.key))
    with socket.create_connection(("127.0.0.1", factory.gateway.port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=factory.gateway.host) as tls:
            connection = http.client.HTTPConnection(factory.gateway.host)
            connection.sock = tls
            for path in ("/device", "/repo/1.root.json", "/device"):
                connection.request("GET", path)
                response = connection.getresponse()
                assert response.status == 200
                response.read()


# -- concurrency --------------------------------------------------------------------------------------


def test_concurrent_first_requests_register_each_device_once(factory: Factory, devices_dir: Path) -> None:
    devices = [make_device(devices_dir, factory.local_ca()) for _ in range(50)]
    with ThreadPoolExecutor(max_workers=10) as pool:
        replies = list(pool.map(lambda device: factory.get(device).json()["uuid"], devices * 2))
    assert sorted(replies) == sorted(device.uuid for device in devices * 2)
    stored = [d.uuid for d in factory.sandbox.store.devices() if d.uuid in {device.uuid for device in devices}]
    assert sorted(stored) == sorted(device.uuid for device in devices)  # each exactly once


# -- the CLI view of what the gateway registered -------------------------------------------------------


def _fioca(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fioca", *argv], capture_output=True, text=True, timeout=60)


def test_cli_lists_registered_devices_and_deletes_one(factory: Factory, devices_dir: Path) -> None:
    device = make_device(devices_dir, factory.local_ca())
    unseen = make_device(devices_dir, factory.local_ca())
    assert factory.get(device).status == 200
    data = str(factory.sandbox.data_dir)

    listed = _fioca("sandbox", "devices", "--data", data, "--format", "json")
    assert listed.returncode == 0, listed.stderr
    uuids = {entry["uuid"] for entry in json.loads(listed.stdout)}
    assert device.uuid in uuids and unseen.uuid not in uuids

    deleted = _fioca("sandbox", "delete-device", "--data", data, device.uuid)
    assert deleted.returncode == 0, deleted.stderr
    assert factory.get(device).status == 403
    listed = _fioca("sandbox", "devices", "--data", data, "--format", "json")
    assert device.uuid not in {entry["uuid"] for entry in json.loads(listed.stdout)}
