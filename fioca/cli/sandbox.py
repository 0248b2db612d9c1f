"""`fioca sandbox`: run the local emulated factory and look at its devices."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

import typer

from fioca.cli.context import app_context
from fioca.cli.options import Format, TextOrJson
from fioca.sandbox.backend import DEFAULT_SCRIPTS, SCRIPT_CHOICES
from fioca.sandbox.certs import is_canonical_uuid
from fioca.sandbox.oauth import decide_device, normal_user_code
from fioca.sandbox.server import (
    DEFAULT_FACTORY,
    DEFAULT_HOST,
    FIOCTL_CONFIG_FILE,
    Sandbox,
    SandboxError,
)
from fioca.sandbox.store import DB_FILE_NAME, Store

NO_SCRIPTS = "none"

app = typer.Typer(
    help=(
        "A local FoundriesFactory: the certs API (HTTPS) and the device gateway (mTLS), with real "
        "crypto and state kept in a data dir.\n\n"
        "\b\n"
        "Example:\n"
        "  fioca sandbox serve --data ./sandbox &\n"
        "  FIOCTL_CONFIG=./sandbox/fioctl.yaml fioca keys ca create ./pki"
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,  # locals could hold the token
)

DATA_OPTION_HELP = "Sandbox data dir (made 0700; holds the state, keys, token, sandbox.json and fioctl.yaml)."


@app.command(
    short_help="Serve the sandbox until Ctrl-C or SIGTERM",
    help=(
        "Serve the sandbox in the foreground until Ctrl-C or SIGTERM.\n\n"
        "Writes DIR/sandbox.json, DIR/fioctl.yaml (API token) and DIR/fioctl-oauth.yaml (OAuth client "
        "credential) for clients, 0600; no secret is printed.\n\n"
        "\b\n"
        "Example:\n"
        "  fioca sandbox serve --data ./sandbox --factory acme --gateway-port 8443"
    )
)
def serve(
    ctx: typer.Context,
    data: Path = typer.Option(..., "--data", metavar="DIR", help=DATA_OPTION_HELP),
    factory: str = typer.Option(DEFAULT_FACTORY, "--factory", help="Factory name (fixed once the data dir exists)."),
    host: str = typer.Option(DEFAULT_HOST, "--host", metavar="ADDRESS", help="Address to listen on."),
    api_port: int = typer.Option(0, "--api-port", metavar="PORT", min=0, max=65535, help="API port; 0 picks a free one."),
    gateway_port: int = typer.Option(
        0, "--gateway-port", metavar="PORT", min=0, max=65535,
        help="Gateway port; 0 picks a free one. The sota.toml of registered devices names it (8443 as the real one).",
    ),
    scripts: str = typer.Option(
        DEFAULT_SCRIPTS, "--scripts",
        help=f"What a POST certs answer carries: the API's scripts ({', '.join(SCRIPT_CHOICES)}) or {NO_SCRIPTS} "
        "(today's API: CSRs only).",
    ),
    token_header: str = typer.Option(
        None, "--token-header", metavar="NAME", help="Also accept the API token in this header (what fioctl's TOKEN_HEADER names).",
    ),
) -> None:
    if scripts != NO_SCRIPTS and scripts not in SCRIPT_CHOICES:
        raise typer.BadParameter(f"must be one of {', '.join((*SCRIPT_CHOICES, NO_SCRIPTS))}", param_hint="--scripts")
    context = app_context(ctx)
    request_log = _log_requests_to(context.terminal.err) if context.options.get("verbose") else None
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with Sandbox(data, factory=factory, host=host, api_port=api_port, gateway_port=gateway_port,
                     scripts=None if scripts == NO_SCRIPTS else scripts, token_header=token_header,
                     gateway_processes=os.cpu_count() or 1) as sandbox:
            info = sandbox.info
            context.terminal.err(
                f"sandbox ready: api {info.api_url}, gateway {info.gateway_url} ({info.gateway_host}),"
                f" config {data / FIOCTL_CONFIG_FILE}"
            )
            while not stop.wait(1.0):
                pass
        context.terminal.err("sandbox stopped")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if request_log is not None:
            logging.getLogger("fioca.sandbox").removeHandler(request_log)


@app.command(
    short_help="List the devices the sandbox knows",
    help="List the devices the sandbox knows.\n\n\b\nExample:\n  fioca sandbox devices --data ./sandbox --format json"
)
def devices(
    ctx: typer.Context,
    data: Path = typer.Option(..., "--data", metavar="DIR", help=DATA_OPTION_HELP),
    output: TextOrJson = Format.text,
    include_deny_listed: bool = typer.Option(False, "--all", help="Also list deleted (deny-listed) devices."),
) -> None:
    terminal = app_context(ctx).terminal
    store = _open_store(data)
    try:
        records = [asdict(record) for record in store.devices(include_deny_listed=include_deny_listed)]
    finally:
        store.close()
    if output is Format.json:
        terminal.out(json.dumps(records, indent=2))
        return
    terminal.out(_device_table(records))


@app.command(
    "delete-device",
    short_help="Delete a device; it goes on the deny-list",
    help=(
        "Delete a device: it goes on the deny-list and the gateway refuses it from then on.\n\n"
        "\b\n"
        "Example:\n"
        "  fioca sandbox delete-device --data ./sandbox 6d3d5a2e-..."
    ),
)
def delete_device(
    ctx: typer.Context,
    uuid: str = typer.Argument(..., help="The device UUID (its certificate's CN)."),
    data: Path = typer.Option(..., "--data", metavar="DIR", help=DATA_OPTION_HELP),
) -> None:
    if not is_canonical_uuid(uuid):
        raise typer.BadParameter("must be a lower-case hyphenated UUID, as devices are recorded", param_hint="UUID")
    store = _open_store(data)
    try:
        if not store.set_device_deny_listed(uuid, True):
            raise SandboxError(f"no device {uuid} in the sandbox at {data}")
    finally:
        store.close()
    app_context(ctx).terminal.err(f"device {uuid} deleted (deny-listed)")


@app.command(
    "approve-device",
    short_help="Approve (or deny) a device in the OAuth device flow",
    help=(
        "Approve a device waiting in the OAuth device flow (lmp-device-register without a token "
        "prints a user code and polls): what a user does in the browser.\n\n"
        "Example: fioca sandbox approve-device --data ./sandbox BCDF-GHJK"
    ),
)
def approve_device(
    ctx: typer.Context,
    user_code: str = typer.Argument(..., help="The user code the device printed."),
    data: Path = typer.Option(..., "--data", metavar="DIR", help=DATA_OPTION_HELP),
    deny: bool = typer.Option(False, "--deny", help="Deny the device instead."),
) -> None:
    store = _open_store(data)
    try:
        decided = decide_device(store, user_code, approve=not deny)
    finally:
        store.close()
    if not decided:
        raise SandboxError(f"no device is waiting with user code {user_code!r} (expired, decided, or mistyped)")
    app_context(ctx).terminal.err(f"device with user code {normal_user_code(user_code)} {'denied' if deny else 'approved'}")


def _open_store(data: Path) -> Store:
    # Never create a fresh db here: a typo in --data must not look like an empty sandbox.
    if not (data / DB_FILE_NAME).is_file():
        raise SandboxError(f"no sandbox in {data}: start one with `fioca sandbox serve --data {data}`")
    return Store(data)


def _device_table(records: list[dict[str, Any]]) -> str:
    columns = ("uuid", "name", "group", "is_prod", "ca_serial", "owner", "created_at", "last_seen", "deny_listed")
    rows = [[str(record[column] if record[column] is not None else "-") for column in columns] for record in records]
    widths = [max([len(column), *(len(row[index]) for row in rows)]) for index, column in enumerate(columns)]
    lines = ["  ".join(column.upper().ljust(width) for column, width in zip(columns, widths)).rstrip()]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def _log_requests_to(write: Any) -> logging.Handler:
    """Send the API's request log (method, path, status; never headers) to the terminal."""

    class TerminalHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            write(f"sandbox: {record.getMessage()}")

    logger = logging.getLogger("fioca.sandbox")
    logger.setLevel(logging.INFO)
    handler = TerminalHandler()
    logger.addHandler(handler)
    return handler
