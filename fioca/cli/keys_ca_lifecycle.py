"""`fioca keys ca update | add-device-ca | disable-device-ca | enable-device-ca |
revoke-device-ca | rotate-tls | sign`: parse, ask, render. The work is in fioca.pki.lifecycle,
and every root signature goes through fioca.pki.signer."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, List

import typer
from cryptography import x509

from fioca import facts
from fioca.cli import hsm_options
from fioca.cli.context import AppContext, app_context
from fioca.cli.keys_ca import app
from fioca.cli.options import Format, ResultFormat, YesSend, YesWriteAndSend
from fioca.errors import FiocaError, UsageError
from fioca.pki import files, lifecycle, profiles
from fioca.pki.signer import load_root_signer


class SignProfile(str, Enum):
    tls = "tls"
    ca = "ca"


class Via(str, Enum):
    script = "script"
    inprocess = "inprocess"


VIA_HELP = "How the root signs: the bundled reference scripts with openssl (as create does) or in process."
ViaOption = Annotated[Via, typer.Option("--via", help=VIA_HELP)]
# PKI_DIR of rotate-tls and the CRL commands.
RootPkiDir = Annotated[Path, typer.Argument(help="The PKI dir holding factory_ca.key.")]


def _pki_dir(path: Path) -> files.PkiDir:
    path = path.expanduser()
    if not path.is_dir():
        raise FiocaError(f"PKI dir {path} does not exist or is not a directory")
    return files.PkiDir(path)


def _ca_lines(title: str, cas: list[dict[str, Any]]) -> list[str]:
    if not cas:
        return []
    lines = [title]
    for ca in cas:
        extra = "".join(f", {key} {ca[key]}" for key in ("kind", "file") if key in ca)
        lines.append(f"  serial {ca['serial']}  {ca['subject']}{extra}")
    return lines


def _confirmer(app_ctx: AppContext, yes: bool, question: str, describe) -> lifecycle.Confirm:
    """Show the plan on stderr; ask unless --yes."""

    def confirm(plan: Any) -> bool:
        for line in describe(plan.summary()):
            app_ctx.terminal.err(line)
        return yes or app_ctx.terminal.confirm(question)

    return confirm


def _emit(app_ctx: AppContext, output: Format, summary: dict[str, Any], text: list[str]) -> None:
    if output is Format.json:
        app_ctx.terminal.out(json.dumps(summary, indent=2))
    else:
        app_ctx.terminal.out("\n".join(text))


# --- update ---------------------------------------------------------------------------------------


def _update_lines(summary: dict[str, Any]) -> list[str]:
    lines = [f"Device CA bundle change for factory {summary['factory']}:"]
    lines += _ca_lines("  CAs added:", summary["added"])
    lines += _ca_lines("  CAs dropped:", summary["dropped"])
    if summary["dropped"]:
        lines.append(
            "  Note: the server refuses to drop a device CA without a CRL; use `fioca keys ca revoke-device-ca`."
        )
    lines.append(f"  CAs kept: {len(summary['kept'])}")
    return lines


@app.command()
def update(
    ctx: typer.Context,
    ca_bundle_file: Path = typer.Argument(..., help="PEM file with every device CA the factory should trust."),
    yes: YesSend = False,
    dry_run: bool = typer.Option(False, "--dry-run", help="Check the file and show what would change; send nothing."),
    output: ResultFormat = Format.text,
) -> None:
    """Replace the factory's device CA bundle (ca-crt) with CA_BUNDLE_FILE.

    Unlike fioctl, the file is checked first: PEM certificates only, each a device CA of the
    profile (CA:TRUE pathlen:0, OU = factory) signed by the factory root. The CAs added and
    dropped are shown before anything is sent. The server keeps every CA already present
    unless a CRL revokes it, so in practice `update` adds CAs.

    Examples:

      fioca keys ca show --just-device-cas > cas.pem && cat pki/other-ca.pem >> cas.pem

      fioca keys ca update cas.pem --dry-run

      fioca keys ca update cas.pem --yes
    """
    app_ctx = app_context(ctx)
    try:
        bundle = ca_bundle_file.expanduser().read_bytes()
    except OSError as exc:
        raise FiocaError(f"cannot read {ca_bundle_file}: {exc.strerror}") from None
    if not dry_run:
        app_ctx.require_confirmation_possible(yes, "updating the device CA bundle")
    api = app_ctx.api()
    plan = lifecycle.plan_update(api, bundle, artifact=str(ca_bundle_file))
    summary = plan.summary()
    if dry_run:
        _emit(app_ctx, output, {**summary, "dry_run": True}, _update_lines(summary) + ["Dry run: nothing was sent."])
        return
    for line in _update_lines(summary):
        app_ctx.terminal.err(line)
    if not (yes or app_ctx.terminal.confirm("Send the new device CA bundle?")):
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


@app.command("add-device-ca")
def add_device_ca(
    ctx: typer.Context,
    pki_dir: Path = typer.Argument(..., help="The PKI dir `keys ca create` made (holds factory_ca.key)."),
    online_ca: bool = typer.Option(False, "--online-ca", help="A new online CA (its key stays with Foundries) for lmp-device-register."),
    local_ca: bool = typer.Option(False, "--local-ca", help="A new local CA whose key you keep, for manufacturing."),
    local_ca_filename: str = typer.Option(
        facts.LOCAL_CA_CERT, "--local-ca-filename", help="File name of the new local CA in PKI_DIR; its key is NAME.key."
    ),
    yes: YesWriteAndSend = False,
    via: ViaOption = Via.script,
    output: ResultFormat = Format.text,
    hsm_module: hsm_options.HsmModule = None,
    hsm_pin: hsm_options.HsmPin = None,
    hsm_token_label: hsm_options.HsmTokenLabel = None,
) -> None:
    """Add a device CA to the CAs the device gateway trusts (fioctl keys ca add-device-ca).

    A local CA is a new key (named after the file: local-ca2.pem -> local-ca2.key) signed by
    the root; an online CA comes from a new CSR of the server (POST with ca-csr), and the old
    online-crt is kept as online-crt.bak (.bak.1, ... when a .bak exists). The new CAs are
    appended to the factory's current ca-crt and PATCHed.

    Examples:

      fioca keys ca add-device-ca ./pki --local-ca --local-ca-filename line-2.pem

      fioca keys ca add-device-ca ./pki --online-ca --yes
    """
    app_ctx = app_context(ctx)
    options = lifecycle.AddDeviceCaOptions(
        online_ca=online_ca, local_ca=local_ca, local_ca_filename=local_ca_filename, via=via.value
    )
    lifecycle.check_add_device_ca_options(options)
    app_ctx.require_confirmation_possible(yes, "adding a device CA")
    pki = _pki_dir(pki_dir)
    hsm = hsm_options.resolve_hsm(app_ctx, hsm_module, hsm_pin, hsm_token_label)
    signer = load_root_signer(pki.path, hsm=hsm)
    result = lifecycle.add_device_ca(
        app_ctx.api(), pki, signer, options,
        confirm=_confirmer(app_ctx, yes, "Write the files and send the new device CA bundle?", _add_lines),
        progress=app_ctx.terminal.err,
        on_script_stderr=lambda line: app_ctx.terminal.err(f"  {line}"),
    )
    summary = {**result.summary, "files": {path.name: str(path) for path in result.stored}}
    text = [f"Added {len(summary['added'])} device CA(s) to factory {summary['factory']}:"]
    text += _ca_lines("", summary["added"])[1:]
    text += [f"  {name:<20} {path}" for name, path in summary["files"].items()]
    _emit(app_ctx, output, summary, text)


# --- disable / enable / revoke ------------------------------------------------------------------------

_CRL_READABLE = {6: "Disable", 8: "Enable", 9: "Revoke"}


def _go_time(moment) -> str:
    """A time as Go's time.Time prints it (fioctl's CRL layout)."""
    return moment.strftime("%Y-%m-%d %H:%M:%S +0000 UTC")


def pretty_crl(crl: x509.CertificateRevocationList) -> list[str]:
    """A CRL in fioctl's `--dry-run --pretty` layout."""
    algorithm = "ECDSA-SHA256" if crl.signature_algorithm_oid == x509.oid.SignatureAlgorithmOID.ECDSA_WITH_SHA256 else (
        crl.signature_algorithm_oid.dotted_string
    )
    lines = [
        "Certificate Revocation List:",
        f"\tIssuer: {profiles.name_text(crl.issuer)}",
        "\tValidity:",
        f"\t\tNot Before: {_go_time(crl.last_update_utc)}",
        f"\t\tNot After: {_go_time(crl.next_update_utc) if crl.next_update_utc else ''}",
        f"\tSignature Algorithm: {algorithm}",
        f"\tSignature: {crl.signature.hex()}",
        "\tRevoked Certificates:",
    ]
    for entry in crl:
        lines.append(f"\t\tSerial: {entry.serial_number}")
        lines.append(f"\t\t\tRevocation Date: {_go_time(entry.revocation_date_utc)}")
        if len(entry.extensions):
            lines.append("\t\t\tExtensions:")
            for ext in entry.extensions:
                if isinstance(ext.value, x509.CRLReason):
                    code = _reason_code(ext.value.reason)
                    lines.append("\t\t\t\tx509v3 Reason Code:" + ("(critical)" if ext.critical else ""))
                    lines.append(f"\t\t\t\t\t {_CRL_READABLE.get(code, '')} - {code}")
                else:
                    lines.append(f"\t\t\t\tUnknown OID {ext.oid.dotted_string}")
    if len(crl.extensions):
        lines.append("\tExtensions:")
        for ext in crl.extensions:
            crit = "(critical)" if ext.critical else ""
            if isinstance(ext.value, x509.AuthorityKeyIdentifier):
                lines += [f"\t\tx509v3 Authority Key Id: {crit}", f"\t\t\t {(ext.value.key_identifier or b'').hex()}"]
            elif isinstance(ext.value, x509.CRLNumber):
                lines += [f"\t\tx509v3 CRL Number: {crit}", f"\t\t\t {ext.value.crl_number}"]
            else:
                lines.append(f"\t\tUnknown OID {ext.oid.dotted_string}")
    return lines


