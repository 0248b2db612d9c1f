"""Ctrl-C as fioca handles it: one handler, one flag.

The CLI installs the handler first thing, before it imports anything heavy:

- while fioca is still starting (importing), an interrupt ends the process at once with one
  line and exit 130: there is nothing to clean up, and a traceback through an import says
  nothing useful;
- once `arm()`ed (a command runs), it raises KeyboardInterrupt as Python does, so every
  `finally` and `with` cleans up, and it sets a flag.

The flag is there because compiled code that calls back into Python can swallow the
KeyboardInterrupt and turn it into a wrong answer: `cryptography`'s signature checks do,
and report "does not verify". `received()` lets the CLI, and a flow that wants to say what
state it left (create raises `fioca.errors.Interrupted` with that line), tell an interrupt
from a fault in the data. Standard library only.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

EXIT_CODE = 130  # 128 + SIGINT, what a shell reports for a process ended by Ctrl-C
LINE = "Interrupted."

_received = False
_armed = False


def _handler(_signum: int, _frame: Any) -> None:
    global _received
    _received = True
    if not _armed:
        os.write(2, (LINE + "\n").encode())
        os._exit(EXIT_CODE)
    raise KeyboardInterrupt


def install() -> Any:
    """Take over SIGINT; returns what to hand `restore()`. A no-op (None) off the main thread,
    or when SIGINT is ignored (a background job `&`: Ctrl-C is not meant for it)."""
    global _received, _armed
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN:
        return None
    _received, _armed = False, False
    signal.signal(signal.SIGINT, _handler)
    return previous


def arm() -> None:
    """From now on an interrupt raises KeyboardInterrupt (a command runs; it may clean up)."""
    global _armed
    _armed = True


def restore(previous: Any) -> None:
    """Give SIGINT back (main() runs in process in the tests; pytest wants its own handler)."""
    global _armed
    _armed = False
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, previous)


def received() -> bool:
    """True once Ctrl-C was pressed during this command, even if something swallowed it."""
    return _received
