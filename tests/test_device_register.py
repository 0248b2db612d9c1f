"""`fioca device register` against the sandbox: lmp-device-register's protocol (token, TOKEN_HEADER,
-H, the OAuth device flow), the shared-PKI phase and the factory's own PKI, the body and the
files it leaves, the refusals before anything is sent (each with its twin that passes), and no
orphan device whatever fails after the POST."""

from __future__ import annotations

import json
import os
import queue
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from http_stub import Answer, Stub
from pki_fixtures import seed_sandbox, shared_pki
from test_device_support import FACTORY

from fioca.api import DeviceRegistrationApi
from fioca.config import load_settings
from fioca.device import register as reg
from fioca.errors import ApiError, CheckError, FiocaError, Interrupted
from fioca.pki import profiles
from fioca.sandbox import oauth
from fioca.sandbox.auth import Authenticator
from fioca.sandbox.registration import Registrar
from fioca.sandbox.server import Sandbox

TAGS_LINE = 'tags = "main"'



def _config_env(box: Sandbox) -> dict[str, str]:
    """What a user of the sandbox exports: its fioctl.yaml (token, server, CA)."""
    return {"FIOCTL_CONFIG": str(box.data_dir / "fioctl.yaml")}

@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A factory in the shared-PKI phase: no `keys ca create` yet."""
    with Sandbox(tmp_path_factory.mktemp("shared") / "sandbox", factory=FACTORY, scripts=None) as box:
        yield box


@pytest.fixture(scope="module")
def owned(tmp_path_factory):
    """A factory with its own PKI, made as fioctl's Go PKI makes it (v0.41)."""
    base = tmp_path_factory.mktemp("owned")
    with Sandbox(base / "sandbox", factory=FACTORY, scripts=None) as box:
        yield box, seed_sandbox(box, "fioctl-go-v0.41", base / "pki")


def register(cli, box: Sandbox, sota: Path, *args: object, env: dict[str, str] | None = None, config: str = "fioctl.yaml"):
    sota.mkdir(parents=True, exist_ok=True)
    full_env = {"FIOCTL_CONFIG": str(box.data_dir / config), **(env or {})}
    return cli("device", "register", "-d", sota, "-t", "main", "-i", "rpi4", "--aklite-lock", sota.parent / "aklite.lock",
               "--format", "json", *args, env=full_env)  # fmt: skip


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def the_device(box: Sandbox, uuid: str):
    record = box.store.device(uuid)
    return None if record is None or record.deny_listed else record


@pytest.fixture
def bodies(monkeypatch):
    """Every registration body the sandbox receives, as it received it."""
    seen: list[dict] = []
    real = Registrar.register

    def spy(self, body):
        seen.append(body)
        return real(self, body)

    monkeypatch.setattr(Registrar, "register", spy)
    return seen


def answer_tampered(monkeypatch, change) -> None:
    """The sandbox registers the device, then its answer is changed on the way (a broken server)."""
    real = Registrar.register

    def tampered(self, body):
        answer = real(self, body)
        change(answer)
        return answer

    monkeypatch.setattr(Registrar, "register", tampered)


# --- The shared-PKI phase, with the API token ----------------------------------------------------


def test_shared_phase_registration_writes_the_answer_and_the_key(cli, shared, tmp_path, bodies):
    sota = tmp_path / "sota"
    result = register(cli, shared, sota, "-n", "dev-a", "-g", "lab", "-u", "0e5b7a8c-2f0d-4a51-9a0b-3c1f8d2e4b6a")
    assert result.exit_code == 0, result.stderr
    done = json.loads(result.stdout)
    assert done["uuid"] == "0e5b7a8c-2f0d-4a51-9a0b-3c1f8d2e4b6a" and done["name"] == "dev-a" and done["shared_pki"] is True
    assert done["files"] == ["pkey.pem", "client.pem", "root.crt", "client.chained", "sota.toml"]
    assert sorted(p.name for p in sota.iterdir()) == sorted(done["files"])
    assert mode(sota / "pkey.pem") == 0o400
    assert all(mode(sota / name) == 0o644 for name in done["files"][1:])
    assert "note: root.crt is the service's shared root" in result.stderr
    # The shared root, as the service answers it before the factory has a PKI of its own.
    assert (sota / "root.crt").read_bytes() == (shared.data_dir / "shared-root.pem").read_bytes()
    key = profiles.load_private_key((sota / "pkey.pem").read_bytes(), "pkey.pem")
    assert (sota / "pkey.pem").read_bytes().startswith(b"-----BEGIN EC PRIVATE KEY-----")  # SEC1
    profiles.check_key_matches(key, profiles.load_cert((sota / "client.pem").read_bytes(), "client.pem"), "pkey.pem")
    record = the_device(shared, done["uuid"])
    assert record.name == "dev-a" and record.group == "lab" and not record.is_prod
    [body] = bodies
    assert list(body) == ["use-ostree-server", "sota-config-dir", "hardware-id", "name", "uuid", "csr", "group", "overrides"]
    assert body["overrides"] == {"pacman": {"tags": '"main"'}} and body["sota-config-dir"] == str(sota)
    checked = cli("device", "check", sota, env=_config_env(shared))
    assert checked.exit_code == 0 and checked.stdout.startswith(f"accepted: device {done['uuid']}"), checked.output


