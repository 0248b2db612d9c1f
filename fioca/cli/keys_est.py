"""`fioca keys est show | authorize`: the EST server's TLS certificate (fioctl keys est).

Parse, ask, render; the work is in fioca.pki.lifecycle (`authorize_est`, rotate-tls's twin),
which signs through fioca.pki.signer like every root-signing command. Both are imported inside
the commands: `--help` needs neither cryptography nor requests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from fioca.cli import hsm_options
from fioca.cli.context import Terminal, app_context

# The shared pieces of the root-signing commands (PKI dir, root signer, plan and question).
from fioca.cli.keys_ca_lifecycle import (
    Via,
    ViaOption,
    confirmer,
    open_pki_dir,
    root_signer_for,
)
from fioca.cli.lean import LeanCommand
from fioca.cli.options import Format, ResultFormat, YesWriteAndSend
from fioca.errors import FiocaError

app = typer.Typer()  # its commands make `keys est` in fioca.cli.app

NOT_CONFIGURED = "EST TLS certificate has not been configured for this Factory."


@app.command(cls=LeanCommand, short_help="Show the factory's EST server certificate")
def show(
    ctx: typer.Context,
    pretty: bool = typer.Option(False, "--pretty", help="Each certificate decoded, in fioctl's layout."),
) -> None:
    """Show the TLS certificate the factory's EST server was authorized with (fioctl keys est show).

    \b
    Examples:
      fioca keys est show
      fioca keys est show --pretty
    """
    from fioca.api import NOT_CONFIGURED as PKI_NOT_CONFIGURED
    from fioca.api import NOT_CONFIGURED_HINT, is_configured
    from fioca.cli import fioctl_layout

    app_ctx = app_context(ctx)
    certs = app_ctx.api().get_certs()
    if not is_configured(certs):
        raise FiocaError(PKI_NOT_CONFIGURED, details=[NOT_CONFIGURED_HINT])
    est = certs.body.get("est-tls-crt") or ""
    out = fioctl_layout.Printer()
    if not est:
        out.println(NOT_CONFIGURED)
    elif pretty:
        out.print(fioctl_layout.pretty_certificates(est))
    else:
        out.println(est)
    app_ctx.terminal.write(out.text())


def _authorize_lines(summary: dict[str, Any]) -> list[str]:
    lines = [f"New EST server TLS certificate for factory {summary['factory']}:"]
    for label in ("old", "new"):
        cert = summary[label]
        if cert:
            lines.append(f"  {label}: serial {cert['serial']}  host {', '.join(cert['hosts'])}")
    if summary["new"]:
        lines.append(f"  SHA-256 fingerprint: {summary['new']['fingerprint']}")
    lines.append(f"  files to write (0400): {', '.join(summary['files'])}")
    if summary["moved_aside"]:
        lines.append(f"  files moved aside first (.bak): {', '.join(summary['moved_aside'])}")
    return lines


@app.command(cls=LeanCommand, short_help="Authorize an EST server for the factory (root-signed)")
def authorize(
    ctx: typer.Context,
    pki_dir: Annotated[Path, typer.Argument(metavar="PKI_DIR", help="The PKI dir holding factory_ca.pem and its key.")],
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Check the PKI dir and its root against the factory, and show the plan; send nothing."
    ),
    yes: YesWriteAndSend = False,
    via: ViaOption = Via.script,
    output: ResultFormat = Format.text,
    hsm_module: hsm_options.HsmModule = None,
    hsm_pin: hsm_options.HsmPin = None,
    hsm_token_label: hsm_options.HsmTokenLabel = None,
) -> None:
    """Let Foundries.io run the factory's EST server (<repoid>.est.foundries.io), root-signed.

    As fioctl: the server makes a new private key and TLS certificate signing request (POST
    with est-tls-csr), the Factory's root key signs it as a TLS server certificate for the EST
    host, and the certificate is uploaded (PATCH est-tls-crt). Devices then renew their
    certificates there (RFC 7030), e.g. with `fioca device rotate-cert`.

    Unlike fioctl, the CSR and the certificate are checked and kept in PKI_DIR as est-tls-csr
    and est-tls-crt (0400; older ones as .bak), and the plan is shown before anything is sent.

    \b
    Examples:
      fioca keys est authorize ./pki --dry-run
      fioca keys est authorize ./pki --yes
      fioca keys est show --pretty
    """
    from fioca.pki import lifecycle

    app_ctx = app_context(ctx)
    if not dry_run:
        app_ctx.require_confirmation_possible(yes, "authorizing the EST server")
    pki = open_pki_dir(pki_dir)
    signer = root_signer_for(pki, hsm_options.resolve_hsm(app_ctx, hsm_module, hsm_pin, hsm_token_label))
    result = lifecycle.authorize_est(
        app_ctx.api(), pki, signer, dry_run=dry_run, via=via.value,
        confirm=confirmer(app_ctx, yes, "Write the files and send the new EST certificate?", _authorize_lines),
        progress=app_ctx.terminal.err,
        on_script_stderr=lambda line: app_ctx.terminal.err(f"  {line}"),
    )
    summary = result.summary
    if result.stored:
        summary = {**summary, "files": {path.name: str(path) for path in result.stored}}
    _report_authorized(app_ctx.terminal, summary, dry_run=dry_run, output=output)


def _report_authorized(terminal: Terminal, summary: dict[str, Any], *, dry_run: bool, output: Format) -> None:
    if output is Format.json:
        terminal.out(json.dumps(summary, indent=2))
        return
    if dry_run:
        terminal.out("\n".join(_authorize_lines(summary)))
        terminal.out(
            f"Dry run: would POST {json.dumps(summary['post_body'])}, sign the est-tls-csr with the root and "
            "PATCH est-tls-crt; nothing was sent."
        )
        return
    new = summary["new"]
    terminal.out(new["pem"])  # as fioctl's Println: the PEM, then a blank line
    terminal.err(
        f"Factory {summary['factory']}'s EST server {', '.join(new['hosts'])} now serves est-tls-crt serial {new['serial']}"
    )
