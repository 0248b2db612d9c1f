"""`fioca device create-offline`: both paths make the documented folder and profile, and refuse."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
import uuid as uuid_module
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtensionOID, NameOID
from test_device_support import FACTORY, Factory

from fioca import facts
from fioca.device import batch, offline, sota
from fioca.device import template as template_module
from fioca.device.template import DeviceTemplate
from fioca.errors import RefusedError
from fioca.pki.profiles import der
from fioca.pki import profiles

PATHS = {"in-process": [], "faithful": ["--faithful"]}


@pytest.fixture(scope="module")
def factory(tmp_path_factory):
    made = Factory(tmp_path_factory.mktemp("offline"))
    yield made
    made.stop()


def _create(factory: Factory, *extra: object, out: Path | None = None) -> list[dict]:
    args = ["device", "create-offline", factory.pki, "--format", "json", *extra]
    if out is not None:
        args += ["--out", out]
    result = factory.run(*args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)["devices"]


def _cert(folder: Path) -> x509.Certificate:
    return profiles.load_cert((folder / "client.pem").read_bytes(), "client.pem")


@pytest.mark.parametrize("path", PATHS)
def test_one_device_folder_is_what_var_sota_needs(factory: Factory, tmp_path: Path, path: str):
    [device] = _create(factory, *PATHS[path], out=tmp_path / "out")
    folder = Path(device["path"])
    assert folder == tmp_path / "out" / device["uuid"]
    assert sorted(os.listdir(folder)) == sorted(offline.DEVICE_FILES)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in offline.DEVICE_FILES:
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o400, name
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(offline.PARTIAL_PREFIX)] == []

    cert = _cert(folder)
    local_ca = profiles.load_cert((factory.pki / facts.LOCAL_CA_CERT).read_bytes(), "local-ca.pem")
    profiles.check_device_cert(cert, ca=local_ca, factory=FACTORY, uuid=device["uuid"])
    assert profiles.subject_cn(cert) == device["uuid"] and profiles.subject_ou(cert) == FACTORY
    usage = cert.extensions.get_extension_for_oid(ExtensionOID.KEY_USAGE)
    assert usage.critical and usage.value.digital_signature and usage.value.key_agreement
    eku = cert.extensions.get_extension_for_oid(ExtensionOID.EXTENDED_KEY_USAGE)
    assert eku.critical and list(eku.value) == [x509.ExtendedKeyUsageOID.CLIENT_AUTH]
    key = profiles.load_private_key((folder / "pkey.pem").read_bytes(), "pkey.pem")
    profiles.check_key_matches(key, cert, "pkey.pem")
    assert (folder / "root.crt").read_bytes() == (factory.pki / facts.ROOT_CERT).read_bytes()
    assert (folder / "device-cert.ext").read_text() == offline.DEVICE_CERT_EXT
    assert f'commonName="{device["uuid"]}"' in (folder / "device-cert.conf").read_text()
    csr = profiles.load_csr((folder / "device-cert.csr").read_bytes(), "device-cert.csr")
    assert csr.subject == cert.subject

    # sota.toml points at the factory's gateway: first SAN, and the sandbox's port (config).
    text = (folder / "sota.toml").read_text()
    assert sota.gateway_server(text) == f"https://{factory.gateway_host}:{factory.gateway_port}"
    assert 'tls_pkey_path = "/var/sota/pkey.pem"' in text
    days = (cert.not_valid_after_utc - cert.not_valid_before_utc).days
    if path == "faithful":
        assert days == 30  # OpenSSL's default: the documented days=3650 in [req] has no effect
        assert (folder / "pkey.pem").read_text().startswith("-----BEGIN EC PARAMETERS-----")
        assert (factory.pki / "local-ca.srl").exists()  # -CAcreateserial, as documented
        assert stat.S_IMODE((factory.pki / "local-ca.srl").stat().st_mode) == 0o400
    else:
        assert days == offline.DEFAULT_DAYS
        assert (folder / "pkey.pem").read_text().startswith("-----BEGIN EC PRIVATE KEY-----")


def _profile(cert: x509.Certificate) -> dict:
    """What a certificate profile is: everything but key, serial, dates and key identifiers."""
    extensions = {}
    for ext in cert.extensions:
        if ext.oid in (ExtensionOID.SUBJECT_KEY_IDENTIFIER, ExtensionOID.AUTHORITY_KEY_IDENTIFIER):
            extensions[ext.oid.dotted_string] = ext.critical  # present, same criticality
        else:
            extensions[ext.oid.dotted_string] = (ext.critical, ext.value)
    return {
        "version": cert.version,
        "subject_types": [attr.oid for attr in cert.subject],
        "ou": profiles.subject_ou(cert),
        "issuer": cert.issuer,
        "signature": cert.signature_algorithm_oid,
        "key": cert.public_key().curve.name,
        "extensions": extensions,
        "serial_bits": cert.serial_number.bit_length() > 64,
    }


@pytest.mark.parametrize("production", [False, True])
def test_faithful_and_in_process_make_the_same_profile(factory: Factory, tmp_path: Path, production: bool):
    flags = ["--production"] if production else []
    [made_in_process] = _create(factory, *flags, out=tmp_path / "a")
    [made_faithful] = _create(factory, "--faithful", *flags, out=tmp_path / "b")
    a, b = _cert(Path(made_in_process["path"])), _cert(Path(made_faithful["path"]))
    assert _profile(a) == _profile(b)
    categories = a.subject.get_attributes_for_oid(NameOID.BUSINESS_CATEGORY)
    assert [c.value for c in categories] == (["production"] if production else [])
    # The twin: a registration-profile cert (no keyAgreement) is a different profile.
    other = profiles.sign_device_cert(
        profiles.build_device_csr(profiles.new_key(), uuid=made_in_process["uuid"], factory=FACTORY),
        ca_cert=profiles.load_cert((factory.pki / facts.LOCAL_CA_CERT).read_bytes(), "ca"),
        ca_key=profiles.load_private_key((factory.pki / facts.LOCAL_CA_KEY).read_bytes(), "key"),
        days=30, key_usage_agreement=False,
    )
    assert _profile(other) != _profile(a)


def test_batch_uses_the_pool_and_makes_complete_unique_folders(factory: Factory, tmp_path: Path):
    count = offline.POOL_THRESHOLD + 8
    devices = _create(factory, "--count", count, "--workers", 2, out=tmp_path / "fleet")
    assert len({d["uuid"] for d in devices}) == count
    folders = sorted(p for p in (tmp_path / "fleet").iterdir() if not p.name.startswith("."))
    assert len(folders) == count
    for folder in folders:
        assert sorted(os.listdir(folder)) == sorted(offline.DEVICE_FILES)
        assert profiles.subject_cn(_cert(folder)) == folder.name


def test_text_output_lists_uuid_and_folder(factory: Factory, tmp_path: Path):
    result = factory.run("device", "create-offline", factory.pki, "--count", 2, "--out", tmp_path / "t")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        uuid, folder = line.split()
        assert Path(folder) == tmp_path / "t" / uuid and Path(folder).is_dir()
    assert "created 2 device folder(s)" in result.stderr


def test_text_output_of_a_batch_in_the_current_folder(factory: Factory, tmp_path: Path, monkeypatch):
    """--out . lists each folder as pathlib names it ("<uuid>", not "./<uuid>")."""
    monkeypatch.chdir(tmp_path)
    result = factory.run("device", "create-offline", factory.pki, "--count", 2, "--out", ".")
    assert result.exit_code == 0, result.stderr
    for line in result.stdout.strip().splitlines():
        uuid, folder = line.split()
        assert folder == uuid and (tmp_path / folder).is_dir()


@pytest.mark.parametrize("out", [".", "/", "fleet", "/var/tmp/a b/fleet"])
def test_device_paths_are_each_devices_path(out: str):
    from fioca.cli.device import _device_paths

    devices = [offline.OfflineDevice(spec.uuid, spec.folder, Path(out)) for spec in offline.RandomDevices(3)[:]]
    devices.append(offline.OfflineDevice("u", "dev-1.a_b", Path(out)))
    assert _device_paths(Path(out), devices) == [str(device.path) for device in devices]


@pytest.mark.parametrize("path", PATHS)
def test_existing_folder_is_never_overwritten(factory: Factory, tmp_path: Path, path: str):
    first = factory.run("device", "create-offline", factory.pki, "--name", "dev1", "--out", tmp_path, *PATHS[path])
    assert first.exit_code == 0, first.stderr
    before = (tmp_path / "dev1" / "client.pem").read_bytes()
    again = factory.run("device", "create-offline", factory.pki, "--name", "dev1", "--out", tmp_path, *PATHS[path])
    assert again.exit_code == 3
    assert "already exists" in again.stderr
    assert (tmp_path / "dev1" / "client.pem").read_bytes() == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["--count", "2", "--uuid", "2b0f7e1c-53a5-4a43-9ba6-6f3ab8f3f2a4"], "one device"),
        (["--uuid", "not-a-uuid"], "is not a UUID"),
        (["--name", "../escape"], "plain folder name"),
        (["--faithful", "--days", "365"], "--faithful gives OpenSSL's 30 days"),
        (["--gateway-url", "ftp://x"], "must look like https"),
    ],
)
def test_usage_refusals(factory: Factory, tmp_path: Path, args: list[str], message: str):
    result = factory.run("device", "create-offline", factory.pki, "--out", tmp_path / "u", *args)
    assert result.exit_code == 2, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "u").exists() or [p for p in (tmp_path / "u").iterdir() if not p.name.startswith(".")] == []


def test_uuid_and_days_are_honoured(factory: Factory, tmp_path: Path):
    uuid = "2b0f7e1c-53a5-4a43-9ba6-6f3ab8f3f2a4"
    [device] = _create(factory, "--uuid", uuid, "--days", 365, "--gateway-url", "https://127.0.0.1:9999", out=tmp_path)
    cert = _cert(Path(device["path"]))
    assert profiles.subject_cn(cert) == uuid
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 365
    assert sota.gateway_server((Path(device["path"]) / "sota.toml").read_text()).endswith(":9999")


def _pki_copy(factory: Factory, tmp_path: Path) -> Path:
    copy = tmp_path / "pki"
    copy.mkdir(mode=0o700)
    for name in (facts.ROOT_CERT, facts.TLS_CERT, facts.LOCAL_CA_CERT, facts.LOCAL_CA_KEY, facts.ONLINE_CA_CERT):
        shutil.copy(factory.pki / name, copy / name)
        (copy / name).chmod(0o600)
    return copy


@pytest.mark.parametrize("path", PATHS)
def test_a_local_ca_key_that_is_not_the_local_ca_is_refused(factory: Factory, tmp_path: Path, path: str):
    pki = _pki_copy(factory, tmp_path)
    (pki / facts.LOCAL_CA_KEY).write_bytes(profiles.private_key_pem(profiles.new_key()))
    result = factory.run("device", "create-offline", pki, *PATHS[path])
    # In process fioca's check refuses the key (4); faithful, openssl itself refuses it (5).
    assert result.exit_code == (5 if path == "faithful" else 4), result.stderr
    assert "local-ca.key" in result.stderr or "do not match" in result.stderr
    assert [p for p in (pki / "devices").iterdir() if not p.name.startswith(".")] == []


@pytest.mark.parametrize("path", PATHS)
def test_a_local_ca_of_another_factory_is_refused(factory: Factory, tmp_path: Path, path: str):
    pki = _pki_copy(factory, tmp_path)
    # The online CA is a device CA of the factory too, but its key is not here: swap it in as
    # local-ca.pem, and local-ca.key no longer belongs to it.
    shutil.copy(pki / facts.ONLINE_CA_CERT, pki / facts.LOCAL_CA_CERT)
    result = factory.run("device", "create-offline", pki, *PATHS[path])
    assert result.exit_code == (5 if path == "faithful" else 4), result.stderr
    assert [p for p in (pki / "devices").iterdir() if not p.name.startswith(".")] == []


def test_a_pki_dir_without_local_ca_is_refused(factory: Factory, tmp_path: Path):
    pki = _pki_copy(factory, tmp_path)
    (pki / facts.LOCAL_CA_KEY).unlink()
    result = factory.run("device", "create-offline", pki)
    assert result.exit_code == 1
    assert "local-ca.key does not exist" in result.stderr


def test_faithful_check_accepts_ec_parameters_but_not_another_curve(factory: Factory):
    # The check of the faithful path reads pkey.pem with its EC PARAMETERS block...
    done = subprocess.run(["openssl", "ecparam", "-genkey", "-name", "prime256v1"], capture_output=True, check=True)
    profiles.load_private_key(done.stdout, "pkey.pem")
    # ...and its twin: a secp384r1 key is refused.
    other = subprocess.run(["openssl", "ecparam", "-genkey", "-name", "secp384r1"], capture_output=True, check=True)
    with pytest.raises(Exception, match="prime256v1|P-256"):
        profiles.load_private_key(other.stdout, "pkey.pem")


def test_interrupted_batch_leaves_only_complete_folders(factory: Factory, tmp_path: Path):
    out = tmp_path / "big"
    env = {k: v for k, v in os.environ.items() if k not in ("FIOCTL_CONFIG", "FIOCTL_TOKEN")}
    process = subprocess.Popen(
        [__import__("sys").executable, "-m", "fioca", "device", "create-offline", str(factory.pki),
         "--count", "50000", "--out", str(out)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        # A shell's background job (CI, a test runner's worker) may start us with SIGINT
        # ignored, which the child would inherit; Ctrl-C must reach it as it does in a terminal.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if out.exists() and sum(1 for p in out.iterdir() if not p.name.startswith(".")) >= 20:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the batch made no 20 folders within 60 s")
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "no partial" in stderr
    entries = list(out.iterdir())
    assert [p.name for p in entries if p.name.startswith(offline.PARTIAL_PREFIX)] == []
    folders = [p for p in entries if not p.name.startswith(".")]
    assert 20 <= len(folders) < 50000
    for folder in folders:
        assert sorted(os.listdir(folder)) == sorted(offline.DEVICE_FILES), folder
        assert profiles.subject_cn(_cert(folder)) == folder.name


def test_workers_of_a_killed_batch_end_and_the_next_run_removes_their_partial_folders(factory: Factory, tmp_path: Path):
    out = tmp_path / "big"
    env = {k: v for k, v in os.environ.items() if k not in ("FIOCTL_CONFIG", "FIOCTL_TOKEN")}
    process = subprocess.Popen(
        [sys.executable, "-m", "fioca", "device", "create-offline", str(factory.pki), "--count", "50000", "--out", str(out)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    workers: list[int] = []
    while time.monotonic() < deadline and not (out.exists() and any(p.name.startswith(offline.PARTIAL_PREFIX) for p in out.iterdir())):
        time.sleep(0.02)
    workers = [int(pid) for pid in Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()]
    assert workers, "the batch started no workers"
    process.kill()
    process.wait(timeout=10)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() and "Z" not in _state(pid) for pid in workers):
        time.sleep(0.05)
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists() and "Z" not in _state(pid)], "workers outlived their batch"
    made = sum(1 for p in out.iterdir() if not p.name.startswith("."))
    assert made < 50000
    # The next run into the same folder removes what the killed one left partial.
    again = factory.run("device", "create-offline", factory.pki, "--count", 2, "--out", out)
    assert again.exit_code == 0, again.stderr
    assert [p.name for p in out.iterdir() if p.name.startswith(offline.PARTIAL_PREFIX)] == []


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


@pytest.mark.parametrize("use_ostree_server", [True, False])
def test_offline_sota_toml_has_the_registration_servers_layout(use_ostree_server: bool):
    from fioca import sota_toml as server_side

    gateway, ostree = "abc.ota-lite.foundries.io", "abc.ostree.foundries.io"
    ours = sota.render(gateway_host=gateway, ostree_host=ostree, hardware_id="rpi4", sota_dir="/var/sota",
                       use_ostree_server=use_ostree_server)
    ostree_url = f"https://{ostree}:8443/ostree" if use_ostree_server else f"https://{gateway}:8443/treehub"
    theirs = server_side.render(gateway_url=f"https://{gateway}:8443", ostree_url=ostree_url, hardware_id="rpi4",
                                sota_config_dir="/var/sota")
    assert ours == theirs
    # Without a hardware id the key is unset (section 9's "" rendering), not an empty string.
    unset = sota.render(gateway_host=gateway, ostree_host=ostree)
    assert "# primary_ecu_hardware_id is not set" in unset and unset != ours


def _template(factory: Factory) -> DeviceTemplate:
    pki = offline.load_pki(factory.pki)
    return DeviceTemplate(local_ca=pki.local_ca, ca_key=offline.load_local_ca_key(pki), factory=FACTORY,
                          production=False, days=30)


def _signed_by(tbs: bytes, key) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    signature = key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    return der.tlv(0x30, tbs + template_module.ECDSA_SHA256 + der.tlv(0x03, b"\x00" + signature))


def _tbs(cert_der: bytes) -> bytes:
    _tag, start, _end = der.read(cert_der, 0)
    _tag, _content, stop = der.read(cert_der, start)
    return cert_der[start:stop]


def test_every_batch_certificate_is_read_back_and_refused_when_wrong(factory: Factory):
    template = _template(factory)
    good = template.issue(str(uuid_module.uuid4()))
    other = template.issue(str(uuid_module.uuid4()))
    template.check(good)  # the twin: what the template makes passes, and is the profile
    assert _profile(x509.load_der_x509_certificate(good.cert_der)) == _profile(
        x509.load_der_x509_certificate(other.cert_der))
    ca_key = profiles.load_private_key((factory.pki / facts.LOCAL_CA_KEY).read_bytes(), "key")
    key = profiles.load_private_key(good.pem_files()["pkey.pem"], "pkey.pem")
    csr = profiles.build_device_csr(key, uuid=good.uuid, factory=FACTORY)
    local_ca = profiles.load_cert((factory.pki / facts.LOCAL_CA_CERT).read_bytes(), "ca")

    def der_of(cert) -> bytes:
        return cert.public_bytes(serialization.Encoding.DER)

    cases = {
        # The builder's certificate without a SKID: not OpenSSL's exact extension list.
        "extensions differ": replace(good, cert_der=der_of(profiles.sign_device_cert(csr, ca_cert=local_ca, ca_key=ca_key, days=30))),
        "validity must be 30 days": replace(good, cert_der=der_of(profiles.sign_device_cert(csr, ca_cert=local_ca, ca_key=ca_key, days=31))),
        "does not belong": replace(good, key_der=other.key_der),
        f"subject must be CN={other.uuid}": replace(good, uuid=other.uuid),
        "subject or key differs": replace(good, csr_der=other.csr_der),
        "is not the DER": replace(good, cert_der=good.cert_der[:-3]),
    }
    for message, bent in cases.items():
        with pytest.raises(profiles.CheckError, match=re.escape(message)):
            template.check(bent)
    # The signatures are the full check's (the first device and every 64th): bent ones pass
    # the read-back and fail there; the twin passes both.
    template.check_whole(good)
    bent_csr = replace(good, csr_der=good.csr_der[:-2] + bytes([good.csr_der[-2] ^ 1]) + good.csr_der[-1:])
    foreign = replace(good, cert_der=_signed_by(_tbs(good.cert_der), profiles.new_key()))
    for bent, message in ((bent_csr, "self-signature does not verify"), (foreign, "does not verify with local-ca.pem")):
        template.check(bent)
        with pytest.raises(profiles.CheckError, match=message):
            template.check_whole(bent)


def test_a_pool_batch_reports_each_folder_once_and_in_place(factory: Factory, tmp_path: Path):
    """Every folder reported is in place with all seven files; no partial or work dir stays."""
    out = tmp_path / "synced"
    seen: list[int] = []
    made = offline.create_in_process(offline.load_pki(factory.pki), offline.OfflineOptions(out_dir=out, workers=2),
                                     offline.plan_devices(offline.POOL_THRESHOLD * 3), seen.append)
    assert sum(seen) == len(made) == offline.POOL_THRESHOLD * 3
    assert [p.name for p in out.iterdir()] and all(not p.name.startswith(".") for p in out.iterdir())
    for device in made:
        assert sorted(os.listdir(device.path)) == sorted(offline.DEVICE_FILES)


def test_faithful_runs_only_in_the_jail(factory: Factory, tmp_path: Path, monkeypatch):
    from fioca.pki import jail as jails

    monkeypatch.setattr(jails, "_probe", lambda: "bubblewrap (`bwrap`) is not installed; install it (apt-get install bubblewrap)")
    out = tmp_path / "nojail"
    result = factory.run("device", "create-offline", factory.pki, "--faithful", "--out", out)
    assert result.exit_code == 1 and "apt-get install bubblewrap" in result.stderr
    assert not out.exists() or list(out.iterdir()) == []
    # The twin: with the jail, the same command makes the device.
    monkeypatch.undo()
    assert factory.run("device", "create-offline", factory.pki, "--faithful", "--out", out).exit_code == 0


def test_interrupted_faithful_batch_leaves_complete_folders_and_no_work_dir(factory: Factory, tmp_path: Path):
    """Ctrl-C during --faithful: the devices running finish, no new one starts, every folder
    left is complete, and no work dir (each held a copy of local-ca.key) remains."""
    out = tmp_path / "faithful"
    env = {k: v for k, v in os.environ.items() if k not in ("FIOCTL_CONFIG", "FIOCTL_TOKEN")}
    process = subprocess.Popen(
        [sys.executable, "-m", "fioca", "device", "create-offline", str(factory.pki), "--faithful", "--count", "400",
         "--out", str(out)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while not (out.exists() and sum(1 for p in out.iterdir() if not p.name.startswith(".")) >= 2):
        assert time.monotonic() < deadline, "the batch made no 2 folders within 60 s"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "no partial" in stderr
    entries = list(out.iterdir())
    assert [p.name for p in entries if p.name.startswith(".")] == []  # no partial folder, no work dir
    folders = [p for p in entries if not p.name.startswith(".")]
    assert 2 <= len(folders) < 400
    for folder in folders:
        assert sorted(os.listdir(folder)) == sorted(offline.DEVICE_FILES), folder


def test_random_devices_are_canonical_version_4_uuids():
    devices = offline.RandomDevices(2000)
    spelled = [devices[index].uuid for index in range(len(devices))]
    assert len(set(spelled)) == len(spelled)
    for uuid in spelled:
        parsed = uuid_module.UUID(uuid)
        assert str(parsed) == uuid and parsed.version == 4 and parsed.variant == uuid_module.RFC_4122
    assert devices[-1] == devices[len(devices) - 1] and devices[1:3] == [devices[1], devices[2]]


def test_publishing_never_replaces_a_folder_even_an_empty_one(tmp_path: Path):
    """rename(2) would replace an empty folder of the same name: publishing refuses, leaves both."""
    (tmp_path / f"{offline.PARTIAL_PREFIX}dev1").mkdir()
    (tmp_path / f"{offline.PARTIAL_PREFIX}dev1" / "client.pem").write_bytes(b"new")
    (tmp_path / "dev1").mkdir()
    with batch.opened_folder(tmp_path) as out_fd:
        with pytest.raises(RefusedError, match="dev1 already exists"):
            batch.Publisher(tmp_path, out_fd).publish(["dev1"])
    assert os.listdir(tmp_path / "dev1") == []
    assert (tmp_path / f"{offline.PARTIAL_PREFIX}dev1" / "client.pem").read_bytes() == b"new"


def test_publishing_moves_complete_folders_into_place(tmp_path: Path):
    for name in ("dev1", "dev2"):
        (tmp_path / f"{offline.PARTIAL_PREFIX}{name}").mkdir()
    with batch.opened_folder(tmp_path) as out_fd:
        batch.Publisher(tmp_path, out_fd).publish(["dev1", "dev2"])
    assert sorted(os.listdir(tmp_path)) == ["dev1", "dev2"]


@pytest.mark.parametrize("count", [offline.POOL_THRESHOLD, 1000, 100_000])
def test_pool_chunks_cover_the_batch_once_and_shrink_to_the_end(count: int):
    plan = batch.PoolPlan(range(count), 2, offline.MAX_CHUNK, Path("/unused"))
    chunks, start = [], 0
    while (chunk := plan.next_chunk(start)) is not None:
        chunks.append(chunk)
        start = chunk[1]
    assert [spec for chunk in chunks for spec in plan.part(chunk)] == list(range(count))
    sizes = [end - begin for begin, end in chunks]
    assert max(sizes) <= offline.MAX_CHUNK and sizes == sorted(sizes, reverse=True)
    assert sizes[-1] <= batch.MIN_CHUNK and all(size >= batch.MIN_CHUNK for size in sizes[:-1])


def test_an_offline_batch_does_not_read_the_config(factory: Factory, tmp_path: Path):
    """create-offline needs nothing of fioctl.yaml: with one in use (even a broken one) it
    makes its devices, and never loads the YAML reader (15 ms of a 1,000-device batch)."""
    config = tmp_path / "fioctl.yaml"
    config.write_text("factory: [unclosed\n")
    probe = "import sys\nfrom fioca.cli import main\ncode = main(sys.argv[1:])\nprint('yaml' in sys.modules, code, file=sys.stderr)\n"
    env = {**os.environ, "FIOCTL_CONFIG": str(config)}
    args = ["device", "create-offline", str(factory.pki), "--count", "2", "--out", str(tmp_path / "out")]
    done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, env=env)
    assert done.stderr.strip().splitlines()[-1] == "False 0", done.stderr
    assert len([name for name in os.listdir(tmp_path / "out") if not name.startswith(".")]) == 2
