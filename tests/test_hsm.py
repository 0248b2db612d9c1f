"""The root key on a PKCS#11 token, with a real SoftHSM2 token (each in its own token dir).

One module-scoped factory is created in HSM mode; every root-signing command then runs against
it with the HSM flags, by script (openssl's pkcs11 engine) and in process (python-pkcs11).
Each command's output is collected, and at the end the PIN must appear in none of it, nor in
any file of the PKI dir.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from fioca import facts
from fioca.cli import main
from fioca.errors import CheckError, RefusedError
from fioca.facts import WORK_DIR
from fioca.pki import hsm, profiles
from fioca.pki.files import PkiDir
from fioca.pki.signer import HsmRootSigner, load_root_signer
from fioca.sandbox.server import Sandbox
from tests.conftest import CliResult, config_env

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
FACTORY = "acme"
# Letters and dashes: a PIN that cannot turn up by chance in a serial number or in base64.
PIN = "hsm-Pin-4f7Q-zx"
SO_PIN = "so-Pin-9k2W-qa"

# No skipping: .ci/run installs Debian's softhsm2, opensc and libengine-pkcs11-openssl.
assert Path(MODULE).is_file() and shutil.which("softhsm2-util") and shutil.which("pkcs11-tool"), (
    "the HSM tests need Debian's softhsm2, opensc and libengine-pkcs11-openssl (see .ci/run)"
)
SPKI = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo


@dataclass
class Token:
    conf: Path
    label: str

    @property
    def env(self) -> dict[str, str]:
        return {"SOFTHSM2_CONF": str(self.conf)}

    def settings(self, pin: str = PIN) -> hsm.HsmSettings:
        return hsm.HsmSettings(module=MODULE, token_label=self.label, pin=pin, module_env=tuple(self.env.items()))

    def flags(self) -> list[str]:
        return ["--hsm-module", MODULE, "--hsm-token-label", self.label]

    @contextmanager
    def active(self) -> Iterator[None]:
        """For calls into fioca.pki.hsm from the test itself: the module reads SOFTHSM2_CONF."""
        old = os.environ.get("SOFTHSM2_CONF")
        os.environ["SOFTHSM2_CONF"] = str(self.conf)
        try:
            yield
        finally:
            if old is None:
                os.environ.pop("SOFTHSM2_CONF", None)
            else:
                os.environ["SOFTHSM2_CONF"] = old

    def root_objects(self) -> list[str]:
        with self.active():
            return sorted(hsm.root_key_objects(self.settings()))


def new_token(folder: Path, label: str) -> Token:
    """A fresh SoftHSM2 token in its own token dir (the util takes PINs on argv: test setup only)."""
    tokens = folder / "tokens"
    tokens.mkdir(parents=True)
    conf = folder / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", SO_PIN, "--pin", PIN],
        env={**os.environ, "SOFTHSM2_CONF": str(conf)}, check=True, capture_output=True,
    )  # fmt: skip
    return Token(conf, label)


def put_root_ca_on(token: Token) -> None:
    subprocess.run(
        ["pkcs11-tool", "--module", MODULE, "--token-label", token.label, "--login", "--pin", "env:HSM_PIN",
         "--keypairgen", "--key-type", "EC:prime256v1", "--id", "01", "--label", "root-ca"],
        env={**os.environ, **token.env, "HSM_PIN": PIN}, check=True, capture_output=True,
    )  # fmt: skip


@dataclass
class World:
    """A sandbox factory, a HOME, and every output seen (for the PIN check at the end)."""

    root: Path
    sandbox: Sandbox
    outputs: list[str] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return config_env(self.sandbox)

    def cli(self, *argv, env: dict[str, str] | None = None) -> CliResult:
        clean = {name: None for name in ("FIOCTL_FACTORY", "FIOCTL_TOKEN", "FIOCTL_CONFIG", "CACERT", "FIOCA_SERVER",
                                         "TOKEN_HEADER", "FIOCA_HSM_PIN", "SOFTHSM2_CONF")}  # fmt: skip
        clean.update({"HOME": str(self.root / "home"), **self.env, **(env or {})})
        with CliRunner().isolation(env=clean) as (out, err, _mixed):
            code = main([str(arg) for arg in argv])
            result = CliResult(code, out.getvalue().decode(), err.getvalue().decode())
        self.outputs.append(result.output)
        return result

    def certs(self) -> dict:
        result = self.cli("keys", "ca", "show", "--format", "json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)


def start_world(folder: Path, scripts: str | None = None) -> World:
    """A sandbox and a home. Its answers carry no scripts (today's API) unless asked: create then
    runs fioca's own, which name the PIN as env:HSM_PIN."""
    (folder / "home").mkdir(parents=True)
    box = Sandbox(folder / "sandbox", factory=FACTORY, scripts=scripts)
    box.start()
    return World(folder, box)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@dataclass
class HsmPki:
    world: World
    token: Token
    pki: Path
    create: CliResult

    def pin_env(self, **extra: str) -> dict[str, str]:
        return {**self.token.env, "FIOCA_HSM_PIN": PIN, **extra}

    def run(self, *argv, pin_env: bool = True, env: dict[str, str] | None = None) -> CliResult:
        return self.world.cli(*argv, env={**(self.pin_env() if pin_env else self.token.env), **(env or {})})

    def root(self) -> x509.Certificate:
        return profiles.load_cert((self.pki / facts.ROOT_CERT).read_bytes(), facts.ROOT_CERT)


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> HsmPki:
    folder = tmp_path_factory.mktemp("hsm")
    world = start_world(folder / "world")
    token = new_token(folder / "token", "factory-root")
    pki = folder / "pki"
    try:
        create = world.cli("keys", "ca", "create", pki, "--yes", *token.flags(),
                           env={**token.env, "FIOCA_HSM_PIN": PIN})  # fmt: skip
        yield HsmPki(world, token, pki, create)
        # Every output of every command in this module, and every file the PKI dir holds.
        for output in world.outputs:
            assert PIN not in output
        for name, data in snapshot(pki).items():
            assert PIN.encode() not in data, name
    finally:
        world.sandbox.stop()


# --- create ------------------------------------------------------------------------------------


def test_create_makes_the_root_on_the_token_and_no_key_file(made: HsmPki):
    assert made.create.exit_code == 0, made.create.output
    assert "Creating offline root CA for Factory" in made.create.stderr
    assert "The root key is on HSM token 'factory-root'" in made.create.stdout
    assert "Keep factory_ca.key" not in made.create.stdout
    # No root key file anywhere: not in the PKI dir, and the work dir is gone.
    assert not (made.pki / facts.ROOT_KEY).exists()
    assert [name for name in os.listdir(made.pki) if name.startswith(WORK_DIR)] == []
    for name, data in snapshot(made.pki).items():
        if b"PRIVATE KEY" in data:
            assert name == facts.LOCAL_CA_KEY
    # The root certificate's key is the token's, and the server holds that root.
    root = made.root()
    with made.token.active():
        token_key = hsm.root_public_key(made.token.settings())
    assert root.public_key().public_bytes(*SPKI) == token_key.public_bytes(*SPKI)
    profiles.check_root(root, factory=FACTORY)
    assert made.world.certs()["root-crt"].strip() == (made.pki / facts.ROOT_CERT).read_text().strip()
    for name in (facts.TLS_CERT, facts.ONLINE_CA_CERT, facts.LOCAL_CA_CERT):
        cert = profiles.load_cert((made.pki / name).read_bytes(), name)
        root.public_key().verify(cert.signature, cert.tbs_certificate_bytes, _ecdsa(cert))


def test_a_root_from_another_key_does_not_match_the_token(made: HsmPki):
    other = profiles.build_root(profiles.new_key(), factory=FACTORY)
    with made.token.active():
        with pytest.raises(CheckError, match="not the root-ca key on HSM token"):
            hsm.check_cert_matches_token(made.token.settings(), other, facts.ROOT_CERT)
        hsm.check_cert_matches_token(made.token.settings(), made.root(), facts.ROOT_CERT)


def _ecdsa(cert: x509.Certificate) -> ec.ECDSA:
    return ec.ECDSA(cert.signature_hash_algorithm)


# --- every command that signs with the root ------------------------------------------------------


def _ca_serials(made: HsmPki) -> set[int]:
    return {ca.serial_number for ca in profiles.load_cert_bundle(made.world.certs()["ca-crt"], "ca-crt")}


@pytest.mark.parametrize("via", ["script", "inprocess"])
def test_add_device_ca_local_signs_on_the_token(made: HsmPki, via: str):
    name = f"line-{via}.pem"
    result = made.run("keys", "ca", "add-device-ca", made.pki, "--local-ca", "--local-ca-filename", name,
                      "--via", via, "--yes", *made.token.flags())  # fmt: skip
    assert result.exit_code == 0, result.output
    ca = profiles.load_cert((made.pki / name).read_bytes(), name)
    profiles.check_device_ca(ca, root=made.root(), factory=FACTORY)
    assert ca.serial_number in _ca_serials(made)


@pytest.mark.parametrize("via", ["script", "inprocess"])
def test_add_device_ca_online_signs_on_the_token(made: HsmPki, via: str):
    before = _ca_serials(made)
    result = made.run("keys", "ca", "add-device-ca", made.pki, "--online-ca", "--via", via, "--yes",
                      *made.token.flags())  # fmt: skip
    assert result.exit_code == 0, result.output
    online = profiles.load_cert((made.pki / facts.ONLINE_CA_CERT).read_bytes(), facts.ONLINE_CA_CERT)
    profiles.check_device_ca(online, root=made.root(), factory=FACTORY)
    assert _ca_serials(made) == before | {online.serial_number}


def test_disable_then_revoke_a_device_ca_with_a_crl_signed_on_the_token(made: HsmPki):
    name = "to-revoke.pem"
    added = made.run("keys", "ca", "add-device-ca", made.pki, "--local-ca", "--local-ca-filename", name,
                     "--via", "inprocess", "--yes", *made.token.flags())  # fmt: skip
    assert added.exit_code == 0, added.output
    serial = profiles.load_cert((made.pki / name).read_bytes(), name).serial_number
    dry = made.run("keys", "ca", "disable-device-ca", made.pki, "--ca-file", name, "--dry-run", *made.token.flags())
    assert dry.exit_code == 0, dry.output
    crl = x509.load_pem_x509_crl(dry.stdout.encode())
    assert crl.is_signature_valid(made.root().public_key())
    disabled = made.run("keys", "ca", "disable-device-ca", made.pki, "--ca-file", name, "--yes", *made.token.flags())
    assert disabled.exit_code == 0, disabled.output
    assert str(serial) in made.world.certs()["disabled-ca-serials"]
    revoked = made.run("keys", "ca", "revoke-device-ca", made.pki, "--ca-serial", str(serial), "--yes",
                       *made.token.flags())  # fmt: skip
    assert revoked.exit_code == 0, revoked.output
    assert serial not in _ca_serials(made)


@pytest.mark.parametrize("via", ["script", "inprocess"])
def test_rotate_tls_signs_on_the_token(made: HsmPki, via: str):
    result = made.run("keys", "ca", "rotate-tls", made.pki, "--via", via, "--yes", *made.token.flags())
    assert result.exit_code == 0, result.output
    tls = profiles.load_cert((made.pki / facts.TLS_CERT).read_bytes(), facts.TLS_CERT)
    csr = profiles.load_csr((made.pki / facts.TLS_CSR).read_bytes(), facts.TLS_CSR)
    profiles.check_gateway_tls(tls, root=made.root(), csr=csr)
    assert made.world.certs()["tls-crt"].strip() == (made.pki / facts.TLS_CERT).read_text().strip()


@pytest.mark.parametrize("via", ["script", "inprocess"])
@pytest.mark.parametrize("profile", ["tls", "ca"])
def test_sign_signs_on_the_token(made: HsmPki, tmp_path: Path, via: str, profile: str):
    key = profiles.new_key()
    if profile == "ca":
        csr = profiles.build_device_ca_csr(key, cn="fio-line-9", factory=FACTORY)
    else:
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "gw"),
                                     x509.NameAttribute(x509.oid.NameOID.ORGANIZATIONAL_UNIT_NAME, FACTORY)]))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("gw.example.test")]), critical=False)
            .sign(key, hashes.SHA256())
        )  # fmt: skip
    path = tmp_path / "req.csr"
    path.write_bytes(profiles.csr_pem(csr))
    result = made.run("keys", "ca", "sign", "--pki-dir", made.pki, "--profile", profile, "--via", via, path,
                      *made.token.flags())  # fmt: skip
    assert result.exit_code == 0, result.output
    cert = profiles.load_cert(result.stdout, "signed")
    made.root().public_key().verify(cert.signature, cert.tbs_certificate_bytes, _ecdsa(cert))


