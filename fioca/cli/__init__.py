"""fioca's command line. `main()` is the one place that turns an exception into a line on
stderr and an exit code.

This module imports only the standard library and fioca's light modules, so Ctrl-C is
handled from the first moment (`fioca.interrupts`) and the command tree, Typer included, is
imported inside `main()`, under that handler.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import sys
import threading
from collections.abc import Iterator

from fioca import interrupts
from fioca.errors import ExitCode, FiocaError


def report_error(terminal, exc: FiocaError) -> int:
    terminal.err(f"ERROR: {exc.message}")
    for line in exc.details:
        terminal.err(line)
    return int(exc.exit_code)


def main(argv: list[str] | None = None, terminal=None) -> int:
    """Run the command line `argv` (None: this process's own, which then ends)."""
    thaw = gc.get_freeze_count() == 0  # what loading() freezes; another's freeze is left alone
    previous = interrupts.install()
    try:
        code = _run(argv, terminal)
    except KeyboardInterrupt:  # before the terminal exists (Typer still importing)
        sys.stderr.write(interrupts.LINE + "\n")
        code = interrupts.EXIT_CODE
    finally:
        interrupts.restore(previous)
        if argv is None:
            # The process ends next: the collection Python runs at exit would walk every
            # object the imports made (15-20 ms) to free memory the exit frees anyway.
            gc.freeze()
        elif thaw:
            gc.unfreeze()  # main() runs again in this process (the tests): nothing stays frozen
    if argv is None:
        _end_process(code)
    return code


def _end_process(code: int) -> None:
    """End the process with `code` as the interpreter's exit would, without its teardown.

    The teardown frees every module and object one by one (~13 ms after a create) only for
    the process's end to free them anyway. What the exit does that matters is done here, in
    its order: atexit handlers (multiprocessing's, which end the batch's workers, among
    them), then stdout and stderr flushed. Returns, leaving the interpreter's own exit to
    run, when that would do more: wait for a non-daemon thread still alive, report a stream
    that cannot be flushed (a closed pipe: a message and exit 120), or stay for `python -i`.
    The files fioca writes are closed where they are written, so no buffer waits for the
    teardown (which Python does not promise to flush anyway)."""
    if sys.flags.inspect:
        return
    if any(thread.is_alive() and not thread.daemon for thread in threading.enumerate()
           if thread is not threading.main_thread()):  # fmt: skip
        return
    atexit._run_exitfuncs()  # each once: it empties the list, so the fallback cannot run them twice
    for stream in dict.fromkeys((sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)):
        if stream is None:  # started with the descriptor closed
            continue
        try:
            stream.flush()
        except (OSError, ValueError):  # ValueError: closed
            return
    os._exit(code)


@contextlib.contextmanager
def loading() -> Iterator[None]:
    """Imports under it run without the cyclic collector, and what they made stays out of
    its later passes (gc.freeze; main() thaws it when it returns to a caller in process).

    Loading makes tens of thousands of objects that live as long as the process, and no
    garbage: the collector, woken every 700 allocations, walked them ~90 times for nothing
    while a create started (~15 ms), and would walk them all again right after."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def _run(argv: list[str] | None, terminal) -> int:
    with loading():
        from fioca.cli.context import AppContext, Terminal

    terminal = terminal or Terminal()
    try:
        with loading():
            from fioca.cli.app import command

            tree = command()
        interrupts.arm()
        # Without standalone mode, `raise typer.Exit(n)` comes back as the return value.
        code = tree.main(
            args=argv if argv is not None else sys.argv[1:],
            prog_name="fioca",
            standalone_mode=False,
            obj=AppContext(options={}, terminal=terminal),
        )
    except KeyboardInterrupt:
        return _interrupted(terminal)
    except FiocaError as exc:
        if exc.exit_code == ExitCode.INTERRUPTED:  # a flow's own account: what it left, what to run
            return _interrupted(terminal, (exc.message, *exc.details))
        if interrupts.received():  # the interrupt, swallowed somewhere, came out as this error
            return _interrupted(terminal)
        return report_error(terminal, exc)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, no secrets
        return _unexpected(terminal, exc)
    if code == ExitCode.INTERRUPTED or interrupts.received():
        # Typer turns a KeyboardInterrupt into a silent exit 130.
        return _interrupted(terminal)
    return code if isinstance(code, int) else 0


def _interrupted(terminal, lines: tuple[str, ...] = (interrupts.LINE,)) -> int:
    if sys.stderr.isatty():
        sys.stderr.write("\n")  # off the line the terminal echoed ^C on
    for line in lines:
        terminal.err(line)
    return int(ExitCode.INTERRUPTED)


def _unexpected(terminal, exc: Exception) -> int:
    from typer import Abort, Exit, TyperException

    from fioca.config import tracebacks_wanted

    if isinstance(exc, Exit):
        return exc.exit_code
    if isinstance(exc, TyperException):  # usage errors: shown with the usage line, exit 2
        show = getattr(exc, "show", None)
        if show:
            show()
        else:
            terminal.err(f"ERROR: {exc.message}")
        return exc.exit_code
    if isinstance(exc, Abort) or interrupts.received():
        return _interrupted(terminal)
    if tracebacks_wanted():
        import traceback

        traceback.print_exc()
    terminal.err(f"ERROR: internal error ({exc.__class__.__name__}); set FIOCA_TRACEBACK=1 to see where")
    return int(ExitCode.ERROR)
