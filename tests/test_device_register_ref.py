"""`fioca device register` against a factory-registration-ref server (`DEVICE_API=http://host/sign`):
a local CA from a PKI dir of each maker's profile signs the CSR as the reference does; what the
reference refuses is shown with its message; an answer that fails a check says what is left."""

from __future__ import annotations

import json
import stat
import uuid as uuid_module
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtensionOID
from pki_fixtures import seed_sandbox, shared_pki
from registration_ref import RegistrationRef, sota_toml
from test_device_support import FACTORY

from fioca.pki import profiles
from fioca.sandbox.server import Sandbox

PROFILES = ("fioctl-go-v0.41", "api-2023-openssl-1.1", "api-2026-openssl-3")



def _config_env(box: Sandbox) -> dict[str, str]:
    """What a user of the sandbox exports: its fioctl.yaml (token, server, CA)."""
    return {"FIOCTL_CONFIG": str(box.data_dir / "fioctl.yaml")}

@pytest.fixture
def ref_for(tmp_path):
    made: list[RegistrationRef] = []

    def make(pki_dir: Path, **kwargs) -> RegistrationRef:
        made.append(RegistrationRef(pki_dir, tmp_path / f"devices-{len(made)}", **kwargs))
        return made[-1]

    yield make
    for ref in made:
        ref.stop()


def register(cli, ref: RegistrationRef, sota: Path, *args: object, env: dict[str, str] | None = None):
    sota.mkdir(parents=True, exist_ok=True)
    # The reference takes no token; lmp-device-register still wants one, or it starts the device flow.
    return cli("device", "register", "-d", sota, "-f", FACTORY, "-t", "main", "-i", "rpi4", "-T", "unused-by-the-ref",
               "--aklite-lock", sota.parent / "none", "--format", "json", *args,
               env={"DEVICE_API": ref.url, **(env or {})})  # fmt: skip


@pytest.mark.parametrize("profile", PROFILES)
def test_registration_against_the_reference(cli, ref_for, tmp_path, profile):
    pki = shared_pki(profile)
    ref = ref_for(pki.path)
    sota = tmp_path / "sota"
    result = register(cli, ref, sota, "-n", "ref-dev", "-a", "app1", "--pki-dir", pki.path)
    assert result.exit_code == 0, result.stderr
    done = json.loads(result.stdout)
    assert done["files"] == ["pkey.pem", "root.crt", "client.pem", "client.chained", "sota.toml"] and not done["shared_pki"]
    (head, _, _), (post, _, raw) = ref.requests
    assert (head, post) == ("HEAD", "POST")  # HEAD /sign is 405 there: below 500, so fine
    body = json.loads(raw)
    cert = profiles.load_cert((sota / "client.pem").read_bytes(), "client.pem")
    # As the reference signs: serial = the uuid, 7300 days, its three extensions and no other.
    assert cert.serial_number == uuid_module.UUID(done["uuid"]).int
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=7300)
    assert [e.oid for e in cert.extensions] == [ExtensionOID.KEY_USAGE, ExtensionOID.EXTENDED_KEY_USAGE,
                                                ExtensionOID.AUTHORITY_KEY_IDENTIFIER]  # fmt: skip
    assert (sota / "client.chained").read_text() == (sota / "client.pem").read_text() + "\n" + ref.ca_pem
    assert (sota / "root.crt").read_bytes() == (pki.path / "factory_ca.pem").read_bytes()
    expected = sota_toml("rpi4", body["overrides"], str(sota), ref.gateway_server, ref.ostree_server)
    assert (sota / "sota.toml").read_text() == expected + "\n"
    assert 'compose_apps = "app1"' in expected and 'tags = "main"' in expected
    assert stat.S_IMODE((sota / "pkey.pem").stat().st_mode) == 0o400
    assert (ref.devices_dir / done["uuid"]).is_file()


