"""`keys ca update | add-device-ca | disable/enable/revoke-device-ca | rotate-tls | sign` through
the real CLI against the real sandbox: happy paths, each documented error, files and requests."""

from __future__ import annotations

import shutil
import stat

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from test_keys_ca_helpers import Created, created, created_template  # noqa: F401  (fixtures)

from fioca import facts
from fioca.api import FactoryApi
from fioca.config import load_settings
from fioca.errors import RefusedError
from fioca.pki import files, lifecycle, profiles, signer

FACTORY = "acme"


def get_certs(cli, created: Created) -> dict:
    import json

    result = cli("keys", "ca", "show", "--format", "json", env=created.env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def bundle(certs: dict) -> list[x509.Certificate]:
    return profiles.load_cert_bundle(certs["ca-crt"], "ca-crt")


def serials(certs: dict) -> set[int]:
    return {ca.serial_number for ca in bundle(certs)}


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def new_local_ca(created: Created, cli, *, root=None, root_key=None) -> x509.Certificate:
    cn = created.cert("local-ca.pem").subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    key = profiles.new_key()
    csr = profiles.build_device_ca_csr(key, cn=cn, factory=FACTORY)
    return profiles.sign_device_ca(csr, root_cert=root or created.root(), root_key=root_key or created.root_key())


# --- update ------------------------------------------------------------------------------------


def test_update_adds_a_ca_and_shows_it_first(cli, created, tmp_path):
    before = get_certs(cli, created)
    extra = new_local_ca(created, cli)
    path = tmp_path / "cas.pem"
    path.write_text(before["ca-crt"].rstrip("\n") + "\n" + profiles.cert_pem(extra).decode())
    result = cli("keys", "ca", "update", path, "--yes", env=created.env)
    assert result.exit_code == 0, result.output
    assert "CAs added:" in result.stderr and f"serial {extra.serial_number}" in result.stderr
    assert "CAs dropped:" not in result.stderr
    assert "1 CA(s) added, 0 dropped" in result.stdout
    assert serials(get_certs(cli, created)) == serials(before) | {extra.serial_number}


def test_update_dry_run_sends_nothing(cli, created, tmp_path):
    before = get_certs(cli, created)
    extra = new_local_ca(created, cli)
    path = tmp_path / "cas.pem"
    path.write_text(before["ca-crt"] + "\n" + profiles.cert_pem(extra).decode())
    result = cli("keys", "ca", "update", path, "--dry-run", env=created.env)
    assert result.exit_code == 0, result.output
    assert "Dry run: nothing was sent." in result.stdout
    assert serials(get_certs(cli, created)) == serials(before)


def test_update_dropping_a_ca_is_refused_before_anything_is_sent(cli, created, tmp_path):
    """The server keeps every device CA until a CRL revokes it (its rule 5): fioca applies that
    rule itself, --dry-run included, and says how to remove a CA instead."""
    before = get_certs(cli, created)
    path = tmp_path / "cas.pem"
    path.write_bytes(created.read("local-ca.pem"))  # the online CA is missing
    for extra in (["--dry-run"], ["--yes"]):
        result = cli("keys", "ca", "update", path, *extra, env=created.env)
        assert result.exit_code == 3, result.output
        assert "leaves out device CA(s) the factory trusts" in result.stderr and "revoke-device-ca" in result.stderr
    assert serials(get_certs(cli, created)) == serials(before)


def test_update_refuses_a_local_ca_of_another_user(cli, created, tmp_path):
    """A local device CA's CN is fio-<the caller's polis-id>; the server refuses another's, and
    so does --dry-run. Its twin, the caller's own new local CA, is accepted."""
    from fioca.pki import files, profiles, signer

    root_signer = signer.load_root_signer(files.PkiDir.open(created.pki))
    foreign = signer.create_local_ca(root_signer, cn="fio-someone-else", via="inprocess")
    bundle = get_certs(cli, created)["ca-crt"].encode() + b"\n" + profiles.cert_pem(foreign.cert)
    path = tmp_path / "cas.pem"
    path.write_bytes(bundle)
    result = cli("keys", "ca", "update", path, "--dry-run", env=created.env)
    assert result.exit_code == 4, result.output
    assert "CN must be fio-" in result.stderr and "fio-someone-else" in result.stderr
    mine = signer.create_local_ca(root_signer, cn=profiles.subject_cn(created.cert("local-ca.pem")), via="inprocess")
    path.write_bytes(get_certs(cli, created)["ca-crt"].encode() + b"\n" + profiles.cert_pem(mine.cert))
    assert cli("keys", "ca", "update", path, "--yes", env=created.env).exit_code == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (lambda c: c.read("factory_ca.key"), "must hold only PEM CERTIFICATE blocks"),
        (lambda c: c.read("tls-crt"), "basicConstraints is missing|keyUsage|extension|exactly one OU"),
        (lambda c: c.read("local-ca.pem") + b"\n" + c.read("local-ca.pem"), "appears twice"),
        (lambda c: b"not a pem", "is not PEM"),
    ],
)
def test_update_checks_the_file_before_sending(cli, created, tmp_path, content, message):
    path = tmp_path / "cas.pem"
    path.write_bytes(content(created))
    result = cli("keys", "ca", "update", path, "--yes", env=created.env)
    assert result.exit_code == 4, result.output
    assert __import__("re").search(message, result.stderr), result.stderr


