"""The root command: fioctl's global options, the subcommand tree, and `main()`.

`main()` is the one place that turns an exception into a line on stderr and an exit code.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Optional

import typer

from fioca.cli import device, keys_ca, sandbox
import fioca.cli.keys_ca_lifecycle  # noqa: F401  (registers commands)
from fioca.cli.context import AppContext, Terminal
from fioca.errors import ExitCode, FiocaError

app = typer.Typer(
    name="fioca",
    help=(
        "Reproduce and audit `fioctl keys ca`: the FoundriesFactory device-gateway PKI, step by step.\n\n"
        "Start with the sandbox:\n\n"
        "  fioca sandbox serve --data ./sandbox &\n\n"
        "  FIOCTL_CONFIG=./sandbox/fioctl.yaml fioca keys ca create ./pki"
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,  # locals could hold the token
    context_settings={"help_option_names": ["-h", "--help"]},
)
keys_app = typer.Typer(help="Manage the factory's keys.", no_args_is_help=True)
keys_app.add_typer(keys_ca.app, name="ca")
app.add_typer(keys_app, name="keys")
app.add_typer(sandbox.app, name="sandbox")
app.add_typer(device.app, name="device")


@app.callback()
def root(
    ctx: typer.Context,
    factory: Optional[str] = typer.Option(None, "-f", "--factory", help="Factory name (env FIOCTL_FACTORY)."),
    token: Optional[str] = typer.Option(
        None,
        "-t",
        "--token",
        help="API token (env FIOCTL_TOKEN, safer: flag values are visible to other users of the machine).",
        show_default=False,
    ),
    config: Optional[Path] = typer.Option(
        None, "-c", "--config", help="Config file [default: ~/.config/fioctl.yaml] (env FIOCTL_CONFIG wins)."
    ),
    server: Optional[str] = typer.Option(None, "--server", help="API base URL (env FIOCA_SERVER)."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Print each API request (never the token)."),
) -> None:
    ctx.obj = AppContext(
        options={"factory": factory, "token": token, "config": config, "server": server, "verbose": verbose},
        terminal=ctx.obj.terminal if isinstance(ctx.obj, AppContext) else Terminal(),
    )


def report_error(terminal: Terminal, exc: FiocaError) -> int:
    terminal.err(f"ERROR: {exc.message}")
    for line in exc.details:
        terminal.err(line)
    return int(exc.exit_code)


def main(argv: list[str] | None = None, terminal: Terminal | None = None) -> int:
    terminal = terminal or Terminal()
    command = typer.main.get_command(app)
    try:
        # Without standalone mode, `raise typer.Exit(n)` comes back as the return value.
        code = command.main(
            args=argv if argv is not None else sys.argv[1:],
            prog_name="fioca",
            standalone_mode=False,
            obj=AppContext(options={}, terminal=terminal),
        )
    except FiocaError as exc:
        return report_error(terminal, exc)
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        terminal.err("Aborted.")
        return int(ExitCode.INTERRUPTED)
    except typer.TyperException as exc:  # usage errors: Typer shows them with the usage line
        show = getattr(exc, "show", None)
        if show:
            show()
        else:
            terminal.err(f"ERROR: {exc.message}")
        return exc.exit_code
    except KeyboardInterrupt:
        terminal.err("Interrupted.")
        return int(ExitCode.INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, no secrets
        if os.environ.get("FIOCA_TRACEBACK"):
            traceback.print_exc()
        terminal.err(f"ERROR: internal error ({exc.__class__.__name__}); set FIOCA_TRACEBACK=1 to see where")
        return int(ExitCode.ERROR)
    return code if isinstance(code, int) else 0
