"""`fioca device ...`: offline device certificates, online registration, the gateway check.

Parse options, show progress, render results; the work happens in fioca.device.

Where the gateway is: the real factory's gateway is `https://<tls-crt's first DNS name>:8443`.
A sandbox gateway listens on 127.0.0.1 and a random port, so `--gateway-url` names it; without
the flag, when the config in use (FIOCTL_CONFIG) sits beside a sandbox's `sandbox.json` for
the same factory, its gateway URL is used and a note says so. `create-offline` takes the port
for sota.toml from there (else 8443); `check` connects there (with SNI = the gateway host).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from fioca.cli.context import AppContext, app_context
from fioca import facts
from fioca.cli.options import Format
from fioca.device import offline, sota
from fioca.errors import ExitCode, FiocaError, UsageError
from fioca.text import quote_path

app = typer.Typer(
    help=(
        "Device certificates: offline (factory scale), online registration, and the gateway check.\n\n"
        "\b\n"
        "Examples:\n"
        "  fioca device create-offline ./pki --count 100 --out ./fleet\n"
        "  fioca device check ./fleet/<uuid> --pki-dir ./pki\n"
        "  fioca device register --sota-dir /var/sota --name dev1 --tags main"
    ),
    no_args_is_help=True,
)


def _sandbox_gateway_url(app_ctx: AppContext, factory: str | None) -> str | None:
    """The gateway URL of the sandbox whose fioctl.yaml is the config in use, if any."""
    try:
        config_path = app_ctx.settings.config_path
    except FiocaError:
        return None
    if not (config_path.parent / facts.SANDBOX_INFO_FILE).is_file():
        return None
    from fioca.sandbox.server import INFO_FILE, SandboxError, read_info  # the sandbox's code only for a sandbox

    try:
        info = read_info(config_path.parent)
    except SandboxError:
        return None
    if factory is not None and info.factory != factory:
        return None
    app_ctx.terminal.err(f"note: using the sandbox gateway {info.gateway_url} (from {config_path.parent / INFO_FILE})")
    return info.gateway_url


def _progress(app_ctx: AppContext, total: int, label: str) -> tuple[Callable[[int], None], Callable[[], None]]:
    """A progress bar on a terminal, else a line every 10%; (advance, finish)."""
    if total <= 1:
        return (lambda _n: None), (lambda: None)
    if sys.stderr.isatty():
        bar = typer.progressbar(length=total, label=label, file=sys.stderr)
        bar.__enter__()
        return bar.update, lambda: bar.__exit__(None, None, None)
    state = {"done": 0, "shown": 0}

    def advance(count: int) -> None:
        state["done"] += count
        tenth = state["done"] * 10 // total
        if tenth > state["shown"]:
            state["shown"] = tenth
            app_ctx.terminal.err(f"{label}: {state['done']}/{total}")

    return advance, lambda: None


@app.command("create-offline")
def create_offline(
    ctx: typer.Context,
    pki_dir: Path = typer.Argument(..., help="The PKI dir: factory_ca.pem, local-ca.key/.pem, tls-crt."),
    uuid: Optional[str] = typer.Option(None, "--uuid", help="The device UUID (one device).", show_default="a random one"),
    name: Optional[str] = typer.Option(None, "--name", help="Folder name for one device.", show_default="its UUID"),
    count: int = typer.Option(1, "--count", "-n", min=1, help="How many devices to issue."),
    out: Optional[Path] = typer.Option(None, "--out", help="Where device folders go.", show_default="PKI_DIR/devices"),
    faithful: bool = typer.Option(
        False, "--faithful", help="Run the documented openssl commands with sh, one device at a time."
    ),
    production: bool = typer.Option(False, "--production", help="Mark devices as production (businessCategory)."),
    days: Optional[int] = typer.Option(
        None, "--days", min=1, help="Validity in days.", show_default=f"{offline.DEFAULT_DAYS}; --faithful: OpenSSL's 30, fixed"
    ),
    hwid: Optional[str] = typer.Option(None, "--hwid", help="primary_ecu_hardware_id in sota.toml.", show_default="unset"),
    gateway_url: Optional[str] = typer.Option(
        None, "--gateway-url", help="Take the gateway port for sota.toml from this URL.", show_default="8443, or the sandbox's"
    ),
    sota_dir: str = typer.Option(sota.DEFAULT_SOTA_DIR, "--sota-dir", help="Where the folder will live on the device."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Worker processes.", show_default="every core"),
    output: Format = typer.Option(Format.text, "--format", help="text (uuid and folder per line) or json."),
) -> None:
    """Issue offline device certificates with the local device CA (the documented procedure).

    Each device gets OUT/<uuid>/ with pkey.pem, device-cert.conf, device-cert.ext,
    device-cert.csr, client.pem, root.crt and sota.toml (all 0400): what /var/sota needs.
    Every certificate is checked before its folder appears; an interrupted batch leaves only
    complete folders. --faithful leaves local-ca.srl in PKI_DIR, as the documented
    -CAcreateserial does, and keeps the EC PARAMETERS block in pkey.pem.

    \b
    Examples:
      fioca device create-offline ./pki
      fioca device create-offline ./pki --count 5000 --out ./fleet --format json
      fioca device create-offline ./pki --faithful --uuid 1c7d...
    """
    app_ctx = app_context(ctx)
    if faithful and days is not None:
        raise UsageError(f"--faithful gives OpenSSL's {offline.FAITHFUL_DAYS} days, as documented; --days is for the default path")
    pki = offline.load_pki(pki_dir.expanduser())
    specs = offline.plan_devices(count, uuid=uuid, name=name)
    url = gateway_url or _sandbox_gateway_url(app_ctx, pki.factory)
    try:
        port = sota.gateway_port_from_url(url) if url else sota.GATEWAY_PORT
    except ValueError as error:
        raise UsageError(str(error)) from None
    options = offline.OfflineOptions(
        out_dir=(out or pki.pki_dir / offline.DEFAULT_OUT).expanduser(),
        days=offline.FAITHFUL_DAYS if faithful else (days or offline.DEFAULT_DAYS),
        production=production,
        hardware_id=hwid,
        sota_dir=sota_dir,
        gateway_port=port,
        workers=workers,
    )
    advance, finish = _progress(app_ctx, count, "devices")
    started = time.perf_counter()
    try:
        create = offline.create_faithful if faithful else offline.create_in_process
        devices = create(pki, options, specs, advance)
    finally:
        finish()
    seconds = time.perf_counter() - started
    if output is Format.json:
        app_ctx.terminal.out(
            json.dumps(
                {
                    "factory": pki.factory,
                    "out": str(options.out_dir),
                    "faithful": faithful,
                    "days": options.days,
                    "production": production,
                    "seconds": round(seconds, 3),
                    "devices": [{"uuid": d.uuid, "path": str(d.path)} for d in devices],
                },
                indent=2,
            )
        )
    else:
        for device in devices:
            app_ctx.terminal.out(f"{device.uuid}  {quote_path(device.path)}")
    rate = f" ({len(devices) / seconds:,.0f} devices/s)" if len(devices) > 1 and seconds > 0 else ""
    app_ctx.terminal.err(
        f"created {len(devices)} device folder(s) in {quote_path(options.out_dir)}{rate}; "
        f"certificates valid {options.days} days, signed by local-ca.pem"
    )


@app.command()
def register(
    ctx: typer.Context,
    sota_dir: Path = typer.Option(..., "--sota-dir", "-d", help="The device's sota dir (e.g. /var/sota); must exist."),
    hwid: Optional[str] = typer.Option(
        None, "--hwid", "-i", help="Hardware id.", show_default="LMP_MACHINE from /etc/os-release, else the CPU arch"
    ),
    uuid: Optional[str] = typer.Option(None, "--uuid", "-u", help="Device UUID.", show_default="a random one"),
    name: Optional[str] = typer.Option(None, "--name", "-n", help="Device name.", show_default="its UUID"),
    production: bool = typer.Option(False, "--production", "-p", help="Register a production device."),
    group: Optional[str] = typer.Option(None, "--group", "-g", help="Device group to join."),
    tags: Optional[str] = typer.Option(None, "--tags", "-t", help="aktualizr-lite tags (overrides.pacman.tags)."),
    use_ostree_server: bool = typer.Option(
        True, "--use-ostree-server/--no-use-ostree-server", help="Pull OSTree from the proxy host, not the gateway."
    ),
    force: bool = typer.Option(False, "--force", help="Register again a sota dir that is already registered."),
    output: Format = typer.Option(Format.text, "--format", help="text or json."),
) -> None:
    """Register a device online, as lmp-device-register does (key, CSR, HEAD, POST /ota/devices/).

    Writes every file of the 201 answer (client.pem, root.crt, sota.toml, client.chained) and
    pkey.pem (0400) into the sota dir, after checking them. Uses the API settings (token).

    \b
    Example:
      fioca device register --sota-dir /var/sota --name dev1 --hwid rpi4
    """
    app_ctx = app_context(ctx)
    from fioca.device import register as device_register  # requests: only for this command

    api = device_register.RegistrationApi(app_ctx.settings, log=app_ctx.terminal.err)
    options = device_register.RegisterOptions(
        sota_dir=sota_dir.expanduser(),
        hardware_id=hwid or device_register.default_hardware_id(),
        uuid=uuid,
        name=name,
        production=production,
        group=group,
        tags=tags,
        use_ostree_server=use_ostree_server,
        force=force,
    )
    result = device_register.register(api, options)
    if output is Format.json:
        app_ctx.terminal.out(
            json.dumps(
                {
                    "uuid": result.uuid,
                    "name": result.name,
                    "sota_dir": str(result.sota_dir),
                    "files": result.written,
                    "certificate": result.certificate,
                },
                indent=2,
            )
        )
        return
    app_ctx.terminal.out(f"registered device {result.name} ({result.uuid})")
    app_ctx.terminal.out(f"wrote {', '.join(result.written)} in {quote_path(result.sota_dir)}")
    app_ctx.terminal.out(f"certificate {result.certificate['subject']}, issuer {result.certificate['issuer']}")


@app.command()
def check(
    ctx: typer.Context,
    device_dir: Path = typer.Argument(..., help="A device folder or sota dir (client.pem, pkey.pem)."),
    pki_dir: Optional[Path] = typer.Option(
        None, "--pki-dir", help="Trust factory_ca.pem and take the gateway host from tls-crt.", show_default="root.crt, sota.toml"
    ),
    resolve: Optional[str] = typer.Option(
        None, "--resolve", help="Connect to ADDR for the gateway host, as curl: HOST:PORT:ADDR (or HOST:ADDR)."
    ),
    gateway_url: Optional[str] = typer.Option(
        None, "--gateway-url", help="Connect to this https://ADDRESS:PORT (TLS name stays the gateway host)."
    ),
    path: str = typer.Option(facts.DEVICE_PROBE_PATH, "--path", help="What to GET from the gateway."),
    output: Format = typer.Option(Format.text, "--format", help="text or json."),
) -> None:
    """Ask the device gateway about this device over mTLS, as the document's curl step does.

    Prints whether the gateway accepted the device (and its /device answer) or refused it and
    why. Exits 3 when refused.

    \b
    Examples:
      fioca device check ./pki/devices/<uuid> --pki-dir ./pki
      fioca device check /var/sota --resolve GATEWAY_HOST:8443:127.0.0.1
    """
    app_ctx = app_context(ctx)
    if resolve and gateway_url:
        raise UsageError("give --resolve or --gateway-url, not both")
    from fioca.device import check as device_check  # ssl and http.client: only for this command

    device = device_check.locate(device_dir.expanduser(), pki_dir.expanduser() if pki_dir else None)
    if not resolve and not gateway_url:
        gateway_url = _sandbox_gateway_url(app_ctx, None)
    target = device_check.target_for(device, resolve=resolve, gateway_url=gateway_url)
    result = device_check.probe(device, target, path=path)
    if output is Format.json:
        app_ctx.terminal.out(json.dumps(result.as_dict(), indent=2))
    else:
        app_ctx.terminal.out(_check_text(result))
    if not result.accepted:
        raise typer.Exit(int(ExitCode.REFUSED))


def _check_text(result: Any) -> str:
    """`device check`'s text for a device_check.CheckResult."""
    where = f"gateway {result.host} ({result.address}:{result.port})"
    if result.accepted:
        body: Any = result.body
        shown = json.dumps(body, indent=2) if not isinstance(body, str) else body
        return f"accepted: device {result.uuid} by {where}\n{shown}"
    status = f" {result.status}" if result.status is not None else ""
    return f"refused{status}: device {result.uuid} by {where}: {result.reason}"
