"""The bubblewrap jail every script runs in: the one place that builds it.

A script fioca runs, server-sent or bundled, can do only what the jail leaves it:

- new user, PID, network, IPC, UTS (and, where the kernel has them, cgroup) namespaces, no
  capabilities, no further user namespaces: no network at all (not even the host's
  loopback), no view of fioca's process or any other, and when the script ends the PID
  namespace ends with it: every process it started (`&`, `nohup`, `setsid -f`) is killed;
- `--die-with-parent`: if fioca dies, the jail dies; `--new-session`: no controlling
  terminal to push keystrokes into;
- `--clearenv` and an explicit environment, read by bwrap from a memfd (`--args`), so no
  value (HSM_PIN) is ever on a command line `ps` shows;
- a read-only root holding only `sh`, `openssl`, the POSIX tools the reference scripts use
  (TOOLS), the libraries they load (from `ldd`, once per process) and openssl's config; in
  HSM mode also `pkcs11-tool`, the PKCS#11 module, openssl's pkcs11 engine, p11-kit's proxy
  with a module config naming only that module, and the token the module's configuration
  points at (SoftHSM2: the conf read-only, and of its `directories.tokendir` only the token's
  own folder, read-write: the store's other tokens are not there). No interpreters, no curl,
  awk, bc, dc, perl, python;
- the work dir bound read-write at WORK_DIR (the script's cwd and HOME), its own `/tmp`
  (tmpfs), `/proc` and `/dev`; nothing of the user's home, fioca's config or the PKI dir.

`require()` probes once per process that bwrap exists and can make its namespaces, and
says in one line how to install it or why it failed; `NO_JAIL` (the user's `--no-jail`)
is the only way around it. `Jail.invocation()` gives the runner (fioca/pki/scripts.py) the
command that runs one script. Small system tools (ldd, openssl, bwrap itself) are run here
with `subprocess`: they are fixed host programs, not scripts.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from fioca.errors import ConfigError

BWRAP = "bwrap"
INSTALL_HINT = "apt-get install bubblewrap"
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
WORK_DIR = "/work"  # where the work dir appears inside the jail: the cwd and HOME
# The programs a script may call: what the reference scripts and the documented offline
# procedure use, and a few POSIX text tools scripts of that kind reach for (`sleep` too: a
# waiting script must meet its timeout, not a missing command). Each costs a mount per run.
REQUIRED_TOOLS = ("sh", "openssl")
TOOLS = (
    *REQUIRED_TOOLS,
    "basename", "cat", "chmod", "cp", "cut", "dirname", "grep", "head", "mkdir", "mv", "rm",
    "sed", "sleep", "tail", "touch", "tr", "wc",
)  # fmt: skip
HSM_TOOL = "pkcs11-tool"
# The pkcs11 engine's library names (OpenSSL 3 loads `<id>.so` from ENGINESDIR).
ENGINE_FILES = ("pkcs11.so", "libpkcs11.so")
# What the pkcs11 engine loads when no module is named (the API's scripts name none).
P11_KIT_PROXY = "p11-kit-proxy.so"
P11_KIT_CONF = "/etc/pkcs11/pkcs11.conf"
P11_KIT_MODULE = "/etc/pkcs11/modules/fioca-hsm.module"
SOFTHSM2_CONF_VAR = "SOFTHSM2_CONF"
SOFTHSM2_DEFAULT_CONF = "/etc/softhsm/softhsm2.conf"
# bwrap 0.8 added --disable-userns; older ones still jail, without that extra wall.
DISABLE_USERNS_SINCE = (0, 8, 0)
JAIL_END_TIMEOUT = 10.0  # seconds for the kernel to kill what is left in a jail
TMP_SIZE = 64 * 1024 * 1024  # the jail's /tmp is memory: bounded
# The loader's cache: inside, libraries resolve as `ldd` resolved them here.
LOADER_CACHE = "/etc/ld.so.cache"
_MAX_SYMLINK_HOPS = 40


@dataclass(eq=False)
class Layout:
    """What the jail's read-only root holds: symlinks as on the host, files bound read-only."""

    symlinks: dict[str, str] = field(default_factory=dict)  # path in the jail -> link target
    files: dict[str, None] = field(default_factory=dict)  # host path == jail path, in order
    writable: dict[str, None] = field(default_factory=dict)  # folders bound read-write
    data: dict[str, bytes] = field(default_factory=dict)  # files fioca writes for the jail
    empty: dict[str, None] = field(default_factory=dict)  # folders seen empty (a tmpfs), before `writable`

    def add(self, path: str) -> None:
        """Make `path` appear as on the host: each symlink met on the way, then the file itself."""
        self.files[self._walk(path)] = None

    def add_writable(self, path: str) -> None:
        self.writable[self._walk(path)] = None

    def add_empty(self, path: str) -> None:
        self.empty[self._walk(path)] = None

    def merged(self, other: Layout) -> Layout:
        return Layout(
            {**self.symlinks, **other.symlinks},
            {**self.files, **other.files},
            {**self.writable, **other.writable},
            {**self.data, **other.data},
            {**self.empty, **other.empty},
        )

    def _walk(self, path: str) -> str:
        """Resolve `path` component by component, recording every symlink it passes through
        (so `/bin/sh -> dash` and `/lib64 -> usr/lib64` exist in the jail as they do here)."""
        todo = list(PurePosixPath(path).parts[1:])
        current, hops = "/", 0
        while todo:
            part = todo.pop(0)
            if part == ".":
                continue
            if part == "..":
                current = os.path.dirname(current)
                continue
            candidate = os.path.join(current, part)
            if not os.path.islink(candidate):
                current = candidate
                continue
            hops += 1
            if hops > _MAX_SYMLINK_HOPS:
                raise ConfigError(f"{path} has too many symbolic links to bind into the script jail")
            target = os.readlink(candidate)
            self.symlinks[candidate] = target
            target_parts = PurePosixPath(target).parts
            if target.startswith("/"):
                current, target_parts = "/", target_parts[1:]
            todo[:0] = target_parts
        return current