def test_the_csr_is_lmp_device_registers(cli, shared, tmp_path, bodies):
    assert register(cli, shared, tmp_path / "sota", "-p").exit_code == 0
    csr = x509.load_pem_x509_csr(bodies[0]["csr"].encode())
    names = [(a.oid, a.value) for a in csr.subject]
    assert names == [(NameOID.COMMON_NAME, bodies[0]["uuid"]), (NameOID.ORGANIZATIONAL_UNIT_NAME, FACTORY),
                     (NameOID.BUSINESS_CATEGORY, "production")]  # fmt: skip
    usage, purposes = list(csr.extensions)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_agreement
    assert purposes.critical and list(purposes.value) == [x509.ExtendedKeyUsageOID.CLIENT_AUTH]
    assert csr.is_signature_valid and csr.signature_hash_algorithm.name == "sha256"


def test_compose_apps_overrides_reach_the_stored_sota_toml(cli, shared, tmp_path, bodies):
    sota = tmp_path / "sota"
    result = register(cli, shared, sota, "-a", "app1,app2", "-g", "lab")
    assert result.exit_code == 0, result.stderr
    [body] = bodies
    assert list(body) == ["use-ostree-server", "sota-config-dir", "hardware-id", "name", "uuid", "csr", "overrides", "group"]
    assert body["overrides"] == {"pacman": {
        "type": '"ostree+compose_apps"', "compose_apps_root": f'"{sota}/compose-apps"', "compose_apps": '"app1,app2"',
        "reset_apps_root": f'"{sota}/reset-apps"', "reset_apps": '" "', "tags": '"main"',
    }}  # fmt: skip
    toml = (sota / "sota.toml").read_text()
    pacman = toml.split("[pacman]\n")[1].split("\n\n")[0].splitlines()
    assert pacman[2:] == [f'compose_apps_root = "{sota}/compose-apps"', 'compose_apps = "app1,app2"',
                          f'reset_apps_root = "{sota}/reset-apps"', 'reset_apps = " "', TAGS_LINE]  # fmt: skip
    assert toml.endswith("\n\n")  # the answer and the newline lmp-device-register appends
    assert the_device(shared, json.loads(result.stdout)["uuid"]).group == "lab"


def test_no_apps_no_compose_overrides_and_no_ostree_server(cli, shared, tmp_path, bodies):
    assert register(cli, shared, tmp_path / "sota", "--use-ostree-server", "0").exit_code == 0
    assert bodies[0]["overrides"] == {"pacman": {"tags": '"main"'}} and bodies[0]["use-ostree-server"] == "false"
    assert "group" not in bodies[0]
    assert "/treehub" in (tmp_path / "sota" / "sota.toml").read_text()


@pytest.mark.parametrize("how", [("--production",), ("-p", "1"), ("--production=true",), ()])
def test_production_from_the_flag_or_the_environment(cli, shared, tmp_path, how):
    env = {} if how else {"PRODUCTION": "1"}
    result = register(cli, shared, tmp_path / "sota", *how, env=env)
    assert result.exit_code == 0, result.stderr
    uuid = json.loads(result.stdout)["uuid"]
    cert = profiles.load_cert((tmp_path / "sota" / "client.pem").read_bytes(), "client.pem")
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.BUSINESS_CATEGORY)] == ["production"]
    assert the_device(shared, uuid).is_prod


def test_not_production_without_flag_or_environment(cli, shared, tmp_path):
    result = register(cli, shared, tmp_path / "sota", "-p", "0")
    assert result.exit_code == 0, result.stderr
    assert not the_device(shared, json.loads(result.stdout)["uuid"]).is_prod


