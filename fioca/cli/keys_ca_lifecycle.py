"""`fioca keys ca update | add-device-ca | disable-device-ca | enable-device-ca |
revoke-device-ca | rotate-tls | sign`: parse, ask, render. The work is in fioca.pki.lifecycle,
and every root signature goes through fioca.pki.signer (both imported inside the commands:
they bring cryptography and requests, which `--help` does not need).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fioca import facts
from fioca.cli import hsm_options
from fioca.cli.context import AppContext, app_context
from fioca.cli.lean import LeanCommand
from fioca.cli.options import Format, ResultFormat, YesSend, YesWriteAndSend
from fioca.errors import FiocaError, UsageError
from fioca.text import quote_path

if TYPE_CHECKING:
    from fioca.pki.files import PkiDir
    from fioca.pki.hsm import HsmSettings
    from fioca.pki.signer import RootSigner

app = typer.Typer()  # its commands join `keys ca` in fioca.cli.app

# CLI choices, built from the domain's.
SignProfile = Enum("SignProfile", {name: name for name in facts.SIGN_PROFILES}, type=str)  # type: ignore[misc]
Via = Enum("Via", {name: name for name in facts.SIGN_VIAS}, type=str)  # type: ignore[misc]

VIA_HELP = "How the root signs: the bundled reference scripts with openssl (as create does) or in process."
ViaOption = Annotated[Via, typer.Option("--via", help=VIA_HELP)]
# PKI_DIR of rotate-tls and the CRL commands.
RootPkiDir = Annotated[Path, typer.Argument(metavar="PKI_DIR", help="The PKI dir holding factory_ca.pem and its key.")]


def open_pki_dir(path: Path) -> PkiDir:
    from fioca.pki.files import PkiDir

    return PkiDir.open(path.expanduser())


def root_signer_for(pki: PkiDir, hsm: HsmSettings | None) -> RootSigner:
    from fioca.pki.signer import load_root_signer

    return load_root_signer(pki, hsm=hsm)


def _ca_lines(title: str, cas: list[dict[str, Any]]) -> list[str]:
    if not cas:
        return []
    lines = [title]
    for ca in cas:
        extra = "".join(f", {key} {ca[key]}" for key in ("kind", "file") if key in ca)
        lines.append(f"  serial {ca['serial']}  {ca['subject']}{extra}")
    return lines


def confirmer(app_ctx: AppContext, yes: bool, question: str, describe: Callable[[dict], list[str]]) -> Callable:
    """Show the plan (stderr, and the terminal); ask unless --yes."""

    def confirm(plan: Any) -> bool:
        lines = describe(plan.summary())
        if yes:
            for line in lines:
                app_ctx.terminal.err(line)
            return True
        return app_ctx.terminal.confirm(question, details=lines)

    return confirm


def _emit(app_ctx: AppContext, output: Format, summary: dict[str, Any], text: list[str]) -> None:
    if output is Format.json:
        app_ctx.terminal.out(json.dumps(summary, indent=2))
    else:
        app_ctx.terminal.out("\n".join(text))


def _files_lines(stored: dict[str, str]) -> list[str]:
    return [f"  {name:<20} {quote_path(path)}" for name, path in stored.items()]


# --- update ---------------------------------------------------------------------------------------


def _update_lines(summary: dict[str, Any]) -> list[str]:
    lines = [f"Device CA bundle change for factory {summary['factory']}:"]
    lines += _ca_lines("  CAs added:", summary["added"])
    lines.append(f"  CAs kept: {len(summary['kept'])}")
    lines += [f"  Note: {note}" for note in summary["notes"]]
    return lines


@app.command(cls=LeanCommand, short_help="Update the device CAs the gateway trusts")
def update(
    ctx: typer.Context,
    ca_bundle_file: Path = typer.Argument(
        ..., metavar="CA_CRTS_FILE", help="PEM file with every device CA the factory should trust."
    ),
    yes: YesSend = False,
    dry_run: bool = typer.Option(False, "--dry-run", help="Check the file and show what would change; send nothing."),
    output: ResultFormat = Format.text,
) -> None:
    """Replace the list of device CAs whose certificates the gateway accepts (ca-crt).

    Unlike fioctl, the file is checked first: PEM certificates (text around them is skipped,
    as fioctl skips it), each a device CA of the profile (CA:TRUE pathlen:0, OU = factory)
    signed by the factory root. The CAs added and dropped are shown before anything is sent.
    The server keeps every CA already present unless a CRL revokes it, so `update` adds CAs
    (a revoked CA can be added back).

    \b
    Examples:
      fioca keys ca show --just-device-cas > cas.pem
      cat pki/other-ca.pem >> cas.pem
      fioca keys ca update cas.pem --dry-run
      fioca keys ca update cas.pem --yes
    """
    from fioca.pki import lifecycle

    app_ctx = app_context(ctx)
    try:
        bundle = ca_bundle_file.expanduser().read_bytes()
    except OSError as exc:
        raise FiocaError(f"cannot read {quote_path(ca_bundle_file)}: {exc.strerror}") from None
    if not dry_run:
        app_ctx.require_confirmation_possible(yes, "updating the device CA bundle")
    api = app_ctx.api()
    plan = lifecycle.plan_update(api, bundle, artifact=str(ca_bundle_file))
    summary = plan.summary()
    if dry_run:
        _emit(app_ctx, output, {**summary, "dry_run": True}, _update_lines(summary) + ["Dry run: nothing was sent."])
        return
    if not confirmer(app_ctx, yes, "Send the new device CA bundle?", _update_lines)(plan):
        raise lifecycle.not_confirmed("updating the device CA bundle")
    lifecycle.apply_update(api, plan)
    added, dropped = len(summary["added"]), len(summary["dropped"])
    _emit(
        app_ctx, output, summary,
        [f"Updated ca-crt of factory {summary['factory']}: {added} CA(s) added, {dropped} dropped."],
    )


# --- add-device-ca ----------------------------------------------------------------------------------


def _add_lines(summary: dict[str, Any]) -> list[str]:
    lines = [f"New device CA(s) for factory {summary['factory']}:"]
    lines += _ca_lines("  to add to ca-crt:", summary["added"])
    lines.append(f"  files to write (0400): {', '.join(summary['files'])}")
    if summary["moved_aside"]:
        lines.append(f"  files moved aside first (.bak): {', '.join(summary['moved_aside'])}")
    return lines


@app.command("add-device-ca", cls=LeanCommand, short_help="Add an online or local device CA")
def add_device_ca(
    ctx: typer.Context,
    pki_dir: Path = typer.Argument(..., metavar="PKI_DIR", help="The PKI dir `keys ca create` made."),
    online_ca: bool = typer.Option(
        False, "--online-ca", help="A device CA whose key Foundries.io holds: lmp-device-register's devices get certificates from it."
    ),
    local_ca: bool = typer.Option(
        False, "--local-ca", help="A device CA whose key stays in PKI_DIR, to sign device certificates yourself."
    ),
    local_ca_filename: str = typer.Option(
        facts.LOCAL_CA_CERT, "--local-ca-filename", metavar="NAME",
        help="File name of the new local CA in PKI_DIR (its key is NAME.key); needed when local-ca.pem exists.",
    ),
    yes: YesWriteAndSend = False,
    via: ViaOption = Via.script,
    output: ResultFormat = Format.text,
    hsm_module: hsm_options.HsmModule = None,
    hsm_pin: hsm_options.HsmPin = None,
    hsm_token_label: hsm_options.HsmTokenLabel = None,
) -> None:
    """Add a device CA, online or local, to the CAs whose device certificates the gateway accepts.

    A local CA is a new key (named after the file: local-ca2.pem -> local-ca2.key) signed by
    the root; an online CA comes from a new CSR of the server (POST with ca-csr), and the old
    online-crt is kept as online-crt.bak (.bak.1, ... when a .bak exists). The new CAs are
    appended to the factory's current ca-crt and PATCHed.

    \b
    Examples:
      fioca keys ca add-device-ca ./pki --local-ca --local-ca-filename line-2.pem
      fioca keys ca add-device-ca ./pki --online-ca --yes
    """
    from fioca.pki import lifecycle

    app_ctx = app_context(ctx)
    options = lifecycle.AddDeviceCaOptions(
        online_ca=online_ca, local_ca=local_ca, local_ca_filename=local_ca_filename, via=via.value
    )
    lifecycle.check_add_device_ca_options(options)
    app_ctx.require_confirmation_possible(yes, "adding a device CA")
    pki = open_pki_dir(pki_dir)
    signer = root_signer_for(pki, hsm_options.resolve_hsm(app_ctx, hsm_module, hsm_pin, hsm_token_label))
    result = lifecycle.add_device_ca(
        app_ctx.api(), pki, signer, options,
        confirm=confirmer(app_ctx, yes, "Write the files and send the new device CA bundle?", _add_lines),
        progress=app_ctx.terminal.err,
        on_script_stderr=lambda line: app_ctx.terminal.err(f"  {line}"),
    )
    summary = {**result.summary, "files": {path.name: str(path) for path in result.stored}}
    text = [f"Added {len(summary['added'])} device CA(s) to factory {summary['factory']}:"]
    text += _ca_lines("", summary["added"])[1:]
    text += _files_lines(summary["files"])
    _emit(app_ctx, output, summary, text)


# --- disable / enable / revoke ------------------------------------------------------------------------

_CRL_WORDS = {
    "disable": ("Disable", "disabled", "known devices keep connecting; new devices from it are refused"),
    "enable": ("Re-enable", "re-enabled", "new devices from it are accepted again"),
    "revoke": ("Revoke", "revoked", "PERMANENT: it leaves ca-crt and every device under it is refused"),
}


def _crl_lines(summary: dict[str, Any]) -> list[str]:
    verb, _done, effect = _CRL_WORDS[summary["action"]]
    lines = [f"{verb} device CA(s) of factory {summary['factory']} (CRL reason {summary['reason_code']}): {effect}"]
    lines += _ca_lines("  device CAs:", summary["device_cas"])
    return lines


def _crl_command(
    ctx: typer.Context, action: str, pki_dir: Path, ca_file: list[str], ca_serial: list[str],
    dry_run: bool, pretty: bool, yes: bool, output: Format, hsm_flags: tuple[str | None, str | None, str | None],
) -> None:
    from fioca.cli import fioctl_layout
    from fioca.pki import lifecycle

    app_ctx = app_context(ctx)
    if not ca_file and not ca_serial:
        raise UsageError("At least one of --ca-file or --ca-serial must be provided")
    for text in ca_serial:
        lifecycle.parse_serial(text)
    if not dry_run:
        app_ctx.require_confirmation_possible(yes, f"{action} of a device CA")
    pki = open_pki_dir(pki_dir)
    # Even a dry-run signs its CRL with the root, so it needs the token too.
    signer = root_signer_for(pki, hsm_options.resolve_hsm(app_ctx, *hsm_flags))
    plan, answer = lifecycle.change_device_cas(
        app_ctx.api(), pki, signer, action=action, ca_files=list(ca_file), ca_serials=list(ca_serial),
        dry_run=dry_run, confirm=confirmer(app_ctx, yes, "Send the CRL?", _crl_lines), progress=app_ctx.terminal.err,
    )
    summary = plan.summary()
    if dry_run:
        if output is Format.json:
            app_ctx.terminal.out(json.dumps(summary, indent=2))
            return
        app_ctx.terminal.out(plan.crl_pem)  # fioctl's Println of the PEM: a blank line after it
        if pretty:
            app_ctx.terminal.write(fioctl_layout.pretty_crl(plan.crl))
        return
    summary["disabled-ca-serials"] = answer.get("disabled-ca-serials", [])
    _verb, done, _effect = _CRL_WORDS[action]
    text = [f"Device CA(s) {done} in factory {summary['factory']}:"]
    text += _ca_lines("", summary["device_cas"])[1:]
    text.append("Disabled device CA serials now: " + (", ".join(summary["disabled-ca-serials"]) or "none"))
    _emit(app_ctx, output, summary, text)


# The options disable-, enable- and revoke-device-ca share.
CaFiles = Annotated[
    list[str], typer.Option("--ca-file", metavar="NAME", help="File name of a device CA in PKI_DIR (repeatable).", show_default=False)
]
CaSerials = Annotated[
    list[str], typer.Option("--ca-serial", metavar="SERIAL", help="Base-10 serial of a device CA (repeatable).", show_default=False)
]
CrlDryRun = Annotated[bool, typer.Option("--dry-run", help="Show the CRL that would be uploaded; send nothing.")]
CrlPretty = Annotated[bool, typer.Option("--pretty", help="With --dry-run: also show the CRL in a pretty format (fioctl's).")]


def _crl_command_for(action: str, name: str, short_help: str, doc: str) -> None:
    """One of disable-, enable- and revoke-device-ca: the same options, its own CRL reason."""

    def command(
        ctx: typer.Context,
        pki_dir: RootPkiDir,
        ca_file: CaFiles = [],
        ca_serial: CaSerials = [],
        dry_run: CrlDryRun = False,
        pretty: CrlPretty = False,
        yes: YesSend = False,
        output: ResultFormat = Format.text,
        hsm_module: hsm_options.HsmModule = None,
        hsm_pin: hsm_options.HsmPin = None,
        hsm_token_label: hsm_options.HsmTokenLabel = None,
    ) -> None:
        _crl_command(
            ctx, action, pki_dir, ca_file, ca_serial, dry_run, pretty, yes, output, (hsm_module, hsm_pin, hsm_token_label)
        )

    command.__doc__ = doc
    command.__name__ = name.replace("-", "_")
    app.command(name, cls=LeanCommand, short_help=short_help)(command)


_crl_command_for(
    "disable", "disable-device-ca", "Disable a device CA: no new devices from it",
    """Disable a device CA: a device with a certificate it issued can no longer register for the first time.

    CRL reason 6: devices already registered keep connecting. Reversible with
    `fioca keys ca enable-device-ca`.

    \b
    Examples:
      fioca keys ca disable-device-ca ./pki --ca-file local-ca.pem --dry-run
      fioca keys ca disable-device-ca ./pki --ca-serial 1234567890 --yes
    """,
)
_crl_command_for(
    "enable", "enable-device-ca", "Re-enable a disabled device CA (not in fioctl)",
    """Re-enable disabled device CAs (CRL reason 8, removeFromCRL). Not in fioctl.

    \b
    Example:
      fioca keys ca enable-device-ca ./pki --ca-file local-ca.pem --yes
    """,
)
_crl_command_for(
    "revoke", "revoke-device-ca", "Revoke a device CA: its devices are refused",
    """Revoke device CA, so that devices with client certificates it issued can no longer connect.

    CRL reason 9, permanent: the CA leaves ca-crt and every device under it is refused. A
    revoked CA can be added back with `fioca keys ca update`, if you still have its certificate.

    \b
    Examples:
      fioca keys ca revoke-device-ca ./pki --ca-file local-ca.pem --dry-run
      fioca keys ca revoke-device-ca ./pki --ca-serial 1234 --ca-serial 42 --yes
    """,
)


# --- rotate-tls -----------------------------------------------------------------------------------------


def _rotate_lines(summary: dict[str, Any]) -> list[str]:
    new = summary["new"]
    lines = [f"New device gateway TLS certificate for factory {summary['factory']}:"]
    if summary["old"]:
        lines.append(f"  old: serial {summary['old']['serial']}  hosts {', '.join(summary['old']['hosts'])}")
    lines.append(f"  new: serial {new['serial']}  hosts {', '.join(new['hosts'])}")
    if summary["hosts_changed"]:
        lines.append("  WARNING: the host names change; devices find the gateway by them.")
    if summary["moved_aside"]:
        lines.append(f"  files moved aside first (.bak): {', '.join(summary['moved_aside'])}")
    return lines


@app.command("rotate-tls", cls=LeanCommand, short_help="Rotate the device gateway's TLS certificate")
def rotate_tls(
    ctx: typer.Context,
    pki_dir: RootPkiDir,
    yes: YesWriteAndSend = False,
    via: ViaOption = Via.script,
    output: ResultFormat = Format.text,
    hsm_module: hsm_options.HsmModule = None,
    hsm_pin: hsm_options.HsmPin = None,
    hsm_token_label: hsm_options.HsmTokenLabel = None,
) -> None:
    """Give the device gateway and the OSTree server a new TLS certificate, signed by the root.

    POSTs for a new gateway key and CSR, signs it with the root, keeps the old tls-crt as
    tls-crt.bak (.bak.1, ... when a .bak exists), and PATCHes tls-crt. Devices keep
    connecting: they trust the root, not the gateway certificate.

    \b
    Example:
      fioca keys ca rotate-tls ./pki --yes
    """
    from fioca.pki import lifecycle

    app_ctx = app_context(ctx)
    app_ctx.require_confirmation_possible(yes, "rotating the gateway TLS certificate")
    pki = open_pki_dir(pki_dir)
    signer = root_signer_for(pki, hsm_options.resolve_hsm(app_ctx, hsm_module, hsm_pin, hsm_token_label))
    result = lifecycle.rotate_tls(
        app_ctx.api(), pki, signer, via=via.value,
        confirm=confirmer(app_ctx, yes, "Send the new TLS certificate?", _rotate_lines),
        progress=app_ctx.terminal.err,
        on_script_stderr=lambda line: app_ctx.terminal.err(f"  {line}"),
    )
    summary = {**result.summary, "files": {path.name: str(path) for path in result.stored}}
    new = summary["new"]
    text = [
        f"Factory {summary['factory']}'s gateway now serves tls-crt serial {new['serial']}",
        f"SHA-256 fingerprint: {new['fingerprint']}",
        "Hosts: " + ", ".join(new["hosts"]),
    ]
    _emit(app_ctx, output, summary, text)


# --- sign -------------------------------------------------------------------------------------------------


@app.command(cls=LeanCommand, short_help="Sign a CSR with the Factory root CA")
def sign(
    ctx: typer.Context,
    csr_file: Path = typer.Argument(..., metavar="CSR", help="PEM certificate signing request."),
    pki_dir: Path = typer.Option(
        ..., "--pki-dir", metavar="DIR", help="The PKI dir with the root: factory_ca.pem, and factory_ca.key unless the key is on an HSM."
    ),
    profile: SignProfile | None = typer.Option(
        None, "--profile",
        help="tls: a TLS server certificate; ca: a device CA.",
        show_default="from the CSR: ca when it asks for CA:TRUE, else tls",
    ),
    via: ViaOption = Via.inprocess,
    hsm_module: hsm_options.HsmModule = None,
    hsm_pin: hsm_options.HsmPin = None,
    hsm_token_label: hsm_options.HsmTokenLabel = None,
) -> None:
    """Sign a CSR with the factory's root CA, here, with no call to the API.

    The certificate type is taken from the CSR, as fioctl takes it: a CSR that requests
    basicConstraints CA:TRUE gets a device CA (CA:TRUE, pathlen:0, keyCertSign); any other
    a TLS server certificate with the CSR's DNS, IP, URI and email names. --profile chooses
    instead. Unlike fioctl, a CSR that asks for more than its type grants (a path length,
    other key usages, other extensions) is refused, not trimmed. The certificate goes to
    stdout.

    \b
    Examples:
      fioca keys ca sign --pki-dir ./pki gateway.csr > gateway.pem
      fioca keys ca sign --pki-dir ./pki line-3-ca.csr > line-3-ca.pem
      fioca keys ca sign --pki-dir ./pki --profile tls server.csr > server.pem
    """
    from fioca.pki import lifecycle, profiles

    app_ctx = app_context(ctx)
    try:
        csr_pem = csr_file.expanduser().read_bytes()
    except OSError as exc:
        raise FiocaError(f"cannot read {quote_path(csr_file)}: {exc.strerror}") from None
    pki = open_pki_dir(pki_dir)
    signer = root_signer_for(pki, hsm_options.resolve_hsm(app_ctx, hsm_module, hsm_pin, hsm_token_label))
    cert, chosen = lifecycle.sign_file(
        signer, csr_pem, profile=profile.value if profile else None, artifact=str(csr_file), via=via.value
    )
    if profile is None:
        kind = "a device CA (the CSR asks for CA:TRUE)" if chosen == "ca" else "a TLS server certificate"
        app_ctx.terminal.err(f"Signed {quote_path(csr_file)} as {kind}")
    app_ctx.terminal.write(profiles.cert_pem(cert).decode("ascii"))
