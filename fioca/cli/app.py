"""The command tree: the root command with fioctl's global options, and every group and
command registered here, explicitly, in the order `--help` lists them.

Help is Click's plain layout (no Rich): it starts in a few milliseconds, never cuts an option
name at 80 columns, and shows `[default: ...]` as written. Examples sit in `\\b` paragraphs,
which Click prints as typed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperCommand

from fioca.cli.argv import fioctl_style
from fioca.cli.context import AppContext, Terminal
from fioca.cli.lean import LeanCommand, LeanGroup

COMMON = {
    "no_args_is_help": True,
    "rich_markup_mode": None,  # Click's layout: fast, and nothing read as markup
    "pretty_exceptions_enable": False,
    "pretty_exceptions_show_locals": False,  # locals could hold the token
}
HELP_OPTIONS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


KEYS_HELP = (
    "The keys and certificates a factory's fleet relies on (fioctl keys). -f/--factory and -t/--token may "
    "come anywhere after `keys`, as in fioctl.\n\n"
    "\b\n"
    "Examples:\n"
    "  fioca keys ca show --just-root -f acme\n"
    "  fioca keys ca create ./pki -f acme --online-ca=false"
)

CA_HELP = (
    "The PKI of the factory's device gateway (fioctl keys ca).\n\n"
    "A factory can have a device gateway of its own, with a PKI you own: your root of trust "
    "signs the gateway's TLS certificate and the device CAs, and devices and gateway then "
    "authenticate each other with mutual TLS.\n\n"
    "\b\n"
    "Examples:\n"
    "  fioca keys ca create ./pki --dry-run     # the scripts and the plan, first\n"
    "  fioca keys ca create ./pki\n"
    "  fioca keys ca show --just-device-cas > cas.pem\n"
    "  fioca keys ca add-device-ca ./pki --local-ca --local-ca-filename line-2.pem\n"
    "  fioca keys ca disable-device-ca ./pki --ca-serial 42 --dry-run --pretty"
)


EST_HELP = (
    "The TLS certificate of the factory's EST server, run by Foundries.io (fioctl keys est, hidden there).\n\n"
    "With it authorized, devices renew their certificates over EST (RFC 7030) at "
    "Foundries.io.\n\n"
    "\b\n"
    "Examples:\n"
    "  fioca keys est authorize ./pki --dry-run\n"
    "  fioca keys est authorize ./pki\n"
    "  fioca keys est show --pretty"
)


GROUP_SETTINGS = {"no_args_is_help": True, "rich_markup_mode": None, "context_settings": HELP_OPTIONS}


def _keys_ca_app() -> typer.Typer:
    from fioca.cli import keys_ca

    return keys_ca.app  # create, show, extract, audit


def _keys_ca_lifecycle_app() -> typer.Typer:
    from fioca.cli import keys_ca_lifecycle

    return keys_ca_lifecycle.app  # update, add-device-ca, disable/enable/revoke-device-ca, rotate-tls, sign


def _keys_est_app() -> typer.Typer:
    from fioca.cli import keys_est

    return keys_est.app  # show, authorize


def _keys_group() -> Any:
    ca = LazyCommands(name="ca", help=CA_HELP, short_help="The device gateway's PKI (fioctl keys ca)", sources=[_keys_ca_app, _keys_ca_lifecycle_app], **GROUP_SETTINGS)
    est = LazyCommands(name="est", help=EST_HELP, short_help="The EST server's TLS certificate (fioctl keys est)", sources=[_keys_est_app], **GROUP_SETTINGS)
    return LeanGroup(name="keys", help=KEYS_HELP, commands={"ca": ca, "est": est}, **GROUP_SETTINGS)


def _device_group() -> Any:
    from fioca.cli import device, device_denied, device_rotate

    # create-offline, register, check; rotate-cert; list-denied, delete-denied
    return _group("device", device.app, device_rotate.app, device_denied.app)


def _sandbox_group() -> Any:
    from fioca.cli import sandbox

    return _group("sandbox", sandbox.app)


class LazyCommands(LeanGroup):
    """A group whose commands are built from their Typer registrations when first used, and
    whose modules are imported in order until the command is found: `keys ca show --help`
    imports one module and builds one command, not eleven."""

    def __init__(self, *, sources: list[Callable[[], typer.Typer]], **attrs: Any):
        super().__init__(**attrs)
        self._sources = list(sources)
        self._infos: dict[str, Any] = {}

    def _load_next(self) -> bool:
        if not self._sources:
            return False
        for info in self._sources.pop(0)().registered_commands:
            self._infos[info.name or info.callback.__name__.replace("_", "-")] = info
        return True

    def list_commands(self, ctx: Any) -> list[str]:
        while self._load_next():
            pass
        return list(self._infos)

    def get_command(self, ctx: Any, name: str) -> Any:
        while name not in self._infos and self._load_next():
            pass
        if name not in self.commands and name in self._infos:
            self.commands[name] = typer.main.get_command_from_info(
                self._infos[name], pretty_exceptions_short=True, rich_markup_mode=None
            )
        return self.commands.get(name)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in self._infos)
        rows = [(name, _short_help(info, limit)) for name, info in self._infos.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _short_help(info: Any, limit: int) -> str:
    """The first sentence of a command's help, cut at a word to fit (as Click cuts it)."""
    text = info.short_help or " ".join((info.help or info.callback.__doc__ or "").strip().split("\n\n")[0].split())
    text = text.split(". ")[0].rstrip(".")
    if len(text) <= limit:
        return text
    return text[: limit - 3].rsplit(" ", 1)[0] + "..."