# --- Where the token goes ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def header_box(tmp_path_factory):
    """A sandbox that also reads the token from X-Test-Token (a registration test server's header)."""
    with Sandbox(tmp_path_factory.mktemp("header") / "sandbox", factory=FACTORY, scripts=None,
                 token_header="X-Test-Token") as box:  # fmt: skip
        yield box


@pytest.mark.parametrize("how", ["-H", "TOKEN_HEADER"])
def test_token_in_the_header_named(cli, header_box, tmp_path, monkeypatch, how):
    sent: list[set[str]] = []
    real = Authenticator.principal
    monkeypatch.setattr(Authenticator, "principal", lambda self, headers: sent.append(set(headers)) or real(self, headers))
    if how == "-H":  # -T with -H, the config holding no token
        args, env, config = ("-T", header_box.info.token, "-H", "X-Test-Token"), {}, "fioctl-oauth.yaml"
    else:
        args, env, config = (), {"TOKEN_HEADER": "X-Test-Token"}, "fioctl.yaml"
    result = register(cli, header_box, tmp_path / "sota", *args, env=env, config=config)
    assert result.exit_code == 0, result.stderr
    assert the_device(header_box, json.loads(result.stdout)["uuid"]) is not None
    assert "X-Test-Token" in sent[-1] and "OSF-TOKEN" not in sent[-1] and "Authorization" not in sent[-1]


def test_token_in_a_header_the_server_does_not_read_is_refused(cli, shared, tmp_path):
    count = len(shared.store.devices())
    result = register(cli, shared, tmp_path / "sota", "-H", "X-Test-Token")
    assert result.exit_code == 6 and "401" in result.stderr and "(sent as X-Test-Token)" in result.stderr
    assert list((tmp_path / "sota").iterdir()) == [] and len(shared.store.devices()) == count


# --- The OAuth device flow ------------------------------------------------------------------------


