"""Options several commands share, declared once so their names and help texts stay alike.

Typer reads an option from a parameter's `Annotated` type, so a command names the alias
(`output: ResultFormat = Format.text`) instead of repeating the declaration, as
`fioca.cli.hsm_options` does for the HSM flags.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer
from typer.models import OptionInfo


class Format(str, Enum):
    """`--format`: the same result as text for people or as JSON for scripts."""

    text = "text"
    json = "json"


def yes_option(action: str) -> OptionInfo:
    """`--yes/-y` for a command that would ask before it `action`s (e.g. "Send").

    The help says why the flag exists: without a terminal the question cannot be asked, so the
    command refuses unless --yes is given.
    """
    return typer.Option("--yes", "-y", help=f"{action} without asking (needed without a terminal).")


ResultFormat = Annotated[Format, typer.Option("--format", help="Result as text or JSON.")]
TextOrJson = Annotated[Format, typer.Option("--format", help="text or json.")]
YesSend = Annotated[bool, yes_option("Send")]
YesWriteAndSend = Annotated[bool, yes_option("Write and send")]