@dataclass(eq=False)
class Invocation:
    """How to start one script: the program and its arguments, environment, cwd and the fds
    it must inherit. Once it has started, `started()`; to kill it and all it started, `end()`."""

    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: str
    pass_fds: tuple[int, ...] = ()  # only bwrap needs them: closed here by `started()`
    info_fd: int | None = None  # the read end of bwrap's --info-fd
    sandbox: int | None = None  # a pidfd on the jail's PID 1

    def started(self) -> None:
        """Let go of what only bwrap needed, and learn the jail's PID 1 from bwrap's info.

        bwrap writes it once the jail is set up and closes the fd before the script runs, so
        this read ends within the jail's start-up (at end-of-file if bwrap failed)."""
        self._close(self.pass_fds)
        self.pass_fds = ()
        if self.info_fd is None:
            return
        chunks = []
        while chunk := os.read(self.info_fd, 4096):
            chunks.append(chunk)
        os.close(self.info_fd)
        self.info_fd = None
        found = re.search(rb'"child-pid"\s*:\s*(\d+)', b"".join(chunks))
        if found:
            # A pidfd, not the number: it cannot come to name another process. (PID 1 lives
            # until the script ends, and a PID is not reused within microseconds.)
            with contextlib.suppress(ProcessLookupError):
                self.sandbox = os.pidfd_open(int(found.group(1)))

    def end(self) -> bool:
        """Kill the jail's PID 1, and with it, by the kernel, every process in the jail.
        False when there is no jail to end this way."""
        if self.sandbox is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(self.sandbox, signal.SIGKILL)
        return True

    def wait_ended(self, timeout: float = JAIL_END_TIMEOUT) -> bool:
        """Wait until the jail's PID 1 is gone. bwrap itself exits as soon as the script has,
        while PID 1 is still killing the rest; once it is gone, so is every process the
        script started. False if it outlasted `timeout` seconds."""
        if self.sandbox is None:
            return True
        poller = select.poll()
        poller.register(self.sandbox, select.POLLIN)
        return bool(poller.poll(timeout * 1000))

    def close(self) -> None:
        owned = (*self.pass_fds, *(fd for fd in (self.info_fd, self.sandbox) if fd is not None))
        self._close(owned)
        self.pass_fds, self.info_fd, self.sandbox = (), None, None

    @staticmethod
    def _close(fds: tuple[int, ...]) -> None:
        for fd in fds:
            os.close(fd)