def _lines_until(stream, marker: str, seconds: float) -> list[str]:
    """Lines of `stream` up to the one holding `marker` (a child's stderr, read as it comes, by a
    thread: a blocked read must not hang the test)."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in iter(stream.readline, "")], daemon=True).start()
    seen: list[str] = []
    while not seen or marker not in seen[-1]:
        try:
            seen.append(lines.get(timeout=seconds))
        except queue.Empty:
            raise AssertionError(f"no {marker!r} in time: {seen}") from None
    return seen


def test_oauth_device_flow_end_to_end(shared, tmp_path, home, monkeypatch):
    """No token: fioca shows a user code, the user approves it, fioca registers with the
    access token as `Bearer base64(token)`."""
    monkeypatch.setattr(oauth, "POLL_INTERVAL_SECONDS", 0)  # the child polls without pausing
    sota = tmp_path / "sota"
    sota.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("FIOCTL_TOKEN", "FIOCTL_FACTORY", "TOKEN_HEADER", "DEVICE_API")}
    env.update(HOME=str(home), FIOCTL_CONFIG=str(shared.data_dir / "fioctl-oauth.yaml"), OAUTH_BASE=shared.info.oauth_url)
    child = subprocess.Popen(
        [sys.executable, "-m", "fioca", "device", "register", "-d", str(sota), "-t", "main", "--format", "json",
         "--aklite-lock", str(tmp_path / "none")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        lines = _lines_until(child.stderr, "user code", 60)
        code = lines[-1].split("user code ")[1].split(" ")[0]
        assert shared.info.oauth_url + "/device/" in "".join(lines)
        assert shared.approve_device(code)
        out, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 0, err
    uuid = json.loads(out)["uuid"]
    assert the_device(shared, uuid) is not None and (sota / "client.pem").exists()
    assert shared.info.token not in out + err + "".join(lines)


def _oauth_api(box: Sandbox) -> DeviceRegistrationApi:
    settings = load_settings(config=box.data_dir / "fioctl-oauth.yaml", environ={"OAUTH_BASE": box.info.oauth_url})
    return DeviceRegistrationApi(settings)


def test_device_flow_waits_for_the_approval(shared):
    api, shown, waits = _oauth_api(shared), [], []

    def wait(seconds):  # the user approves while fioca waits, once
        waits.append(seconds)
        shared.approve_device(shown[1].split("user code ")[1].split(" ")[0])

    token = reg.device_flow(api, "7f0c6a52-7a5e-4a1f-8e1b-2a3c4d5e6f70", show=shown.extend, wait=wait)
    assert waits == [oauth.POLL_INTERVAL_SECONDS] and token
    assert shared.oauth.scopes_of(token) == {"devices:create"}


def test_device_flow_denied_is_an_error(shared):
    api, shown = _oauth_api(shared), []
    deny = lambda _s: shared.approve_device(shown[1].split("user code ")[1].split(" ")[0], approve=False)
    with pytest.raises(ApiError, match="not authorized: access_denied"):
        reg.device_flow(api, "7f0c6a52-7a5e-4a1f-8e1b-2a3c4d5e6f71", show=shown.extend, wait=deny)


def test_device_flow_gives_up_when_the_code_expires(shared):
    now = [0.0]
    clock = lambda: now[0]

    def wait(_seconds):  # nobody approves; time goes by
        now[0] += 300

    with pytest.raises(ApiError, match="nobody approved user code"):
        reg.device_flow(_oauth_api(shared), "7f0c6a52-7a5e-4a1f-8e1b-2a3c4d5e6f72", show=lambda _l: None, wait=wait,
                        clock=clock)  # fmt: skip
    assert now[0] <= oauth.DEVICE_CODE_SECONDS


# --- Refusals before anything is sent, each with its twin -------------------------------------------


def _nothing_sent(box: Sandbox, count: int, sota: Path, before: set[str]) -> None:
    assert len(box.store.devices(include_deny_listed=True)) == count
    assert {p.name for p in sota.iterdir()} == before


@pytest.mark.parametrize("present", ["client.pem", "sql.db", "pkey.pem", "sota.toml", "client.chained"])
def test_a_registered_or_used_sota_dir_is_refused_unless_force(cli, shared, tmp_path, present):
    sota = tmp_path / "sota"
    sota.mkdir()
    (sota / present).write_text("old\n")
    count = len(shared.store.devices(include_deny_listed=True))
    refused = register(cli, shared, sota)
    assert refused.exit_code == 3 and present in refused.stderr and "--force" in refused.stderr
    _nothing_sent(shared, count, sota, {present})
    forced = register(cli, shared, sota, "--force", "1")
    assert forced.exit_code == 0, forced.stderr
    done = json.loads(forced.stdout)
    assert (sota / present).exists() == (present in done["files"])
    assert done["removed"] == ([] if present in done["files"] else [present])
    assert mode(sota / "pkey.pem") == 0o400


def test_force_keeps_the_old_registration_until_the_new_one_is_written(cli, shared, tmp_path, monkeypatch):
    sota = tmp_path / "sota"
    assert register(cli, shared, sota).exit_code == 0
    (sota / "sql.db").write_text("aktualizr-lite's")
    before = {p.name: p.read_bytes() for p in sota.iterdir()}
    answer_tampered(monkeypatch, lambda answer: answer.pop("sota.toml"))
    failed = register(cli, shared, sota, "--force")
    assert failed.exit_code == 4 and "has no sota.toml" in failed.stderr
    assert {p.name: p.read_bytes() for p in sota.iterdir()} == before


def test_a_running_aktualizr_lite_is_refused(cli, shared, tmp_path):
    sota = tmp_path / "sota"
    lock = tmp_path / "aklite.lock"  # the path register() passes as --aklite-lock
    lock.write_text("")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl,sys; f=open(sys.argv[1],'r+'); fcntl.lockf(f, fcntl.LOCK_EX); "
         "print('held', flush=True); sys.stdin.read()", str(lock)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline() == "held\n"
        count = len(shared.store.devices(include_deny_listed=True))
        refused = register(cli, shared, sota)
        assert refused.exit_code == 3 and "aktualizr-lite is running" in refused.stderr
        _nothing_sent(shared, count, sota, set())
    finally:
        holder.communicate("")
    assert register(cli, shared, sota).exit_code == 0  # the lock file is still there, nobody holds it


@pytest.mark.parametrize(
    "args, refused, twin",
    [
        (("-f", "lmp"), "placeholder", ("-f", FACTORY)),
        (("-u", "0E5B7A8C-2F0D-4A51-9A0B-3C1F8D2E4B6A"), "must be spelled 0e5b7a8c", ("-u", "1e5b7a8c-2f0d-4a51-9a0b-3c1f8d2e4b6a")),
        (("-u", "not-a-uuid"), "not a UUID", ("-u", "2e5b7a8c-2f0d-4a51-9a0b-3c1f8d2e4b6a")),
        (("-t", ""), "no tags", ("-t", "main,devel")),
        (("-t", 'main"x'), "must not hold quotes", ("-t", "main")),
        (("-a", "app\n"), "must not hold quotes", ("-a", "")),
        (("--start-daemon", "1"), "never starts aktualizr-lite", ("--start-daemon", "0")),
    ],
)
def test_usage_refusals_and_their_twins(cli, shared, tmp_path, args, refused, twin):
    sota = tmp_path / "sota"
    count = len(shared.store.devices(include_deny_listed=True))
    result = register(cli, shared, sota, *args)
    assert result.exit_code == 2 and refused in result.stderr, result.stderr
    _nothing_sent(shared, count, sota, set())
    passed = register(cli, shared, sota, *twin)
    assert passed.exit_code == 0, passed.stderr


def test_tags_and_factory_from_os_release(cli, shared, tmp_path, monkeypatch, bodies):
    release = tmp_path / "os-release"
    release.write_text('ID=lmp\nLMP_MACHINE="imx8mm-lpddr4-evk"\nLMP_FACTORY="acme"\nLMP_FACTORY_TAG="devel"\n')
    monkeypatch.setattr(reg, "OS_RELEASE", release)
    config = tmp_path / "no-factory.yaml"  # the server and its CA, a token, no factory
    config.write_text(f"server:\n  url: {shared.info.api_url}\n  cacert: {shared.info.cacert}\n")
    env = {"FIOCTL_CONFIG": str(config), "FIOCTL_TOKEN": shared.info.token}
    sota = tmp_path / "sota"
    sota.mkdir()
    result = cli("device", "register", "-d", sota, "--aklite-lock", tmp_path / "none", env=env)
    assert result.exit_code == 0, result.stderr
    assert bodies[0]["overrides"]["pacman"]["tags"] == '"devel"' and bodies[0]["hardware-id"] == "imx8mm-lpddr4-evk"
    assert x509.load_pem_x509_csr(bodies[0]["csr"].encode()).subject.get_attributes_for_oid(
        NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == FACTORY
    release.write_text('LMP_FACTORY="lmp"\n')  # the twin: LmP's placeholder is no factory
    (tmp_path / "b").mkdir()
    refused = cli("device", "register", "-d", tmp_path / "b", "-t", "x", "--aklite-lock", tmp_path / "none", env=env)
    assert refused.exit_code == 2 and "placeholder" in refused.stderr


def test_dry_run_sends_nothing_and_prints_the_body(cli, shared, tmp_path):
    count = len(shared.store.devices(include_deny_listed=True))
    result = register(cli, shared, tmp_path / "sota", "--dry-run", "-a", "x", "-u", "3e5b7a8c-2f0d-4a51-9a0b-3c1f8d2e4b6a")
    assert result.exit_code == 0, result.stderr
    planned = json.loads(result.stdout)
    assert planned["endpoint"] == f"{shared.info.api_url}/ota/devices/" and planned["credentials"] == "token in OSF-TOKEN"
    assert planned["body"]["uuid"] == "3e5b7a8c-2f0d-4a51-9a0b-3c1f8d2e4b6a"
    assert planned["body"]["overrides"]["pacman"]["compose_apps"] == '"x"'
    _nothing_sent(shared, count, tmp_path / "sota", set())


# --- Failures from the server: nothing written, no orphan --------------------------------------------


@pytest.mark.parametrize("status, ok", [(500, False), (503, False), (401, True), (405, True)])
def test_head_first_without_a_token_and_below_500_is_fine(cli, tmp_path, status, ok):
    """An endpoint whose HEAD answers 5xx gets no POST; 401 (the API) or 405 (/sign) is "up"."""
    routes = {
        ("HEAD", "/ota/devices/"): lambda _r: Answer(status, {}),
        ("POST", "/ota/devices/"): lambda _r: Answer(418, {"message": "the POST came"}),
    }
    with Stub(tmp_path / "stub", routes) as stub:
        sota = tmp_path / "sota"
        sota.mkdir()
        env = {"DEVICE_API": f"{stub.url}/ota/devices/", "CACERT": str(stub.cacert), "FIOCTL_TOKEN": "tok-0123456789"}
        result = cli("device", "register", "-d", sota, "-t", "main", "-f", FACTORY, "--aklite-lock", tmp_path / "none",
                     env=env)  # fmt: skip
    assert result.exit_code == 6 and list(sota.iterdir()) == []
    methods = [request.method for request in stub.requests if request.method in ("HEAD", "POST")]
    assert methods[-1] == ("POST" if ok else "HEAD") and "OSF-TOKEN" not in stub.requests[0].headers
    if ok:  # the server refused: its message is shown, and nothing is taken back (no device was made)
        assert "= the POST came" in result.stderr and stub.requests[-1].headers["OSF-TOKEN"] == "tok-0123456789"
    else:
        assert f"HTTP error during HEAD '{stub.url}/ota/devices/': {status}" in result.stderr


def test_a_refusal_is_rendered_with_the_servers_message(cli, shared, tmp_path):
    uuid = "5d1f3b2a-0c4e-4f6a-8b9d-7e2a1c3b5d4f"
    assert register(cli, shared, tmp_path / "a", "-u", uuid).exit_code == 0
    again = register(cli, shared, tmp_path / "b", "-u", uuid)
    assert again.exit_code == 6
    assert f"HTTP error during POST '{shared.info.api_url}/ota/devices/': 409" in again.stderr
    assert "already" in again.stderr.splitlines()[1]  # `= <msg>`
    assert list((tmp_path / "b").iterdir()) == [] and the_device(shared, uuid) is not None  # the first one stays


@pytest.mark.parametrize("applied", [True, False])
def test_an_answer_other_than_201_leaves_no_device(cli, shared, tmp_path, applied):
    """The server registered the device (or not) and answered 500 (or 200): fioca looks the uuid
    up, and deletes the device when it holds our key."""
    uuid = "6d1f3b2a-0c4e-4f6a-8b9d-7e2a1c3b5d4f" if applied else "7d1f3b2a-0c4e-4f6a-8b9d-7e2a1c3b5d4f"
    shared.inject_fault(method="POST", route="devices", status=500 if applied else 200, apply=applied)
    result = register(cli, shared, tmp_path / "sota", "-u", uuid)
    assert result.exit_code == 6, result.stderr
    expected = "the server had registered device" if applied else "the server holds no device"
    assert expected in result.stderr
    assert list((tmp_path / "sota").iterdir()) == []
    assert shared.store.device(uuid) is None  # deleted, and its uuid freed from the deny-list


def test_another_devices_uuid_is_left_alone(cli, shared, tmp_path):
    uuid = "8d1f3b2a-0c4e-4f6a-8b9d-7e2a1c3b5d4f"
    assert register(cli, shared, tmp_path / "a", "-u", uuid).exit_code == 0
    shared.inject_fault(method="POST", route="devices", status=502)
    result = register(cli, shared, tmp_path / "b", "-u", uuid)
    assert result.exit_code == 6 and "for another key: not this run's, left alone" in result.stderr
    assert the_device(shared, uuid) is not None


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.update({"client.chained": a["client.pem"]}), "followed by its issuing CA"),
        (lambda a: a.update({"../pkey.pem": "x"}), "not a file name"),
        (lambda a: a.update({"root.crt": profiles.cert_pem(profiles.build_root(profiles.new_key(), factory=FACTORY)).decode()}),
         "client.chained CA"),
    ],
)
def test_an_answer_failing_a_check_takes_the_device_back(cli, shared, tmp_path, monkeypatch, bodies, change, message):
    answer_tampered(monkeypatch, change)
    result = register(cli, shared, tmp_path / "sota")
    assert result.exit_code == 4 and message in result.stderr, result.stderr
    assert "the server had registered device" in result.stderr and "deleted it again" in result.stderr
    assert list((tmp_path / "sota").iterdir()) == []
    assert shared.store.device(bodies[-1]["uuid"]) is None


def test_a_file_in_the_way_after_the_post_takes_the_device_back(cli, shared, tmp_path, monkeypatch):
    sota = tmp_path / "sota"
    sota.mkdir()
    (sota / "extra.txt").write_text("mine")
    uuid = "9d1f3b2a-0c4e-4f6a-8b9d-7e2a1c3b5d4f"
    answer_tampered(monkeypatch, lambda answer: answer.update({"extra.txt": "the server's"}))
    result = register(cli, shared, sota, "-u", uuid)
    assert result.exit_code == 3 and "extra.txt is in the way" in result.stderr and "deleted it again" in result.stderr
    assert sorted(p.name for p in sota.iterdir()) == ["extra.txt"] and (sota / "extra.txt").read_text() == "mine"
    assert shared.store.device(uuid) is None


def test_a_device_flow_token_cannot_take_it_back_and_says_what_is_left(shared, tmp_path, monkeypatch):
    answer_tampered(monkeypatch, lambda answer: answer.update({"client.chained": answer["client.pem"]}))
    api, shown = _oauth_api(shared), []
    approve = lambda _s: shared.approve_device(shown[1].split("user code ")[1].split(" ")[0])
    uuid = "ad1f3b2a-0c4e-4f6a-8b9d-7e2a1c3b5d4f"
    (tmp_path / "sota").mkdir()
    options = reg.RegisterOptions(sota_dir=tmp_path / "sota", factory=FACTORY, tags="main", hardware_id="rpi4", uuid=uuid,
                                  name="dev-left", aklite_lock=tmp_path / "none")  # fmt: skip
    with pytest.raises(CheckError) as raised:
        reg.register(api, options, show=shown.extend, wait=approve)
    details = "\n".join(raised.value.details)
    assert f"device {uuid} ('dev-left') may stay registered in factory {FACTORY}" in details and "403" in details
    assert "`fioctl devices delete dev-left`" in details and f"delete-denied {uuid}" in details
    assert the_device(shared, uuid) is not None and list((tmp_path / "sota").iterdir()) == []


# --- The factory's own PKI, and the root known before the POST ----------------------------------------


def test_own_pki_registration_checks_the_chain_to_the_factory_root(cli, owned, tmp_path):
    box, pki = owned
    sota = tmp_path / "sota"
    result = register(cli, box, sota, "--pki-dir", pki.path)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["shared_pki"] is False and "note:" not in result.stderr
    assert (sota / "root.crt").read_bytes() == pki.read("factory_ca.pem")
    chain = profiles.load_cert_bundle((sota / "client.chained").read_bytes(), "client.chained")
    assert chain[1] == pki.cert("online-crt")
    checked = cli("device", "check", sota, env=_config_env(box))
    assert checked.exit_code == 0 and checked.stdout.startswith("accepted"), checked.output


def test_a_pki_dir_of_another_factory_is_refused_before_anything_is_sent(cli, owned, tmp_path):
    box, pki = owned
    other = shared_pki("fioca")  # a PKI for factory acme, but not this sandbox's: its root differs
    count = len(box.store.devices(include_deny_listed=True))
    wrong_factory = register(cli, box, tmp_path / "sota", "-f", "other", "--pki-dir", pki.path)
    assert wrong_factory.exit_code == 4 and "subject OU must be the factory name 'other'" in wrong_factory.stderr
    _nothing_sent(box, count, tmp_path / "sota", set())
    (tmp_path / "sota" / "root.crt").write_bytes(other.path.joinpath("factory_ca.pem").read_bytes())
    disagree = register(cli, box, tmp_path / "sota", "--pki-dir", pki.path)
    assert disagree.exit_code == 4 and "two different roots for factory 'acme'" in disagree.stderr
    _nothing_sent(box, count, tmp_path / "sota", {"root.crt"})


def test_a_known_root_the_answer_does_not_match_takes_the_device_back(cli, owned, tmp_path, bodies):
    box, _pki = owned
    other = shared_pki("fioca")
    sota = tmp_path / "sota"
    sota.mkdir()
    (sota / "root.crt").write_bytes(other.path.joinpath("factory_ca.pem").read_bytes())  # acme's, but not this server's
    result = register(cli, box, sota)
    assert result.exit_code == 4 and f"not the factory's root from {sota}/root.crt" in result.stderr
    assert "deleted it again" in result.stderr
    assert [p.name for p in sota.iterdir()] == ["root.crt"] and box.store.device(bodies[0]["uuid"]) is None


def test_the_shared_root_is_no_match_for_a_known_own_root(cli, shared, tmp_path, bodies):
    other = shared_pki("fioca")
    result = register(cli, shared, tmp_path / "sota", "--pki-dir", other.path)
    assert result.exit_code == 4 and "answers with the shared PKI" in result.stderr and "deleted it again" in result.stderr
    assert shared.store.device(bodies[0]["uuid"]) is None


def test_from_the_shared_phase_to_the_factorys_own_pki(cli, tmp_path):
    """A device registered before `keys ca create` registers again after it, with --force: the
    shared root.crt it had is no factory root, so the factory's replaces it."""
    with Sandbox(tmp_path / "sandbox", factory=FACTORY, scripts=None) as box:
        sota = tmp_path / "sota"
        first = register(cli, box, sota)
        assert first.exit_code == 0 and json.loads(first.stdout)["shared_pki"] is True
        (sota / "sql.db").write_text("aktualizr-lite's")
        pki = seed_sandbox(box, "api-2023-openssl-1.1", tmp_path / "pki")
        assert cli("device", "check", sota, env=_config_env(box)).exit_code == 3  # the shared root no longer fits
        second = register(cli, box, sota, "--force")
        assert second.exit_code == 0, second.stderr
        done = json.loads(second.stdout)
        assert done["shared_pki"] is False and done["removed"] == ["sql.db"]
        assert "replaced the root.crt" in second.stderr
        assert (sota / "root.crt").read_bytes() == pki.read("factory_ca.pem")
        assert cli("device", "check", sota, env=_config_env(box)).exit_code == 0


