"""Running a server-sent script with the `sh` package: contained, timed, and watched.

Each script runs as a file (so its `#!/bin/sh -e` is in force) in the private work dir, with:
- a minimal environment: PATH, the locale, HOME pointed at the work dir, and the HSM
  variables only when the caller passes them (never the API token);
- umask 077 and its own session, so a timeout or an output flood kills its whole group;
- stdout captured as the result (with a size limit), stderr streamed to the user line by line;
- a snapshot of what lies outside the work dir (the PKI dir, the user's ssh and fioctl
  config) taken before and compared after: a script that touched any of it is a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import sh

from fioca.errors import ConfigError, ScriptError

SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LOCALE_VARS = ("LANG", "LC_ALL", "LC_CTYPE")


@dataclass(frozen=True)
class ScriptLimits:
    timeout: float = 120.0  # seconds; a root CA takes well under one
    max_stdout: int = 1024 * 1024  # a certificate is about 1 KiB
    max_stderr: int = 1024 * 1024
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
        self.pid: int | None = None
        self.tail: deque[str] = deque(maxlen=tail or None)
        self._partial = b""

    def write(self, chunk: bytes) -> None:
        if self.overflowed:
            return
        self.size += len(chunk)
        if self.size > self.limit:
            self.overflowed = True
            if self.pid is not None:
                _kill_group(self.pid)
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
    def text(self) -> str:
        return b"".join(self.chunks).decode("utf-8", "replace")


def require_tools(*names: str) -> None:
    """One clear line when `sh` or `openssl` is missing, instead of a failed script."""
    for name in names:
        if shutil.which(name, path=SAFE_PATH) is None:
            raise ConfigError(f"`{name}` is not installed (looked in {SAFE_PATH}); install it and run again")


def minimal_env(work_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {"PATH": SAFE_PATH, "HOME": str(work_dir), "TMPDIR": str(work_dir)}
    for name in LOCALE_VARS:
        if name in os.environ:
            env[name] = os.environ[name]
    env.update(extra or {})
    return env


def _snapshot(paths: Iterable[Path], skip: Path) -> dict[str, tuple]:
    """(mode, size, mtime, inode) of each watched path and its direct children."""
    seen: dict[str, tuple] = {}
    for root in paths:
        candidates = [root]
        if root.is_dir():
            try:
                candidates += sorted(root.iterdir())
            except OSError:
                pass
        for path in candidates:
            if path == skip or skip in path.parents:
                continue
            try:
                st = path.lstat()
            except OSError:
                continue
            seen[str(path)] = (stat.S_IMODE(st.st_mode), st.st_size, st.st_mtime_ns, st.st_ino)
    return seen


def default_watch_list(pki_dir: Path) -> list[Path]:
    home = Path.home()
    return [pki_dir, home, home / ".ssh", home / ".config", home / ".config" / "fioctl.yaml"]


class ScriptRunner:
    """Installs and runs scripts in one private work dir."""

    def __init__(
        self,
        work_dir: Path,
        *,
        watch: list[Path],
        on_stderr: Callable[[str], None] = lambda _line: None,
        env_extra: dict[str, str] | None = None,
        limits: ScriptLimits = ScriptLimits(),
    ):
        self.work_dir = work_dir
        self.watch = watch
        self.on_stderr = on_stderr
        self.env_extra = env_extra or {}
        self.limits = limits

    def install(self, name: str, text: str) -> Path:
        path = self.work_dir / name
        # O_EXCL: a script never replaces a file in the work dir (e.g. one a previous step made).
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o700)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        return path

    def run(self, name: str, args: tuple[str, ...] = ()) -> str:
        """Run `./name args...` in the work dir; return its stdout."""
        script = self.work_dir / name
        stdout = _Capture(self.limits.max_stdout, "stdout")
        stderr = _Capture(self.limits.max_stderr, "stderr", on_line=self.on_stderr, tail=self.limits.stderr_tail)
        before = _snapshot(self.watch, skip=self.work_dir)

        process = sh.Command(str(script))(
            *args,
            _cwd=str(self.work_dir),
            _env=minimal_env(self.work_dir, self.env_extra),
            _out=stdout,
            _err=stderr,
            _tty_out=False,  # a pipe, not a pty: the certificate's bytes arrive as written
            # Fixed-size chunks: sh's default line buffering would hoard a newline-free flood.
            _out_bufsize=65536,
            _err_bufsize=4096,
            _new_session=True,
            _preexec_fn=lambda: os.umask(0o077),
            _bg=True,
            _bg_exc=False,
        )
        stdout.pid = stderr.pid = process.pid
        if stdout.overflowed or stderr.overflowed:
            _kill_group(process.pid)
        # Our own timer kills the whole process group: sh's _timeout would spare grandchildren.
        timed_out = threading.Event()

        def on_timeout() -> None:
            timed_out.set()
            _kill_group(process.pid)

        timer = threading.Timer(self.limits.timeout, on_timeout)
        timer.start()
        try:
            process.wait()  # also drains stdout and stderr to the end
        except (sh.ErrorReturnCode, sh.SignalException):
            pass  # judged below from the exit code
        finally:
            timer.cancel()
            _kill_group(process.pid)  # nothing the script started outlives it
        stderr.close()

        changed = _diff(before, _snapshot(self.watch, skip=self.work_dir))
        if changed:
            raise ScriptError(
                f"script {name} changed files outside its work dir: {', '.join(changed[:5])}; stopped before any upload"
            )
        last = "; ".join(line for line in stderr.tail if line.strip())[-600:]
        if timed_out.is_set():
            raise ScriptError(f"script {name} did not finish within {self.limits.timeout:g}s and was killed")
        for capture in (stdout, stderr):
            if capture.overflowed:
                raise ScriptError(
                    f"script {name} wrote more than {capture.limit} bytes to {capture.kind} and was killed"
                )
        code = _exit_code(process)
        if code != 0:
            how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
            raise ScriptError(f"script {name} {how}" + (f": {last}" if last else ""))
        return stdout.text


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


def _diff(before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
    changed = [path for path in after if before.get(path) != after[path]]
    changed += [path for path in before if path not in after]
    return sorted(changed)
