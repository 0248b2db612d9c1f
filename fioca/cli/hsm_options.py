"""The HSM options every root-signing command takes, and their resolution into `HsmSettings`.

fioctl's flags (`--hsm-module`, `--hsm-pin`, `--hsm-token-label`) with fioctl's checks and
messages. The PIN comes, in this order, from `--hsm-pin` (accepted for fioctl compatibility,
with a warning: a flag's value is visible to every user of the machine), from the environment
variable FIOCA_HSM_PIN, or from a hidden prompt on a terminal. Without any of them the command
stops with fioctl's message before it does anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fioca.cli.context import AppContext
from fioca.errors import UsageError

if TYPE_CHECKING:
    from fioca.pki.hsm import HsmSettings

PIN_ENV = "FIOCA_HSM_PIN"

HsmModule = Annotated[
    str | None,
    typer.Option(
        "--hsm-module",
        metavar="MODULE",
        help="PKCS#11 module (.so) of the HSM holding the root key, e.g. /usr/lib/softhsm/libsofthsm2.so.",
        show_default=False,
    ),
]
HsmPin = Annotated[
    str | None,
    typer.Option(
        "--hsm-pin",
        metavar="PIN",
        help=f"The token's user PIN. Visible to other users of the machine: prefer env {PIN_ENV} or the prompt.",
        show_default=False,
    ),
]
HsmTokenLabel = Annotated[
    str | None,
    typer.Option("--hsm-token-label", metavar="LABEL", help="Label of the HSM token holding the root key (object root-ca).", show_default=False),
]

PIN_FLAG_WARNING = (
    "WARNING: --hsm-pin puts the PIN on the command line, where other users of this machine can read it "
    f"(ps, /proc); prefer the environment variable {PIN_ENV} or the prompt"
)


def resolve_hsm(
    app_ctx: AppContext,
    module: str | None,
    pin: str | None,
    token_label: str | None,
    *,
    need_pin: bool = True,
) -> HsmSettings | None:
    """The HSM settings the flags ask for, or None without --hsm-module.

    `need_pin=False` (a dry-run that never touches the token) skips the PIN entirely.
    """
    if not module:
        given = [flag for flag, value in (("--hsm-pin", pin), ("--hsm-token-label", token_label)) if value]
        if given:
            raise UsageError(f"{' and '.join(given)} go{'es' if len(given) == 1 else ''} with --hsm-module")
        return None
    if not token_label:
        raise UsageError("--hsm-token-label is required with --hsm-module")
    from fioca.pki import hsm  # cryptography: only when an HSM is asked for

    module_path = str(Path(module).expanduser())
    module_env = hsm.module_env(app_ctx.settings.environ)
    secret = _pin(app_ctx, pin, token_label) if need_pin else ""
    return hsm.HsmSettings(module=module_path, token_label=token_label, pin=secret, module_env=module_env)


def _pin(app_ctx: AppContext, flag_pin: str | None, token_label: str) -> str:
    if flag_pin:
        app_ctx.terminal.err(PIN_FLAG_WARNING)
        return flag_pin
    from_env = app_ctx.settings.hsm_pin  # FIOCA_HSM_PIN, read in fioca.config
    if from_env:
        return from_env
    if app_ctx.terminal.interactive():
        entered = app_ctx.terminal.prompt_secret(f"User PIN of HSM token '{token_label}'")
        if entered:
            return entered
    raise UsageError(
        f"--hsm-pin is required with --hsm-module (set {PIN_ENV}, or run in a terminal to be asked for it)"
    )


def describe(settings: HsmSettings | None) -> dict[str, Any] | None:
    """The HSM part of a dry-run plan (the PIN's value never in it)."""
    return settings.describe() if settings is not None else None