def test_update_refuses_a_ca_of_another_root(cli, created, tmp_path):
    other_key = profiles.new_key()
    other_root = profiles.build_root(other_key, factory=FACTORY)
    foreign = new_local_ca(created, cli, root=other_root, root_key=other_key)
    path = tmp_path / "cas.pem"
    path.write_text(get_certs(cli, created)["ca-crt"] + "\n" + profiles.cert_pem(foreign).decode())
    result = cli("keys", "ca", "update", path, "--yes", env=created.env)
    assert result.exit_code == 4, result.output
    assert "signature does not verify with the root's key" in result.stderr


def test_update_of_the_same_bundle_sends_nothing(cli, created, tmp_path):
    path = tmp_path / "cas.pem"
    path.write_text(get_certs(cli, created)["ca-crt"])
    result = cli("keys", "ca", "update", path, "--yes", env=created.env)
    assert result.exit_code == 3
    assert "nothing to update" in result.stderr


def test_update_without_yes_and_without_a_terminal_refuses(cli, created, tmp_path):
    path = tmp_path / "cas.pem"
    path.write_text(get_certs(cli, created)["ca-crt"])
    result = cli("keys", "ca", "update", path, env=created.env)
    assert result.exit_code == 3
    assert "needs confirmation: run it in a terminal, or pass --yes" in result.stderr


# --- add-device-ca -----------------------------------------------------------------------------------


def test_add_local_ca(cli, created):
    before = get_certs(cli, created)
    result = cli("keys", "ca", "add-device-ca", created.pki, "--local-ca", "--local-ca-filename", "line-2.pem", "--yes",
                 env=created.env)
    assert result.exit_code == 0, result.output
    new = created.cert("line-2.pem")
    key = profiles.load_private_key(created.read("line-2.key"), "line-2.key")
    profiles.check_key_matches(key, new, "line-2.key")
    assert mode(created.pki / "line-2.pem") == mode(created.pki / "line-2.key") == 0o400
    assert "Creating local device CA" in result.stderr and "Uploading signed certs to Foundries.io" in result.stderr
    after = get_certs(cli, created)
    assert serials(after) == serials(before) | {new.serial_number}
    # The existing CAs stay first, in order; the new one is appended.
    assert after["ca-crt"].startswith(before["ca-crt"].rstrip("\n"))
    assert new.subject == created.cert("local-ca.pem").subject  # CN fio-<polis id>, OU acme


def test_add_online_ca_keeps_the_old_one_as_bak_and_never_clobbers(cli, created):
    first_online = created.read("online-crt")
    for expected_backup in ("online-crt.bak", "online-crt.bak.1"):
        previous = created.read("online-crt")
        result = cli("keys", "ca", "add-device-ca", created.pki, "--online-ca", "--yes", env=created.env)
        assert result.exit_code == 0, result.output
        assert (created.pki / expected_backup).read_bytes() == previous
        assert created.read("online-crt") != previous
    assert created.read("online-crt.bak") == first_online
    online = created.cert("online-crt")
    profiles.check_device_ca(online, root=created.root(), factory=FACTORY, csr=profiles.load_csr(created.read("ca-csr"), "c"))
    assert online.serial_number in serials(get_certs(cli, created))