# --- The pieces -----------------------------------------------------------------------------------------


def test_body_is_what_the_real_lmp_device_register_sent():
    """Recorded from lmp-device-register (f6a092e, built with DOCKER_COMPOSE_APP) against the
    sandbox: `-f acme -t main -d /var/sota -n dev -a app1,app2 -g lab`, HARDWARE_ID qemux86-64."""
    recorded = {
        "use-ostree-server": "true", "sota-config-dir": "/var/sota", "hardware-id": "qemux86-64", "name": "dev",
        "uuid": "81913ca8-90f8-4f2d-a38f-bbea83b7ad81", "csr": "CSR",
        "overrides": {"pacman": {
            "type": '"ostree+compose_apps"', "compose_apps_root": '"/var/sota/compose-apps"',
            "compose_apps": '"app1,app2"', "reset_apps_root": '"/var/sota/reset-apps"', "reset_apps": '" "',
            "tags": '"main"',
        }},
        "group": "lab",
    }  # fmt: skip
    options = reg.RegisterOptions(sota_dir=Path("/var/sota"), factory=FACTORY, tags="main", hardware_id="qemux86-64",
                                  name="dev", group="lab", apps="app1,app2")  # fmt: skip
    prepared = reg.Prepared(uuid=recorded["uuid"], name="dev", sota_dir=Path("/var/sota"), known_root=None, present=())
    body = reg.registration_body(options, prepared, "CSR")
    assert body == recorded and list(body) == list(recorded)
    assert list(body["overrides"]["pacman"]) == list(recorded["overrides"]["pacman"])


