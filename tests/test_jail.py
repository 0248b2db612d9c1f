"""The jail every script runs in (fioca/pki/jail.py), with the real bwrap, sh and openssl.

Probes run *inside* the jail and each must fail: the network (a loopback listener this test
opened, a name lookup, bash's /dev/tcp), reading `~` and this test's files, fioca's own
process in /proc and its environment, writing outside the work dir, finding curl, awk,
python or perl, and a process that outlives its script. Each probe has a twin run with no
jail (`jail.NO_JAIL`, what `--no-jail` gives) that succeeds: a probe that could never
succeed would prove nothing. Then the positive twins: the reference scripts (fioca's and both
API revisions) run in the jail and make certificates that pass their profiles, with a key
file and with a SoftHSM2 token.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import uuid
from pathlib import Path

import pytest

from fioca.errors import ConfigError, ScriptError
from fioca.pki import jail as jails
from fioca.pki import profiles, reference
from fioca.pki.scripts import ScriptLimits, ScriptRunner
from tests.test_hsm import MODULE, new_token

JAIL = jails.require()
FACTORY = "acme"
LOCAL_CA_CN = "fio-4a1b2c"
GATEWAY_HOSTS = ["a1b2c3.ota-lite.foundries.io", "a1b2c3.ostree.foundries.io"]
SECRET = "fioca-probe-Secret-7Qx2"
# Probes print this when they got through; a contained probe prints nothing of it.
LEAK = "LEAKED"


def work_dir(tmp_path: Path, name: str = "work") -> Path:
    path = tmp_path / name
    path.mkdir(mode=0o700)
    return path


def run_probe(tmp_path: Path, text: str, jail: jails.Jail = JAIL, **options) -> str:
    """Run a probe script (exit status ignored); its stdout and stderr, as text."""
    lines: list[str] = []
    runner = ScriptRunner(work_dir(tmp_path, f"work-{uuid.uuid4().hex[:8]}"), jail=jail, on_stderr=lines.append, **options)
    runner.install("probe", "#!/bin/sh\n" + text + ":\n")  # exit 0: stdout is the answer
    try:
        out = runner.run("probe").decode()
    except ScriptError as exc:
        out = str(exc)
    return out + "\n".join(lines)


# --- The network -------------------------------------------------------------------------------


class Listener:
    """A TCP listener on the host's loopback that counts the connections it gets."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.count = 0
        self._stop = threading.Event()
        self.sock.settimeout(0.05)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _addr = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.count += 1
            conn.close()  # an openssl s_client waiting for a ServerHello ends here

    def connections(self) -> int:
        """Every connection so far, including any still waiting in the backlog."""
        self._stop.set()
        self._thread.join()
        self.sock.setblocking(False)
        while True:
            try:
                self.sock.accept()[0].close()
            except BlockingIOError:
                break
            self.count += 1
        self.sock.close()
        return self.count


NETWORK_PROBES = {
    "openssl-to-loopback": "openssl s_client -connect 127.0.0.1:{port} </dev/null",
    "name-lookup": "openssl s_client -connect localhost:{port} </dev/null",
    "bash-dev-tcp": "bash -c 'echo key > /dev/tcp/127.0.0.1/{port}'",
}


@pytest.mark.parametrize("probe", NETWORK_PROBES, ids=str)
def test_no_network_in_the_jail(tmp_path, probe):
    listener = Listener()
    out = run_probe(tmp_path, NETWORK_PROBES[probe].format(port=listener.port) + "\n")
    assert listener.connections() == 0, out


@pytest.mark.parametrize("probe", NETWORK_PROBES, ids=str)
def test_network_probes_connect_without_the_jail(tmp_path, probe):
    listener = Listener()
    run_probe(tmp_path, NETWORK_PROBES[probe].format(port=listener.port) + "\n", jail=jails.NO_JAIL)
    assert listener.connections() >= 1


def test_the_jail_has_only_its_own_loopback(tmp_path):
    out = run_probe(tmp_path, "cat /proc/net/dev\nls /etc\n")
    interfaces = re.findall(r"^\s*(\w+):", out, re.MULTILINE)
    assert interfaces == ["lo"]
    assert "resolv.conf" not in out and "hosts" not in out


# --- What lies outside the work dir ----------------------------------------------------------


@pytest.fixture
def outside(tmp_path, home) -> dict[str, Path]:
    """A secret in the user's home, one in fioctl's config, one beside the work dir."""
    (home / ".config").mkdir()
    paths = {"home": home / "secret.txt", "config": home / ".config" / "fioctl.yaml", "test": tmp_path / "beside.txt"}
    for path in paths.values():
        path.write_text(f"{SECRET}\n")
    return paths