def test_without_the_hsm_flags_an_hsm_pki_dir_cannot_sign(made: HsmPki, tmp_path: Path):
    path = tmp_path / "req.csr"
    path.write_bytes(profiles.csr_pem(profiles.build_device_ca_csr(profiles.new_key(), cn="fio-x", factory=FACTORY)))
    result = made.run("keys", "ca", "sign", "--pki-dir", made.pki, "--profile", "ca", path)
    assert result.exit_code == 3
    assert "factory_ca.key does not exist" in result.stderr


def test_another_tokens_root_ca_is_refused(made: HsmPki, tmp_path: Path):
    other = new_token(tmp_path / "other", "other-root")
    put_root_ca_on(other)
    with other.active(), pytest.raises(RefusedError, match="is not the key of"):
        HsmRootSigner(PkiDir.open(made.pki), other.settings())
    with made.token.active():
        assert isinstance(load_root_signer(PkiDir.open(made.pki), hsm=made.token.settings()), HsmRootSigner)


# --- wrong PIN, missing token, a token that already holds root-ca ----------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ("add-device-ca", "{pki}", "--local-ca", "--local-ca-filename", "never.pem", "--yes"),
        ("rotate-tls", "{pki}", "--yes"),
        ("revoke-device-ca", "{pki}", "--ca-file", "local-ca.pem", "--yes"),
        ("sign", "--pki-dir", "{pki}", "{pki}/tls-csr"),
    ],
)
def test_a_wrong_pin_is_one_clear_line_and_changes_nothing(made: HsmPki, argv: tuple[str, ...]):
    before_files, before_server = snapshot(made.pki), made.world.certs()
    wrong = "wrong-Pin-000"
    args = [part.format(pki=made.pki) for part in argv]
    result = made.run("keys", "ca", *args, *made.token.flags(), env={"FIOCA_HSM_PIN": wrong})
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "ERROR: HSM token 'factory-root' refused the PIN (wrong PIN); nothing was changed"
    ]
    assert wrong not in result.output and result.stdout == ""
    assert snapshot(made.pki) == before_files and made.world.certs() == before_server