@pytest.mark.parametrize(
    "restorable, preloaded, expected",
    [(None, False, '" "'), ("app1", False, '"app1"'), ("", False, None), ("", True, '""')],
)
def test_restorable_apps_as_lmp_device_register_sends_them(tmp_path, restorable, preloaded, expected):
    if preloaded:
        (tmp_path / "reset-apps").mkdir()
    options = reg.RegisterOptions(sota_dir=tmp_path, factory=FACTORY, tags="t", hardware_id="h", apps="",
                                  restorable_apps=restorable)  # fmt: skip
    pacman = reg.compose_apps_overrides(options, tmp_path)
    assert pacman.get("reset_apps") == expected and "compose_apps" not in pacman  # -a "": every app


def test_os_release_is_read_as_lmp_device_register_reads_it(tmp_path):
    path = tmp_path / "os-release"
    path.write_text('# a comment\nLMP_FACTORY="acme"\nLMP_FACTORY_TAG=main\nLMP_MACHINE="rpi4"\nbroken line\n')
    assert reg.os_release(path) == {"LMP_FACTORY": "acme", "LMP_FACTORY_TAG": "main", "LMP_MACHINE": "rpi4"}
    assert reg.os_release(tmp_path / "missing") == {}
    assert reg.default_hardware_id({"LMP_MACHINE": "rpi4"}) == "rpi4" and reg.default_hardware_id({})


