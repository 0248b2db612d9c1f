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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fioca import facts
from fioca.cli.context import AppContext, app_context
from fioca.cli.options import Format, TextOrJson
from fioca.device import offline, sota
from fioca.errors import ExitCode, UsageError
from fioca.text import quote_path

if TYPE_CHECKING:
    from fioca.device import register as device_register

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


def sandbox_gateway_url(app_ctx: AppContext, factory: str | None) -> str | None:
    """The gateway URL of the sandbox whose fioctl.yaml is the config in use, if any (the
    config itself is not read: an offline batch needs nothing of it)."""
    config_path = app_ctx.config_file()
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


def progress_reporter(app_ctx: AppContext, total: int, label: str) -> tuple[Callable[[int], None], Callable[[], None]]:
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


# create-offline's options, declared apart so that the command reads as what it does.
OfflinePkiDir = Annotated[Path, typer.Argument(help="The PKI dir: factory_ca.pem, local-ca.key/.pem, tls-crt.")]
OfflineUuid = Annotated[str | None, typer.Option(
    "--uuid", help="The device UUID (one device).", show_default="a random one",
)]
OfflineName = Annotated[str | None, typer.Option(
    "--name", help="Folder name for one device.", show_default="its UUID",
)]
Count = Annotated[int, typer.Option("--count", "-n", min=1, help="How many devices to issue.")]
Out = Annotated[Path | None, typer.Option(
    "--out", metavar="DIR", help="Where device folders go.", show_default="PKI_DIR/devices",
)]
Faithful = Annotated[bool, typer.Option(
    "--faithful", help="Run the documented openssl commands with sh, one device at a time.",
)]
OfflineProduction = Annotated[bool, typer.Option(
    "--production", help="Mark devices as production (businessCategory).",
)]
Days = Annotated[int | None, typer.Option(
    "--days", min=1, help="Validity in days.", show_default=f"{offline.DEFAULT_DAYS}; --faithful: OpenSSL's 30, fixed",
)]
OfflineHwid = Annotated[str | None, typer.Option(
    "--hwid", help="primary_ecu_hardware_id in sota.toml.", show_default="unset",
)]
OfflineGatewayUrl = Annotated[str | None, typer.Option(
    "--gateway-url", metavar="URL", help="Take the gateway port for sota.toml from this URL.",
    show_default="8443, or the sandbox's",
)]
OfflineSotaDir = Annotated[str, typer.Option(
    "--sota-dir", metavar="DIR", help="Where the folder will live on the device.",
)]
Workers = Annotated[int | None, typer.Option(
    "--workers", min=1, help="Worker processes.", show_default="every core",
)]
OfflineFormat = Annotated[Format, typer.Option("--format", help="text (uuid and folder per line) or json.")]


@app.command("create-offline")
def create_offline(
    ctx: typer.Context,
    pki_dir: OfflinePkiDir,
    uuid: OfflineUuid = None,
    name: OfflineName = None,
    count: Count = 1,
    out: Out = None,
    faithful: Faithful = False,
    production: OfflineProduction = False,
    days: Days = None,
    hwid: OfflineHwid = None,
    gateway_url: OfflineGatewayUrl = None,
    sota_dir: OfflineSotaDir = sota.DEFAULT_SOTA_DIR,
    workers: Workers = None,
    output: OfflineFormat = Format.text,
) -> None:
    """Issue offline device certificates with the local device CA (the documented procedure).

    Each device gets <uuid>/ in the --out DIR with pkey.pem, device-cert.conf, device-cert.ext,
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
    port = _gateway_port(gateway_url or sandbox_gateway_url(app_ctx, pki.factory))
    options = offline.OfflineOptions(
        out_dir=(out or pki.pki_dir / offline.DEFAULT_OUT).expanduser(),
        days=offline.FAITHFUL_DAYS if faithful else (days or offline.DEFAULT_DAYS),
        production=production,
        hardware_id=hwid,
        sota_dir=sota_dir,
        gateway_port=port,
        workers=workers,
    )
    devices, seconds = _issue(app_ctx, pki, options, specs, faithful=faithful)
    if output is Format.json:
        app_ctx.terminal.out(json.dumps(_offline_json(pki.factory, options, devices, faithful, seconds), indent=2))
    elif devices:  # one write, not one a device: a batch has 100,000 lines
        paths = _device_paths(options.out_dir, devices)
        app_ctx.terminal.out("\n".join(f"{device.uuid}  {quote_path(path)}" for device, path in zip(devices, paths)))
    app_ctx.terminal.err(_offline_summary(options, devices, seconds))


def _issue(
    app_ctx: AppContext, pki: offline.OfflinePki, options: offline.OfflineOptions,
    specs: Sequence[offline.DeviceSpec], *, faithful: bool,
) -> tuple[list[offline.OfflineDevice], float]:
    """Issue `specs` (as documented with `faithful`) with progress shown; the devices and the seconds taken."""
    advance, finish = progress_reporter(app_ctx, len(specs), "devices")
    started = time.perf_counter()
    try:
        create = offline.create_faithful if faithful else offline.create_in_process
        devices = create(pki, options, specs, advance)
    finally:
        finish()
    return devices, time.perf_counter() - started


def _gateway_port(url: str | None) -> int:
    """The gateway port for sota.toml: `url`'s, else the real gateway's."""
    try:
        return sota.gateway_port_from_url(url) if url else sota.GATEWAY_PORT
    except ValueError as error:
        raise UsageError(str(error)) from None


def _offline_json(
    factory: str, options: offline.OfflineOptions, devices: list[offline.OfflineDevice], faithful: bool, seconds: float
) -> dict[str, Any]:
    """`device create-offline --format json`'s answer."""
    return {
        "factory": factory,
        "out": str(options.out_dir),
        "faithful": faithful,
        "days": options.days,
        "production": options.production,
        "seconds": round(seconds, 3),
        "devices": [{"uuid": d.uuid, "path": path} for d, path in zip(devices, _device_paths(options.out_dir, devices))],
    }


