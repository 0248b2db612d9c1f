"""The sandbox's EST server (RFC 7030) with clients fioca did not write: curl posts the CSR
that `openssl req` made, `openssl base64 -d | openssl pkcs7 -print_certs` reads the answers,
and curl then takes the new certificate to the gateway. Every refusal has its twin."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from test_keys_ca_helpers import created, created_template  # noqa: F401  (fixtures)

from fioca import facts
from fioca.pki import profiles
from tests.est_support import (
    Hosts,
    authorized,
    curl,
    device_status,
    hosts_of,
    offline_devices,
    openssl,
    uuid_of,
)
from tests.test_device_support import Factory, rogue_device

EST = facts.EST_RESOURCE


@pytest.fixture(scope="module")
def factory(tmp_path_factory):
    made = Factory(tmp_path_factory.mktemp("est"))
    yield made
    made.stop()


@pytest.fixture(scope="module")
def hosts(factory) -> Hosts:
    return authorized(factory)


@pytest.fixture
def device(factory, hosts, tmp_path) -> Path:
    """A fresh offline device, known to the gateway (it connected once)."""
    folder = offline_devices(factory, tmp_path / "fleet")[0]
    assert device_status(hosts, folder) == 200
    return folder


def est_curl(hosts: Hosts, folder: Path, operation: str, **kwargs) -> object:
    return curl(hosts, hosts.est, f"{EST}/{operation}", cacert=folder / facts.DEVICE_ROOT,
                cert=kwargs.pop("cert", folder / facts.DEVICE_CERT), key=kwargs.pop("key", folder / facts.DEVICE_KEY),
                **kwargs)  # fmt: skip


def openssl_csr(tmp: Path, subject: str, *, extra: list[str] | None = None) -> tuple[Path, Path]:
    """(key, base64 DER CSR file) made by openssl itself."""
    key = tmp / "new.key"
    openssl("ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out", str(key))
    der = openssl("req", "-new", "-key", str(key), "-subj", subject, "-outform", "DER", *(extra or []))
    body = tmp / "csr.b64"
    body.write_bytes(openssl("base64", input=der))
    return key, body


def print_certs(body: bytes) -> list[x509.Certificate]:
    """`openssl base64 -d | openssl pkcs7 -inform DER -print_certs`, as a user would read it."""
    der = openssl("base64", "-d", input=body)
    pem = openssl("pkcs7", "-inform", "DER", "-print_certs", input=der)
    return profiles.load_server_cert_bundle(pem, "openssl pkcs7 -print_certs")  # subject=/issuer= lines around


def subject_of(folder: Path) -> str:
    return f"/CN={uuid_of(folder)}/OU=acme"


# --- What EST serves ----------------------------------------------------------------------------


def test_cacerts_is_the_root_and_the_issuing_ca(factory, hosts, device):
    answer = est_curl(hosts, device, "cacerts")
    assert answer.exit_code == 0 and answer.status == 200, answer.stderr
    assert answer.headers["content-type"] == "application/pkcs7-mime; smime-type=certs-only"
    assert answer.headers["content-transfer-encoding"] == "base64"
    certs = print_certs(answer.body)
    assert [profiles.cert_pem(cert) for cert in certs] == [
        profiles.cert_pem(profiles.load_cert((factory.pki / name).read_bytes(), name))
        for name in (facts.ROOT_CERT, facts.ONLINE_CA_CERT)
    ]


def test_the_est_host_serves_est_tls_crt(factory, hosts, device):
    shown = openssl("s_client", "-connect", f"127.0.0.1:{hosts.port}", "-servername", hosts.est,
                    "-cert", str(device / "client.pem"), "-key", str(device / "pkey.pem"), input=b"")  # fmt: skip
    served = profiles.load_server_cert(shown.decode(errors="replace"), "s_client")
    assert served == profiles.load_cert((factory.pki / facts.EST_TLS_CERT).read_bytes(), facts.EST_TLS_CERT)
    gateway = openssl("s_client", "-connect", f"127.0.0.1:{hosts.port}", "-servername", hosts.gateway,
                      "-cert", str(device / "client.pem"), "-key", str(device / "pkey.pem"), input=b"")  # fmt: skip
    assert profiles.load_server_cert(gateway.decode(errors="replace"), "s_client") == profiles.load_cert(
        (factory.pki / facts.TLS_CERT).read_bytes(), facts.TLS_CERT
    )


def test_simplereenroll_with_curl_and_openssl(factory, hosts, device, tmp_path):
    key, csr = openssl_csr(tmp_path, subject_of(device))
    answer = est_curl(hosts, device, "simplereenroll", data=csr, content_type="application/pkcs10")
    assert answer.status == 200, answer.body
    assert answer.headers["content-type"] == "application/pkcs7-mime; smime-type=certs-only"
    certs = print_certs(answer.body)
    assert len(certs) == 1  # RFC 7030 4.2.3: only the certificate issued
    new = tmp_path / "new.pem"
    new.write_bytes(profiles.cert_pem(certs[0]))
    old_cert = profiles.load_cert((device / "client.pem").read_bytes(), "client.pem")
    assert certs[0].subject.public_bytes() == old_cert.subject.public_bytes()
    online = factory.pki / facts.ONLINE_CA_CERT
    assert b": OK" in openssl("verify", "-CAfile", str(factory.pki / facts.ROOT_CERT), "-untrusted", str(online), str(new))
    # Until the new key is used, both work; once it is, only it does.
    assert device_status(hosts, device) == 200
    (tmp_path / facts.DEVICE_ROOT).write_bytes((device / facts.DEVICE_ROOT).read_bytes())
    assert device_status(hosts, tmp_path, key="new.key", cert="new.pem") == 200
    assert device_status(hosts, device) == 403
    listed = factory.devices()[uuid_of(device)]
    assert listed["ca_serial"] == str(profiles.load_cert(online.read_bytes(), "online").serial_number)
    assert listed["pending_pubkey"] is None


def test_simpleenroll_of_its_own_identity(hosts, device, tmp_path):
    key, csr = openssl_csr(tmp_path, subject_of(device))
    answer = est_curl(hosts, device, "simpleenroll", data=csr, content_type="application/pkcs10")
    assert answer.status == 200, answer.body
    assert print_certs(answer.body)[0].subject.rfc4514_string() == f"OU=acme,CN={uuid_of(device)}"


# --- What EST refuses, each with its twin above -------------------------------------------------


@pytest.mark.parametrize("operation", ["simpleenroll", "simplereenroll"])
def test_a_csr_for_another_identity_is_refused(hosts, device, tmp_path, operation):
    _key, csr = openssl_csr(tmp_path, "/CN=00000000-0000-4000-8000-000000000000/OU=acme")
    answer = est_curl(hosts, device, operation, data=csr, content_type="application/pkcs10")
    assert answer.status == 400
    assert answer.headers["content-type"].startswith("text/plain")
    assert b"subject" in answer.body


def test_a_renewal_subject_must_be_the_same_bytes(hosts, device, tmp_path):
    # Same names in another order: enough for simpleenroll's identity, not for a renewal.
    _key, csr = openssl_csr(tmp_path, f"/OU=acme/CN={uuid_of(device)}")
    answer = est_curl(hosts, device, "simplereenroll", data=csr, content_type="application/pkcs10")
    assert answer.status == 400 and b"byte for byte" in answer.body


@pytest.mark.parametrize(
    ("content_type", "body", "status", "words"),
    [
        ("application/json", None, 415, b"application/pkcs10"),
        ("application/pkcs10", b"not base64 at all!", 400, b"not base64"),
        ("application/pkcs10", base64.b64encode(b"\x30\x03\x02\x01\x00"), 400, b"not a DER"),
    ],
)
def test_a_request_that_is_not_a_base64_csr_is_refused(hosts, device, tmp_path, content_type, body, status, words):
    _key, csr = openssl_csr(tmp_path, subject_of(device))
    if body is not None:
        csr.write_bytes(body)
    answer = est_curl(hosts, device, "simplereenroll", data=csr, content_type=content_type)
    assert answer.status == status and words in answer.body


def test_a_csr_asking_to_be_a_ca_is_refused(hosts, device, tmp_path):
    _key, csr = openssl_csr(tmp_path, subject_of(device), extra=["-addext", "basicConstraints=critical,CA:TRUE"])
    answer = est_curl(hosts, device, "simplereenroll", data=csr, content_type="application/pkcs10")
    assert answer.status == 400 and b"CA:TRUE" in answer.body


def test_wrong_methods_and_unknown_operations(hosts, device):
    assert est_curl(hosts, device, "simplereenroll").status == 405
    assert est_curl(hosts, device, "csrattrs").status == 404
    assert est_curl(hosts, device, "cacerts", method="POST").status == 405


def test_est_and_gateway_names_serve_their_own_paths(hosts, device):
    on_gateway = curl(hosts, hosts.gateway, f"{EST}/cacerts", cacert=device / "root.crt",
                      cert=device / "client.pem", key=device / "pkey.pem")  # fmt: skip
    assert on_gateway.status == 404 and b"est-tls-crt" in on_gateway.body
    on_est = curl(hosts, hosts.est, "/device", cacert=device / "root.crt", cert=device / "client.pem",
                  key=device / "pkey.pem")  # fmt: skip
    assert on_est.status == 404


def test_without_a_client_certificate_the_handshake_fails(hosts, device):
    answer = curl(hosts, hosts.est, f"{EST}/cacerts", cacert=device / "root.crt")
    assert answer.exit_code != 0 and answer.status is None


def test_a_device_of_a_ca_the_factory_never_heard_of_is_refused(hosts, device, tmp_path):
    rogue = rogue_device(tmp_path / "rogue")
    answer = curl(hosts, hosts.est, f"{EST}/cacerts", cacert=device / "root.crt", cert=rogue / "client.pem",
                  key=rogue / "pkey.pem")  # fmt: skip
    assert answer.exit_code != 0 and answer.status is None


def test_the_est_server_is_checked_against_the_root(hosts, device, tmp_path):
    other = tmp_path / "other-root.pem"
    key = profiles.new_key()
    other.write_bytes(profiles.cert_pem(profiles.build_root(key, factory="acme")))
    answer = curl(hosts, hosts.est, f"{EST}/cacerts", cacert=other, cert=device / "client.pem", key=device / "pkey.pem")
    assert answer.exit_code == 60  # curl: the peer certificate cannot be authenticated


def test_a_deleted_device_gets_nothing(factory, hosts, device, tmp_path):
    uuid = uuid_of(device)
    assert factory.run("sandbox", "delete-device", "--data", factory.sandbox.data_dir, uuid).exit_code == 0
    _key, csr = openssl_csr(tmp_path, subject_of(device))
    answer = est_curl(hosts, device, "simplereenroll", data=csr, content_type="application/pkcs10")
    assert answer.status == 403
    assert answer.headers["content-type"].startswith("text/plain")
    assert answer.body == f"device {uuid} was deleted (it is on the deny-list)\n".encode()


# --- Before authorize, and the CA that issues ---------------------------------------------------


def _device_from(cli, created, tmp_path) -> Path:
    result = cli("device", "create-offline", created.pki, "--out", tmp_path / "fleet", "--format", "json",
                 env=created.env)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return Path(json.loads(result.stdout)["devices"][0]["path"])


def _port(created) -> int:
    return int(created.sandbox.info.gateway_url.rsplit(":", 1)[1])


def test_before_authorize_the_est_name_is_refused_in_the_handshake(cli, created, tmp_path):
    device = _device_from(cli, created, tmp_path)
    est_host = f"{created.sandbox.store.factory().gateway_id}.{facts.EST_DOMAIN}"
    before = Hosts(gateway="", est=est_host, port=_port(created))
    answer = est_curl(before, device, "cacerts")
    assert answer.exit_code == 35 and "unrecognized name" in answer.stderr
    rotate = cli("device", "rotate-cert", device, "--server-name", est_host, env=created.env)
    assert rotate.exit_code == 3
    assert "refused the name" in rotate.stderr and "has not authorized an EST server" in rotate.stderr
    # The twin: once authorized, the same request is served.
    assert cli("keys", "est", "authorize", created.pki, "--yes", "--via", "inprocess", env=created.env).exit_code == 0
    assert est_curl(hosts_of(created.pki, _port(created)), device, "cacerts").status == 200


def test_a_known_device_renews_under_a_disabled_ca_a_new_one_does_not(cli, created, tmp_path):
    assert cli("keys", "est", "authorize", created.pki, "--yes", "--via", "inprocess", env=created.env).exit_code == 0
    hosts = hosts_of(created.pki, _port(created))
    known, new = _device_from(cli, created, tmp_path / "a"), _device_from(cli, created, tmp_path / "b")
    assert device_status(hosts, known) == 200
    disabled = cli("keys", "ca", "disable-device-ca", created.pki, "--ca-file", "local-ca.pem", "--yes", env=created.env)
    assert disabled.exit_code == 0, disabled.output
    _key, csr = openssl_csr(tmp_path, subject_of(known))
    assert est_curl(hosts, known, "simplereenroll", data=csr, content_type="application/pkcs10").status == 200
    _key, csr = openssl_csr(tmp_path, subject_of(new))
    refused = est_curl(hosts, new, "simplereenroll", data=csr, content_type="application/pkcs10")
    assert refused.status == 403 and b"is disabled: it may not register new devices" in refused.body


def test_the_newest_online_ca_issues_and_none_means_503(cli, created, tmp_path):
    assert cli("keys", "est", "authorize", created.pki, "--yes", "--via", "inprocess", env=created.env).exit_code == 0
    hosts = hosts_of(created.pki, _port(created))
    device = _device_from(cli, created, tmp_path)
    assert device_status(hosts, device) == 200
    added = cli("keys", "ca", "add-device-ca", created.pki, "--online-ca", "--yes", "--via", "inprocess", env=created.env)
    assert added.exit_code == 0, added.output
    newest = profiles.load_cert((created.pki / facts.ONLINE_CA_CERT).read_bytes(), facts.ONLINE_CA_CERT)
    _key, csr = openssl_csr(tmp_path, subject_of(device))
    answer = est_curl(hosts, device, "simplereenroll", data=csr, content_type="application/pkcs10")
    assert answer.status == 200
    issued = print_certs(answer.body)[0]
    assert issued.issuer == newest.subject
    akid = issued.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    assert akid == newest.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    for name in (facts.ONLINE_CA_CERT, "online-crt.bak"):
        serial = profiles.load_cert((created.pki / name).read_bytes(), name).serial_number
        done = cli("keys", "ca", "disable-device-ca", created.pki, "--ca-serial", str(serial), "--yes", env=created.env)
        assert done.exit_code == 0, done.output
    _key, csr = openssl_csr(tmp_path, subject_of(device))
    none = est_curl(hosts, device, "simplereenroll", data=csr, content_type="application/pkcs10")
    assert none.status == 503 and b"no usable online device CA" in none.body


def test_an_issued_certificate_is_a_device_certificate(factory, hosts, device, tmp_path):
    key, csr = openssl_csr(tmp_path, subject_of(device))
    cert = print_certs(est_curl(hosts, device, "simplereenroll", data=csr, content_type="application/pkcs10").body)[0]
    online = profiles.load_cert((factory.pki / facts.ONLINE_CA_CERT).read_bytes(), facts.ONLINE_CA_CERT)
    profiles.check_device_cert(cert, ca=online, factory="acme", uuid=uuid_of(device))
    days = (cert.not_valid_after_utc - cert.not_valid_before_utc).days
    assert days == facts.EST_DEVICE_DAYS
    assert cert.signature_hash_algorithm.name == hashes.SHA256.name
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == uuid_of(device)