def test_add_device_ca_needs_a_flag(cli, created):
    result = cli("keys", "ca", "add-device-ca", created.pki, "--yes", env=created.env)
    assert result.exit_code == 2
    assert "At least one of --online-ca or --local-ca must be true" in result.stderr


def test_add_device_ca_filename_is_not_a_path(cli, created):
    result = cli("keys", "ca", "add-device-ca", created.pki, "--local-ca", "--local-ca-filename", "sub/x.pem", "--yes",
                 env=created.env)
    assert result.exit_code == 2
    assert "The `--local-ca-filename` argument must be filename and not a path: sub/x.pem" in result.stderr


@pytest.mark.parametrize(("taken", "what"), [("local-ca.pem", "file"), ("local-ca.key", "key file")])
def test_add_device_ca_refuses_an_existing_file(cli, created, taken, what):
    before = get_certs(cli, created)
    if taken == "local-ca.key":
        (created.pki / "local-ca.pem").rename(created.pki / "moved.pem")
    result = cli("keys", "ca", "add-device-ca", created.pki, "--local-ca", "--yes", env=created.env)
    assert result.exit_code == 3
    assert f"A local device CA {what} {created.pki / taken} already exists." in result.stderr
    assert "Please specify a different name with --local-ca-filename." in result.stderr
    assert get_certs(cli, created)["ca-crt"] == before["ca-crt"]


