"""`fioca keys ca ...`: parse options, ask, render. The work happens in fioca.pki."""

from __future__ import annotations

import json
from enum import Enum
from importlib import metadata
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from fioca import facts
from fioca.api import NOT_CONFIGURED, is_configured
from fioca.cli import hsm_options, render
from fioca.cli.audit_view import render_text as audit_text
from fioca.cli.context import AppContext, app_context
from fioca.cli.options import Format, yes_option
from fioca.errors import ExitCode, FiocaError, UsageError
from fioca.pki import audit as script_audit
from fioca.pki import files, reference
from fioca.pki.create import RUNNER_JAIL, CreateFlow, CreateOptions, jq_field, known_scripts, read_answer_file
from fioca.pki.journal import WORK_DIR

app = typer.Typer(help="Manage the factory's device-gateway PKI (fioctl keys ca).", no_args_is_help=True)


# `keys ca audit --fail-on`: the audit's own severities, by name.
Level = Enum("Level", {severity.label: severity.label for severity in script_audit.Severity}, type=str)


class CliReporter:
    """create's progress on stderr, as fioctl prints it; the confirmation on the terminal."""

    def __init__(self, app_ctx: AppContext, *, yes: bool):
        self.terminal = app_ctx.terminal
        self.yes = yes

    def progress(self, line: str) -> None:
        self.terminal.err(line)

    def script_stderr(self, script: str, line: str) -> None:
        self.terminal.err(f"  [{script}] {line}")

    def note(self, line: str) -> None:
        self.terminal.err(line)

    def confirm_upload(self, summary: dict) -> bool:
        if self.yes:
            return True
        self.terminal.err(
            f"About to upload to factory {summary['factory']}: {', '.join(summary['patch_fields'])}.\n"
            f"Root of trust SHA-256 fingerprint: {summary['root_fingerprint']}\n"
            "This sets the factory's root of trust, which can be done only once."
        )
        return self.terminal.confirm("Upload?")


def _pins(values: List[str]) -> dict[str, str]:
    pins = {}
    for value in values:
        name, sep, digest = value.partition("=")
        if not sep or name not in facts.SCRIPT_NAMES or len(digest) != 64:
            raise UsageError(f"--expect-sha256 takes NAME=HEX with NAME one of {', '.join(facts.SCRIPT_NAMES)}")
        pins[name] = digest
    return pins


@app.command()
def create(
    ctx: typer.Context,
    pki_dir: Path = typer.Argument(..., help="Folder for the PKI files (made 0700 if missing)."),
    online_ca: bool = typer.Option(True, "--online-ca/--no-online-ca", help="Sign the online device CA's CSR."),
    local_ca: bool = typer.Option(True, "--local-ca/--no-local-ca", help="Create a local (offline) device CA."),
    yes: Annotated[bool, yes_option("Upload")] = False,
    dry_run: bool = typer.Option(
        False, "--dry-run", help="POST for the scripts, save and print them and the plan; run nothing, send no PATCH."
    ),
    from_json: Optional[Path] = typer.Option(
        None, "--from-json", help="With --dry-run: use a saved answer (factory_certs.json); no server at all."
    ),
    allow_unaudited: bool = typer.Option(
        False, "--allow-unaudited", help="Run scripts even when the audit finds high-severity problems."
    ),
    expect_sha256: List[str] = typer.Option(
        [], "--expect-sha256", help="Pin a script: NAME=HEX (repeatable); any other content is refused."
    ),
    script_timeout: float = typer.Option(120.0, "--script-timeout", min=1, help="Kill a script after this many seconds."),
    resume: bool = typer.Option(
        False, "--resume", help="Finish an interrupted create in PKI_DIR: redo only what is missing, upload its root."
    ),
    fresh_csrs: bool = typer.Option(
        False, "--fresh-csrs", help="With --resume: ask the server for new CSRs and sign them with the same root."
    ),
    output: Format = typer.Option(Format.text, "--format", help="Summary as text or JSON."),
    hsm_module: hsm_options.HsmModule = None,
    hsm_pin: hsm_options.HsmPin = None,
    hsm_token_label: hsm_options.HsmTokenLabel = None,
) -> None:
    """Create the factory PKI by running the server's scripts, as `fioctl keys ca create` does.

    Steps: GET certs/ (refuse a configured factory), POST certs/ and save the answer as
    PKI_DIR/factory_certs.json, audit the scripts, run create_ca, sign_tls_csr, sign_ca_csr and
    create_device_ca with `sh` in a private work dir, check every artifact, keep them in PKI_DIR
    (0400), then PATCH root-crt, tls-crt and ca-crt. The root of trust can be set only once.

    Examples:

      fioca keys ca create ./pki

      fioca keys ca create ./pki --dry-run          # see the scripts and the plan first

      fioca keys ca create ./pki --no-local-ca --yes

      fioca keys ca create ./pki --resume            # finish a run that stopped halfway
    """
    app_ctx = app_context(ctx)
    if from_json and not dry_run:
        raise UsageError("--from-json goes with --dry-run")
    if resume and dry_run:
        raise UsageError("--resume and --dry-run do not go together")
    if fresh_csrs and not resume:
        raise UsageError("--fresh-csrs goes with --resume")
    # A dry-run never touches the token, so it needs no PIN.
    hsm = hsm_options.resolve_hsm(app_ctx, hsm_module, hsm_pin, hsm_token_label, need_pin=not dry_run)
    options = CreateOptions(
        online_ca=online_ca,
        local_ca=local_ca,
        dry_run=dry_run,
        allow_unaudited=allow_unaudited,
        expected_sha256=_pins(expect_sha256),
        script_timeout=script_timeout,
        resume=resume,
        fresh_csrs=fresh_csrs,
        hsm=hsm,
    )
    if not dry_run:
        app_ctx.require_confirmation_possible(yes, "uploading the root of trust")
    reporter = CliReporter(app_ctx, yes=yes)
    pki = files.PkiDir(pki_dir.expanduser())
    if from_json:
        flow = CreateFlow(None, pki, options, reporter)
        result = flow.dry_run_saved(from_json.expanduser(), factory=app_ctx.settings.factory)
    else:
        flow = CreateFlow(app_ctx.api(), pki, options, reporter)
        result = flow.run()
    if result.dry_run:
        plan = result.plan.describe(pki / WORK_DIR, pki.path)  # where a real run works
        plan["hsm_settings"] = hsm_options.describe(hsm)
        worst = result.audit.max_severity
        audit_line = f"Audit: highest finding {worst.name.lower() if worst is not None else 'none'} (`fioca keys ca audit` for details)"
        if output is Format.json:
            app_ctx.terminal.out(
                json.dumps({"scripts": result.answer.scripts, "plan": plan, "audit": result.audit.to_dict()}, indent=2)
            )
        else:
            app_ctx.terminal.out(render.dry_run_text(result.answer.scripts, plan, audit_line))
        return
    summary = render.create_summary(result, hsm)
    if output is Format.json:
        app_ctx.terminal.out(json.dumps(summary, indent=2))
    else:
        app_ctx.terminal.out(render.create_summary_text(summary, hsm))


