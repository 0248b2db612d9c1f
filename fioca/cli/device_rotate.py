"""`fioca device rotate-cert`: a device's key and certificate renewed over EST, one folder or a
fleet. Parse, locate the EST server, show progress, render; the work is in
fioca.device.rotate (imported inside the command: `--help` needs no cryptography).

Where the EST server is, as fioctl's `devices config rotate-certs` tells a device: `--server-name`
(with `--est-port`, `--est-resource`), else the one DNS name of the factory's est-tls-crt (the
API settings are needed then). Where connections go: `--resolve` / `--gateway-url`, else the
sandbox's gateway when the config in use is a sandbox's (as `device check`), else the hosts.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fioca import facts
from fioca.cli.context import AppContext, app_context
from fioca.cli.lean import LeanCommand
from fioca.cli.options import Format, ResultFormat
from fioca.errors import FiocaError, UsageError
from fioca.text import quote_path

if TYPE_CHECKING:
    from fioca.device.est import EstServer, Transport

app = typer.Typer()  # its commands join `device` in fioca.cli.app


def _est_server(app_ctx: AppContext, server_name: str | None, port: int, resource: str) -> EstServer:
    from fioca.api import NOT_CONFIGURED, NOT_CONFIGURED_HINT, is_configured
    from fioca.device import est

    if server_name:
        return est.named_server(server_name, port=port, resource=resource)
    certs = app_ctx.api().get_certs()
    if not is_configured(certs):
        raise FiocaError(NOT_CONFIGURED, details=[NOT_CONFIGURED_HINT])
    return est.factory_server(certs.body, port=port, resource=resource)


def _transport(app_ctx: AppContext, resolve: list[str], gateway_url: str | None) -> Transport:
    from urllib.parse import urlsplit

    # The sandbox gateway's URL and the --resolve reader are `device check`'s.
    from fioca.cli.device import sandbox_gateway_url
    from fioca.device import check
    from fioca.device.est import Transport

    resolves = {}
    for value in resolve:
        host, port, address = check.parse_resolve(value)
        resolves[host] = (port, address)
    if not resolves and not gateway_url:
        gateway_url = sandbox_gateway_url(app_ctx, None)
    gateway = None
    if gateway_url:
        parts = urlsplit(gateway_url)
        if parts.scheme != "https" or not parts.hostname:
            raise UsageError(f"gateway URL {gateway_url!r} must look like https://ADDRESS:PORT")
        gateway = (parts.hostname, parts.port or facts.GATEWAY_PORT)
    return Transport(resolves=resolves, gateway=gateway)


def _folders(dirs: list[Path], fleet: bool) -> list[Path]:
    from fioca.device import rotate

    folders = [path.expanduser() for path in dirs]
    if fleet:
        folders = [folder for path in folders for folder in rotate.fleet_folders(path)]
        if not folders:
            raise UsageError(f"no device folder (a folder with sota.toml) in {', '.join(map(quote_path, dirs))}")
    return list(dict.fromkeys(path.resolve() for path in folders))


@app.command("rotate-cert", cls=LeanCommand, short_help="Rotate a device's key and certificate over EST")
def rotate_cert(
    ctx: typer.Context,
    device_dirs: Annotated[
        list[Path], typer.Argument(metavar="DEVICE_DIR", help="Device folders or sota dirs (with --fleet: folders of them).")
    ],
    fleet: bool = typer.Option(False, "--fleet", help="Each DEVICE_DIR is a folder of device folders: rotate them all."),
    server_name: str | None = typer.Option(
        None, "--server-name", metavar="NAME",
        help="Your own EST server's name (e.g. est.example.com), instead of the one Foundries.io runs.",
        show_default="the DNS name of the factory's est-tls-crt",
    ),
    est_port: int = typer.Option(facts.EST_PORT, "--est-port", "-p", metavar="PORT", help="The EST server's port."),
    est_resource: str = typer.Option(
        facts.EST_RESOURCE, "--est-resource", "-e", metavar="PATH", help="Where the EST resource is on that server."
    ),
    gateway_url: str | None = typer.Option(
        None, "--gateway-url", metavar="URL", help="Connect to this https://ADDRESS:PORT for every host (TLS names stay the hosts')."
    ),
    resolve: list[str] = typer.Option(
        [], "--resolve", metavar="HOST:PORT:ADDR", help="Connect to ADDR for HOST, as curl (repeatable).", show_default=False
    ),
    workers: int = typer.Option(8, "--workers", min=1, help="Devices rotated at once (with several)."),
    output: ResultFormat = Format.text,
) -> None:
    """Give a device a new key and gateway certificate, over EST.

    What a device does when fioctl's `devices config rotate-certs` asks it (RFC 7030
    simplereenroll): a new key, a CSR with the same identity, the certificate the EST server
    issues for it, checked (the chain to root.crt, the same subject, the new key), then the new
    pkey.pem and client.pem in place of the old ones, which are kept as .bak. Interrupted at
    any point, the device still has a working key and certificate: sota.toml always names a
    pair that works, and a second run finishes what the first left.

    \b
    Examples:
      fioca device rotate-cert ./fleet/7fdb311b-...
      fioca device rotate-cert ./fleet --fleet --format json
      fioca device rotate-cert /var/sota --server-name est.example.com
    """
    from fioca.cli.device import progress_reporter
    from fioca.device import rotate

    app_ctx = app_context(ctx)
    folders = _folders(list(device_dirs), fleet)
    server = _est_server(app_ctx, server_name, est_port, est_resource)
    transport = _transport(app_ctx, resolve, gateway_url)
    started = time.perf_counter()
    if len(folders) == 1 and not fleet:
        shown = {step: words for step, words in rotate.STEPS.items() if words}
        rotated = rotate.rotate(folders[0], server, transport, on_step=lambda step: _show(app_ctx, shown.get(step)))
        outcomes = [rotate.Outcome(folders[0], rotated=rotated)]
    else:
        advance, finish = progress_reporter(app_ctx, len(folders), "devices")
        try:
            outcomes = rotate.rotate_fleet(folders, server, transport, workers=workers, progress=advance)
        finally:
            finish()
    _report(app_ctx, output, server, outcomes, time.perf_counter() - started)


def _show(app_ctx: AppContext, words: str | None) -> None:
    if words:
        app_ctx.terminal.err(words)


def _report(app_ctx: AppContext, output: Format, server: EstServer, outcomes: list, seconds: float) -> None:
    rotated = [outcome.rotated for outcome in outcomes if outcome.rotated is not None]
    failed = [outcome for outcome in outcomes if outcome.error is not None]
    if output is Format.json:
        app_ctx.terminal.out(json.dumps({
            "est_server": server.url, "rotated": len(rotated), "failed": len(failed), "seconds": round(seconds, 3),
            "devices": [outcome.as_dict() for outcome in outcomes],
        }, indent=2))  # fmt: skip
    else:
        for done in rotated:
            note = " (finished the rotation an interrupted run had begun)" if done.resumed else ""
            if not done.confirmed:
                note += " (the gateway was not reached: it completes at the device's next request)"
            app_ctx.terminal.out(f"rotated: {done.uuid}  {quote_path(done.path)}  serial {done.serial}, issuer {done.issuer}{note}")
        for outcome in failed:
            app_ctx.terminal.out(f"failed: {outcome.uuid or '?'}  {quote_path(outcome.path)}: {outcome.error.message}")
    rate = f" ({len(rotated) / seconds:,.0f} devices/s)" if len(rotated) > 1 and seconds > 0 else ""
    app_ctx.terminal.err(f"rotated {len(rotated)} of {len(outcomes)} device(s) over EST at {server.url}{rate}")
    if failed:
        if len(outcomes) == 1:
            raise failed[0].error
        raise FiocaError(f"{len(failed)} of {len(outcomes)} device(s) were not rotated; each is listed with its reason")