@dataclass(frozen=True)
class Jail:
    """The jail a run uses: bubblewrap (`bwrap` set) or none at all (`--no-jail`)."""

    bwrap: str | None
    version: tuple[int, ...] = ()

    @property
    def contained(self) -> bool:
        return self.bwrap is not None

    def describe(self) -> str:
        """One line for the dry-run, the audit output and the journal."""
        if not self.contained:
            return "none (--no-jail): scripts run with your files, your processes and the network"
        version = ".".join(map(str, self.version))
        return f"bubblewrap {version}: no network, read-only minimal root, work dir only, nothing outlives a script"

    @contextlib.contextmanager
    def invocation(
        self,
        work_dir: Path,
        script: str,
        args: tuple[str, ...] = (),
        env: Mapping[str, str] | None = None,
        *,
        work_dir_fd: int | None = None,
    ) -> Iterator[Invocation]:
        """The command that runs `./script args...` from `work_dir` with `env` added to the
        explicit environment. With HSM_MODULE in `env`, the jail holds the HSM's files too.
        `work_dir_fd`, an fd the caller opened on the work dir and checked, is what the jail
        binds (not the path, which could have been swapped since)."""
        extra = dict(env or {})
        if not self.contained:
            base = {"PATH": SAFE_PATH, "HOME": str(work_dir), "TMPDIR": str(work_dir), "LC_ALL": "C"}
            yield Invocation((str(work_dir / script), *args), {**base, **extra}, str(work_dir))
            return
        layout = base_layout()
        if extra.get("HSM_MODULE"):
            hsm_files, extra = hsm_layout(extra)
            layout = layout.merged(hsm_files)
        inside = {"PATH": SAFE_PATH, "HOME": WORK_DIR, "TMPDIR": "/tmp", "LC_ALL": "C", **extra}
        # Every fd made here is the Invocation's from the start, so `close()` frees them all.
        info_read, info_write = os.pipe()
        how = Invocation((), {"PATH": SAFE_PATH}, str(work_dir), (info_write,), info_read)
        try:
            memfd = _Memfds(how)
            if work_dir_fd is None:
                work = ["--bind", str(work_dir), WORK_DIR]
            else:
                work = ["--bind-fd", str(memfd.share(os.dup(work_dir_fd))), WORK_DIR]
            options = _jail_options(self.version, inside, layout, memfd, [*work, "--chdir", WORK_DIR])
            options += ["--info-fd", str(memfd.share(info_write))]
            # bwrap's own environment is PATH alone; the script's comes from --clearenv/--setenv.
            how.argv = (self.bwrap, "--args", str(_args_fd(options, memfd)), f"{WORK_DIR}/{script}", *args)
            yield how
        finally:
            how.close()


NO_JAIL = Jail(bwrap=None)


def require(*, no_jail: bool = False) -> Jail:
    """The jail scripts run in, or ConfigError (one line) when there is none; probed once per
    process. `no_jail` is the user's explicit `--no-jail`: scripts run uncontained."""
    _require_tools()
    if no_jail:
        return NO_JAIL
    _join_background()
    found = _probe()
    if isinstance(found, str):
        raise ConfigError(found)
    return found


def describe(*, no_jail: bool = False) -> str:
    """The jail a real run would use, for the dry-run and the audit: its description, or why
    there is none (without refusing: reading scripts needs no jail)."""
    try:
        return require(no_jail=no_jail).describe()
    except ConfigError as exc:
        return f"none available: {exc.message}"


def _require_tools() -> None:
    for name in REQUIRED_TOOLS:
        if shutil.which(name, path=SAFE_PATH) is None:
            raise ConfigError(f"`{name}` is not installed (looked in {SAFE_PATH}); install it and run again")


_background: threading.Thread | None = None
_background_started = False
_background_lock = threading.Lock()


def probe_soon() -> None:
    """Start the probe `require()` makes in a thread (once per process), so that its programs
    run while fioca loads the rest of itself; `require()` waits for it, and reports as before.
    The probe only runs host tools and a no-op jail: it reads and sends nothing of the user's."""
    global _background, _background_started
    with _background_lock:
        if _background_started:
            return
        _background_started = True
        _background = threading.Thread(target=_probe_quietly, name="fioca-jail-probe", daemon=True)
        _background.start()


def _probe_quietly() -> None:
    # A probe that raised is not cached: `require()` probes again and raises it, where and as
    # it always did.
    with contextlib.suppress(BaseException):
        _probe()


def _join_background() -> None:
    global _background
    with _background_lock:
        thread, _background = _background, None
    if thread is not None:
        thread.join()


