"""The terminal and the settings, as one object every command receives (`ctx.obj`).

All terminal I/O goes through `Terminal`, so tests can replace it and so nothing else in
fioca prints: data goes to stdout, progress, notes and errors to stderr. Every line it writes
has its control characters made visible (`fioca.text.visible`): much of what fioca shows came
from the server (scripts, their stderr, error bodies, certificates), and an escape sequence
in it must not move the cursor, rewrite a line, or hide the upload question. Questions are
asked on the terminal itself (/dev/tty), so `2> log` or `> out` never hides one.

Heavy modules (requests, cryptography, yaml) are imported only when a command needs them:
`fioca --help` must start as fast as Typer itself.
"""

from __future__ import annotations

import io
import os
import sys
import termios
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

import typer

from fioca.errors import RefusedError
from fioca.text import visible

if TYPE_CHECKING:
    from pathlib import Path

    from fioca.api import FactoryApi
    from fioca.config import Settings

TTY = "/dev/tty"


class Terminal:
    """stdout, stderr and the controlling terminal."""

    def __init__(self, tty_path: str | None = None):
        self.tty_path = tty_path or TTY

    def out(self, text: str = "") -> None:
        typer.echo(visible(text))

    def err(self, text: str = "") -> None:
        typer.echo(visible(text), err=True)

    def write(self, text: str, *, err: bool = False) -> None:
        """`text` as it is, no newline added (a layout that ends its own lines)."""
        typer.echo(visible(text), nl=False, err=err)

    def out_data(self, text: str) -> None:
        """Data meant for a file (`extract > script.sh`): byte for byte when stdout is not a
        terminal, made visible when it is."""
        if sys.stdout.isatty():
            self.out(text)
        else:  # not typer.echo: it strips what looks like colour codes when not on a terminal
            sys.stdout.write(text + "\n")
            sys.stdout.flush()

    def interactive(self) -> bool:
        """A person can answer: one of the standard streams is a terminal, and it can be opened."""
        if not any(_isatty(stream) for stream in (sys.stdin, sys.stdout, sys.stderr)):
            return False
        try:
            os.close(os.open(self.tty_path, os.O_RDWR | os.O_NOCTTY))
        except OSError:
            return False
        return True

    def confirm(self, question: str, details: list[str] | tuple[str, ...] = ()) -> bool:
        """Ask `question [y/N]` on the terminal; anything but y/yes (or end of input) is no.

        `details` (what is about to happen) go to stderr, the record, and also to the terminal
        when stderr is not one, so the question never comes without them."""
        for line in details:
            self.err(line)
        with self._open_tty() as tty:
            if details and not _isatty(sys.stderr):
                tty.write("".join(visible(line) + "\n" for line in details))
            tty.write(f"{visible(question)} [y/N]: ")
            tty.flush()
            try:
                answer = tty.readline()
            except KeyboardInterrupt:
                tty.write("\n")  # what is said about the interrupt starts on a line of its own
                raise
        return answer.strip().lower() in ("y", "yes")

    def prompt_secret(self, question: str) -> str:
        """Ask for a secret (the HSM PIN) on the terminal, without echoing what is typed."""
        with self._open_tty() as tty:
            tty.write(f"{visible(question)}: ")
            tty.flush()
            fd = tty.fileno()
            before = termios.tcgetattr(fd)
            hidden = list(before)
            hidden[3] &= ~termios.ECHO  # lflags: what is typed is not shown
            termios.tcsetattr(fd, termios.TCSANOW, hidden)
            try:
                line = tty.readline()
            finally:
                termios.tcsetattr(fd, termios.TCSANOW, before)
                tty.write("\n")  # the Enter that was not echoed (or the Ctrl-C's line end)
                tty.flush()
        return line.rstrip("\n")

    def _open_tty(self) -> TextIO:
        # A terminal is not seekable, so not a plain open(..., "r+"): getpass's way.
        raw = io.FileIO(os.open(self.tty_path, os.O_RDWR | os.O_NOCTTY), "r+")
        return io.TextIOWrapper(raw, encoding="utf-8", errors="replace", write_through=True)


def _isatty(stream: TextIO | None) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (ValueError, OSError):  # a closed or detached stream
        return False


@dataclass(eq=False)
class AppContext:
    """What the root command's options resolve to, shared by every subcommand."""

    options: dict[str, Any]
    terminal: Terminal = field(default_factory=Terminal)
    _settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        # Resolved on first use, so `fioca sandbox serve` never needs a factory or a token.
        if self._settings is None:
            from fioca.config import load_settings

            self._settings = load_settings(**self.options)
        return self._settings

    def config_file(self) -> Path:
        """Where the config in use is, without reading it (a sandbox's sits beside its sandbox.json)."""
        from fioca.config import config_file

        return config_file(config=self.options.get("config"))

    def api(self) -> FactoryApi:
        from fioca.api import FactoryApi

        return FactoryApi(self.settings, log=self.terminal.err)

    def require_confirmation_possible(self, yes: bool, what: str) -> None:
        """Refuse up front, rather than hang, when nobody can answer the question."""
        if not yes and not self.terminal.interactive():
            raise RefusedError(f"{what} needs confirmation: run it in a terminal, or pass --yes")


def app_context(ctx: typer.Context) -> AppContext:
    root = ctx.find_root()
    if not isinstance(root.obj, AppContext):
        root.obj = AppContext(options={})
    return root.obj