def _reason_code(reason: x509.ReasonFlags) -> int:
    codes = {
        x509.ReasonFlags.unspecified: 0, x509.ReasonFlags.key_compromise: 1, x509.ReasonFlags.ca_compromise: 2,
        x509.ReasonFlags.affiliation_changed: 3, x509.ReasonFlags.superseded: 4,
        x509.ReasonFlags.cessation_of_operation: 5, x509.ReasonFlags.certificate_hold: 6,
        x509.ReasonFlags.remove_from_crl: 8, x509.ReasonFlags.privilege_withdrawn: 9,
        x509.ReasonFlags.aa_compromise: 10,
    }
    return codes[reason]


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
    ctx: typer.Context, action: str, pki_dir: Path, ca_file: List[str], ca_serial: List[str],
    dry_run: bool, pretty: bool, yes: bool, output: Format, hsm_flags: tuple[str | None, str | None, str | None],
) -> None:
    app_ctx = app_context(ctx)
    if not ca_file and not ca_serial:
        raise UsageError("At least one of --ca-file or --ca-serial must be provided")
    for text in ca_serial:
        lifecycle.parse_serial(text)
    if not dry_run:
        app_ctx.require_confirmation_possible(yes, f"{action} of a device CA")
    pki = _pki_dir(pki_dir)
    # Even a dry-run signs its CRL with the root, so it needs the token too.
    signer = load_root_signer(pki.path, hsm=hsm_options.resolve_hsm(app_ctx, *hsm_flags))
    plan, answer = lifecycle.change_device_cas(
        app_ctx.api(), pki, signer, action=action, ca_files=list(ca_file), ca_serials=list(ca_serial),
        dry_run=dry_run, confirm=_confirmer(app_ctx, yes, "Send the CRL?", _crl_lines), progress=app_ctx.terminal.err,
    )
    summary = plan.summary()
    if dry_run:
        if output is Format.json:
            app_ctx.terminal.out(json.dumps(summary, indent=2))
            return
        app_ctx.terminal.out(plan.crl_pem.rstrip("\n"))
        if pretty:
            app_ctx.terminal.out("\n".join(pretty_crl(plan.crl)))
        return
    summary["disabled-ca-serials"] = answer.get("disabled-ca-serials", [])
    _verb, done, _effect = _CRL_WORDS[action]
    text = [f"Device CA(s) {done} in factory {summary['factory']}:"]
    text += _ca_lines("", summary["device_cas"])[1:]
    text.append("Disabled device CA serials now: " + (", ".join(summary["disabled-ca-serials"]) or "none"))
    _emit(app_ctx, output, summary, text)