def test_add_device_ca_refuses_a_pki_dir_of_another_root(cli, created, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    key = profiles.new_key()
    files.write_file(other / facts.ROOT_KEY, profiles.private_key_pem(key))
    files.write_file(other / facts.ROOT_CERT, profiles.cert_pem(profiles.build_root(key, factory=FACTORY)))
    result = cli("keys", "ca", "add-device-ca", other, "--local-ca", "--yes", env=created.env)
    assert result.exit_code == 3
    assert "is not factory 'acme's root of trust" in result.stderr
    assert not (other / "local-ca.pem").exists()


def test_a_refused_patch_puts_the_pki_dir_back(cli, created):
    online_before = created.read("online-crt")
    created.sandbox.inject_fault(method="PATCH", route="certs", status=400, message="nope")
    result = cli("keys", "ca", "add-device-ca", created.pki, "--online-ca", "--local-ca", "--local-ca-filename", "l3.pem",
                 "--yes", env=created.env)
    assert result.exit_code == 6, result.output
    assert "PKI dir was put back" in result.stderr
    assert created.read("online-crt") == online_before
    assert not (created.pki / "online-crt.bak").exists()
    assert not (created.pki / "l3.pem").exists() and not (created.pki / "l3.key").exists()


# --- disable / enable / revoke ---------------------------------------------------------------------------


def local_serial(created: Created) -> int:
    return created.cert("local-ca.pem").serial_number


def test_disable_dry_run_prints_the_crl_and_sends_nothing(cli, created):
    result = cli("keys", "ca", "disable-device-ca", created.pki, "--ca-file", "local-ca.pem", "--dry-run", env=created.env)
    assert result.exit_code == 0, result.output
    crl = profiles.load_crl(result.stdout, "stdout")
    profiles.check_crl(crl, root=created.root())
    assert [(e.serial_number, profiles.crl_reason(e)) for e in crl] == [
        (local_serial(created), x509.ReasonFlags.certificate_hold)
    ]
    assert get_certs(cli, created)["disabled-ca-serials"] == []


def test_revoke_dry_run_pretty_is_fioctls_layout(cli, created):
    serial = local_serial(created)
    result = cli("keys", "ca", "revoke-device-ca", created.pki, "--ca-serial", serial, "--dry-run", "--pretty",
                 env=created.env)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("-----BEGIN X509 CRL-----")
    pretty = result.stdout.split("-----END X509 CRL-----\n\n", 1)[1]  # fioctl's Println of the PEM: a blank line
    assert pretty.startswith("Certificate Revocation List:\n\tIssuer: CN=Factory-CA,OU=acme\n\tValidity:\n")
    assert f"\t\tSerial: {serial}\n" in pretty
    assert "\t\t\t\tx509v3 Reason Code:\n\t\t\t\t\t Revoke - 9\n" in pretty
    assert "\t\tx509v3 CRL Number: \n" in pretty and "\t\tx509v3 Authority Key Id: \n" in pretty
    assert serial in serials(get_certs(cli, created))  # nothing was sent


def test_disable_then_enable_and_show_lists_disabled_serials(cli, created):
    serial = local_serial(created)
    heading = "## Disabled Device Authentication Certificate Serial(s)"
    assert heading not in cli("keys", "ca", "show", env=created.env).stdout
    result = cli("keys", "ca", "disable-device-ca", created.pki, "--ca-file", "local-ca.pem", "--yes", env=created.env)
    assert result.exit_code == 0, result.output
    assert f"Disabled device CA serials now: {serial}" in result.stdout
    shown = cli("keys", "ca", "show", env=created.env).stdout
    assert shown.rstrip("\n").endswith(f"{heading}\n -  {serial}")
    assert serial in serials(get_certs(cli, created))  # disabled, still trusted for known devices

    result = cli("keys", "ca", "enable-device-ca", created.pki, "--ca-serial", serial, "--yes", env=created.env)
    assert result.exit_code == 0, result.output
    assert get_certs(cli, created)["disabled-ca-serials"] == []
    assert heading not in cli("keys", "ca", "show", env=created.env).stdout


def test_enable_of_a_ca_that_is_not_disabled_is_refused(cli, created):
    result = cli("keys", "ca", "enable-device-ca", created.pki, "--ca-file", "local-ca.pem", "--yes", env=created.env)
    assert result.exit_code == 3
    assert f"serial {local_serial(created)} is not disabled" in result.stderr


def test_revoke_removes_the_ca(cli, created):
    serial = local_serial(created)
    result = cli("keys", "ca", "revoke-device-ca", created.pki, "--ca-file", "local-ca.pem", "--yes", "--format", "json",
                 env=created.env)
    assert result.exit_code == 0, result.output
    assert '"reason_code": 9' in result.stdout
    after = get_certs(cli, created)
    assert serial not in serials(after) and created.cert("online-crt").serial_number in serials(after)
    # Revoked is for good: the next revoke finds no such active CA.
    again = cli("keys", "ca", "revoke-device-ca", created.pki, "--ca-serial", serial, "--yes", env=created.env)
    assert again.exit_code == 3
    assert f"There is no active device CA with serial {serial}" in again.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        ((), 2, "At least one of --ca-file or --ca-serial must be provided"),
        (("--ca-serial", "12ab"), 2, "Value 12ab is not a valid base 10 serial"),
        (("--ca-serial", "12345"), 3, "There is no active device CA with serial 12345"),
        (("--ca-file", "../local-ca.pem"), 2, "The `--ca-file` argument must be filename and not a path: ../local-ca.pem"),
        (("--ca-file", "tls-crt"), 3, "There is no active device CA with serial"),
        (("--ca-file", "nope.pem"), 1, "nope.pem does not exist"),
    ],
)
def test_crl_commands_errors(cli, created, args, code, message):
    for command in ("disable-device-ca", "revoke-device-ca"):
        result = cli("keys", "ca", command, created.pki, *args, "--yes", env=created.env)
        assert result.exit_code == code, result.output
        assert message in result.stderr
    assert get_certs(cli, created)["disabled-ca-serials"] == []


# --- rotate-tls ----------------------------------------------------------------------------------------------