@app.command()
def show(
    ctx: typer.Context,
    pretty: bool = typer.Option(False, "--pretty", help="Decode each certificate, as fioctl --pretty does."),
    just_root: bool = typer.Option(False, "--just-root", help="Only the factory root certificate."),
    just_tls: bool = typer.Option(False, "--just-tls", help="Only the device gateway's TLS certificate."),
    just_device_cas: bool = typer.Option(False, "--just-device-cas", help="Only the device CA bundle."),
    output: Format = typer.Option(Format.text, "--format", help="text (fioctl's layout) or json (the API's object)."),
) -> None:
    """Show the factory's PKI certificates.

    Examples:

      fioca keys ca show --pretty

      fioca keys ca show --just-root > factory_ca.pem
    """
    chosen = [name for name, flag in (("root", just_root), ("tls", just_tls), ("device-cas", just_device_cas)) if flag]
    if len(chosen) > 1:
        raise UsageError("Only one of --just-root, --just-tls and --just-device-cas may be given")
    app_ctx = app_context(ctx)
    certs = app_ctx.api().get_certs()
    if not is_configured(certs):
        raise FiocaError(NOT_CONFIGURED)
    if output is Format.json:
        app_ctx.terminal.out(json.dumps(certs.body, indent=2))
        return
    app_ctx.terminal.out(render.show_text(certs.body, pretty=pretty, just=chosen[0] if chosen else None))


@app.command()
def extract(
    ctx: typer.Context,
    field: str = typer.Argument(..., help="A field of the answer, e.g. create_ca, tls-csr, ca-csr."),
    file: Path = typer.Option(Path(facts.FACTORY_CERTS_JSON), "--file", help="The saved answer."),
) -> None:
    """Print one field of factory_certs.json, as `jq -r .FIELD` does.

    Example:

      fioca keys ca extract create_ca --file pki/factory_certs.json
    """
    _, data = read_answer_file(file)
    value = jq_field(data, field)
    app_context(ctx).terminal.out(value if isinstance(value, str) else json.dumps(value, indent=2))


class AuditFormat(str, Enum):
    """`keys ca audit --format`: text for people, JSON for scripts, SARIF for code scanners."""

    text = "text"
    json = "json"
    sarif = "sarif"


@app.command()
def audit(
    ctx: typer.Context,
    file: Path = typer.Argument(Path(facts.FACTORY_CERTS_JSON), help="The saved answer (factory_certs.json)."),
    output: AuditFormat = typer.Option(AuditFormat.text, "--format", help="text, json, or sarif (SARIF 2.1.0)."),
    fail_on: Level = typer.Option(Level.high, "--fail-on", help="Exit non-zero on a finding at or above this."),
    hsm: bool = typer.Option(False, "--hsm", help="Audit as a run with the root key on an HSM would use the scripts."),
) -> None:
    """Report what every script in a saved answer does, and what in it is dangerous.

    Examples:

      fioca keys ca audit pki/factory_certs.json

      fioca keys ca audit pki/factory_certs.json --format json --fail-on medium

      fioca keys ca audit pki/factory_certs.json --format sarif > audit.sarif
    """
    app_ctx = app_context(ctx)
    _, data = read_answer_file(file)
    scripts = {name: data[name] for name in facts.SCRIPT_NAMES if name in data and data[name] is not None}
    if not scripts:
        raise FiocaError(f"{file} holds no scripts to audit")
    inferred = reference.infer_values({k: v for k, v in scripts.items() if isinstance(v, str)})
    if inferred is None:
        factory = app_ctx.options.get("factory") or "<factory>"
        inferred = (factory, "fio-<user id>")
    known = known_scripts(factory=inferred[0], local_ca_cn=inferred[1])
    report = script_audit.audit_scripts(scripts, hsm=hsm, known=known, jail=RUNNER_JAIL)
    if output is AuditFormat.json:
        app_ctx.terminal.out(json.dumps(report.to_dict(), indent=2))
    elif output is AuditFormat.sarif:
        app_ctx.terminal.out(json.dumps(report.to_sarif(tool_version=metadata.version("fioca")), indent=2))
    else:
        app_ctx.terminal.out(audit_text(report))
    if report.failing(script_audit.Severity.parse(fail_on.value)):
        raise typer.Exit(int(ExitCode.REFUSED))