@pytest.mark.parametrize("where", ["home", "config", "test"])
def test_files_outside_the_work_dir_cannot_be_read(tmp_path, outside, where):
    probe = f"cat {outside[where]}\ncat ~/{outside[where].name}\ncat ../{outside[where].name}\n"
    assert SECRET not in run_probe(tmp_path, probe)
    assert SECRET in run_probe(tmp_path, probe, jail=jails.NO_JAIL)


def test_fiocas_process_and_environment_are_out_of_sight(tmp_path, monkeypatch):
    monkeypatch.setenv("FIOCTL_TOKEN", SECRET)
    # A process of this user with the token in its environment, as fioca started from a shell has.
    holder = subprocess.Popen(["sleep", "600"], env={"FIOCTL_TOKEN": SECRET})
    try:
        probe = (
            f"cat /proc/{os.getpid()}/cmdline /proc/{holder.pid}/environ\n"
            "cat /proc/[0-9]*/environ\n"
            "env\n"
            "ls /proc | grep -c '^[0-9]' >&2\n"
        )
        jailed = run_probe(tmp_path, probe)
        twin = run_probe(tmp_path, probe, jail=jails.NO_JAIL)
    finally:
        holder.kill()
        holder.wait()
    assert SECRET not in jailed and "pytest" not in jailed
    # Its own PID namespace: bwrap's init, the script and the commands it runs, nothing else.
    assert int(jailed.strip().splitlines()[-1]) <= 5
    assert SECRET in twin and "pytest" in twin


def test_nothing_outside_the_work_dir_can_be_written(tmp_path):
    marker = f"fioca-probe-{uuid.uuid4().hex}"
    targets = [tmp_path / marker, Path("/tmp") / marker, Path("/") / marker, Path("/usr/bin") / marker]
    probe = "".join(f"echo x > {target}\n" for target in targets) + f"echo x > ../{marker}\n"
    run_probe(tmp_path, probe)
    assert not any(target.exists() for target in targets)
    twin = run_probe(tmp_path, f"echo x > {tmp_path / marker}\n", jail=jails.NO_JAIL)
    assert (tmp_path / marker).read_text() == "x\n", twin


def test_only_the_scripts_tools_are_there(tmp_path):
    banned = ("curl", "wget", "nc", "awk", "gawk", "mawk", "python3", "python", "perl", "bash", "bc", "dc", "ssh")
    probe = "".join(f"command -v {tool} && echo {LEAK}\n" for tool in banned)
    assert LEAK not in run_probe(tmp_path, probe)
    assert LEAK in run_probe(tmp_path, probe, jail=jails.NO_JAIL)
    listing = run_probe(tmp_path, "ls /usr/bin /usr/sbin /usr/local/bin /bin /sbin 2>/dev/null\n")
    found = {line for line in listing.splitlines() if line and not line.endswith(":")}
    assert found <= {*jails.TOOLS, "dash"}, found - {*jails.TOOLS, "dash"}


def test_the_jail_has_no_privileges(tmp_path):
    out = run_probe(tmp_path, "grep -E '^(CapEff|CapPrm|NoNewPrivs)' /proc/self/status\n")
    assert "CapEff:\t0000000000000000" in out and "CapPrm:\t0000000000000000" in out
    assert "NoNewPrivs:\t1" in out


# --- Nothing outlives a script ---------------------------------------------------------------


def bring(work: Path, *tools: str) -> None:
    """Copy host programs into the work dir, as a script can bring any program it likes."""
    for tool in tools:
        shutil.copy(shutil.which(tool), work / tool)


def holds_open(fifo: Path) -> bool:
    """True while some process still has the FIFO open for writing."""
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        return os.read(fd, 1) != b""
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


# Ways a script leaves something behind; each holds the FIFO `alive` open while it lives.
DETACHED = {
    # The script waits until the detached process runs in its own session (after setsid()):
    # without a jail, a group kill that came first would end it, and the twin below would lie.
    "setsid -f": "./setsid -f sh -c ': > detached; exec ./sleep {t}' 3<>alive </dev/null >/dev/null 2>&1\n"
                 "while [ ! -e detached ]; do ./sleep 0.01; done\n",
    "nohup &": "./nohup ./sleep {t} 3<>alive </dev/null >/dev/null 2>&1 &\n",
    "&": "./sleep {t} 3<>alive </dev/null >/dev/null 2>&1 &\n",
    "subshell &": "( ./sleep {t} 3<>alive </dev/null >/dev/null 2>&1 & )\n",
}