def test_a_missing_token_label_is_named(made: HsmPki):
    result = made.run("keys", "ca", "rotate-tls", made.pki, "--yes", "--hsm-module", MODULE, "--hsm-token-label", "nope")
    assert result.exit_code == 1
    assert "no HSM token 'nope'" in result.stderr and "'factory-root'" in result.stderr


@pytest.fixture
def fresh(tmp_path: Path):
    world = start_world(tmp_path / "world")
    yield world, new_token(tmp_path / "token", "fresh")
    world.sandbox.stop()


def _unconfigured(world: World) -> bool:
    result = world.cli("keys", "ca", "show")
    return result.exit_code != 0 and "not configured" in result.stderr


def test_create_on_a_token_runs_one_script_at_a_time(fresh, tmp_path: Path, monkeypatch):
    """One token, watched around each script: no two scripts use it at once (no side by side)."""
    from fioca.pki.scripts import ScriptRunner

    world, token = fresh
    spans: list[tuple[str, float, float]] = []
    real = ScriptRunner.run

    def timed(self, name, args=()):
        start = time.monotonic()
        try:
            return real(self, name, args)
        finally:
            spans.append((name, start, time.monotonic()))

    monkeypatch.setattr(ScriptRunner, "run", timed)
    result = world.cli("keys", "ca", "create", tmp_path / "pki", "--yes", *token.flags(),
                       env={**token.env, "FIOCA_HSM_PIN": PIN})  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [name for name, _, _ in spans] == list(facts.SCRIPT_NAMES)
    assert all(before[2] <= after[1] for before, after in zip(spans, spans[1:]))