@functools.cache
def _probe() -> Jail | str:
    """A working Jail, or the one line that says why there is none."""
    bwrap = shutil.which(BWRAP, path=SAFE_PATH)
    if bwrap is None:
        return (
            f"bubblewrap (`{BWRAP}`) is not installed; fioca runs every script inside its jail: "
            f"install it ({INSTALL_HINT}), or pass --no-jail to run scripts uncontained"
        )
    done = subprocess.run([bwrap, "--version"], capture_output=True, text=True, timeout=10)
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", done.stdout)
    jail = Jail(bwrap, tuple(int(n) for n in match.groups()) if match else (0, 0, 0))
    # The real jail (minus the work dir) running the shell's no-op: namespaces and the layout.
    how = Invocation((), {"PATH": SAFE_PATH}, "/")
    try:
        memfd = _Memfds(how)
        options = _jail_options(jail.version, {"PATH": SAFE_PATH}, base_layout(), memfd, [])
        argv = [bwrap, "--args", str(_args_fd(options, memfd)), "/bin/sh", "-c", ":"]
        done = subprocess.run(argv, pass_fds=how.pass_fds, capture_output=True, text=True, timeout=30)
    finally:
        how.close()
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1].removeprefix("bwrap: ")
        return (
            f"bubblewrap cannot make the script jail here ({why}); allow unprivileged user namespaces "
            "(sysctl kernel.unprivileged_userns_clone=1, or kernel.apparmor_restrict_unprivileged_userns=0), "
            "or pass --no-jail to run scripts uncontained"
        )
    return jail


# --- What the jail holds --------------------------------------------------------------------


@functools.cache
def base_layout() -> Layout:
    """sh, openssl, the tools, their libraries and openssl's config; computed once."""
    layout = Layout()
    programs = [path for path in (shutil.which(name, path=SAFE_PATH) for name in TOOLS) if path]
    for path in ("/bin/sh", *programs):
        layout.add(path)
    for library in _libraries(tuple(layout.files)):
        layout.add(library)
    openssl_dir, _engines = _openssl_dirs()
    for path in (os.path.join(openssl_dir, "openssl.cnf"), LOADER_CACHE):
        if os.path.exists(path):
            layout.add(path)
    return layout


def hsm_layout(env: Mapping[str, str]) -> tuple[Layout, dict[str, str]]:
    """The HSM's part of the jail, and the script environment adjusted to it."""
    from fioca.pki.hsm import MODULE_CONFIG_VARS  # cryptography: HSM mode only

    module = env["HSM_MODULE"]
    configs = tuple(sorted((name, env[name]) for name in MODULE_CONFIG_VARS if name in env))
    layout, conf = _hsm_files(module, configs, env.get("HSM_TOKEN_LABEL", ""))
    adjusted = dict(env)
    if conf:
        adjusted[SOFTHSM2_CONF_VAR] = conf
    return layout, adjusted


def token_folder(env: Mapping[str, str]) -> str | None:
    """The one folder of the HSM's that the jail binds read-write (the token's own folder in
    a SoftHSM2 store), or None when the module keeps its tokens elsewhere."""
    layout, _env = hsm_layout(env)
    return next(iter(layout.writable), None)


def token_backend(env: Mapping[str, str]) -> str:
    """How SoftHSM2 keeps the token in `token_folder(env)`: "file" (a file per object, its
    default) or "db" (one sqlite3.db), as its configuration says."""
    conf = _softhsm2_conf(env["HSM_MODULE"], env)
    return (_softhsm2_setting(conf, "objectstore.backend") if conf else None) or "file"


