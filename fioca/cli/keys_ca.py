"""`fioca keys ca create | show | extract | audit`: parse options, ask, render. The work
happens in fioca.pki.

The modules that do the work (requests, cryptography, the audit) are imported inside each
command, so that `--help` and the commands that need none of them start at once.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fioca import facts
from fioca.cli import hsm_options, loading
from fioca.cli.context import AppContext, app_context
from fioca.cli.lean import LeanCommand
from fioca.cli.options import Format, yes_option
from fioca.errors import ExitCode, FiocaError, UsageError
from fioca.pki.audit.report import Severity
from fioca.text import quote_path

if TYPE_CHECKING:
    from fioca.pki.create import CreateResult

app = typer.Typer()  # its commands join `keys ca` in fioca.cli.app


# `keys ca audit --fail-on`: the audit's own severities, by name (the report model is light).
Level = Enum("Level", {severity.label: severity.label for severity in Severity}, type=str)


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
        return self.terminal.confirm(
            "Upload?",
            details=[
                f"About to upload to factory {summary['factory']}: {', '.join(summary['patch_fields'])}.",
                f"Root of trust SHA-256 fingerprint: {summary['root_fingerprint']}",
                "This sets the factory's root of trust, which can be done only once.",
            ],
        )


def _pins(values: list[str]) -> dict[str, str]:
    pins = {}
    for value in values:
        name, sep, digest = value.partition("=")
        if not sep or name not in facts.SCRIPT_NAMES or len(digest) != 64:
            raise UsageError(f"--expect-sha256 takes NAME=HEX with NAME one of {', '.join(facts.SCRIPT_NAMES)}")
        pins[name] = digest
    return pins


# create's options, declared apart so that the command reads as what it does.
PkiDirArgument = Annotated[
    Path, typer.Argument(metavar="PKI_DIR", help="Folder for the PKI files (made 0700 if missing).")
]
OnlineCa = Annotated[bool, typer.Option(
    "--online-ca/--no-online-ca", help="Also a device CA whose key Foundries.io holds: lmp-device-register's devices get certificates from it.",
)]
LocalCa = Annotated[bool, typer.Option(
    "--local-ca/--no-local-ca", help="Also a device CA whose key stays in PKI_DIR, to sign device certificates yourself.",
)]
DryRun = Annotated[bool, typer.Option(
    "--dry-run", help="POST for the scripts, save and print them and the plan; run nothing, send no PATCH.",
)]
FromJson = Annotated[Path | None, typer.Option(
    "--from-json", metavar="FILE", help="With --dry-run: use a saved answer (factory_certs.json); no server at all.",
)]
AllowUnaudited = Annotated[bool, typer.Option(
    "--allow-unaudited", help="Run scripts even when the audit finds high-severity problems.",
)]
ExpectSha256 = Annotated[list[str], typer.Option(
    "--expect-sha256", metavar="NAME=HEX", help="Pin a script (repeatable); any other content is refused.",
    show_default=False,
)]
ScriptTimeout = Annotated[float, typer.Option(
    "--script-timeout", min=1, metavar="SECONDS", help="Kill a script after this many seconds.",
)]
Resume = Annotated[bool, typer.Option(
    "--resume", help="Finish an interrupted create in PKI_DIR: redo only what is missing, upload its root.",
)]
FreshCsrs = Annotated[bool, typer.Option(
    "--fresh-csrs", help="With --resume: ask the server for new CSRs and sign them with the same root.",
)]
Reissue = Annotated[bool, typer.Option(
    "--reissue", help="Upload in-process re-issues of what the scripts made (fresh serials and signatures by the root).",
)]
NoJail = Annotated[bool, typer.Option(
    "--no-jail", help="Run the scripts without bubblewrap: no containment at all (a warning, journalled).",
)]
SummaryFormat = Annotated[Format, typer.Option("--format", help="Summary as text or JSON.")]


@app.command(cls=LeanCommand, short_help="Create the factory PKI (its root is set only once)")
def create(
    ctx: typer.Context,
    pki_dir: PkiDirArgument,
    online_ca: OnlineCa = True,
    local_ca: LocalCa = True,
    yes: Annotated[bool, yes_option("Upload")] = False,
    dry_run: DryRun = False,
    from_json: FromJson = None,
    allow_unaudited: AllowUnaudited = False,
    expect_sha256: ExpectSha256 = [],  # noqa: B006 - Typer's way to default a repeatable option
    script_timeout: ScriptTimeout = 120.0,
    resume: Resume = False,
    fresh_csrs: FreshCsrs = False,
    reissue: Reissue = False,
    no_jail: NoJail = False,
    output: SummaryFormat = Format.text,
    hsm_module: hsm_options.HsmModule = None,
    hsm_pin: hsm_options.HsmPin = None,
    hsm_token_label: hsm_options.HsmTokenLabel = None,
) -> None:
    """Create the factory PKI by running the server's scripts, as `fioctl keys ca create` does.

    Steps: GET certs/ (refuse a configured factory), POST certs/ and save the answer as
    PKI_DIR/factory_certs.json, audit the scripts, run create_ca, sign_tls_csr, sign_ca_csr and
    create_device_ca with `sh` in a bubblewrap jail, each in a fresh work dir; check what each
    made against what its text asked and the trust rules and keep it in PKI_DIR (0400); check
    the stored files whole, then PATCH root-crt, tls-crt and ca-crt. The root of trust can be
    set only once.

    \b
    Examples:
      fioca keys ca create ./pki --dry-run     # the scripts and the plan, first
      fioca keys ca create ./pki
      fioca keys ca create ./pki --online-ca=false --yes
      fioca keys ca create ./pki --resume      # finish a run that stopped halfway
    """
    # On the other core while the flow below loads: the TLS trust store, bwrap and the loader.
    if not from_json:
        from fioca import http_trust

        http_trust.load_soon()
    if not (dry_run or no_jail):
        from fioca.pki import jail as jails

        jails.probe_soon()

    with loading():
        from fioca.pki import create as flow

    app_ctx = app_context(ctx)
    _refuse_combinations(dry_run=dry_run, from_json=from_json, resume=resume, fresh_csrs=fresh_csrs)
    # A dry-run never touches the token, so it needs no PIN.
    hsm = hsm_options.resolve_hsm(app_ctx, hsm_module, hsm_pin, hsm_token_label, need_pin=not dry_run)
    options = flow.CreateOptions(
        online_ca=online_ca, local_ca=local_ca, dry_run=dry_run, allow_unaudited=allow_unaudited,
        expected_sha256=_pins(expect_sha256), script_timeout=script_timeout, resume=resume,
        fresh_csrs=fresh_csrs, hsm=hsm, no_jail=no_jail, reissue=reissue,
    )
    if not dry_run:
        app_ctx.require_confirmation_possible(yes, "uploading the root of trust")
    reporter = CliReporter(app_ctx, yes=yes)
    path = pki_dir.expanduser()
    if from_json:
        result = flow.dry_run_saved(from_json.expanduser(), options, reporter, factory=app_ctx.settings.factory)
    else:
        result = flow.create(app_ctx.api(), path, options, reporter)
    if result.dry_run:
        _print_dry_run(app_ctx, result, path, hsm, output)
    else:
        _print_summary(app_ctx, result, hsm, output)


def _refuse_combinations(*, dry_run: bool, from_json: Path | None, resume: bool, fresh_csrs: bool) -> None:
    if from_json and not dry_run:
        raise UsageError("--from-json goes with --dry-run")
    if resume and dry_run:
        raise UsageError("--resume and --dry-run do not go together")
    if fresh_csrs and not resume:
        raise UsageError("--fresh-csrs goes with --resume")


def _print_summary(app_ctx: AppContext, result: CreateResult, hsm, output: Format) -> None:
    from fioca.cli import render

    summary = render.create_summary(result, hsm)
    if output is Format.json:
        app_ctx.terminal.out(json.dumps(summary, indent=2))
    else:
        app_ctx.terminal.out(render.create_summary_text(summary, hsm))


def _print_dry_run(app_ctx: AppContext, result: CreateResult, path: Path, hsm, output: Format) -> None:
    from fioca.cli import render

    plan = result.plan.describe(pki_dir=str(path), jail=result.jail, side_by_side=result.side_by_side)
    plan["hsm_settings"] = hsm_options.describe(hsm)
    worst = result.audit.max_severity
    audit_line = f"Audit: highest finding {worst.name.lower() if worst is not None else 'none'} (`fioca keys ca audit` for details)"
    if output is Format.json:
        app_ctx.terminal.out(
            json.dumps({"scripts": result.answer.scripts, "plan": plan, "audit": result.audit.to_dict()}, indent=2)
        )
    else:
        app_ctx.terminal.out(render.dry_run_text(result.answer.scripts, plan, audit_line))


@app.command(cls=LeanCommand, short_help="Show the factory's certificates, as the API has them")
def show(
    ctx: typer.Context,
    pretty: bool = typer.Option(False, "--pretty", help="Each certificate decoded, in fioctl's layout."),
    just_root: bool = typer.Option(False, "--just-root", help="Only the Factory root CA certificate (PEM)."),
    just_tls: bool = typer.Option(False, "--just-tls", help="Only the device-gateway TLS certificate (PEM)."),
    just_device_cas: bool = typer.Option(
        False, "--just-device-cas",
        help="Only the device CAs the device gateway trusts (PEM, as `update` takes it; disabled serials on stderr).",
    ),
    output: Format = typer.Option(Format.text, "--format", help="text (fioctl's layout) or json (the API's object)."),
) -> None:
    """Show the factory's certificates, as the API has them (fioctl keys ca show).

    \b
    Examples:
      fioca keys ca show
      fioca keys ca show --pretty
      fioca keys ca show --just-root > factory_ca.pem
      fioca keys ca show --just-device-cas > cas.pem     # update takes it back
    """
    from fioca.api import NOT_CONFIGURED, NOT_CONFIGURED_HINT, is_configured
    from fioca.cli import fioctl_layout

    chosen = [name for name, flag in (("root", just_root), ("tls", just_tls), ("device-cas", just_device_cas)) if flag]
    if len(chosen) > 1:
        raise UsageError(f"--just-{chosen[0]} and --just-{chosen[1]} are mutually exclusive")
    app_ctx = app_context(ctx)
    certs = app_ctx.api().get_certs()
    if not is_configured(certs):
        raise FiocaError(NOT_CONFIGURED, details=[NOT_CONFIGURED_HINT])
    if output is Format.json:
        app_ctx.terminal.out(json.dumps(certs.body, indent=2))
        return
    stdout, stderr = fioctl_layout.show(certs.body, pretty=pretty, just=chosen[0] if chosen else None)
    app_ctx.terminal.write(stdout)
    if stderr:
        app_ctx.terminal.write(stderr, err=True)


@app.command(cls=LeanCommand, short_help="Print a field of factory_certs.json, as jq -r")
def extract(
    ctx: typer.Context,
    jq_filter: str = typer.Argument(
        ..., metavar="FIELD_OR_FILTER",
        help="A field of the answer (create_ca, tls-csr, ca-csr) or any jq filter (.create_ca, keys).",
    ),
    file: Path = typer.Option(Path(facts.FACTORY_CERTS_JSON), "--file", metavar="FILE", help="The saved answer."),
) -> None:
    """Print a field of factory_certs.json, or what any jq filter gives, as `jq -r` does.

    A plain name is that field (`tls-csr` is `.["tls-csr"]`) unless it names one of jq's
    builtins the answer has no field for (`keys`); anything else is a jq filter. Strings print
    as their text, other values as jq's JSON, one result per line.

    \b
    Examples:
      fioca keys ca extract create_ca --file pki/factory_certs.json > create_ca
      fioca keys ca extract '.["tls-csr"]' --file pki/factory_certs.json
      fioca keys ca extract keys --file pki/factory_certs.json
    """
    from fioca import jq_text

    path = file.expanduser()
    try:
        document = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FiocaError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FiocaError(f"cannot read {path}: {getattr(exc, 'strerror', None) or 'not UTF-8 text'}") from None
    try:
        fields = json.loads(document)
    except ValueError:
        raise FiocaError(f"{path} is not JSON") from None
    terminal = app_context(ctx).terminal
    for line in jq_text.run(jq_text.as_filter(jq_filter, fields), document, source=str(path)):
        terminal.out_data(line)


class AuditFormat(str, Enum):
    """`keys ca audit --format`: text for people, JSON for scripts, SARIF for code scanners."""

    text = "text"
    json = "json"
    sarif = "sarif"


@app.command(cls=LeanCommand, short_help="What each script of an answer does, and its risks")
def audit(
    ctx: typer.Context,
    file: Path = typer.Argument(Path(facts.FACTORY_CERTS_JSON), help="The saved answer (factory_certs.json)."),
    output: AuditFormat = typer.Option(AuditFormat.text, "--format", help="text, json, or sarif (SARIF 2.1.0)."),
    fail_on: Level = typer.Option(Level.high, "--fail-on", help="Exit non-zero on a finding at or above this."),
    hsm: bool = typer.Option(False, "--hsm", help="Audit as a run with the root key on an HSM would use the scripts."),
) -> None:
    """Report what every script in a saved answer does, and what in it is dangerous.

    \b
    Examples:
      fioca keys ca audit pki/factory_certs.json
      fioca keys ca audit pki/factory_certs.json --format json --fail-on medium
      fioca keys ca audit pki/factory_certs.json --format sarif > audit.sarif
    """
    from importlib import metadata

    from fioca.cli.audit_view import render_text as audit_text
    from fioca.pki import audit as script_audit
    from fioca.pki import jail as jails
    from fioca.pki import reference
    from fioca.pki.create import read_answer_file

    app_ctx = app_context(ctx)
    _, data = read_answer_file(file)
    scripts = {name: data[name] for name in facts.SCRIPT_NAMES if name in data and data[name] is not None}
    if not scripts:
        # Today's API sends none: create runs fioca's own, so those are what there is to audit.
        app_ctx.terminal.err(f"{quote_path(file)} carries no scripts: auditing fioca's bundled scripts, which create runs then")
        scripts = reference.bundled()
    inferred = reference.infer_values({k: v for k, v in scripts.items() if isinstance(v, str)})
    if inferred is None:
        factory = app_ctx.options.get("factory") or "<factory>"
        inferred = (factory, "fio-<user id>")
    known = reference.known_sets(factory=inferred[0], local_ca_cn=inferred[1])
    report = script_audit.audit_scripts(scripts, hsm=hsm, known=known, jail=jails.describe())
    if output is AuditFormat.json:
        app_ctx.terminal.out(json.dumps(report.to_dict(), indent=2))
    elif output is AuditFormat.sarif:
        app_ctx.terminal.out(json.dumps(report.to_sarif(tool_version=metadata.version("fioca")), indent=2))
    else:
        app_ctx.terminal.out(audit_text(report))
    if report.failing(script_audit.Severity.parse(fail_on.value)):
        raise typer.Exit(int(ExitCode.REFUSED))