def test_create_with_a_wrong_pin_changes_nothing(fresh, tmp_path: Path):
    world, token = fresh
    pki = tmp_path / "pki"
    result = world.cli("keys", "ca", "create", pki, "--yes", *token.flags(), env={**token.env, "FIOCA_HSM_PIN": "bad-Pin-1"})
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == ["ERROR: HSM token 'fresh' refused the PIN (wrong PIN); nothing was changed"]
    assert "bad-Pin-1" not in result.output
    assert not pki.exists() and _unconfigured(world)
    assert token.root_objects() == []


def test_create_refuses_a_token_that_already_holds_root_ca(fresh, tmp_path: Path):
    world, token = fresh
    put_root_ca_on(token)
    pki = tmp_path / "pki"
    result = world.cli("keys", "ca", "create", pki, "--yes", *token.flags(), env={**token.env, "FIOCA_HSM_PIN": PIN})
    assert result.exit_code == 3
    assert "already holds a root-ca object (private key, public key)" in result.stderr
    assert not pki.exists() and _unconfigured(world)
    # The token keeps exactly what it had: one key pair.
    assert token.root_objects() == ["private key", "public key"]


def test_create_with_a_missing_token_label_changes_nothing(fresh, tmp_path: Path):
    world, token = fresh
    pki = tmp_path / "pki"
    result = world.cli("keys", "ca", "create", pki, "--yes", "--hsm-module", MODULE, "--hsm-token-label", "absent",
                       env={**token.env, "FIOCA_HSM_PIN": PIN})  # fmt: skip
    assert result.exit_code == 1 and "no HSM token 'absent'" in result.stderr
    assert not pki.exists() and _unconfigured(world)