@functools.cache
def _hsm_files(module: str, configs: tuple[tuple[str, str], ...], label: str) -> tuple[Layout, str | None]:
    """pkcs11-tool, the module, the engine, p11-kit's proxy (told of this module only) and the
    token `label`'s part of the token store; cached per module, configuration and token."""
    if not os.path.isabs(module) or not os.path.isfile(module) or not module.isprintable():
        raise ConfigError(f"HSM module {module!r} must be an absolute path to a file")
    tool = shutil.which(HSM_TOOL, path=SAFE_PATH)
    if tool is None:
        raise ConfigError(f"`{HSM_TOOL}` is not installed; HSM mode needs it (apt-get install opensc)")
    _openssl, engines = _openssl_dirs()
    layout = Layout()
    for path in (tool, module, *(os.path.join(engines, name) for name in ENGINE_FILES)):
        if os.path.exists(path):
            layout.add(path)
    proxy = os.path.join(os.path.dirname(engines), P11_KIT_PROXY)
    if os.path.exists(proxy):
        layout.add(proxy)
    for library in _libraries(tuple(layout.files)):
        layout.add(library)
    # p11-kit reads only these: the API's scripts find the module through it, and no other.
    layout.data[P11_KIT_CONF] = b"user-config: none\n"
    layout.data[P11_KIT_MODULE] = f"module: {module}\n".encode()
    values = dict(configs)
    conf = _softhsm2_conf(module, values)
    if conf is not None:
        layout.add(conf)
        tokendir = _softhsm2_tokendir(conf)
        # Only the factory's token: the store's other tokens (another factory's root) are not
        # the script's to read, change or delete. SoftHSM2 names a token's folder by a UUID
        # that ends with its serial number.
        from fioca.pki import hsm

        serial = hsm.token_serial(module, label, dict(configs)).lower()
        folders = [name for name in os.listdir(tokendir) if serial and name.replace("-", "").lower().endswith(serial)]
        if len(folders) != 1:
            raise ConfigError(f"cannot tell which folder of the token store {tokendir} holds token '{label}'")
        layout.add_empty(tokendir)
        layout.add_writable(os.path.join(tokendir, folders[0]))
    for name, value in configs:
        # Another module's configuration named by path (a file or a folder): read-only.
        if name != SOFTHSM2_CONF_VAR and os.path.isabs(value) and os.path.exists(value):
            layout.add(value)
    return layout, conf


def _softhsm2_conf(module: str, env: Mapping[str, str]) -> str | None:
    conf = env.get(SOFTHSM2_CONF_VAR)
    if conf is None and "softhsm" in os.path.basename(os.path.realpath(module)):
        conf = SOFTHSM2_DEFAULT_CONF
    if conf is None:
        return None
    conf = os.path.abspath(conf)
    if not os.path.isfile(conf):
        raise ConfigError(f"the SoftHSM2 configuration {conf} does not exist ({SOFTHSM2_CONF_VAR})")
    return conf


def _softhsm2_setting(conf: str, name: str) -> str | None:
    """The value of `name = ...` in a SoftHSM2 configuration file, None when it is not set."""
    try:
        text = Path(conf).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ConfigError(f"cannot read the SoftHSM2 configuration {conf}: {exc.strerror}") from None
    found = re.search(rf"^\s*{re.escape(name)}\s*=\s*(.+?)\s*$", text, re.MULTILINE)
    return found.group(1) if found else None


def _softhsm2_tokendir(conf: str) -> str:
    tokendir = _softhsm2_setting(conf, "directories.tokendir")
    if not tokendir or not os.path.isabs(tokendir) or not os.path.isdir(tokendir):
        raise ConfigError(f"{conf} names no token dir (directories.tokendir) that exists; the script jail needs it")
    return tokendir


@functools.cache
def _openssl_dirs() -> tuple[str, str]:
    """(OPENSSLDIR, ENGINESDIR) as the system openssl reports them."""
    openssl = shutil.which("openssl", path=SAFE_PATH) or "openssl"
    done = subprocess.run(
        [openssl, "version", "-d", "-e"], capture_output=True, text=True, timeout=10, env={"PATH": SAFE_PATH}
    )
    dirs = dict(re.findall(r'^(OPENSSLDIR|ENGINESDIR): "(.*)"', done.stdout, re.MULTILINE))
    return dirs.get("OPENSSLDIR", "/usr/lib/ssl"), dirs.get("ENGINESDIR", "")


def _libraries(paths: tuple[str, ...]) -> list[str]:
    """Every shared library (and the dynamic loader) the programs and modules `paths` load."""
    found: dict[str, None] = {}
    for line in _listing(paths).splitlines():
        if "=> not found" in line:
            raise ConfigError(f"cannot build the script jail: a library is missing ({line.strip()})")
        match = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if match:
            found[match.group(1)] = None
    return list(found)


def _listing(paths: tuple[str, ...]) -> str:
    """What `ldd paths...` lists, in the same order: the host's dynamic loader (the one /bin/sh
    names) lists each file itself, all at once (`ldd` runs it the same way, one file after
    the other, behind a shell and a `--verify` run per loader: ~5x slower). A file the loader
    does not list (not ELF, static, another ABI, a missing library) goes to `ldd` itself."""
    # A clean environment: LD_LIBRARY_PATH or LD_PRELOAD here must not shape what is bound.
    env = {"PATH": SAFE_PATH}
    loader = _elf_interpreter("/bin/sh")
    if loader is None:
        return subprocess.run(["ldd", *paths], capture_output=True, text=True, timeout=30, env=env).stdout
    listings: list[subprocess.Popen[str]] = []
    try:
        for path in paths:
            listings.append(subprocess.Popen(
                [loader, "--list", path], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
            ))  # fmt: skip
        outs = []
        for path, listing in zip(paths, listings):
            out, _ = listing.communicate(timeout=30)
            if listing.returncode != 0:
                out = subprocess.run(["ldd", path], capture_output=True, text=True, timeout=30, env=env).stdout
            outs.append(out)
    finally:
        for listing in listings:
            if listing.poll() is None:
                listing.kill()
                listing.wait()
    return "".join(outs)


