"""`fioca device list-denied | delete-denied`: the factory's deny-list, as fioctl's `devices
list-denied` and `devices delete-denied` show and change it (their flags, layout and words).

A deleted device goes on the deny-list so that it cannot come back by connecting again (the
gateway registers unknown devices on their first request); `delete-denied` frees its UUID.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from fioca.cli.context import app_context
from fioca.cli.lean import LeanCommand
from fioca.errors import ApiError, UsageError

app = typer.Typer()  # its commands join `device` in fioca.cli.app

# fioctl's addPaginationFlags: the limits the API accepts.
PAGINATION_LIMITS = (10, 20, 30, 40, 50, 100, 200, 500, 1000)
DEFAULT_LIMIT = 500
# fioctl's columns for list-denied.
COLUMNS = ("uuid", "name", "owner")


def tabby(rows: list[list[str]]) -> str:
    """fioctl's table (cheynewallace/tabby on Go's tabwriter, padding 1): the header, a line of
    dashes as long as each heading, then the rows; every column but the last is padded to its
    widest cell plus one space."""
    header = rows[0]
    lines = [header, ["-" * len(cell) for cell in header], *rows[1:]]
    widths = [max(len(line[index]) for line in lines) + 1 for index in range(len(header) - 1)]
    return "".join(
        "".join(cell.ljust(width) for cell, width in zip(line, widths)) + line[-1] + "\n" for line in lines
    )


def _owner_names(api: Any, err: Callable[[str], None]) -> Callable[[dict[str, Any]], str]:
    """fioctl's owner column: the user's name from users/ (read once), `<not in factory: F>`
    for an owner the factory does not list, `???` when the users cannot be read."""
    names: dict[str, str] | None = None

    def owner(device: dict[str, Any]) -> str:
        nonlocal names
        if names is None:
            try:
                names = {str(user.get("polis-id")): str(user.get("name", "")) for user in api.users()}
            except ApiError as error:
                err(f"Unable to look up users: {error.message}")
                return "???"
        return names.get(str(device.get("owner") or ""), f"<not in factory: {device.get('factory', '')}>")

    return owner


@app.command("list-denied", cls=LeanCommand, short_help="List the device UUIDs the gateway refuses for good")
def list_denied(
    ctx: typer.Context,
    page: int = typer.Option(1, "--page", "-p", help="Which page of the list to show."),
    limit: int = typer.Option(
        DEFAULT_LIMIT, "--limit", "-n",
        help="Devices per page, one of " + ", ".join(map(str, PAGINATION_LIMITS)) + ".",
    ),
) -> None:
    """List the device UUIDs the gateway refuses for good (fioctl devices list-denied).

    A gateway that registers devices on their first request (a factory-registration-reference
    server, or the online device CA) would take a deleted device back at its next connection.
    So deleting a device puts its UUID on this deny list, and the gateway refuses it from then on.

    \b
    Examples:
      fioca device list-denied
      fioca device list-denied -n 50 -p 2
    """
    if limit not in PAGINATION_LIMITS:
        raise UsageError(f"Invalid limit: {limit}")
    app_ctx = app_context(ctx)
    api = app_ctx.api()
    listed = api.denied_devices(page=page, limit=limit)
    owner = _owner_names(api, app_ctx.terminal.err)
    cells: dict[str, Callable[[dict[str, Any]], str]] = {
        "uuid": lambda device: str(device.get("uuid") or ""),
        "name": lambda device: str(device.get("name") or ""),
        "owner": owner,
    }
    rows = [[column.upper() for column in COLUMNS]]
    rows += [[cells[column](device) for column in COLUMNS] for device in listed["devices"]]
    app_ctx.terminal.write(tabby(rows))
    if listed.get("next"):
        more = f" -n{limit}" if limit != DEFAULT_LIMIT else ""
        app_ctx.terminal.out(f"\nNext page can be viewed with: {ctx.command_path} -p{page + 1}{more}")


@app.command("delete-denied", cls=LeanCommand, short_help="Take device UUIDs off the deny list")
def delete_denied(
    ctx: typer.Context,
    uuids: Annotated[list[str], typer.Argument(metavar="UUID", help="Device UUIDs to take off the deny list.")],
) -> None:
    """Take device UUIDs off the deny list, so that a device may register with them again.

    For instance a device whose key is on an HSM, registered through a
    factory-registration-reference server, keeps its UUID when it is set up again.

    \b
    Example:
      fioca device delete-denied 6d3d5a2e-8c1e-4a3f-9d57-0c2b8e7f1a44
    """
    app_ctx = app_context(ctx)
    api = app_ctx.api()
    for uuid in uuids:
        app_ctx.terminal.write(f"Deleting {uuid} .. ")
        api.delete_denied(uuid)
        app_ctx.terminal.out("ok")
