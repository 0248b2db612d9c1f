"""The PKI directory: file names, modes, atomic never-overwriting writes, and the lock.

Every name fioctl uses lives here once. Files are written 0400 in a 0700 folder, through a
temporary file that is fsync'ed and then hard-linked into place: a crash leaves either the
whole file or nothing, and an existing file is never replaced.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import tempfile
from pathlib import Path
from typing import Collection, Iterator, Sequence

from fioca import facts
from fioca.errors import PkiDirError, RefusedError


class PkiDir:
    """A PKI directory on disk. Creating one makes it 0700; an existing one is tightened to 0700."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def ensure(self) -> list[str]:
        """Make sure the folder exists, is a folder, is writable and is 0700. Returns notes."""
        notes: list[str] = []
        if self.path.exists() and not self.path.is_dir():
            raise PkiDirError(f"PKI dir {self.path} exists and is not a directory")
        if not self.path.exists():
            try:
                self.path.mkdir(mode=facts.DIR_MODE, parents=True)
            except OSError as exc:
                raise PkiDirError(f"cannot create PKI dir {self.path}: {exc.strerror}") from None
        mode = stat.S_IMODE(self.path.stat().st_mode)
        if mode != facts.DIR_MODE:
            try:
                self.path.chmod(facts.DIR_MODE)
            except OSError as exc:
                raise PkiDirError(f"cannot make PKI dir {self.path} private (0700): {exc.strerror}") from None
            notes.append(f"PKI dir {self.path} was {mode:04o}, now 0700")
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise PkiDirError(f"PKI dir {self.path} is not writable")
        return notes

    def has(self, name: str) -> bool:
        return (self.path / name).exists()

    def read_bytes(self, name: str) -> bytes:
        try:
            return (self.path / name).read_bytes()
        except FileNotFoundError:
            raise PkiDirError(f"{self.path / name} does not exist") from None
        except OSError as exc:
            raise PkiDirError(f"cannot read {self.path / name}: {exc.strerror}") from None

    def write_new(self, name: str, data: bytes, mode: int = facts.FILE_MODE) -> Path:
        return write_new(self.path / name, data, mode)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold an exclusive lock on the directory; a second fioca on the same dir is refused."""
        lock_path = self.path / facts.LOCK_FILE
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise PkiDirError(f"cannot lock PKI dir {self.path} ({facts.LOCK_FILE}): {exc.strerror}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RefusedError(
                    f"PKI dir {self.path} is in use by another fioca run (lock {facts.LOCK_FILE}); wait for it to finish"
                ) from None
            yield
        finally:
            os.close(fd)


@contextlib.contextmanager
def _staged(path: Path, data: bytes, mode: int) -> Iterator[str]:
    """A temp file beside `path` holding `data` (fsync'ed, `mode`) for the caller to link or
    rename into place; the temp name is removed afterwards either way. OSError comes out as is."""
    # mkstemp makes the file 0600, so the content is never readable by others on the way.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, mode)
        yield tmp_name
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)


def write_new(path: Path, data: bytes, mode: int = facts.FILE_MODE) -> Path:
    """Write `data` to `path` atomically with `mode`, refusing to replace an existing file."""
    path = Path(path)
    if path.exists():
        raise RefusedError(f"{path} already exists; fioca never overwrites it")
    try:
        # A read-only or full file system fails in mkstemp, before any byte.
        with _staged(path, data, mode) as tmp_name:
            try:
                # link() fails when the target exists, unlike rename(): no silent overwrite, no race.
                os.link(tmp_name, path)
            except FileExistsError:
                raise RefusedError(f"{path} already exists; fioca never overwrites it") from None
            _fsync_dir(path.parent)
    except OSError as exc:
        raise _write_error(path, exc) from None
    return path


def replace_file(path: Path, data: bytes, mode: int = facts.FILE_MODE) -> Path:
    """Write `data` to `path` atomically with `mode`, replacing any file there (temp file + rename).

    Only for files the user asked to overwrite (`device register --force`); the PKI dir uses
    `write_new`. OSError comes out as is, for the caller to word.
    """
    path = Path(path)
    with _staged(path, data, mode) as tmp_name:
        os.replace(tmp_name, path)
    return path


def write_all(folder: Path, items: Sequence[tuple[str, bytes, int]], *, replace: Collection[str] = ()) -> list[Path]:
    """Write several files into `folder` as one step (`device register`'s sota dir).

    Every (name, data, mode) is staged first, each in its own temp file (fsync'ed, `mode`); then
    all are put in place in order, a name in `replace` by rename (replacing what is there), any
    other by link (never over an existing file); then the folder is fsync'ed. A failure while
    staging (a full disk, a read-only folder) leaves nothing behind; a file found in the way while
    placing takes back those placed before it that were new (one it replaced stays replaced).
    """
    folder = Path(folder)
    placed: list[Path] = []
    try:
        with contextlib.ExitStack() as stack:
            staged = [(folder / name, stack.enter_context(_staged(folder / name, data, mode))) for name, data, mode in items]
            for path, tmp_name in staged:
                if path.name in replace and path.exists():
                    os.replace(tmp_name, path)
                    continue
                os.link(tmp_name, path)  # fails when the target exists: no silent overwrite
                placed.append(path)
            _fsync_dir(folder)
    except FileExistsError as exc:
        _take_back(placed)
        raise RefusedError(f"{exc.filename2 or exc.filename} is in the way (it exists); nothing was written") from None
    except OSError as exc:
        _take_back(placed)
        raise _write_error(folder, exc) from None
    return [folder / name for name, _data, _mode in items]


def _take_back(paths: list[Path]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink()


def _write_error(path: Path, exc: OSError) -> PkiDirError:
    if exc.errno == errno.ENOSPC:
        return PkiDirError(f"no space left to write {path}; nothing was written")
    return PkiDirError(f"cannot write {path}: {exc.strerror or exc.__class__.__name__}")


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def private_work_dir(prefix: str = "fioca-") -> Path:
    """A fresh 0700 temporary folder for scripts to run in."""
    return Path(tempfile.mkdtemp(prefix=prefix))
