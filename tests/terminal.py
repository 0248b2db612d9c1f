"""A pseudo-terminal standing in for /dev/tty, for the questions fioca asks on the terminal.

`answering_tty(monkeypatch, "y\\n")` makes every Terminal open the pty's slave side as its
terminal, with the answer already typed; `.screen()` is what fioca wrote there.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


class Pty:
    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        self.path = os.ttyname(self.slave)

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def screen(self) -> str:
        """Everything written to the terminal so far (the typed answer's echo included)."""
        os.set_blocking(self.master, False)
        chunks = []
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except (BlockingIOError, OSError):
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)


@contextmanager
def answering_tty(monkeypatch, answer: str = "") -> Iterator[Pty]:
    from fioca.cli import context

    pty = Pty()
    monkeypatch.setattr(context, "TTY", pty.path)
    monkeypatch.setattr(context.Terminal, "interactive", lambda self: True)
    pty.type(answer)
    try:
        yield pty
    finally:
        pty.close()