def start_detached(tmp_path: Path, how: str, jail: jails.Jail) -> tuple[Path, str]:
    seconds = f"{900000 + uuid.uuid4().int % 99999}.5"  # a marker in the process list
    work = work_dir(tmp_path)
    bring(work, "setsid", "nohup", "sleep")
    os.mkfifo(work / "alive")
    runner = ScriptRunner(work, jail=jail)
    runner.install("daemon", "#!/bin/sh -e\n" + DETACHED[how].format(t=seconds))
    runner.run("daemon")
    return work / "alive", seconds


@pytest.mark.parametrize("how", DETACHED, ids=str)
def test_nothing_the_script_started_survives_it(tmp_path, how):
    fifo, marker = start_detached(tmp_path, how, JAIL)
    assert not holds_open(fifo)
    assert processes_with(marker) == []


def test_without_the_jail_a_new_session_escapes(tmp_path):
    """The twin: with no jail, `setsid -f` leaves the runner's process group and lives on."""
    fifo, marker = start_detached(tmp_path, "setsid -f", jails.NO_JAIL)
    survivors = processes_with(marker)
    still_open = holds_open(fifo)
    for pid in survivors:  # the one this test just started, by its id
        os.kill(pid, signal.SIGKILL)
    assert len(survivors) == 1 and still_open


def test_a_timeout_ends_the_jail_and_everything_in_it(tmp_path):
    work = work_dir(tmp_path)
    bring(work, "setsid")
    os.mkfifo(work / "alive")
    runner = ScriptRunner(work, jail=JAIL, limits=ScriptLimits(timeout=0.5))
    daemon = "./setsid -f sleep 1000 3<>alive </dev/null >/dev/null 2>&1"
    runner.install("stuck", f"#!/bin/sh -e\n{daemon}\nwhile :; do :; done\n")
    with pytest.raises(ScriptError, match=r"did not finish within 0.5s and was killed"):
        runner.run("stuck")
    assert not holds_open(work / "alive")


# --- No jail, no scripts -------------------------------------------------------------------------


def test_a_missing_bwrap_stops_with_one_line(monkeypatch):
    jails._probe.cache_clear()
    monkeypatch.setattr(jails, "SAFE_PATH", "/usr/bin:/bin")  # sh and openssl are still found
    monkeypatch.setattr(jails, "BWRAP", "bwrap-not-installed")
    try:
        with pytest.raises(ConfigError) as caught:
            jails.require()
        assert "apt-get install bubblewrap" in caught.value.message and "\n" not in caught.value.message
        assert jails.require(no_jail=True) is jails.NO_JAIL
    finally:
        jails._probe.cache_clear()


def test_a_bwrap_that_cannot_make_namespaces_says_why(tmp_path, monkeypatch):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "bwrap").write_text(
        "#!/bin/sh\n[ \"$1\" = --version ] && { echo 'bubblewrap 0.8.0'; exit 0; }\n"
        "echo 'bwrap: No permissions to create new namespace' >&2\nexit 1\n"
    )
    (fake / "bwrap").chmod(0o755)
    jails._probe.cache_clear()
    monkeypatch.setattr(jails, "SAFE_PATH", f"{fake}:/usr/bin:/bin")
    try:
        why = r"cannot make the script jail here \(No permissions to create new namespace\)"
        with pytest.raises(ConfigError, match=why):
            jails.require()
    finally:
        jails._probe.cache_clear()


def test_describe_says_which_jail():
    assert JAIL.describe().startswith("bubblewrap 0.8")
    assert "no network" in JAIL.describe()
    assert jails.NO_JAIL.describe().startswith("none (--no-jail)")


def test_the_runner_says_when_there_is_no_jail(tmp_path):
    notes: list[str] = []
    runner = ScriptRunner(work_dir(tmp_path), jail=jails.NO_JAIL, on_note=notes.append)
    runner.install("a", "#!/bin/sh\n:\n")
    runner.run("a")
    runner.run("a")
    assert notes == [f"script a and the ones after it run with no jail: {jails.NO_JAIL.describe()}"]
    quiet: list[str] = []
    jailed = ScriptRunner(work_dir(tmp_path, "jailed"), jail=JAIL, on_note=quiet.append)
    jailed.install("a", "#!/bin/sh\n:\n")
    jailed.run("a")
    assert quiet == []