@pytest.mark.parametrize("fault, kind", [(KeyboardInterrupt, Interrupted), (ValueError("a bug"), FiocaError)])
def test_ctrl_c_or_a_fault_after_the_post_takes_the_device_back(shared, tmp_path, monkeypatch, fault, kind):
    def broken(*_args, **_kwargs):
        raise fault

    monkeypatch.setattr(reg.files, "write_all", broken)
    uuid = "bd1f3b2a-0c4e-4f6a-8b9d-7e2a1c3b5d4f" if kind is Interrupted else "cd1f3b2a-0c4e-4f6a-8b9d-7e2a1c3b5d4f"
    (tmp_path / "sota").mkdir()
    settings = load_settings(config=shared.data_dir / "fioctl.yaml", environ={})
    options = reg.RegisterOptions(sota_dir=tmp_path / "sota", factory=FACTORY, tags="main", hardware_id="rpi4", uuid=uuid,
                                  aklite_lock=tmp_path / "none")  # fmt: skip
    with pytest.raises(kind) as raised:
        reg.register(DeviceRegistrationApi(settings), options)
    assert type(raised.value) is kind
    assert raised.value.details == [f"  nothing was written; the server had registered device {uuid}, and fioca deleted it again"]
    assert shared.store.device(uuid) is None and list((tmp_path / "sota").iterdir()) == []
