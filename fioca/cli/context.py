"""The terminal and the settings, as one object every command receives (`ctx.obj`).

All terminal I/O goes through `Terminal`, so tests can replace it and so nothing else in
fioca prints: data goes to stdout, progress, notes and errors to stderr.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import typer

from fioca.api import FactoryApi
from fioca.config import Settings, load_settings
from fioca.errors import RefusedError


class Terminal:
    def out(self, text: str = "") -> None:
        typer.echo(text)

    def err(self, text: str = "") -> None:
        typer.echo(text, err=True)

    def interactive(self) -> bool:
        return sys.stdin.isatty()

    def confirm(self, question: str) -> bool:
        return typer.confirm(question, default=False, err=True)

    def prompt_secret(self, question: str) -> str:
        """Ask for a secret (the HSM PIN) on the terminal, without echoing what is typed."""
        return typer.prompt(question, hide_input=True, err=True, default="", show_default=False)


@dataclass
class AppContext:
    """What the root command's options resolve to, shared by every subcommand."""

    options: dict[str, Any]
    terminal: Terminal = field(default_factory=Terminal)
    _settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        # Resolved on first use, so `fioca sandbox serve` never needs a factory or a token.
        if self._settings is None:
            self._settings = load_settings(**self.options)
        return self._settings

    def api(self) -> FactoryApi:
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