# Every group is loaded when its name is used, so `fioca --help` lists them without importing
# their modules (the device code and the sandbox server import the heavy parts at once).
LAZY_GROUPS: dict[str, tuple[str, Callable[[], Any]]] = {
    "keys": ("The keys and certificates a factory's fleet relies on (fioctl keys).", _keys_group),
    "device": ("Device certificates: offline, online registration, the gateway check.", _device_group),
    "sandbox": ("A local FoundriesFactory: the certs API and the device gateway.", _sandbox_group),
}


class FioctlCommandLine(LeanGroup):
    """The root group: a fioctl command line is rewritten before Click parses it, and the
    groups of LAZY_GROUPS are built on first use."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, fioctl_style(list(args), self))

    def get_command(self, ctx: Any, name: str) -> Any:
        if name not in self.commands and name in LAZY_GROUPS:
            self.commands[name] = LAZY_GROUPS[name][1]()
        return super().get_command(ctx, name)

    def list_commands(self, ctx: Any) -> list[str]:
        return [*self.commands, *(name for name in LAZY_GROUPS if name not in self.commands)]

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            if name in self.commands:
                if not self.commands[name].hidden:
                    rows.append((name, self.commands[name].get_short_help_str(limit)))
            else:
                rows.append((name, LAZY_GROUPS[name][0]))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _group(name: str, sub_app: typer.Typer, *more: typer.Typer) -> Any:
    """A group of `sub_app`'s commands (its help is the group's), then those of `more`."""
    if more:
        merged = typer.Typer(help=sub_app.info.help, no_args_is_help=True)
        for app_ in (sub_app, *more):
            merged.registered_commands.extend(app_.registered_commands)
        sub_app = merged
    for info in sub_app.registered_commands:  # the same classes (and usage lines) as `keys ca`
        if info.cls in (None, TyperCommand):
            info.cls = LeanCommand
    holder = typer.Typer(**COMMON)  # gives the group the root's plain help layout
    holder.add_typer(sub_app, name=name, cls=LeanGroup)
    return typer.main.get_command(holder).commands[name]


def _version(value: bool) -> None:
    if not value:
        return
    from importlib.metadata import PackageNotFoundError, version

    try:
        mine = version("fioca")
    except PackageNotFoundError:
        mine = "unknown"
    typer.echo(f"fioca {mine}")
    typer.echo(f"openssl: {_tool_version('openssl', 'version')}")
    typer.echo(f"bubblewrap: {_tool_version('bwrap', '--version')}")
    raise typer.Exit()


def _tool_version(program: str, flag: str) -> str:
    import shutil
    import subprocess

    path = shutil.which(program)
    if path is None:
        return "not found (fioca needs it: apt-get install " + ("openssl" if program == "openssl" else "bubblewrap") + ")"
    try:
        done = subprocess.run([path, flag], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return f"{path} (did not run)"
    first = (done.stdout or done.stderr).strip().splitlines()
    return f"{first[0] if first else '?'} ({path})"


app = typer.Typer(
    name="fioca",
    cls=FioctlCommandLine,
    help=(
        "Reproduce and audit `fioctl keys ca`: the FoundriesFactory device-gateway PKI, step by step.\n\n"
        "fioca reads fioctl's settings (~/.config/fioctl.yaml, FIOCTL_TOKEN, FIOCTL_FACTORY) and takes "
        "fioctl's command lines; it adds a dry-run, an audit of the server's scripts, and resume.\n\n"
        "\b\n"
        "Examples, with the sandbox (a local factory) as the server:\n"
        "  fioca sandbox serve --data ./sandbox &\n"
        "  export FIOCTL_CONFIG=./sandbox/fioctl.yaml\n"
        "  fioca keys ca create ./pki --dry-run    # what the server sent; the plan\n"
        "  fioca keys ca create ./pki\n"
        "  fioca keys ca show --pretty"
    ),
    context_settings=HELP_OPTIONS,
    **COMMON,
)


@app.callback()
def root(
    ctx: typer.Context,
    factory: str | None = typer.Option(
        None, "-f", "--factory", metavar="FACTORY", help="Factory name (env FIOCTL_FACTORY).",
        show_default="from the config file"
    ),
    token: str | None = typer.Option(
        None,
        "-t",
        "--token",
        metavar="TOKEN",
        help="API token (env FIOCTL_TOKEN, safer: a flag's value is visible to other users of the machine).",
        show_default=False,
    ),
    config: Path | None = typer.Option(
        None,
        "-c",
        "--config",
        metavar="FILE",
        help="fioctl's config file (env FIOCTL_CONFIG wins).",
        show_default="~/.config/fioctl.yaml",
    ),
    server: str | None = typer.Option(
        None, "--server", metavar="URL", help="API base URL (env FIOCA_SERVER).", show_default="server.url, else https://api.foundries.io"
    ),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Print each API request (never the token)."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="fioca's version, and the openssl and bubblewrap it finds."
    ),
) -> None:
    ctx.obj = AppContext(
        options={"factory": factory, "token": token, "config": config, "server": server, "verbose": verbose},
        terminal=ctx.obj.terminal if isinstance(ctx.obj, AppContext) else Terminal(),
    )




def command() -> Any:
    """The Click command tree (built on each call: Typer reads the functions' signatures)."""
    return typer.main.get_command(app)