# The options disable-, enable- and revoke-device-ca share.
CaFiles = Annotated[List[str], typer.Option("--ca-file", help="File name of a device CA in PKI_DIR (repeatable).")]
CaSerials = Annotated[List[str], typer.Option("--ca-serial", help="Base-10 serial of a device CA (repeatable).")]
CrlDryRun = Annotated[bool, typer.Option("--dry-run", help="Print the CRL; send nothing.")]
CrlPretty = Annotated[bool, typer.Option("--pretty", help="With --dry-run: also decode the CRL (fioctl's layout).")]


@app.command("disable-device-ca")
def disable_device_ca(
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
    """Disable device CAs (CRL reason 6): known devices keep working, new devices are refused.

    Reversible with `fioca keys ca enable-device-ca`.

    Examples:

      fioca keys ca disable-device-ca ./pki --ca-file local-ca.pem --dry-run --pretty

      fioca keys ca disable-device-ca ./pki --ca-serial 1234567890 --yes
    """
    _crl_command(
        ctx, "disable", pki_dir, ca_file, ca_serial, dry_run, pretty, yes, output, (hsm_module, hsm_pin, hsm_token_label)
    )


@app.command("enable-device-ca")
def enable_device_ca(
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
    """Re-enable disabled device CAs (CRL reason 8, removeFromCRL). Not in fioctl.

    Example:

      fioca keys ca enable-device-ca ./pki --ca-file local-ca.pem --yes
    """
    _crl_command(
        ctx, "enable", pki_dir, ca_file, ca_serial, dry_run, pretty, yes, output, (hsm_module, hsm_pin, hsm_token_label)
    )


@app.command("revoke-device-ca")
def revoke_device_ca(
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
    """Revoke device CAs (CRL reason 9): permanent; the CA leaves ca-crt and all its devices are refused.

    Examples:

      fioca keys ca revoke-device-ca ./pki --ca-file local-ca.pem --dry-run --pretty

      fioca keys ca revoke-device-ca ./pki --ca-serial 1234567890 --ca-serial 42 --yes
    """
    _crl_command(
        ctx, "revoke", pki_dir, ca_file, ca_serial, dry_run, pretty, yes, output, (hsm_module, hsm_pin, hsm_token_label)
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


@app.command("rotate-tls")
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
    """Rotate the device gateway's TLS certificate (fioctl keys ca rotate-tls).

    POSTs for a new gateway key and CSR, signs it with the root, keeps the old tls-crt as
    tls-crt.bak (.bak.1, ... when a .bak exists), and PATCHes tls-crt. Devices keep
    connecting: they trust the root, not the gateway certificate.

    Example:

      fioca keys ca rotate-tls ./pki --yes
    """
    app_ctx = app_context(ctx)
    app_ctx.require_confirmation_possible(yes, "rotating the gateway TLS certificate")
    pki = _pki_dir(pki_dir)
    hsm = hsm_options.resolve_hsm(app_ctx, hsm_module, hsm_pin, hsm_token_label)
    signer = load_root_signer(pki.path, hsm=hsm)
    result = lifecycle.rotate_tls(
        app_ctx.api(), pki, signer, via=via.value,
        confirm=_confirmer(app_ctx, yes, "Send the new TLS certificate?", _rotate_lines),
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


@app.command()
def sign(
    ctx: typer.Context,
    csr_file: Path = typer.Argument(..., help="PEM certificate signing request."),
    pki_dir: Path = typer.Option(..., "--pki-dir", help="The PKI dir holding factory_ca.key and factory_ca.pem."),
    profile: SignProfile = typer.Option(
        SignProfile.tls, "--profile",
        help="tls: gateway server certificate; ca: device CA. Your choice; never inferred from the CSR.",
    ),
    via: ViaOption = Via.inprocess,
    hsm_module: hsm_options.HsmModule = None,
    hsm_pin: hsm_options.HsmPin = None,
    hsm_token_label: hsm_options.HsmTokenLabel = None,
) -> None:
    """Sign a CSR with the factory root and print the certificate (no API call).

    Unlike fioctl, the profile is chosen by you, not read from the CSR, and a CSR that asks
    for more than the profile grants (CA:TRUE under tls, a path length under ca, other key
    usages, other extensions) is refused.

    Examples:

      fioca keys ca sign --pki-dir ./pki gateway.csr > gateway.pem

      fioca keys ca sign --pki-dir ./pki --profile ca line-3-ca.csr > line-3-ca.pem
    """
    app_ctx = app_context(ctx)
    try:
        csr_pem = csr_file.expanduser().read_bytes()
    except OSError as exc:
        raise FiocaError(f"cannot read {csr_file}: {exc.strerror}") from None
    pki = _pki_dir(pki_dir)
    signer = load_root_signer(pki.path, hsm=hsm_options.resolve_hsm(app_ctx, hsm_module, hsm_pin, hsm_token_label))
    cert = lifecycle.sign_file(signer, csr_pem, profile=profile.value, artifact=str(csr_file), via=via.value)
    app_ctx.terminal.out(profiles.cert_pem(cert).decode("ascii").rstrip("\n"))