def _device_paths(out_dir: Path, devices: list[offline.OfflineDevice]) -> list[str]:
    """str(device.path) of each device in `out_dir`, with one pathlib join for all: a device's
    folder is one plain name (a uuid, or a --name checked as such), and a join a device cost
    0.4 s of a 100,000-device batch's output."""
    base = str(out_dir / "_")[:-1]  # out_dir as pathlib joins a name to it: "" for ".", "/" for "/"
    return [base + device.folder for device in devices]


def _offline_summary(options: offline.OfflineOptions, devices: list[offline.OfflineDevice], seconds: float) -> str:
    """create-offline's last line on stderr: how many, where, how fast, how long valid."""
    rate = f" ({len(devices) / seconds:,.0f} devices/s)" if len(devices) > 1 and seconds > 0 else ""
    return (
        f"created {len(devices)} device folder(s) in {quote_path(options.out_dir)}{rate}; "
        f"certificates valid {options.days} days, signed by local-ca.pem"
    )


REGISTER_HELP = """Register this device online, as lmp-device-register does.

Makes a P-256 key and a CSR (CN=<uuid>, OU=<factory> [, businessCategory=production],
requesting keyUsage digitalSignature and extendedKeyUsage clientAuth), probes DEVICE_API
(HEAD, no token), POSTs the registration (only 201 is success), checks every file of the
answer, then writes pkey.pem (0400) and the answer's files (client.pem, root.crt,
client.chained, sota.toml; 0644) into the sota dir in one step.

DEVICE_API (a full URL, e.g. a factory-registration-ref server's http://host/sign) is the
endpoint, else the API server's /ota/devices/ (https://api.foundries.io/ota/devices/).
Credentials: -T, else fioca's token (FIOCTL_TOKEN, the config's), in the header -H; else the
OAuth device flow (OAUTH_BASE, else https://app.foundries.io/oauth): fioca shows a user code
to approve and waits. PRODUCTION in the environment marks a production device, as -p does.
The factory: -f, else DEVICE_FACTORY, else LMP_FACTORY in /etc/os-release, else fioca's
factory setting; the tags: -t, else LMP_FACTORY_TAG.

If anything fails once the server may have registered the device (an answer that fails a
check, a file that cannot be written, a lost answer, Ctrl-C), fioca deletes the device again,
or says what is left and how to remove it; nothing is written then.

How fioca differs from lmp-device-register: pkey.pem is 0400 (lmp-device-register leaves it
0644); --force keeps the old registration until the new one is written (lmp-device-register
removes client.pem and sql.db first); DEVICE_API is probed before the device flow starts;
sota-config-dir is sent as an absolute path; -a/-A turn the compose-apps overrides on (in
lmp-device-register a build option does); a UUID must be spelled lower-case and hyphenated
(no -v/--validate-uuid: -v is fioca's --verbose); no HSM (-m, -S, -P), no --mlock-all, and
fioca never starts aktualizr-lite (--start-daemon only takes "off"). Booleans take
lmp-device-register's values too: --force 1, --production=true, --use-ostree-server 0.

\b
Examples:
  fioca device register -d /var/sota -n dev1 -t main -T "$TOKEN"
  DEVICE_API=http://10.0.2.2/sign fioca device register -f acme -t main
  fioca device register -d ./sota -t main -a app1,app2 -g lab --dry-run
"""