# --- flags, PIN sources, dry-run ---------------------------------------------------------------------


def test_hsm_pin_flag_works_with_a_warning(made: HsmPki, tmp_path: Path):
    path = tmp_path / "req.csr"
    path.write_bytes(profiles.csr_pem(profiles.build_device_ca_csr(profiles.new_key(), cn="fio-y", factory=FACTORY)))
    result = made.run("keys", "ca", "sign", "--pki-dir", made.pki, "--profile", "ca", path, *made.token.flags(),
                      "--hsm-pin", PIN, pin_env=False)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "WARNING: --hsm-pin puts the PIN on the command line" in result.stderr
    quiet = made.run("keys", "ca", "sign", "--pki-dir", made.pki, "--profile", "ca", path, *made.token.flags())
    assert quiet.exit_code == 0 and "WARNING" not in quiet.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--hsm-module", MODULE, "--hsm-token-label", "t"], "--hsm-pin is required with --hsm-module"),
        (["--hsm-module", MODULE], "--hsm-token-label is required with --hsm-module"),
        (["--hsm-token-label", "t"], "--hsm-token-label goes with --hsm-module"),
        (["--hsm-pin", "x", "--hsm-token-label", "t"], "--hsm-pin and --hsm-token-label go with --hsm-module"),
    ],
)
def test_flag_checks_with_fioctls_messages(fresh, tmp_path: Path, flags: list[str], message: str):
    world, _token = fresh
    pki = tmp_path / "pki"
    result = world.cli("keys", "ca", "create", pki, "--yes", *flags)
    assert result.exit_code == 2
    assert f"ERROR: {message}" in result.stderr
    assert not pki.exists() and _unconfigured(world)


def test_dry_run_shows_the_hsm_branch_without_the_pin(fresh, tmp_path: Path):
    world, token = fresh
    pki = tmp_path / "pki"
    as_json = world.cli("keys", "ca", "create", pki, "--dry-run", "--format", "json", *token.flags(),
                        env={**token.env, "FIOCA_HSM_PIN": PIN})  # fmt: skip
    assert as_json.exit_code == 0, as_json.output
    plan = json.loads(as_json.stdout)["plan"]
    assert plan["hsm"] is True
    runs = [step for step in plan["steps"] if step["kind"] == "run"]
    assert runs[0]["produces"] == [facts.ROOT_CERT]
    assert all(facts.ROOT_KEY not in step.get("keeps", []) for step in plan["steps"])
    env = plan["hsm_settings"]["script_env"]
    assert env["HSM_PIN"] == "<hidden>" and env["HSM_MODULE"] == MODULE and env["HSM_TOKEN_LABEL"] == "fresh"
    assert env["SOFTHSM2_CONF"] == str(token.conf)
    text = world.cli("keys", "ca", "create", pki, "--dry-run", *token.flags(), env=token.env)  # no PIN needed
    assert text.exit_code == 0, text.output
    assert "HSM mode: the root key is made and used on token 'fresh'" in text.stdout
    assert "pkcs11-tool --module \"$HSM_MODULE\"" in text.stdout  # the script's HSM branch, printed
    assert "HSM_PIN=<hidden>" in text.stdout
    for output in (as_json.output, text.output):
        assert PIN not in output
    # The dry-run neither made a key on the token nor configured the factory.
    assert token.root_objects() == [] and _unconfigured(world)
    # Its twin without HSM flags: the root step makes factory_ca.key.
    plain = world.cli("keys", "ca", "create", pki, "--dry-run", "--format", "json")
    plain_plan = json.loads(plain.stdout)["plan"]
    assert plain_plan["hsm"] is False and plain_plan["hsm_settings"] is None
    assert [step for step in plain_plan["steps"] if step["kind"] == "run"][0]["produces"] == [facts.ROOT_KEY, facts.ROOT_CERT]