def _elf_interpreter(path: str) -> str | None:
    """The program interpreter (PT_INTERP) an ELF file names, if it names an absolute one."""
    try:
        with open(path, "rb") as file:
            head = file.read(64)
            if len(head) < 52 or head[:4] != b"\x7fELF" or head[4] not in (1, 2) or head[5] not in (1, 2):
                return None
            wide, order = head[4] == 2, "<" if head[5] == 1 else ">"
            offset, size, count = (
                struct.unpack_from(order + "Q", head, 32)[0], *struct.unpack_from(order + "HH", head, 54)
            ) if wide else (struct.unpack_from(order + "I", head, 28)[0], *struct.unpack_from(order + "HH", head, 42))
            for index in range(min(count, 64)):
                file.seek(offset + index * size)
                entry = file.read(size)
                if len(entry) < (40 if wide else 20) or struct.unpack_from(order + "I", entry, 0)[0] != 3:  # PT_INTERP
                    continue
                where, length = (
                    struct.unpack_from(order + "QxxxxxxxxxxxxxxxxQ", entry, 8) if wide
                    else struct.unpack_from(order + "IxxxxxxxxI", entry, 4)
                )
                file.seek(where)
                name = file.read(min(length, 4096)).split(b"\0")[0].decode("utf-8", "replace")
                return name if name.startswith("/") and os.path.isfile(name) else None
    except OSError:
        return None
    return None


# --- bwrap's options --------------------------------------------------------------------------


class _Memfds:
    """Fds bwrap inherits (memfds holding its options and the files it writes into the jail),
    kept in the Invocation's `pass_fds` so that it closes them."""

    def __init__(self, how: Invocation) -> None:
        self.how = how

    def __call__(self, data: bytes) -> int:
        fd = self.share(os.memfd_create("fioca-jail", 0))
        os.write(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
        return fd

    def share(self, fd: int) -> int:
        self.how.pass_fds = (*self.how.pass_fds, fd) if fd not in self.how.pass_fds else self.how.pass_fds
        os.set_inheritable(fd, True)
        return fd


def _args_fd(options: list[str], memfd: _Memfds) -> int:
    """bwrap's options in a memfd (`--args`): nothing of them, a PIN least of all, on its argv."""
    return memfd(b"".join(option.encode() + b"\0" for option in options))


def _jail_options(
    version: tuple[int, ...], env: Mapping[str, str], layout: Layout, memfd: _Memfds, work: list[str]
) -> list[str]:
    return [
        *_namespace_options(version), *_env_options(env), *_layout_options(layout, memfd), *work,
        "--remount-ro", "/",
    ]  # fmt: skip


def _namespace_options(version: tuple[int, ...]) -> list[str]:
    options = [
        "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
        "--unshare-cgroup-try", "--hostname", "jail", "--cap-drop", "ALL",
        "--die-with-parent", "--new-session",
    ]  # fmt: skip
    if version >= DISABLE_USERNS_SINCE:
        options.append("--disable-userns")
    return options


def _env_options(env: Mapping[str, str]) -> list[str]:
    options = ["--clearenv"]
    for name, value in env.items():
        options += ["--setenv", name, value]
    return options


def _layout_options(layout: Layout, memfd: _Memfds) -> list[str]:
    # The jail's own /proc, /dev and /tmp first: a bind below /tmp (a token store) stays seen.
    options = ["--proc", "/proc", "--dev", "/dev", "--size", str(TMP_SIZE), "--tmpfs", "/tmp"]
    for path, target in layout.symlinks.items():
        options += ["--symlink", target, path]
    for path in layout.files:
        options += ["--ro-bind", path, path]
    for path, data in layout.data.items():
        options += ["--ro-bind-data", str(memfd(data)), path]
    for path in layout.empty:
        options += ["--tmpfs", path]
    for path in layout.writable:
        options += ["--bind", path, path]
    return options

