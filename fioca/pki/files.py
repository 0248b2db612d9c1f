"""The PKI directory, and the one way fioca reads and writes private files.

Every file fioca keeps is written here: 0400 (or the mode asked) in a 0700 folder, through
a temporary file that is fsync'ed and then hard-linked into place, so a crash leaves the
whole file or nothing and an existing file is never replaced. Records fioca rewrites by
design (the create journal) are replaced atomically instead.

Everything happens relative to a directory file descriptor opened without following
symlinks, and every name is opened with O_NOFOLLOW: a name a script or another user turned
into a symlink is refused, never followed. A folder or file owned by another user, or
writable by group or others, is refused before it is used.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import stat
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path

from fioca import facts
from fioca.errors import PkiDirError, RefusedError

# A PKI file is a few KiB; a bound keeps a planted huge file from being read into memory.
MAX_FILE_BYTES = 1024 * 1024

_NOFOLLOW_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class PkiDir:
    """A private folder (the PKI dir, a device folder), used through one O_NOFOLLOW handle.

    `PkiDir.open(path)` takes an existing folder; `PkiDir.prepare(path)` also makes a
    missing one. Both check that the folder is a real directory, ours, and not writable by
    group or others. Close it (or use it as a context manager) when done.
    """

    def __init__(self, path: Path, fd: int):
        self.path = Path(path)
        self._fd = fd

    # --- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path) -> PkiDir:
        path = Path(path).expanduser()
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise PkiDirError(f"{path} does not exist") from None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise PkiDirError(f"{path} is not a directory (or is a symlink); fioca uses only a real folder") from None
            raise PkiDirError(f"cannot open {path}: {exc.strerror}") from None
        folder = cls(path, fd)
        try:
            folder._check_private_owner()
        except PkiDirError:
            folder.close()
            raise
        return folder

    @classmethod
    def prepare(cls, path: Path) -> tuple[PkiDir, list[str]]:
        """The folder for a new PKI: made 0700 when missing; an existing empty folder is
        tightened to 0700 (with a note); a non-empty one must already be private."""
        path = Path(path).expanduser()
        notes: list[str] = []
        if not os.path.lexists(path):
            try:
                path.mkdir(mode=facts.DIR_MODE, parents=True)
            except OSError as exc:
                raise PkiDirError(f"cannot create {path}: {exc.strerror}") from None
        folder = cls.open(path)
        mode = stat.S_IMODE(os.fstat(folder._fd).st_mode)
        if mode != facts.DIR_MODE:
            if folder.names():
                folder.close()
                raise RefusedError(
                    f"{path} is not empty and is {mode:04o}, not private (0700); fioca does not change the "
                    f"mode of a folder it did not make: run `chmod 700 {path}` yourself, or use a new folder"
                )
            os.fchmod(folder._fd, facts.DIR_MODE)
            notes.append(f"{path} was an empty {mode:04o} folder; it is now 0700")
        return folder, notes

    def _check_private_owner(self) -> None:
        st = os.fstat(self._fd)
        _require_ours(st, self.path, "folder")
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise PkiDirError(f"{self.path} is not writable")

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> PkiDir:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __repr__(self) -> str:
        return f"PkiDir({str(self.path)!r})"

    # --- reading ---------------------------------------------------------------------------

    def names(self) -> list[str]:
        return sorted(os.listdir(self._fd))

    def has(self, name: str) -> bool:
        """True when `name` exists in the folder, as whatever it is (a symlink counts)."""
        try:
            os.stat(_plain(name), dir_fd=self._fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    def read_bytes(self, name: str, *, max_bytes: int = MAX_FILE_BYTES) -> bytes:
        """The bytes of a regular file fioca can trust: no symlink, ours, not writable by others."""
        where = self.path / name
        try:
            fd = os.open(_plain(name), _NOFOLLOW_READ, dir_fd=self._fd)
        except FileNotFoundError:
            raise PkiDirError(f"{where} does not exist") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise PkiDirError(f"{where} is a symlink; fioca reads only regular files it can trust") from None
            raise PkiDirError(f"cannot read {where}: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise PkiDirError(f"{where} is not a regular file")
            _require_ours(st, where, "file")
            if st.st_size > max_bytes:
                raise PkiDirError(f"{where} is {st.st_size} bytes, more than a PKI file can be ({max_bytes})")
            return _read_all(fd, max_bytes, where)
        finally:
            os.close(fd)

    # --- writing ---------------------------------------------------------------------------

    def write_new(self, name: str, data: bytes, mode: int = facts.FILE_MODE) -> Path:
        """Write `data` as `name` atomically with `mode`; an existing name is never replaced."""
        where = self.path / name
        if self.has(name):
            raise RefusedError(f"{where} already exists; fioca never overwrites it")
        try:
            with self._staged(name, data, mode) as tmp:
                try:
                    # link() fails when the target exists, unlike rename(): no overwrite, no race.
                    os.link(tmp, _plain(name), src_dir_fd=self._fd, dst_dir_fd=self._fd, follow_symlinks=False)
                except FileExistsError:
                    raise RefusedError(f"{where} already exists; fioca never overwrites it") from None
            os.fsync(self._fd)
        except OSError as exc:
            raise _write_error(where, exc) from None
        return where

    def replace(self, name: str, data: bytes, mode: int = facts.RECORD_MODE) -> Path:
        """Write `data` as `name` atomically, replacing what is there: only for fioca's own
        records and files the user asked to overwrite. A symlink at `name` is replaced, not
        followed (rename replaces the link itself)."""
        where = self.path / name
        try:
            with self._staged(name, data, mode) as tmp:
                os.rename(tmp, _plain(name), src_dir_fd=self._fd, dst_dir_fd=self._fd)
            os.fsync(self._fd)
        except OSError as exc:
            raise _write_error(where, exc) from None
        return where

    def write_all(self, items: Sequence[tuple[str, bytes, int]], *, replace: Collection[str] = ()) -> list[Path]:
        """Write several files as one step: every (name, data, mode) staged first (fsync'ed, its
        mode), then all put in place in order, a name in `replace` by rename (replacing what is
        there), any other by link (never over an existing file), then the folder fsync'ed. A
        failure while staging leaves nothing behind; a file found in the way while placing takes
        back those placed before it that were new (one it replaced stays replaced)."""
        placed: list[str] = []
        try:
            with contextlib.ExitStack() as stack:
                staged = [(name, stack.enter_context(self._staged(name, data, mode))) for name, data, mode in items]
                for name, tmp in staged:
                    if name in replace and self.has(name):
                        os.rename(tmp, _plain(name), src_dir_fd=self._fd, dst_dir_fd=self._fd)
                        continue
                    os.link(tmp, _plain(name), src_dir_fd=self._fd, dst_dir_fd=self._fd, follow_symlinks=False)
                    placed.append(name)
                os.fsync(self._fd)
        except FileExistsError as exc:
            self._take_back(placed)
            raise RefusedError(f"{self.path / (exc.filename2 or exc.filename)} is in the way (it exists); nothing was written") from None
        except OSError as exc:
            self._take_back(placed)
            raise _write_error(self.path, exc) from None
        return [self.path / name for name, _data, _mode in items]

    def _take_back(self, names: list[str]) -> None:
        for name in names:
            self.remove(name)

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(_plain(name), dir_fd=self._fd)

    def move_aside(self, name: str, suffix: str) -> str:
        """Give `name` the first free name `name<suffix>`, `name<suffix>.1`, ...; return it."""
        target = self.free_name(f"{name}{suffix}")
        try:
            os.link(_plain(name), target, src_dir_fd=self._fd, dst_dir_fd=self._fd, follow_symlinks=False)
            os.unlink(_plain(name), dir_fd=self._fd)
            os.fsync(self._fd)
        except OSError as exc:
            raise PkiDirError(f"cannot move {self.path / name} to {self.path / target}: {exc.strerror}") from None
        return target

    def link_aside(self, name: str, suffix: str) -> str:
        """A second name `name<suffix>` (or `.1`, ...) for `name`'s file, which stays; return it."""
        target = self.free_name(f"{name}{suffix}")
        try:
            os.link(_plain(name), target, src_dir_fd=self._fd, dst_dir_fd=self._fd, follow_symlinks=False)
            os.fsync(self._fd)
        except OSError as exc:
            raise PkiDirError(f"cannot keep {self.path / name} as {self.path / target}: {exc.strerror}") from None
        return target

    def sync(self) -> None:
        """Make the folder's entries (names made or removed) durable."""
        os.fsync(self._fd)

    def move_back(self, moved: str, name: str) -> None:
        """Undo `move_aside`: `moved` becomes `name` again (which must not exist)."""
        os.link(_plain(moved), _plain(name), src_dir_fd=self._fd, dst_dir_fd=self._fd, follow_symlinks=False)
        os.unlink(_plain(moved), dir_fd=self._fd)

    def free_name(self, name: str, *, numbered: bool = False) -> str:
        """The first of `name` (unless `numbered`), `name.1`, `name.2`, ... that does not exist."""
        candidates = ((name if n == 0 else f"{name}.{n}") for n in range(0 if not numbered else 1, 10_000))
        for candidate in candidates:
            if not self.has(candidate):
                return candidate
        raise PkiDirError(f"no free name left for {self.path / name}")

    @contextlib.contextmanager
    def _staged(self, name: str, data: bytes, mode: int) -> Iterator[str]:
        """A temp file beside `name` holding `data` (fsync'ed, `mode`), removed afterwards."""
        tmp = f".{name}.{secrets.token_hex(6)}.tmp"
        # O_EXCL | O_NOFOLLOW: the temp name is new and ours; 0600 until it is complete.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=self._fd)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fchmod(fd, mode)
                os.fsync(fd)
            finally:
                os.close(fd)
            yield tmp
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=self._fd)

    # --- sub-folders and the lock -----------------------------------------------------------

    def make_folder(self, name: str) -> Path:
        """A new private sub-folder `name` (0700); an existing name is refused, a symlink too."""
        try:
            os.mkdir(_plain(name), facts.DIR_MODE, dir_fd=self._fd)
        except FileExistsError:
            raise RefusedError(f"{self.path / name} already exists; fioca never reuses it") from None
        except OSError as exc:
            raise _write_error(self.path / name, exc) from None
        return self.path / name

    def remove_folder(self, name: str) -> None:
        """Remove a sub-folder fioca made (a work dir left by a run that died), with all it holds,
        whatever modes a script left on it and the folders inside.

        Anything else at that name (a symlink, a file, another user's folder) is refused, not
        followed or removed."""
        try:
            st = os.stat(_plain(name), dir_fd=self._fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(st.st_mode):
            raise RefusedError(f"{self.path / name} is not a folder fioca made; look at it and remove it yourself")
        _require_owned(st, self.path / name, "folder")  # its mode is no refusal: a script may have chmod'ed it
        try:
            remove_tree(self._fd, name)
        except OSError as exc:
            raise PkiDirError(f"cannot remove {self.path / name}: {exc.strerror}; it may hold a copy of a key: remove it yourself") from None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold an exclusive lock on the folder itself (no lock file is left behind); a second
        fioca on the same folder is refused at once."""
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RefusedError(f"{self.path} is in use by another fioca run; wait for it to finish") from None
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)


def _plain(name: str) -> str:
    """A name inside the folder: never a path, never `.` or `..`."""
    if not name or "/" in name or name in (".", ".."):
        raise PkiDirError(f"{name!r} is not a plain file name")
    return name


def remove_tree(parent_fd: int, name: str) -> None:
    """Remove `name` from the folder `parent_fd` with all it holds, whatever modes a script left
    on the folders inside (`chmod 0 d` kept d/factory_ca.key from rmtree). A symlink is removed,
    never followed: nothing outside is touched.

    The walk holds one folder open at a time and keeps no call stack: a script can nest folders
    deeper than Python's recursion limit and the fd limit allow, with a key copy at the bottom."""
    folder = _opened_up(parent_fd, name)
    if folder is None:
        os.unlink(name, dir_fd=parent_fd)
        return
    # One entry per level above `folder`: its name there, that parent's identity, and the
    # parent's sub-folders still to go (listed once, so a wide folder is not listed again).
    above: list[tuple[str, tuple[int, int], list[str]]] = []
    try:
        pending = _emptied_but_folders(folder)
        while True:
            if pending:
                child = pending.pop()
                inner = _opened_up(folder, child)
                if inner is None:  # no longer a folder: it cannot be by now, but never follow it
                    os.unlink(child, dir_fd=folder)
                    continue
                above.append((child, _identity(folder), pending))
                os.close(folder)
                folder = inner  # before it is emptied: an error there closes it, not the closed one again
                pending = _emptied_but_folders(folder)
                continue
            if not above:
                break
            child, expected, pending = above.pop()
            parent = os.open("..", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=folder)
            os.close(folder)
            folder = parent
            if _identity(folder) != expected:
                raise OSError(errno.EXDEV, "a folder moved while it was removed")
            os.rmdir(child, dir_fd=folder)
    finally:
        os.close(folder)
    os.rmdir(name, dir_fd=parent_fd)


def _emptied_but_folders(folder: int) -> list[str]:
    """Unlink every entry of `folder` that is not a real folder (symlinks included, never
    followed); the names of the folders that are left."""
    with os.scandir(folder) as listing:
        entries = list(listing)
    folders = []
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            folders.append(entry.name)
        else:
            os.unlink(entry.name, dir_fd=folder)
    return folders


def _identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _opened_up(parent_fd: int, name: str) -> int | None:
    """A readable fd on the real folder `name`, given owner rwx first so it can be listed and
    emptied; None when `name` is anything else (a file, a symlink)."""
    # O_PATH needs no permission on the folder itself; O_NOFOLLOW opens a symlink as itself.
    handle = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
    try:
        mode = os.fstat(handle).st_mode
        if not stat.S_ISDIR(mode):
            return None
        if mode & stat.S_IRWXU != stat.S_IRWXU:
            # fchmod refuses an O_PATH fd; its /proc link is this very folder, not a path looked up again.
            os.chmod(f"/proc/self/fd/{handle}", stat.S_IMODE(mode) | stat.S_IRWXU)
        return os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=handle)
    finally:
        os.close(handle)