# register's options: lmp-device-register's names, short forms and defaults.
ApiToken = Annotated[str | None, typer.Option(
    "--api-token", "-T", metavar="TOKEN",
    help="API token (other users can see it in ps: prefer FIOCTL_TOKEN or the config).",
    show_default="fioca's token; without one, the OAuth device flow",
)]
ApiTokenHeader = Annotated[str | None, typer.Option(
    "--api-token-header", "-H", metavar="HEADER", help="The header the token goes in.",
    show_default="TOKEN_HEADER, else OSF-TOKEN",
)]
RegisterName = Annotated[str | None, typer.Option(
    "--name", "-n", help="The device's name.", show_default="its UUID",
)]
Tags = Annotated[str | None, typer.Option(
    "--tags", "-t", help="aktualizr-lite takes only Targets with these tags.", show_default="LMP_FACTORY_TAG",
)]
Apps = Annotated[str | None, typer.Option(
    "--apps", "-a",
    help='Compose apps to run, comma separated ("" = all); turns the compose-apps overrides on.',
)]
RestorableApps = Annotated[str | None, typer.Option(
    "--restorable-apps", "-A", metavar="APPS",
    help='Restorable apps, comma separated ("" = off); turns the compose-apps overrides on.',
    show_default='" " (on, the apps list)',
)]
RegisterHwid = Annotated[str | None, typer.Option(
    "--hwid", "-i", help="The hardware id.", show_default="LMP_MACHINE in /etc/os-release, else the CPU arch",
)]
RegisterSotaDir = Annotated[Path, typer.Option(
    "--sota-dir", "-d", metavar="DIR", help="Where the keys and config go.",
)]
Factory = Annotated[str | None, typer.Option(
    "--factory", "-f", help="The factory.", show_default="DEVICE_FACTORY, LMP_FACTORY, fioca's factory",
)]
RegisterUuid = Annotated[str | None, typer.Option(
    "--uuid", "-u", help="The device UUID.", show_default="a random one",
)]
Group = Annotated[str | None, typer.Option(
    "--device-group", "--group", "-g", help="The device group to join.",
)]
RegisterProduction = Annotated[bool, typer.Option(
    "--production", "-p", help="A production device (businessCategory).", show_default="PRODUCTION set",
)]
UseOstreeServer = Annotated[bool, typer.Option(
    "--use-ostree-server/--no-use-ostree-server", help="Pull OSTree from its proxy host, not the gateway.",
)]
Force = Annotated[bool, typer.Option("--force", help="Register again a sota dir that holds a registration.")]
StartDaemon = Annotated[bool, typer.Option(
    "--start-daemon/--no-start-daemon", help="lmp-device-register's; fioca takes only off.",
)]
RegisterPkiDir = Annotated[Path | None, typer.Option(
    "--pki-dir", metavar="DIR", help="The factory's PKI dir: its factory_ca.pem must be the root the server answers.",
)]
AkliteLock = Annotated[Path, typer.Option(
    "--aklite-lock", metavar="FILE", help="aktualizr-lite's lock (refused while held).",
)]
RegisterDryRun = Annotated[bool, typer.Option(
    "--dry-run", help="Check everything here and print the body; send nothing.",
)]