def test_a_local_ca_whose_key_id_the_reference_does_not_follow_is_refused(cli, ref_for, tmp_path):
    """The reference's AKID is the SHA-1 of the CA's key; a local CA whose SKID is Go 1.25's
    truncated SHA-256 gets device certificates OpenSSL cannot chain: refused, nothing written,
    and what the server may hold is said."""
    ref = ref_for(shared_pki("fioctl-go-1.26").path)
    result = register(cli, ref, tmp_path / "sota", "-n", "akid")
    assert result.exit_code == 4 and "authorityKeyIdentifier does not match" in result.stderr
    assert f"the registration server {ref.url} may have signed a certificate for device" in result.stderr
    assert list((tmp_path / "sota").iterdir()) == []


@pytest.mark.parametrize(
    "args, message",
    [
        (("-g", "lab"), "= Registration-reference does not support 'group' field"),
        (("-f", "other"), "= Invalid factory(other) must be acme"),
    ],
)
def test_what_the_reference_refuses_is_shown_with_its_message(cli, ref_for, tmp_path, args, message):
    ref = ref_for(shared_pki("fioctl-go-v0.41").path)
    result = register(cli, ref, tmp_path / "sota", *args)
    assert result.exit_code == 6 and f"HTTP error during POST '{ref.url}': 400" in result.stderr
    assert message in result.stderr.splitlines()
    assert "may have signed" not in result.stderr  # a refusal: nothing to take back
    assert list((tmp_path / "sota").iterdir()) == [] and list(ref.devices_dir.iterdir()) == []
    twin = register(cli, ref, tmp_path / "twin")  # the same server, without what it refuses
    assert twin.exit_code == 0, twin.stderr


def test_a_misconfigured_reference_is_caught_and_what_is_left_is_said(cli, ref_for, tmp_path):
    """The server answers a root that is not its CA's: no file is written, and since /sign cannot
    delete, the error says the server may hold the device and how to remove it."""
    pki, other = shared_pki("fioctl-go-v0.41"), shared_pki("api-2026-openssl-3")
    ref = ref_for(pki.path, root_pem=(other.path / "factory_ca.pem").read_text())
    result = register(cli, ref, tmp_path / "sota", "-n", "wrong-root")
    assert result.exit_code == 4 and "client.chained CA: signature does not verify with the root" in result.stderr
    assert "remove it there: `fioctl devices delete wrong-root`" in result.stderr
    assert list((tmp_path / "sota").iterdir()) == []
    known = register(cli, ref, tmp_path / "known", "--pki-dir", pki.path)  # the root known first: the same end
    assert known.exit_code == 4 and f"not the factory's root from {pki.path}/factory_ca.pem" in known.stderr


def test_the_reference_creates_the_device_in_the_factory(cli, ref_for, tmp_path):
    """The reference with an API token: PUT /ota/devices/ first, then the device reaches the
    factory's gateway with the files fioca wrote."""
    with Sandbox(tmp_path / "sandbox", factory=FACTORY, scripts=None) as box:
        pki = seed_sandbox(box, "fioctl-go-v0.41", tmp_path / "pki")
        gateway = f"https://{box.info.gateway_host}:{box.info.gateway_url.rsplit(':', 1)[1]}"
        ref = ref_for(pki.path, gateway_server=gateway, ostree_server=gateway,
                      foundries=(f"{box.info.api_url}/ota/devices/", box.info.token, str(box.info.cacert)))  # fmt: skip
        sota = tmp_path / "sota"
        result = register(cli, ref, sota, "-n", "made-by-ref", "--pki-dir", pki.path)
        assert result.exit_code == 0, result.stderr
        record = box.store.device(json.loads(result.stdout)["uuid"])
        assert record is not None and record.name == "made-by-ref"
        checked = cli("device", "check", sota, env=_config_env(box))
        assert checked.exit_code == 0 and checked.stdout.startswith("accepted"), checked.output
        cert = x509.load_pem_x509_certificate((sota / "client.pem").read_bytes())
        assert cert.issuer == pki.cert("local-ca.pem").subject