def _require_owned(st: os.stat_result, where: Path, what: str) -> None:
    if st.st_uid != os.getuid():
        raise RefusedError(f"{where} is owned by another user (uid {st.st_uid}); fioca uses only its own {what}s")


def _require_ours(st: os.stat_result, where: Path, what: str) -> None:
    _require_owned(st, where, what)
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise RefusedError(
            f"{where} is writable by group or others ({stat.S_IMODE(st.st_mode):04o}); "
            f"fioca uses only private {what}s: run `chmod go-w {where}`"
        )


def _read_all(fd: int, max_bytes: int, where: Path) -> bytes:
    chunks = []
    size = 0
    while chunk := os.read(fd, 65536):
        size += len(chunk)
        if size > max_bytes:
            raise PkiDirError(f"{where} grew past {max_bytes} bytes while it was read")
        chunks.append(chunk)
    return b"".join(chunks)


def write_all(folder: Path, items: Sequence[tuple[str, bytes, int]], *, replace: Collection[str] = ()) -> list[Path]:
    """`PkiDir.write_all` for a folder fioca uses once (`device register`'s sota dir)."""
    with PkiDir.open(Path(folder)) as opened:
        return opened.write_all(items, replace=replace)


def _write_error(path: Path, exc: OSError) -> PkiDirError:
    if exc.errno == errno.ENOSPC:
        return PkiDirError(f"no space left to write {path}; nothing was written")
    return PkiDirError(f"cannot write {path}: {exc.strerror or exc.__class__.__name__}")


def write_file(path: Path, data: bytes, mode: int = facts.FILE_MODE) -> Path:
    """`PkiDir.write_new` for one file in a folder fioca uses once (a sota dir, a test's PKI)."""
    path = Path(path)
    with PkiDir.open(path.parent) as folder:
        return folder.write_new(path.name, data, mode)