def test_the_audit_shows_the_hsm_branch_of_the_saved_answer(made: HsmPki, tmp_path: Path):
    answer = made.pki / facts.FACTORY_CERTS_JSON
    result = made.world.cli("keys", "ca", "audit", answer)
    assert result.exit_code == 0, result.output
    assert "pkcs11-tool --module $HSM_MODULE" in result.stdout
    assert "export PKCS11_MODULE_PATH=$HSM_MODULE" in result.stdout
    assert "passes env:HSM_PIN" in result.stdout and "HIGH" not in result.stdout
    # Its twin: a create_ca that puts the PIN on pkcs11-tool's command line is reported (MEDIUM:
    # a local exposure, as the API's own scripts have it), and --fail-on medium refuses it.
    from fioca.pki import reference

    data = {**json.loads(answer.read_text()), **reference.bundled()}  # the scripts create ran
    data["create_ca"] = data["create_ca"].replace("--pin env:HSM_PIN", '--pin "$HSM_PIN"')
    hostile = tmp_path / "hostile.json"
    hostile.write_text(json.dumps(data))
    reported = made.world.cli("keys", "ca", "audit", hostile, "--hsm")
    assert reported.exit_code == 0 and "MEDIUM  line 30: hsm-pin-on-command-line:" in reported.stdout
    assert made.world.cli("keys", "ca", "audit", hostile, "--hsm", "--fail-on", "medium").exit_code == 3


def test_resume_refuses_to_make_a_second_root_key_on_the_token(tmp_path, monkeypatch):
    """A run that died inside create_ca after the key pair was made: --resume must not make another."""
    from fioca.pki import reference
    from tests.conftest import answer_with

    world = start_world(tmp_path / "world")
    token = new_token(tmp_path / "token", "orphan")
    try:
        polis = world.sandbox.backend.user_self()["polis-id"]
        script = reference.bundled()["create_ca"]
        dies = script.replace("--label root-ca >&2\n", "--label root-ca >&2\n\tkill -9 $$\n")
        assert dies != script
        answer_with(monkeypatch, world.sandbox, {**reference.bundled(), "create_ca": dies})
        env = {**token.env, "FIOCA_HSM_PIN": PIN}
        pki = tmp_path / "pki"
        failed = world.cli("keys", "ca", "create", pki, "--yes", *token.flags(), env=env)
        assert failed.exit_code == 5, failed.output
        assert token.root_objects() == ["private key", "public key"]
        resumed = world.cli("keys", "ca", "create", pki, "--yes", "--resume", *token.flags(), env=env)
        assert resumed.exit_code == 3
        assert "already holds root-ca" in resumed.stderr and "run --resume again" in resumed.stderr
        assert token.root_objects() == ["private key", "public key"]  # still one key pair
        assert not any(PIN in output for output in world.outputs)
    finally:
        world.sandbox.stop()


@pytest.mark.parametrize("revision", ["api-2023", "api-2026"])
def test_create_runs_the_apis_own_scripts_on_the_token(tmp_path: Path, revision: str):
    """Issue 11.2: Foundries' scripts in HSM mode (the PIN on their command lines, the engine
    finding the module through p11-kit) go through create without --allow-unaudited, in the
    jail; the key is made on the token and never becomes a file."""
    world = start_world(tmp_path / "world", scripts=revision)
    token = new_token(tmp_path / "token", "api-root")
    try:
        pki = tmp_path / "pki"
        result = world.cli("keys", "ca", "create", pki, "--yes", *token.flags(), env={**token.env, "FIOCA_HSM_PIN": PIN})
        assert result.exit_code == 0, result.output
        assert "hsm-pin-on-command-line" not in result.stderr  # MEDIUM: reported by the audit, not a refusal
        assert token.root_objects() == ["private key", "public key"]
        assert not (pki / facts.ROOT_KEY).exists()
        root = profiles.load_cert((pki / facts.ROOT_CERT).read_bytes(), facts.ROOT_CERT)
        assert world.certs()["root-crt"] == profiles.cert_pem(root).decode()
        audit = world.cli("keys", "ca", "audit", pki / facts.FACTORY_CERTS_JSON, "--hsm")
        assert "hsm-pin-on-command-line" in audit.stdout and "0 high" in audit.stdout
        assert not any(PIN in output for output in world.outputs)
    finally:
        world.sandbox.stop()
