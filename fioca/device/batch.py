"""How a batch of device folders reaches the disk: written whole, synced, then published.

Every device is built in `OUT/.partial-<folder>` (0700, files 0400) and only complete, checked
folders are renamed to `OUT/<folder>`. Durability is by batch, not by file: `Publisher`
flushes the filesystem once (syncfs) for every folder written since the last time, renames
them into place, and syncs OUT, so a crash never leaves a published folder with a file that
did not reach the disk, and a folder is reported only once it is durable.

`run_pool` spreads a batch over worker processes: each takes the next chunk of devices from a
shared counter, builds, checks and writes its partial folders, and tells the parent; the
parent publishes and reports progress. The workers are forked from the caller (a few
milliseconds, the PKI already loaded) when it runs no other thread; a caller with threads
(a sandbox in the same process) gets them from a fork server instead, since a fork would copy
whatever locks those threads hold. Ctrl-C reaches the whole process group: workers ignore it
and the parent stops them after the chunk at hand, publishes what is complete and removes the
rest. A parent killed outright (SIGTERM, SIGKILL) publishes nothing more: its workers end
after the chunk at hand, and the next run removes the partial folders.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Protocol

from fioca import facts
from fioca.errors import FiocaError, RefusedError
from fioca.pki.files import remove_tree

PARTIAL_PREFIX = ".partial-"
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
RENAME_NOREPLACE = 1  # linux/fs.h


class Builder(Protocol):
    """What a worker does for one device: its files, built and checked (nothing written)."""

    def build(self, spec: Any) -> dict[str, bytes]: ...


@contextlib.contextmanager
def opened_folder(path: Path) -> Iterator[int]:
    """An fd on the folder `path` (not through a symlink), closed afterwards."""
    fd = os.open(path, _FOLDER)
    try:
        yield fd
    finally:
        os.close(fd)


def write_partial(out_fd: int, folder: str, files: dict[str, bytes]) -> None:
    """`OUT/.partial-<folder>` (0700) holding `files` (0400 each), all new."""
    partial = PARTIAL_PREFIX + folder
    os.mkdir(partial, facts.DIR_MODE, dir_fd=out_fd)
    folder_fd = os.open(partial, _FOLDER, dir_fd=out_fd)
    try:
        for name, data in files.items():
            fd = os.open(name, _NEW_FILE, facts.FILE_MODE, dir_fd=folder_fd)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
    finally:
        os.close(folder_fd)


def remove_partials(out_dir: Path) -> None:
    """Partial folders and work dirs in OUT (a killed run's too) go, whatever modes a script left
    inside: a work dir held local-ca.key."""
    with opened_folder(out_dir) as out_fd:
        for name in os.listdir(out_fd):
            if name.startswith(PARTIAL_PREFIX):
                remove_tree(out_fd, name)


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _syncfs_call() -> Callable[[int], None]:
    """syncfs(2) (Linux): one flush of the filesystem OUT is on; elsewhere, sync(2)."""
    call = getattr(_libc(), "syncfs", None)
    if call is None:
        return lambda _fd: os.sync()

    def syncfs(fd: int) -> None:
        if call(fd) != 0:
            error = ctypes.get_errno()
            raise OSError(error, os.strerror(error))

    return syncfs


def _look_then_rename(fd: int, old: str, new: str) -> None:
    """rename(2) unless `new` exists (the run holds OUT's lock: nothing else makes names there
    meanwhile); rename alone would replace an empty folder."""
    try:
        os.stat(new, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        os.rename(old, new, src_dir_fd=fd, dst_dir_fd=fd)
    else:
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), new)


def _rename_new_call() -> Callable[[int, str, str], None]:
    """A rename within OUT that never replaces: renameat2(RENAME_NOREPLACE) (Linux 3.15, glibc
    2.28), one atomic step where a look and a rename are two (a batch renames 100,000 folders);
    where the kernel or the filesystem lacks it, `_look_then_rename`. Raises FileExistsError."""
    call = getattr(_libc(), "renameat2", None)
    if call is None:
        return _look_then_rename
    call.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]

    def rename_new(fd: int, old: str, new: str) -> None:
        if call(fd, os.fsencode(old), fd, os.fsencode(new), RENAME_NOREPLACE) == 0:
            return
        error = ctypes.get_errno()
        if error not in (errno.EINVAL, errno.ENOSYS):  # EINVAL: a filesystem without the flag
            raise OSError(error, os.strerror(error), new)  # EEXIST comes out as FileExistsError
        _look_then_rename(fd, old, new)

    return rename_new


class Publisher:
    """Moves complete partial folders into place in OUT, durably (see the module docstring)."""

    def __init__(self, out_dir: Path, out_fd: int):
        self.out_dir = out_dir
        self.out_fd = out_fd
        self._syncfs = _syncfs_call()
        self._rename_new = _rename_new_call()

    def publish(self, folders: Sequence[str]) -> None:
        if not folders:
            return
        self._syncfs(self.out_fd)  # every file of every folder below is on the disk
        for folder in folders:
            try:
                self._rename_new(self.out_fd, PARTIAL_PREFIX + folder, folder)
            except FileExistsError:
                raise RefusedError(f"{self.out_dir / folder} already exists; fioca never overwrites a device folder") from None
        os.fsync(self.out_fd)  # the renames too


Chunk = tuple[int, int]  # a worker's part of the batch: specs[start:end]
# The smallest chunk: the last ones, this small, end together within a few milliseconds.
MIN_CHUNK = 8


@dataclass(frozen=True)
class PoolPlan:
    """What the workers share: the devices (anything sliceable into specs with a `folder`),
    how many workers take chunks of them, the largest chunk and where to write.

    Chunks shrink as the batch goes (guided scheduling): a worker takes a share of what is
    left, so the first chunks are large (few syncs) and the last small, and no core waits at
    the end for the other's last chunk."""

    specs: Sequence[Any]
    workers: int
    max_chunk: int
    out_dir: Path

    def next_chunk(self, start: int) -> Chunk | None:
        """The chunk a worker takes when the devices before `start` are taken; None at the end."""
        left = len(self.specs) - start
        if left <= 0:
            return None
        return start, start + min(left, max(MIN_CHUNK, min(self.max_chunk, left // (2 * self.workers))))

    def part(self, chunk: Chunk) -> Sequence[Any]:
        return self.specs[chunk[0] : chunk[1]]


class BuilderRecipe(Protocol):
    """How a fork-server worker makes its own Builder (a loaded CA key does not pickle)."""

    def __call__(self) -> Builder: ...


def _worker(make_builder: BuilderRecipe, plan: PoolPlan, counter: Any, stop: Any, conn: Any) -> None:
    """A worker: chunks from the shared counter until there are none, the parent says stop, or
    the process that started it is gone (killed: nobody would publish what it writes)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    starter = os.getppid()  # the caller, or the fork server, which ends with the caller
    try:
        builder = make_builder()
        with opened_folder(plan.out_dir) as out_fd:
            while not stop.is_set() and os.getppid() == starter:
                with counter.get_lock():  # the counter holds where the next chunk starts
                    chunk = plan.next_chunk(counter.value)
                    if chunk is None:
                        break
                    counter.value = chunk[1]
                for spec in plan.part(chunk):
                    write_partial(out_fd, spec.folder, builder.build(spec))
                conn.send(("written", chunk))
        conn.send(("end", None))
    except BaseException as exc:  # noqa: BLE001 - every failure goes to the parent, which reports it
        conn.send(("error", _portable(exc)))
    finally:
        conn.close()


def _portable(exc: BaseException) -> tuple[type, tuple, dict]:
    """An exception as (class, args, attributes): FiocaError subclasses with their own
    __init__ (CheckError) do not survive pickling as themselves."""
    kind = type(exc) if isinstance(exc, (FiocaError, OSError)) else FiocaError
    args = exc.args if kind is type(exc) else (f"a batch worker failed: {exc!r}",)
    state = dict(getattr(exc, "__dict__", {})) if kind is type(exc) else {"message": args[0], "details": []}
    return kind, args, state


def _rebuilt(portable: tuple[type, tuple, dict]) -> BaseException:
    kind, args, state = portable
    exc = kind.__new__(kind)
    exc.args = args
    exc.__dict__.update(state)
    return exc


class PoolInterrupted(Exception):
    """Ctrl-C during a pool run; `published` folders are complete and in place."""

    def __init__(self, published: list[Chunk]):
        super().__init__("interrupted")
        self.published = published


def run_pool(
    builder: Builder,
    recipe: BuilderRecipe,
    plan: PoolPlan,
    publisher: Publisher,
    progress: Callable[[int], None],
) -> list[Chunk]:
    """Run `plan` on its workers' processes; the chunks published, in order.
    Forked workers use `builder` as it is; fork-server workers make theirs with `recipe`.
    Raises the first worker's error, or PoolInterrupted, after stopping every worker."""
    forked = threading.active_count() == 1
    context = multiprocessing.get_context("fork" if forked else "forkserver")
    if not forked:
        context.set_forkserver_preload(["fioca.device.offline"])
    counter, stop = context.Value("q", 0), context.Event()
    processes, conns = [], []
    for _ in range(min(plan.workers, -(-len(plan.specs) // MIN_CHUNK))):
        receive, send = context.Pipe(duplex=False)
        make = (lambda: builder) if forked else recipe  # a fork copies the builder; nothing is pickled
        process = context.Process(target=_worker, args=(make, plan, counter, stop, send), daemon=True)
        process.start()
        send.close()
        processes.append(process)
        conns.append(receive)
    return _collect(processes, conns, stop, plan, publisher, progress)


def _collect(processes: list, conns: list, stop: Any, plan: PoolPlan, publisher: Publisher,
             progress: Callable[[int], None]) -> list[Chunk]:  # fmt: skip
    """The parent's loop: publish what the workers wrote, until every worker has ended. All
    that was written while the last publish synced is published together (one sync)."""
    published: list[Chunk] = []
    failure: BaseException | None = None
    interrupted = False
    live = list(conns)
    while live:
        try:
            written = []
            ready = wait(live)
            while ready:
                for conn in ready:
                    try:
                        kind, value = conn.recv()
                    except EOFError:  # killed (out of memory?): what it was writing stays partial
                        kind, value = "error", _portable(FiocaError("a batch worker ended without finishing its devices"))
                    if kind == "written":
                        written.append(value)
                        continue
                    live.remove(conn)
                    if kind == "error" and failure is None:
                        failure = _rebuilt(value)
                        stop.set()
                ready = wait(live, timeout=0)  # what else is waiting, without waiting for it
            if written and failure is None:
                publisher.publish([spec.folder for chunk in written for spec in plan.part(chunk)])
                published.extend(written)
                progress(sum(end - start for start, end in written))
        except KeyboardInterrupt:
            interrupted = True
            stop.set()  # the chunks at hand finish; no new ones start
        except BaseException as exc:
            failure = failure or exc
            stop.set()
    for process in processes:
        process.join()
    remove_partials(plan.out_dir)
    if failure is not None:
        raise failure
    if interrupted:
        raise PoolInterrupted(sorted(published))
    return sorted(published)