def test_the_pin_is_never_on_a_command_line(tmp_path):
    """bwrap reads the script's environment from a memfd: `ps` shows no value of it."""
    runner = ScriptRunner(work_dir(tmp_path), jail=JAIL, env_extra={"PROBE_VALUE": SECRET})
    runner.install("show", "#!/bin/sh -e\ncat /proc/1/cmdline\necho\necho \"$PROBE_VALUE\"\n")
    init_cmdline, value = runner.run("show").decode().splitlines()
    assert value == SECRET and SECRET not in init_cmdline and init_cmdline.startswith(f"{JAIL.bwrap}\0--args\0")


# --- The reference scripts in the jail -----------------------------------------------------------


def gateway_csr_pem() -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, GATEWAY_HOSTS[0])])
    san = x509.SubjectAlternativeName([x509.DNSName(host) for host in GATEWAY_HOSTS])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).add_extension(san, critical=False)
    return profiles.csr_pem(csr.sign(profiles.new_key(), hashes.SHA256()))


def script_set(name: str) -> dict[str, str]:
    """A script set as it runs: the API's rendered by the server, fioca's with its values."""
    if name == reference.FIOCA:
        return {n: reference.render(t, factory=FACTORY, local_ca_cn=LOCAL_CA_CN) for n, t in reference.bundled().items()}
    return reference.api_scripts(name, factory=FACTORY, local_ca_cn=LOCAL_CA_CN)


def run_create_flow(work: Path, scripts: dict[str, str], env: dict[str, str]) -> dict[str, bytes]:
    """The four scripts as create runs them, in the jail; every product taken."""
    runner = ScriptRunner(work, jail=JAIL, env_extra=env)
    runner.put("tls-csr", gateway_csr_pem())
    online_key = profiles.new_key()
    runner.put("ca-csr", profiles.csr_pem(profiles.build_device_ca_csr(online_key, cn="online-ca", factory=FACTORY)))
    for name, text in scripts.items():
        runner.install(name, text)
    runner.run("create_ca")
    products = {"factory_ca.pem": runner.take("factory_ca.pem")}
    products["tls-crt"] = runner.run("sign_tls_csr", ("tls-csr",))
    products["online-crt"] = runner.run("sign_ca_csr", ("ca-csr",))
    runner.run("create_device_ca", ("local-ca.key", "local-ca.pem"))
    for name in ("local-ca.key", "local-ca.pem", "tls-csr", "ca-csr"):
        products[name] = runner.take(name)
    if not env.get("HSM_MODULE"):
        products["factory_ca.key"] = runner.take("factory_ca.key")
    return products


def check_products(products: dict[str, bytes]) -> None:
    root = profiles.load_cert(products["factory_ca.pem"], "factory_ca.pem")
    profiles.check_root(root, factory=FACTORY, artifact="factory_ca.pem")
    tls_csr = profiles.load_csr(products["tls-csr"], "tls-csr")
    tls = profiles.load_cert(products["tls-crt"], "tls-crt")
    profiles.check_gateway_tls(tls, root=root, csr=tls_csr, artifact="tls-crt")
    online_csr = profiles.load_csr(products["ca-csr"], "ca-csr")
    online = profiles.load_cert(products["online-crt"], "online-crt")
    profiles.check_device_ca(online, root=root, factory=FACTORY, csr=online_csr, artifact="online-crt")
    local = profiles.load_cert(products["local-ca.pem"], "local-ca.pem")
    profiles.check_device_ca(local, root=root, factory=FACTORY, expected_cn=LOCAL_CA_CN, artifact="local-ca.pem")
    profiles.check_key_matches(profiles.load_private_key(products["local-ca.key"], "local-ca.key"), local, "local-ca.key")
    if "factory_ca.key" in products:
        profiles.check_key_matches(profiles.load_private_key(products["factory_ca.key"], "k"), root, "factory_ca.key")


@pytest.mark.parametrize("set_name", reference.SCRIPT_SETS, ids=str)
def test_reference_scripts_make_a_valid_pki_in_the_jail(tmp_path, set_name):
    env = reference.script_env(factory=FACTORY, local_ca_cn=LOCAL_CA_CN)
    check_products(run_create_flow(work_dir(tmp_path), script_set(set_name), env))