def test_rotate_tls_twice(cli, created):
    first = created.read("tls-crt")
    result = cli("keys", "ca", "rotate-tls", created.pki, "--yes", env=created.env)
    assert result.exit_code == 0, result.output
    progress = [line for line in result.stderr.splitlines() if not line.startswith(" ")]
    assert progress[:2] == ["Requesting new Foundries.io TLS CSR", "Signing Foundries.io TLS CSR"]
    assert progress[-3:] == [  # fioctl's words; fioca moves files only once the change is confirmed
        "Moving existing TLS cert file from tls-crt to tls-crt.bak",
        "Moving existing file from tls-csr to tls-csr.bak",
        "Uploading signed certs to Foundries.io",
    ]
    assert created.read("tls-crt.bak") == first
    new = created.cert("tls-crt")
    assert mode(created.pki / "tls-crt") == 0o400
    profiles.check_gateway_tls(new, root=created.root(), csr=profiles.load_csr(created.read("tls-csr"), "tls-csr"))
    assert get_certs(cli, created)["tls-crt"] == created.read("tls-crt").decode()
    assert profiles.gateway_hosts(new) == profiles.gateway_hosts(profiles.load_cert(first, "old"))
    assert f"serial {new.serial_number}" in result.stdout

    second = cli("keys", "ca", "rotate-tls", created.pki, "--yes", env=created.env)
    assert second.exit_code == 0, second.output
    assert created.read("tls-crt.bak") == first and created.read("tls-crt.bak.1") == profiles.cert_pem(new)


def test_rotate_tls_not_confirmed_writes_and_sends_nothing(cli, created):
    api = FactoryApi(load_settings(factory=None, token=None, config=created.env["FIOCTL_CONFIG"], server=None, verbose=False))
    before = get_certs(cli, created)["tls-crt"]
    pki = files.PkiDir.open(created.pki)
    seen = []
    with pytest.raises(RefusedError, match="not confirmed; nothing was written or sent"):
        lifecycle.rotate_tls(api, pki, signer.load_root_signer(files.PkiDir.open(created.pki)), confirm=lambda plan: seen.append(plan) or False)
    assert seen and seen[0].summary()["hosts_changed"] is False
    assert not (created.pki / "tls-crt.bak").exists()
    assert get_certs(cli, created)["tls-crt"] == before


# --- sign ----------------------------------------------------------------------------------------------------


def write_csr(tmp_path, csr) -> str:
    path = tmp_path / "req.csr"
    path.write_bytes(profiles.csr_pem(csr))
    return str(path)


def test_sign_tls_by_default(cli, created, tmp_path):
    from test_keys_ca_signer import tls_csr

    csr = tls_csr()
    result = cli("keys", "ca", "sign", "--pki-dir", created.pki, write_csr(tmp_path, csr))
    assert result.exit_code == 0, result.output
    cert = profiles.load_cert(result.stdout, "stdout")
    profiles.check_gateway_tls(cert, root=created.root(), csr=csr)


def test_sign_ca_profile_by_choice_and_via_script(cli, created, tmp_path):
    from test_keys_ca_signer import ca_csr

    csr = ca_csr()
    result = cli("keys", "ca", "sign", "--pki-dir", created.pki, "--profile", "ca", "--via", "script", write_csr(tmp_path, csr))
    assert result.exit_code == 0, result.output
    profiles.check_device_ca(profiles.load_cert(result.stdout, "stdout"), root=created.root(), factory=FACTORY, csr=csr)


def test_sign_infers_a_device_ca_from_the_csr_as_fioctl_does(cli, created, tmp_path):
    from test_keys_ca_signer import ca_csr

    result = cli("keys", "ca", "sign", "--pki-dir", created.pki, write_csr(tmp_path, ca_csr()))
    assert result.exit_code == 0, result.output
    cert = profiles.load_cert(result.stdout, "signed")
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert (constraints.ca, constraints.path_length) == (True, 0)
    assert "as a device CA (the CSR asks for CA:TRUE)" in result.stderr


def test_sign_profile_overrides_what_the_csr_asks(cli, created, tmp_path):
    from test_keys_ca_signer import ca_csr

    result = cli("keys", "ca", "sign", "--pki-dir", created.pki, "--profile", "tls", write_csr(tmp_path, ca_csr()))
    assert result.exit_code == 4
    assert "asks for CA:TRUE; the tls profile makes a server certificate (use --profile ca)" in result.stderr
    assert "BEGIN CERTIFICATE" not in result.stdout


