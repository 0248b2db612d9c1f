"""The whole lifecycle on the sandbox, seen from devices on the mTLS gateway:

create -> devices under two local CAs -> disable one (old devices in, new out) -> revoke it
(all out) -> rotate TLS (devices still in, the new certificate served) -> add an online CA
(registration uses it, devices of the old online CA still in).
"""

from __future__ import annotations

import json

from cryptography import x509
from test_keys_ca_helpers import (  # noqa: F401
    created,
    created_template,
    device_cert,
    probe_gateway,
    register_online,
)

from fioca.pki import profiles


def test_device_ca_lifecycle_story(cli, created, tmp_path):
    box = created.sandbox
    root_pem = created.read("factory_ca.pem")
    sni = profiles.gateway_hosts(created.cert("tls-crt"))[0]
    probes = tmp_path / "probes"

    def probe(device):
        _uuid, cert_pem, key_pem = device
        return probe_gateway(box, root_pem, sni, cert_pem, key_pem, probes)

    def certs() -> dict:
        result = cli("keys", "ca", "show", "--format", "json", env=created.env)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    # Two local CAs: local-ca.pem from create, line-b.pem added.
    added = cli("keys", "ca", "add-device-ca", created.pki, "--local-ca", "--local-ca-filename", "line-b.pem", "--yes",
                env=created.env)
    assert added.exit_code == 0, added.output
    serial_b = str(created.cert("line-b.pem").serial_number)
    a1, b1 = device_cert(created, "local-ca.pem"), device_cert(created, "line-b.pem")
    first = probe(a1)
    assert first.status == 200 and json.loads(first.body)["uuid"] == a1[0]
    assert probe(b1).status == 200  # registered on its first request

    # Disable B: its known device stays in, a new one is refused; A is untouched.
    disabled = cli("keys", "ca", "disable-device-ca", created.pki, "--ca-file", "line-b.pem", "--yes", env=created.env)
    assert disabled.exit_code == 0, disabled.output
    assert certs()["disabled-ca-serials"] == [serial_b]
    assert f" -  {serial_b}" in cli("keys", "ca", "show", env=created.env).stdout
    assert probe(b1).status == 200
    assert probe(device_cert(created, "line-b.pem")).status == 403
    assert probe(device_cert(created, "local-ca.pem")).status == 200

    # Revoke B: every device under it is out; A's devices stay in.
    revoked = cli("keys", "ca", "revoke-device-ca", created.pki, "--ca-file", "line-b.pem", "--yes", env=created.env)
    assert revoked.exit_code == 0, revoked.output
    after_revoke = certs()
    assert int(serial_b) not in {ca.serial_number for ca in profiles.load_cert_bundle(after_revoke["ca-crt"], "ca-crt")}
    assert probe(b1).status in (None, 403)
    assert probe(a1).status == 200

    # Rotate TLS: the gateway serves the new certificate at once, devices keep connecting.
    old_tls = created.cert("tls-crt")
    assert x509.load_der_x509_certificate(probe(a1).served_cert_der) == old_tls
    rotated = cli("keys", "ca", "rotate-tls", created.pki, "--yes", env=created.env)
    assert rotated.exit_code == 0, rotated.output
    new_tls = created.cert("tls-crt")
    assert new_tls != old_tls and created.cert("tls-crt.bak") == old_tls
    seen = probe(a1)
    assert seen.status == 200
    assert x509.load_der_x509_certificate(seen.served_cert_der) == new_tls

    # Online CA: a device registered now is signed by the new online CA; the older one stays in.
    o1 = register_online(box)
    old_online = created.cert("online-crt")
    assert profiles.load_cert(o1[1], "o1").issuer == old_online.subject
    profiles.load_cert(o1[1], "o1").verify_directly_issued_by(old_online)
    assert probe(o1).status == 200
    online = cli("keys", "ca", "add-device-ca", created.pki, "--online-ca", "--yes", env=created.env)
    assert online.exit_code == 0, online.output
    new_online = created.cert("online-crt")
    assert created.cert("online-crt.bak") == old_online and new_online != old_online
    o2 = register_online(box)
    o2_cert = profiles.load_cert(o2[1], "o2")
    o2_cert.verify_directly_issued_by(new_online)
    try:
        o2_cert.verify_directly_issued_by(old_online)
    except Exception:  # noqa: BLE001 - the negative twin: not the old online CA's signature
        pass
    else:
        raise AssertionError("o2 was signed by the old online CA")
    assert probe(o2).status == 200
    assert probe(o1).status == 200
    assert probe(a1).status == 200


def test_installed_command_dry_run_pretty(fioca_subprocess, created):
    """The installed entry point: a disable dry-run prints the CRL then fioctl's layout, sends nothing."""
    done = fioca_subprocess("keys", "ca", "disable-device-ca", created.pki, "--ca-file", "local-ca.pem", "--dry-run",
                            "--pretty", env=created.env)
    assert done.returncode == 0, done.stderr
    assert "Generating Certificate Revocation List" in done.stderr and "Signing CRL by Factory root CA" in done.stderr
    assert "Uploading" not in done.stderr
    assert "\t\t\t\t\t Disable - 6\n" in done.stdout
    crl = profiles.load_crl(done.stdout.split("Certificate Revocation List:")[0], "stdout")
    assert [entry.serial_number for entry in crl] == [created.cert("local-ca.pem").serial_number]