@app.command(help=REGISTER_HELP)
def register(
    ctx: typer.Context,
    api_token: ApiToken = None,
    api_token_header: ApiTokenHeader = None,
    name: RegisterName = None,
    tags: Tags = None,
    apps: Apps = None,
    restorable_apps: RestorableApps = None,
    hwid: RegisterHwid = None,
    sota_dir: RegisterSotaDir = Path(facts.DEFAULT_SOTA_DIR),
    factory: Factory = None,
    uuid: RegisterUuid = None,
    group: Group = None,
    production: RegisterProduction = False,
    use_ostree_server: UseOstreeServer = True,
    force: Force = False,
    start_daemon: StartDaemon = False,
    pki_dir: RegisterPkiDir = None,
    aklite_lock: AkliteLock = Path(facts.AKLITE_LOCK),
    dry_run: RegisterDryRun = False,
    output: TextOrJson = Format.text,
) -> None:
    app_ctx = app_context(ctx)
    if start_daemon:
        raise UsageError("fioca never starts aktualizr-lite: run `systemctl start aktualizr-lite` after registering")
    from fioca.api import DeviceRegistrationApi  # requests: only for this command
    from fioca.device import register as device_register

    settings = app_ctx.settings
    release = device_register.os_release()
    options = device_register.RegisterOptions(
        sota_dir=sota_dir.expanduser(),
        factory=factory or settings.device_factory or release.get("LMP_FACTORY") or settings.factory or "",
        tags=tags if tags is not None else release.get("LMP_FACTORY_TAG", ""),
        hardware_id=hwid or device_register.default_hardware_id(release),
        uuid=uuid, name=name, production=production or settings.device_production, group=group,
        apps=apps, restorable_apps=restorable_apps, use_ostree_server=use_ostree_server, force=force,
        pki_dir=pki_dir.expanduser() if pki_dir else None, aklite_lock=aklite_lock,
        api_token=api_token, token_header=api_token_header or settings.token_header,
    )  # fmt: skip
    api = DeviceRegistrationApi(settings, factory=options.factory, log=app_ctx.terminal.err)
    if dry_run:
        planned = device_register.plan(api, options)
        app_ctx.terminal.err(f"dry run: would register at {planned['endpoint']} with the {planned['credentials']}")
        app_ctx.terminal.out(json.dumps(planned if output is Format.json else planned["body"], indent=2))
        return
    result = device_register.register(api, options, show=lambda lines: [app_ctx.terminal.err(line) for line in lines])
    for note in result.notes:
        app_ctx.terminal.err(f"note: {note}")
    _print_registered(app_ctx, result, options.factory, output)


def _print_registered(app_ctx: AppContext, result: device_register.Registered, factory: str, output: Format) -> None:
    """`device register`'s answer: the JSON, or what was registered, written and removed."""
    if output is Format.json:
        app_ctx.terminal.out(json.dumps(_registered_json(result, factory), indent=2))
        return
    app_ctx.terminal.out(f"registered device {result.name} ({result.uuid}) in factory {factory}")
    app_ctx.terminal.out(f"wrote {', '.join(result.written)} in {quote_path(result.sota_dir)}")
    if result.removed:
        app_ctx.terminal.out(f"removed the old {', '.join(result.removed)}")
    app_ctx.terminal.out(f"certificate {result.certificate['subject']}, issuer {result.certificate['issuer']}")


def _registered_json(result: device_register.Registered, factory: str) -> dict[str, Any]:
    return {
        "uuid": result.uuid,
        "name": result.name,
        "factory": factory,
        "sota_dir": str(result.sota_dir),
        "files": result.written,
        "removed": result.removed,
        "shared_pki": result.shared,
        "certificate": result.certificate,
        "notes": result.notes,
    }


# check's options.
DeviceDir = Annotated[Path, typer.Argument(help="A device folder or sota dir (client.pem, pkey.pem).")]
CheckPkiDir = Annotated[Path | None, typer.Option(
    "--pki-dir", metavar="DIR", help="Trust factory_ca.pem and take the gateway host from tls-crt.",
    show_default="root.crt, sota.toml",
)]
Resolve = Annotated[str | None, typer.Option(
    "--resolve", metavar="HOST:PORT:ADDR",
    help="Connect to ADDR for the gateway host, as curl: HOST:PORT:ADDR (or HOST:ADDR).",
)]
CheckGatewayUrl = Annotated[str | None, typer.Option(
    "--gateway-url", metavar="URL", help="Connect to this https://ADDRESS:PORT (TLS name stays the gateway host).",
)]
ProbePath = Annotated[str, typer.Option("--path", help="What to GET from the gateway.")]


@app.command()
def check(
    ctx: typer.Context,
    device_dir: DeviceDir,
    pki_dir: CheckPkiDir = None,
    resolve: Resolve = None,
    gateway_url: CheckGatewayUrl = None,
    path: ProbePath = facts.DEVICE_PROBE_PATH,
    output: TextOrJson = Format.text,
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
        gateway_url = sandbox_gateway_url(app_ctx, None)
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
