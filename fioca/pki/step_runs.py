"""One step of `keys ca create` at work in a thread of its own (create.py's Steps starts them).

A step's script runs in its own jail and work dir, so the steps that need only what is kept
already (the three signing steps need the root and the answer's CSRs) can run side by side
on the machine's cores. What the user sees and what the journal records stay in the plan's
order: the flow takes the steps one after the other, and until a step is the one being
reported, what its script writes to stderr is held, then shown in the order it came.

A step whose work is no longer wanted (an earlier step failed, Ctrl-C) is stopped: its jail
is killed with all it started, its work dir removed, what it made dropped unread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from fioca.pki.scripts import ScriptRunner

T = TypeVar("T")


class StepRun(Generic[T]):
    """`work(self)` in a thread of its own once `start()`ed; `result()` waits for what it returns.

    `work` hands each script's stderr line to `line()` and its ScriptRunner to `attach()`,
    which is how `stop()` reaches the script. Made first, started after the caller holds it:
    a Ctrl-C that lands inside `start()` leaves a run the caller can stop and join (one stopped
    before its thread began never begins; `join()` then returns at once)."""

    def __init__(self, name: str, work: Callable[[StepRun[T]], T], show: Callable[[str], None]):
        self.name = name
        self._work = work
        self._show = show
        # Two locks: the held lines (shared with sh's reader thread, held while a line is shown,
        # which a terminal that takes no more output can block), and the run's state (what
        # stop() needs, so that it never waits for the terminal).
        self._lines_lock = threading.Lock()
        self._lock = threading.Lock()
        self._held: list[str] | None = []  # None once the lines go straight to `show`
        self._runner: ScriptRunner | None = None
        self._stopped = False
        self._began = False  # the thread is at work: stop() then leaves its end to it
        self._outcome: tuple[T | None, BaseException | None] = (None, None)
        # Waited on, not Thread.join(): a join that Ctrl-C interrupts can leave the thread
        # marked as ended while it still runs (CPython 3.11), and a later join returns at once.
        self._done = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._main, name=f"fioca-{self.name}", daemon=True).start()

    def _main(self) -> None:
        with self._lock:
            if self._stopped:  # stopped before it began (set done by stop()): nothing to do
                return
            self._began = True
        try:
            self._outcome = (self._work(self), None)
        except BaseException as exc:  # noqa: BLE001 - raised again by result(), in the flow's thread
            self._outcome = (None, exc)
        finally:
            self._done.set()

    def line(self, text: str) -> None:
        """A line the step's script wrote to stderr: held, or shown once the step is shown."""
        with self._lines_lock:
            if self._held is not None:
                self._held.append(text)
                return
            self._show(text)

    def shown(self) -> None:
        """The step is the one being reported: the lines held so far, then each as it comes.
        (Under the lock: a line that arrives meanwhile waits, and comes after them.)"""
        with self._lines_lock:
            held, self._held = self._held or [], None
            for text in held:
                self._show(text)

    def attach(self, runner: ScriptRunner) -> None:
        """The runner of the step's script: stopped at once if the step already was."""
        with self._lock:
            self._runner = runner
            stopped = self._stopped
        if stopped:
            runner.stop()

    def stop(self) -> None:
        """Not wanted any more: kill the script (its run() raises), refuse to run another."""
        with self._lock:
            self._stopped = True
            runner = self._runner
            if not self._began:  # its thread never began (or not yet): it never will
                self._outcome = (None, RuntimeError(f"step {self.name} was stopped before it began"))
                self._done.set()
        if runner is not None:
            runner.stop()

    def result(self) -> T:
        """Wait for the step; what `work` returned, or what it raised, raised here."""
        self._done.wait()
        value, error = self._outcome
        if error is not None:
            raise error
        return value  # type: ignore[return-value]  # set: work returned

    def join(self) -> None:
        """Wait until the work has ended (its work dir is gone)."""
        self._done.wait()