@pytest.mark.parametrize("set_name", reference.SCRIPT_SETS, ids=str)
def test_reference_scripts_sign_on_a_softhsm2_token_in_the_jail(tmp_path, set_name):
    token = new_token(tmp_path / "hsm", "jail-root")
    env = {**reference.script_env(factory=FACTORY, local_ca_cn=LOCAL_CA_CN), **token.settings().script_env()}
    products = run_create_flow(work_dir(tmp_path), script_set(set_name), env)
    check_products(products)
    assert token.root_objects() == ["private key", "public key"]
    root = profiles.load_cert(products["factory_ca.pem"], "factory_ca.pem")
    with token.active():
        from fioca.pki import hsm

        hsm.check_cert_matches_token(token.settings(), root, "factory_ca.pem")


def test_hsm_mode_binds_only_the_module_and_its_token_store(tmp_path):
    token = new_token(tmp_path / "hsm", "jail-root")
    other = tmp_path / "other-secret.txt"
    other.write_text(SECRET)
    env = token.settings().script_env()
    probe = (
        "cat /etc/pkcs11/modules/*\n"
        f"for token in {token.conf.parent / 'tokens'}/*; do [ -d \"$token\" ] && echo token; done\n"
        f"cat {other}\n"
        "cat /usr/share/p11-kit/modules/opensc-pkcs11.module 2>&1\n"
    )
    out = run_probe(tmp_path, probe, env_extra=env)
    assert f"module: {MODULE}" in out
    assert out.splitlines()[1] == "token"  # the token's folder is there
    assert SECRET not in out
    assert "opensc-pkcs11.module: No such file or directory" in out  # the host's other modules are not there


def test_the_documented_offline_procedure_runs_in_the_jail(tmp_path):
    """`device create-offline --faithful` through the runner: the PKI's files put in, the
    device's files taken out (the device folder is the work dir itself)."""
    from fioca.device import offline

    env = reference.script_env(factory=FACTORY, local_ca_cn=LOCAL_CA_CN)
    pki = run_create_flow(work_dir(tmp_path, "pki"), script_set(reference.FIOCA), env)
    runner = ScriptRunner(work_dir(tmp_path), jail=JAIL)
    for name in ("local-ca.key", "local-ca.pem", "tls-crt"):
        runner.put(name, pki[name])
    device = str(uuid.uuid4())
    procedure = offline.faithful_script(factory=FACTORY, device_dir=".", uuid=device, production=False)
    runner.install("offline", "#!/bin/sh -e\n" + procedure)
    san_line = runner.run("offline").decode()
    assert f"DNS:{GATEWAY_HOSTS[0]}" in san_line
    cert = profiles.load_cert(runner.take("client.pem"), "client.pem")
    local = profiles.load_cert(pki["local-ca.pem"], "local-ca.pem")
    profiles.check_device_cert(cert, ca=local, factory=FACTORY, uuid=device, artifact="client.pem")
    profiles.check_key_matches(profiles.load_private_key(runner.take("pkey.pem"), "pkey.pem"), cert, "pkey.pem")


# --- The probe's cost ------------------------------------------------------------------------------


def test_the_loader_lists_what_ldd_lists(tmp_path):
    """The loader run per file, all at once, binds what one `ldd` over the files bound: the
    tools, and files it does not list itself (a shell script, a text file) go to ldd."""
    script = tmp_path / "tool"
    script.write_text("#!/bin/sh\n:\n")
    paths = (*jails.base_layout().files, str(script), "/etc/hostname")
    done = subprocess.run(["ldd", *paths], capture_output=True, text=True, env={"PATH": jails.SAFE_PATH})
    listed = [m.group(1) for line in done.stdout.splitlines() if (m := re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line))]
    assert jails._libraries(paths) == list(dict.fromkeys(listed))
    assert jails._elf_interpreter("/bin/sh") and jails._elf_interpreter(str(script)) is None


def test_a_probe_started_early_is_the_one_require_reports(monkeypatch):
    """`probe_soon()` runs the probe in a thread; `require()` waits for it, and a failing probe
    still fails there, in one line, as it does without it."""
    jails._probe.cache_clear()
    monkeypatch.setattr(jails, "_background_started", False)
    monkeypatch.setattr(jails, "SAFE_PATH", "/usr/bin:/bin")
    monkeypatch.setattr(jails, "BWRAP", "bwrap-not-installed")
    try:
        jails.probe_soon()
        with pytest.raises(ConfigError, match="apt-get install bubblewrap"):
            jails.require()
    finally:
        jails._probe.cache_clear()
    monkeypatch.undo()
    monkeypatch.setattr(jails, "_background_started", False)
    try:
        jails.probe_soon()
        assert jails.require() == JAIL
    finally:
        jails._probe.cache_clear()