def test_sign_copies_ip_uri_and_email_names_as_fioctl_does(cli, created, tmp_path):
    import ipaddress

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    names = [
        x509.DNSName("gw.example.com"),
        x509.IPAddress(ipaddress.ip_address("192.0.2.7")),
        x509.UniformResourceIdentifier("spiffe://example/gw"),
        x509.RFC822Name("ops@example.com"),
    ]
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gw")]))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    )
    path = write_csr(tmp_path, csr)
    result = cli("keys", "ca", "sign", "--pki-dir", created.pki, path)
    assert result.exit_code == 0, result.output
    cert = profiles.load_cert(result.stdout, "signed")
    assert list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value) == names
    assert not profiles.is_ca(cert)
    # The reference script copies DNS names only: refused up front, not signed short of names.
    by_script = cli("keys", "ca", "sign", "--pki-dir", created.pki, "--via", "script", path)
    assert by_script.exit_code == 2 and "sign it in process (--via inprocess)" in by_script.stderr


def test_sign_refuses_more_than_the_ca_profile(cli, created, tmp_path):
    from test_keys_ca_signer import ca_csr

    result = cli("keys", "ca", "sign", "--pki-dir", created.pki, "--profile", "ca", write_csr(tmp_path, ca_csr(path_length=2)))
    assert result.exit_code == 4
    assert "asks for pathlen 2; the ca profile grants pathlen:0 only" in result.stderr


def test_sign_needs_the_root_key(cli, tmp_path):
    from test_keys_ca_signer import tls_csr

    empty = tmp_path / "empty"
    empty.mkdir()
    result = cli("keys", "ca", "sign", "--pki-dir", empty, write_csr(tmp_path, tls_csr()))
    assert result.exit_code == 3
    assert "factory_ca.pem does not exist" in result.stderr


# --- fioctl's progress lines, word for word, in fioctl's order ----------------------------------------------


FIOCTL_LINES = {
    "Fetching a list of existing device CAs", "Creating local device CA", "Requesting new Foundries.io Online Device CA CSR",
    "Signing Foundries.io CSR for online use", "Uploading signed certs to Foundries.io",
    "Generating Certificate Revocation List", "Signing CRL by Factory root CA", "Uploading CRL to Foundries.io",
}


def progress_lines(stderr: str) -> list[str]:
    """The progress lines, in order: fioctl's, and fioca's own "Moving existing ..." ones; the
    plan fioca shows before it asks comes between them."""
    return [line for line in stderr.splitlines() if line in FIOCTL_LINES or line.startswith("Moving existing ")]


def test_add_device_ca_says_what_fioctl_says(cli, created):
    result = cli("keys", "ca", "add-device-ca", created.pki, "--online-ca", "--local-ca", "--local-ca-filename",
                 "line-2.pem", "--yes", env=created.env)
    assert result.exit_code == 0, result.output
    assert progress_lines(result.stderr) == [
        "Fetching a list of existing device CAs",
        "Creating local device CA",
        "Requesting new Foundries.io Online Device CA CSR",
        "Signing Foundries.io CSR for online use",
        "Moving existing online device CA file from online-crt to online-crt.bak",  # fioca: once confirmed
        "Moving existing file from ca-csr to ca-csr.bak",  # fioca keeps the old CSR too
        "Uploading signed certs to Foundries.io",
    ]


def test_crl_commands_say_what_fioctl_says(cli, created):
    result = cli("keys", "ca", "disable-device-ca", created.pki, "--ca-file", "local-ca.pem", "--yes", env=created.env)
    assert result.exit_code == 0, result.output
    assert progress_lines(result.stderr) == [
        "Generating Certificate Revocation List",
        "Signing CRL by Factory root CA",
        "Uploading CRL to Foundries.io",
    ]


def test_text_output_quotes_paths_that_need_it(cli, created, tmp_path):
    from fioca.text import quote_path

    spaced = tmp_path / "my pki"
    shutil.copytree(created.pki, spaced)
    result = cli("keys", "ca", "add-device-ca", spaced, "--local-ca", "--local-ca-filename", "line 2.pem", "--yes",
                 env=created.env)
    assert result.exit_code == 0, result.output
    assert f"  line 2.pem           {quote_path(spaced / 'line 2.pem')}" in result.stdout.splitlines()
    assert "'" in quote_path(spaced / "line 2.pem")
