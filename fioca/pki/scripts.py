"""The one script runner: a script run with the `sh` package inside the jail, timed and capped,
its outputs taken without trusting it.

Every script fioca runs (create's four, the lifecycle commands' signing scripts, the offline
procedure) goes through `ScriptRunner`, in one private work dir:

- `install(name, text)` and `put(name, data)` write the scripts (0700, as fioctl did) and their
  inputs (CSRs) with O_EXCL|O_NOFOLLOW: nothing is written through a name a script planted;
- `run(name, args)` runs `./name args...` in the jail (fioca/pki/jail.py) with the explicit
  environment plus `env_extra` (the HSM variables in HSM mode; never the API token), umask
  077, its own session, a timeout on fioca's own timer, stdout captured (bytes, capped) and
  stderr handed on line by line (capped). A timeout or a flood kills the jail's PID 1, and
  with it every process the script started; `run` returns only once the jail is gone, so
  nothing the script started (`&`, `nohup`, `setsid -f`) is alive when fioca reads its work;
- `take(name)` reads a product as a regular file only: opened with O_NOFOLLOW|O_NONBLOCK (a
  symlink is refused, a FIFO cannot hang it), one link (no hard link to a file elsewhere),
  bounded size, read once. The bytes are the product; the path is never used again.

The work dir must be a real folder (not a symlink), owned by this user, mode 0700; it is
checked before every use. With the jail, nothing outside the work dir can change during a
script, so nothing outside it is watched. With `--no-jail` (jail.NO_JAIL) there is no
containment at all, and the runner says so once through `on_note`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import stat
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import sh

from fioca import facts
from fioca.errors import ScriptError
from fioca.pki import jail as jails

INPUT_MODE = 0o600
# A script is written into its work dir, then exec'd in its jail. A process another thread
# forks while that file is open for writing holds a copy of the fd until it execs, and the
# script's exec fails meanwhile with ETXTBSY ("Text file busy"): with create's steps side by
# side, one step's install would meet another's start. So writing a work-dir file and
# starting a script (fork to exec) never overlap in this process.
_WRITING_OR_FORKING = threading.Lock()


@dataclass(frozen=True)
class ScriptLimits:
    timeout: float = 120.0  # seconds; a root CA takes well under one
    max_stdout: int = 1024 * 1024  # a certificate is about 1 KiB
    max_stderr: int = 1024 * 1024
    max_product: int = 256 * 1024  # a file `take` reads: a key or a certificate is under 4 KiB
    stderr_tail: int = 8  # lines quoted in the error when a script fails


class _Capture:
    """A file-like sink sh writes a stream into: bounded, and line-aware for stderr.

    (A file-like object, not a callback: sh delivers callbacks with ~100 ms of latency.)
    """

    def __init__(self, limit: int, kind: str, on_line: Callable[[str], None] | None = None, tail: int = 0):
        self.limit = limit
        self.kind = kind
        self.on_line = on_line
        self.chunks: list[bytes] = []
        self.size = 0
        self.overflowed = False
        self.kill: Callable[[], None] | None = None
        self.tail: deque[str] = deque(maxlen=tail or None)
        self._partial = b""

    def write(self, chunk: bytes) -> None:
        if self.overflowed:
            return
        self.size += len(chunk)
        if self.size > self.limit:
            self.overflowed = True
            if self.kill is not None:
                self.kill()
            return
        self.chunks.append(chunk)
        if self.on_line is not None:
            lines = (self._partial + chunk).split(b"\n")
            self._partial = lines.pop()
            for line in lines:
                self._line(line)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        """Hand on a last line that had no newline."""
        if self.on_line is not None and self._partial:
            self._line(self._partial)
            self._partial = b""

    def _line(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace")
        self.tail.append(line)
        self.on_line(line)

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


class ScriptRunner:
    """Installs, runs and takes the products of scripts in one private work dir.

    `jail`: the jail to run in; None means `jail.require()` (the probed bubblewrap jail, or
    ConfigError when there is none). `env_extra`: added to the script's explicit environment
    (with HSM_MODULE in it, the jail also holds the HSM's module and token store).
    """

    def __init__(
        self,
        work_dir: Path,
        *,
        jail: jails.Jail | None = None,
        on_stderr: Callable[[str], None] = lambda _line: None,
        on_note: Callable[[str], None] = lambda _line: None,
        env_extra: dict[str, str] | None = None,
        limits: ScriptLimits = ScriptLimits(),
    ):
        self.work_dir = Path(work_dir)
        self.jail = jail if jail is not None else jails.require()
        self.on_stderr = on_stderr
        self.on_note = on_note
        self.env_extra = env_extra or {}
        self.limits = limits
        self._warned = False
        # stop() from another thread: the kill of the script running now, under this lock, so
        # that it never outlives the jail it kills (a pid or pidfd must not be signalled late).
        self._stop_lock = threading.Lock()
        self._stopped = False
        self._kill: Callable[[], None] | None = None
        os.close(self._open_work_dir())

    # --- Writing into the work dir ----------------------------------------------------------
    def install(self, name: str, text: str) -> Path:
        """Write a script (0700); never over a file already there."""
        return self.put(name, text.encode("utf-8"), mode=facts.SCRIPT_MODE)

    def put(self, name: str, data: bytes, *, mode: int = INPUT_MODE, replace: bool = False) -> Path:
        """Write an input (a CSR, a certificate) as a new file; `replace` first removes the
        name itself (a link is removed, never followed)."""
        folder = self._open_work_dir()
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            with _WRITING_OR_FORKING:
                try:
                    if replace:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(_plain_name(name), dir_fd=folder)
                    fd = os.open(_plain_name(name), flags, mode, dir_fd=folder)
                except FileExistsError:
                    where = f"the work dir {self.work_dir}"
                    raise ScriptError(f"{name} already exists in {where}; fioca never writes over it") from None
                except OSError as exc:
                    raise ScriptError(f"cannot write {name} in the work dir {self.work_dir}: {exc.strerror}") from None
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    os.fchmod(handle.fileno(), mode)  # whatever the umask
        finally:
            os.close(folder)
        return self.work_dir / name

    # --- Running ------------------------------------------------------------------------------
    def stop(self) -> None:
        """Kill the script running now, and refuse to run another (from any thread: a step run
        side by side whose work is no longer wanted). Its run() raises ScriptError."""
        with self._stop_lock:
            self._stopped = True
            if self._kill is not None:
                self._kill()

    def run(self, name: str, args: tuple[str, ...] = ()) -> bytes:
        """Run `./name args...` in the work dir, in the jail; return its stdout."""
        if self._stopped:
            raise ScriptError(f"script {name} was not run: fioca stopped it")
        if not self.jail.contained and not self._warned:
            self._warned = True
            self.on_note(f"script {name} and the ones after it run with no jail: {self.jail.describe()}")
        stdout = _Capture(self.limits.max_stdout, "stdout")
        stderr = _Capture(self.limits.max_stderr, "stderr", on_line=self.on_stderr, tail=self.limits.stderr_tail)
        token = self._token_watch()
        try:
            with self._started(name, tuple(args), stdout, stderr) as (process, how):
                timed_out = self._wait(process, how, stdout, stderr)
        except BaseException:
            if token is not None:  # a jail that would not end, Ctrl-C: what it left goes all the same
                with contextlib.suppress(Exception):  # the first error is the one to report
                    token.check(name)
            raise
        stderr.close()
        if token is not None:
            token.check(name)  # what it left on the token goes first, whatever else it did
        self._judge(name, process, stdout, stderr, timed_out)
        return stdout.data

    def _token_watch(self):
        """In HSM mode, the token as it is before a script (fioca.pki.token_watch.TokenWatch)."""
        if not self.env_extra.get("HSM_MODULE"):
            return None
        from fioca.pki import hsm, token_watch  # python-pkcs11 and cryptography: HSM mode only

        settings = hsm.HsmSettings.of_script_env(self.env_extra)
        return token_watch.TokenWatch(settings, jails.token_folder(self.env_extra), backend=jails.token_backend(self.env_extra))

    @contextlib.contextmanager
    def _started(self, name: str, args: tuple[str, ...], stdout: _Capture, stderr: _Capture):
        """The script started in the jail, with the work dir checked and bound by its fd (the
        path is not trusted twice). On the way out, however it is left (Ctrl-C too), the jail
        is gone before anything else happens."""
        folder = self._open_work_dir()
        try:
            with self.jail.invocation(self.work_dir, name, args, self.env_extra, work_dir_fd=folder) as how:
                process = _start(how, stdout, stderr)
                os.close(folder)
                folder = None
                how.started()
                try:
                    yield process, how
                finally:
                    ended = how.wait_ended()
                if not ended:
                    raise ScriptError(f"script {name} left processes its jail could not end; nothing it made was used")
        finally:
            if folder is not None:
                os.close(folder)

    def _wait(self, process, how: jails.Invocation, stdout: _Capture, stderr: _Capture) -> bool:
        """Wait for the script; a timeout or an output flood kills it and all it started.
        True when it timed out."""
        timed_out = threading.Event()

        def kill() -> None:
            # The jail's PID 1 (every process in the jail dies with it), by its pidfd; with no
            # jail, the script's group. A jail fioca has no pidfd on had ended before it could
            # take one (or never began): its bwrap's pid, once reaped, may name another process.
            if not how.end() and not self.jail.contained:
                _kill_group(process.pid)

        def on_timeout() -> None:
            timed_out.set()
            kill()

        stdout.kill = stderr.kill = kill
        with self._stop_lock:
            self._kill = kill
            if self._stopped:
                kill()
        if stdout.overflowed or stderr.overflowed:
            kill()
        # Our own timer: sh's _timeout would spare grandchildren.
        timer = threading.Timer(self.limits.timeout, on_timeout)
        timer.start()
        try:
            process.wait()  # also drains stdout and stderr to the end
        except (sh.ErrorReturnCode, sh.SignalException):
            pass  # judged from the exit code
        finally:
            timer.cancel()
            timer.join()  # a kill under way finishes before the jail's fds close
            with self._stop_lock:
                self._kill = None
                kill()  # what is left: the jail (a no-op once it has ended), or the script's group
        return timed_out.is_set()

    def _judge(self, name: str, process, stdout: _Capture, stderr: _Capture, timed_out: bool) -> None:
        if self._stopped:
            raise ScriptError(f"script {name} was stopped by fioca; nothing it made was used")
        if timed_out:
            raise ScriptError(f"script {name} did not finish within {self.limits.timeout:g}s and was killed")
        for capture in (stdout, stderr):
            if capture.overflowed:
                raise ScriptError(f"script {name} wrote more than {capture.limit} bytes to {capture.kind} and was killed")
        code = _exit_code(process)
        if code != 0:
            last = "; ".join(line for line in stderr.tail if line.strip())[-600:]
            how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
            raise ScriptError(f"script {name} {how}" + (f": {last}" if last else ""))

    # --- Taking the products -----------------------------------------------------------------
    def take(self, name: str, *, limit: int | None = None) -> bytes:
        """The bytes of product `name` (see `take`), at most ScriptLimits.max_product."""
        return take(self.work_dir, name, limit=self.limits.max_product if limit is None else limit)

    def _open_work_dir(self) -> int:
        return open_work_dir(self.work_dir)


def take(work_dir: Path, name: str, *, limit: int = ScriptLimits.max_product) -> bytes:
    """The bytes of product `name` in `work_dir`: a regular file with one link, at most `limit`
    bytes, read once. Anything else is refused with ScriptError, and nothing read through it."""
    folder = open_work_dir(work_dir)
    try:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
        try:
            fd = os.open(_plain_name(name), flags, dir_fd=folder)
        except FileNotFoundError:
            raise ScriptError(f"{name} was not written: the script exited 0 without making it") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ScriptError(_refused(name, "is a symbolic link")) from None
            raise ScriptError(f"cannot open {name} in the work dir: {exc.strerror}") from None
    finally:
        os.close(folder)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ScriptError(_refused(name, f"is a {_kind(info.st_mode)}, not a regular file"))
        if info.st_nlink != 1:
            raise ScriptError(_refused(name, f"has {info.st_nlink} hard links (a product may have one)"))
        if info.st_size > limit:
            raise ScriptError(_refused(name, f"is {info.st_size} bytes, more than the {limit} a product may be"))
        data = _read_up_to(fd, limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ScriptError(_refused(name, f"grew past {limit} bytes while being read"))
    return data


def open_work_dir(work_dir: Path) -> int:
    """An fd on the work dir after checking it is fioca's: a real folder, this user's, 0700."""
    try:
        fd = os.open(work_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if os.path.islink(work_dir):
            what = "is a symbolic link"
        else:
            what = "is not a folder" if exc.errno == errno.ENOTDIR else f"cannot be opened ({exc.strerror})"
        raise ScriptError(f"the work dir {work_dir} {what}; scripts run only in fioca's own private folder") from None
    info = os.fstat(fd)
    problem = None
    if info.st_uid != os.geteuid():
        problem = f"is owned by uid {info.st_uid}, not you"
    elif stat.S_IMODE(info.st_mode) != facts.DIR_MODE:
        problem = f"is mode {stat.S_IMODE(info.st_mode):04o}, not 0700"
    if problem:
        os.close(fd)
        raise ScriptError(f"the work dir {work_dir} {problem}; scripts run only in fioca's own private folder")
    return fd


def _start(how: jails.Invocation, stdout: _Capture, stderr: _Capture):
    with open(os.devnull, "rb") as nothing, _WRITING_OR_FORKING:  # sh returns once the child has exec'd
        return sh.Command(how.argv[0])(
            *how.argv[1:],
            _cwd=how.cwd,
            _env=how.env,
            _in=nothing,  # no terminal, no pipe left open: a read gets end-of-file
            _out=stdout,
            _err=stderr,
            _tty_out=False,  # a pipe, not a pty: the certificate's bytes arrive as written
            # stdout in fixed-size chunks (sh's default line buffering would hoard a newline-free
            # flood); stderr as it arrives, so a script's progress shows while it runs (a
            # size-N buffer holds a short line until N bytes or the end).
            _out_bufsize=65536,
            _err_bufsize=0,
            _new_session=True,
            _pass_fds=set(how.pass_fds),
            _preexec_fn=lambda: os.umask(0o077),
            _bg=True,
            _bg_exc=False,
        )


def _read_up_to(fd: int, size: int) -> bytes:
    chunks = []
    while size > 0 and (chunk := os.read(fd, min(size, 65536))):
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _plain_name(name: str) -> str:
    """A file name in the work dir itself: no folders, nothing hidden behind `..`."""
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise ScriptError(f"{name!r} is not a plain file name in the work dir")
    return name


def _refused(name: str, why: str) -> str:
    return f"{name} {why}; fioca takes only regular files a script wrote, and read nothing through it"


def _kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):  # fmt: skip
        if test(mode):
            return kind
    return "special file"


def _exit_code(process) -> int:
    try:
        return process.exit_code
    except (sh.ErrorReturnCode, sh.SignalException) as exc:
        return exc.exit_code


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
