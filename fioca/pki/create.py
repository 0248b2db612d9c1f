"""`keys ca create`: the documented "behind the scenes" flow.

    start    fresh: refuse a configured factory (GET certs/), POST certs/, save the answer
             as factory_certs.json with its CSRs and scripts; resumed: the journal and the
             answer the first run saved (or, with --fresh-csrs, new CSRs)
    audit    judge every script before any of them runs
    run      each script in the jail, in a fresh work dir of its own given only what it needs
             (the steps after create_ca side by side, without an HSM); what it made is taken
             (regular files, no links, bounded), checked against what its text asked openssl
             for and against the trust rules, kept in the PKI dir (0400) and journalled, in
             the plan's order
    verify   the files to upload read back from the PKI dir and checked whole
    upload   after confirmation, PATCH root-crt, tls-crt and ca-crt

`create()` decides fresh or resumed once (`Start`), then runs the same straight pipeline.
Every finished step is journalled (journal.py): after a failure, `--resume` redoes only what
is missing and uploads the root made the first time; it never makes a second one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from fioca import facts, interrupts, shapes
from fioca.api import FactoryApi, is_configured
from fioca.errors import ApiError, CheckError, FiocaError, Interrupted, RefusedError
from fioca.pki import audit, hsm, profiles, reference
from fioca.pki import jail as jails
from fioca.pki.audit import parser as audit_parser
from fioca.pki.asked import AskedCertificate, with_environment
from fioca.pki.files import PkiDir
from fioca.pki.hsm import HsmSettings
from fioca.pki.journal import Journal
from fioca.pki.plan import UPLOADING, CreatePlan, ScriptStep, plan_create
from fioca.pki.scripts import ScriptLimits, ScriptRunner
from fioca.pki.step_runs import StepRun


class Reporter(Protocol):
    """How the flow talks to the user; the CLI implements it, tests replace it."""

    def progress(self, line: str) -> None: ...
    def script_stderr(self, script: str, line: str) -> None: ...
    def note(self, line: str) -> None: ...
    def confirm_upload(self, summary: dict) -> bool: ...


@dataclass
class CreateOptions:
    online_ca: bool = True
    local_ca: bool = True
    dry_run: bool = False
    allow_unaudited: bool = False
    expected_sha256: dict[str, str] = field(default_factory=dict)
    script_timeout: float = ScriptLimits.timeout
    resume: bool = False
    fresh_csrs: bool = False  # with resume: the server no longer takes the first run's CSRs
    hsm: HsmSettings | None = None  # the root key on a PKCS#11 token (no factory_ca.key)
    no_jail: bool = False  # run the scripts without bubblewrap (a warning, journalled)
    reissue: bool = False  # keep in-process re-issues of what the scripts made (fresh serials)


@dataclass(frozen=True)
class ServerAnswer:
    """The POST answer: its bytes as saved, and the parts create uses."""

    raw: bytes
    data: dict[str, Any]
    scripts: dict[str, str]
    scripts_from_server: bool
    factory: str
    local_ca_cn: str
    csrs: dict[str, str]


@dataclass
class Start:
    """What "fresh or resumed" decides, once: the plan, the answer and the journal."""

    plan: CreatePlan
    answer: ServerAnswer
    journal: Journal | None  # None for a dry-run


@dataclass
class CreateResult:
    plan: CreatePlan
    answer: ServerAnswer
    audit: audit.AuditReport
    jail: str  # the jail the scripts ran in, or a real run would use (a dry-run)
    dry_run: bool
    side_by_side: bool = False  # the steps after create_ca run side by side (CreatePlan.side_by_side)
    patch_body: dict[str, str] = field(default_factory=dict)
    root_fingerprint: str = ""
    gateway_hosts: list[str] = field(default_factory=list)
    stored: list[Path] = field(default_factory=list)


def create(api: FactoryApi, path: Path, options: CreateOptions, reporter: Reporter) -> CreateResult:
    """The whole flow for PKI dir `path`: dry-run or real, fresh or resumed."""
    jail = None if options.dry_run else real_jail(options)
    jail_text = jail.describe() if jail is not None else jails.describe(no_jail=options.no_jail)
    if not options.resume:
        _refuse_existing_pki(path)
        if options.hsm is not None and not options.dry_run:
            hsm.check_ready_for_new_root(options.hsm)  # a wrong PIN or a used token: before anything
        _refuse_configured_factory(api)  # before anything is written, even the PKI dir
    if options.resume and not path.is_dir():
        raise RefusedError(f"nothing to resume in {path}: it does not exist")
    pki, notes = PkiDir.prepare(path) if not options.resume else (PkiDir.open(path), [])
    for note in notes:
        reporter.note(note)
    with pki, pki.locked():
        start = _resumed(api, pki, options, reporter) if options.resume else _fresh(api, pki, options, reporter)
        report = audit_gate(start, options, jail_text, reporter)
        result = CreateResult(start.plan, start.answer, report, jail_text, dry_run=options.dry_run,
                              side_by_side=start.plan.side_by_side(jailed=not options.no_jail))  # fmt: skip
        if options.dry_run:
            return result
        if start.journal is None:
            start.journal = begin(pki, start, options)
        with _interrupts_said(pki, start.journal, options):
            Steps(pki, start, report, jail, options, reporter).run_all()
            result.stored = [pki / name for name in start.plan.kept]
            result.patch_body = verified_patch_body(pki, start, report)
            root = profiles.load_cert(result.patch_body["root-crt"], facts.ROOT_CERT)
            tls = profiles.load_cert(result.patch_body["tls-crt"], facts.TLS_CERT)
            result.root_fingerprint = profiles.fingerprint_sha256(root)
            result.gateway_hosts = profiles.gateway_hosts(tls)
            Upload(api, pki, options, reporter).run(result)
        start.journal.finish()
        return result


@contextmanager
def _interrupts_said(pki: PkiDir, journal: Journal, options: CreateOptions) -> Iterator[None]:
    """Ctrl-C once the journal exists: one line saying what state it left and what to run next.
    (An error that comes out of an interrupted check is the interrupt, not a fault in the data.)"""
    try:
        yield
    except BaseException as exc:
        if not (isinstance(exc, KeyboardInterrupt) or interrupts.received()):
            raise
        if not journal.steps:
            kept = "no key was made"
        elif options.hsm is not None:
            kept = f"the root key is on HSM token '{options.hsm.token_label}'"
        else:
            kept = f"the root key is kept in {pki / facts.ROOT_KEY}"
        raise Interrupted(
            f"Interrupted ({journal.progress()}); {kept}, and the journal {pki / facts.JOURNAL_FILE} says what is "
            f"done; whether or not an upload was under way, finish with: fioca keys ca create {pki.path} --resume"
        ) from None


def dry_run_saved(path: Path, options: CreateOptions, reporter: Reporter, *, factory: str | None) -> CreateResult:
    """The dry-run from a saved answer (factory_certs.json): no server, nothing written."""
    raw, data = read_answer_file(path)
    scripts = {name: data[name] for name in facts.SCRIPT_NAMES if isinstance(data.get(name), str)}
    inferred = reference.infer_values(scripts)
    if inferred and factory not in (None, inferred[0]):
        inferred = None
    if not inferred and not factory:
        raise RefusedError(f"cannot tell which factory {path} is for: pass -f/--factory")
    factory_name, cn = inferred or (factory, "fio-polis-id")
    plan = plan_create(online_ca=options.online_ca, local_ca=options.local_ca, hsm=options.hsm is not None)
    answer = answer_from(data, raw, factory=factory_name, local_ca_cn=cn, on_note=reporter.note)
    check_csrs(answer, plan)
    jail = jails.describe(no_jail=options.no_jail)
    start = Start(plan, answer, None)
    report = audit_gate(start, options, jail, reporter)
    return CreateResult(plan, answer, report, jail, dry_run=True, side_by_side=plan.side_by_side(jailed=not options.no_jail))


def real_jail(options: CreateOptions) -> jails.Jail:
    """The jail a real run uses: no jail, no scripts (a dry-run only describes it, so a machine
    without bubblewrap can still read the scripts and the plan, and learns why)."""
    jail = jails.require(no_jail=options.no_jail)
    if options.hsm is not None and jail.contained:
        jails.hsm_layout(options.hsm.script_env())  # the module's files, before anything is sent
    return jail


# --- Start: fresh or resumed -------------------------------------------------------------------


def _refuse_existing_pki(path: Path) -> None:
    """A new root goes only into a folder that holds no root and no unfinished create."""
    if not path.exists():
        return
    with PkiDir.open(path) as pki:
        if pki.has(facts.JOURNAL_FILE):
            journal = Journal.load(pki)
            raise RefusedError(
                f"{path} holds an unfinished `keys ca create` ({journal.progress()}); "
                f"finish it with: fioca keys ca create {path} --resume"
            )
        for name in (facts.ROOT_KEY, facts.ROOT_CERT):
            if pki.has(name):
                raise RefusedError(
                    f"{path} already holds a root of trust ({name}); the root can be set only once; use another directory"
                )


def _refuse_configured_factory(api: FactoryApi) -> None:
    certs = api.get_certs()
    if is_configured(certs):
        raise RefusedError(
            f"factory '{api.factory}' already has a root of trust (GET {api.certs_url} -> {certs.status}); "
            "the root can be set only once; nothing was written"
        )


def _fresh(api: FactoryApi, pki: PkiDir, options: CreateOptions, reporter: Reporter) -> Start:
    _refuse_existing_pki(pki.path)  # again under the lock: another run may have made one
    plan = plan_create(online_ca=options.online_ca, local_ca=options.local_ca, hsm=options.hsm is not None)
    resp = api.post_certs(post_body(plan))
    data = parse_answer(resp.raw)
    # As the documented flow does first (`... | jq . > factory_certs.json`): kept for the
    # record even when what follows refuses it.
    saved = save_answer(pki, data)
    reporter.note(f"Saved the server's answer as {saved}")
    polis = shapes.polis_id(api.users_self()["polis-id"], f"GET {api.url('users/self/')}")
    answer = answer_from(data, resp.raw, factory=api.factory, local_ca_cn=shapes.local_ca_cn(polis), on_note=reporter.note)
    check_csrs(answer, plan)
    return Start(plan, answer, None)


def begin(pki: PkiDir, start: Start, options: CreateOptions) -> Journal:
    """A fresh run about to run scripts: the journal, then the answer's parts beside it (a run
    that dies in between is resumed, and the resumed run writes what is missing)."""
    journal = Journal.begin(
        pki,
        factory=start.answer.factory,
        online_ca=start.plan.online_ca,
        local_ca=start.plan.local_ca,
        hsm=start.plan.hsm,
        local_ca_cn=start.answer.local_ca_cn,
        answer_sha256=hashlib.sha256(answer_file_bytes(start.answer.data)).hexdigest(),
        no_jail=options.no_jail,
        reissue=options.reissue,
    )
    save_parts(pki, start.answer, start.plan.saved)
    return journal


def _resumed(api: FactoryApi, pki: PkiDir, options: CreateOptions, reporter: Reporter) -> Start:
    """The first run's plan and answer, from the journal read under the lock."""
    if not pki.has(facts.JOURNAL_FILE):
        raise RefusedError(f"nothing to resume in {pki.path}: it holds no unfinished `keys ca create`")
    journal = Journal.load(pki)
    if journal.factory != api.factory:
        raise RefusedError(f"the unfinished create in {pki.path} is for factory '{journal.factory}', not '{api.factory}'")
    if journal.hsm != (options.hsm is not None):
        where = "on an HSM: pass the same --hsm-module and --hsm-token-label" if journal.hsm else "in a file: drop the HSM flags"
        raise RefusedError(f"the unfinished create in {pki.path} keeps its root key {where}")
    if (journal.no_jail, journal.reissue) != (options.no_jail, options.reissue):
        raise RefusedError(
            f"the unfinished create in {pki.path} was started "
            f"{'with' if journal.no_jail else 'without'} --no-jail and {'with' if journal.reissue else 'without'} "
            "--reissue; resume it with the same choices"
        )
    plan = plan_create(online_ca=journal.online_ca, local_ca=journal.local_ca, hsm=journal.hsm)
    reporter.note(f"Resuming the create in {pki.path} ({journal.progress()})")
    if options.fresh_csrs:
        return Start(plan, _fresh_csrs(api, pki, plan, journal, reporter), journal)
    raw = pki.read_bytes(facts.FACTORY_CERTS_JSON)
    if hashlib.sha256(raw).hexdigest() != journal.answer_sha256:
        raise RefusedError(f"{pki / facts.FACTORY_CERTS_JSON} changed since the first run; cannot resume safely")
    answer = answer_from(parse_answer(raw), raw, factory=journal.factory, local_ca_cn=journal.local_ca_cn)
    check_csrs(answer, plan)
    save_parts(pki, answer, plan.saved)  # what a run that died while saving them left out
    return Start(plan, answer, journal)


def _fresh_csrs(api: FactoryApi, pki: PkiDir, plan: CreatePlan, journal: Journal, reporter: Reporter) -> ServerAnswer:
    """--resume --fresh-csrs: new CSRs from the server, signed with the root made the first
    time. What the first run's signing steps made is kept aside as *.stale."""
    resp = api.post_certs(post_body(plan))
    answer = answer_from(
        parse_answer(resp.raw), resp.raw, factory=journal.factory, local_ca_cn=journal.local_ca_cn, on_note=reporter.note
    )
    check_csrs(answer, plan)
    signing = [step for step in plan.steps if step.script in (facts.SIGN_TLS_CSR, facts.SIGN_CA_CSR)]
    for name in (arg for step in signing for arg in (*step.args, *step.products)):
        if pki.has(name):
            pki.move_aside(name, ".stale")
    reporter.note(f"Saved the server's new answer as {save_answer(pki, answer.data)}")
    save_parts(pki, answer, [arg for step in signing for arg in step.args])
    digest = hashlib.sha256(answer_file_bytes(answer.data)).hexdigest()
    journal.restart_steps([step.script for step in signing], answer_sha256=digest)
    return answer


def post_body(plan: CreatePlan) -> dict[str, bool]:
    """Today's POST body; script-era servers ignore it and send what they always sent."""
    return {"first-time-init": True, "ca-csr": plan.online_ca, "est-tls-csr": False, "tls-csr": True}


# --- The answer ------------------------------------------------------------------------------


def parse_answer(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError("the POST answer is not JSON; nothing was run") from None
    if not isinstance(data, dict):
        raise ApiError("the POST answer is not a JSON object; nothing was run")
    return data


def read_answer_file(path: Path) -> tuple[bytes, dict[str, Any]]:
    """A saved answer (factory_certs.json): its bytes and its JSON object."""
    try:
        raw = Path(path).expanduser().read_bytes()
        data = json.loads(raw)
    except FileNotFoundError:
        raise FiocaError(f"{path} does not exist") from None
    except OSError as exc:
        raise FiocaError(f"cannot read {path}: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError):
        raise FiocaError(f"{path} is not JSON") from None
    if not isinstance(data, dict):
        raise FiocaError(f"{path} is not a JSON object")
    return raw, data


def answer_from(
    data: dict, raw: bytes, *, factory: str, local_ca_cn: str, on_note: Callable[[str], None] = lambda _l: None
) -> ServerAnswer:
    """Take the scripts and CSRs out of an answer; fioca's own scripts when it carries none."""
    for name in (*facts.SCRIPT_NAMES, facts.TLS_CSR, facts.ONLINE_CA_CSR):
        if data.get(name) is not None and not isinstance(data[name], str):
            raise ApiError(f"the POST answer's {name} is not a string; nothing was run")
    present = {name: data[name] for name in facts.SCRIPT_NAMES if data.get(name) is not None}
    if len(present) == len(facts.SCRIPT_NAMES):
        scripts, from_server = present, True
    elif present:
        raise ApiError("the POST answer has some scripts but not all four; nothing was run")
    else:
        on_note("The answer carries no scripts (today's API sends none): using fioca's bundled scripts")
        scripts, from_server = reference.bundled(), False
    csrs = {name: data[name] for name in (facts.TLS_CSR, facts.ONLINE_CA_CSR) if data.get(name)}
    return ServerAnswer(raw, data, scripts, from_server, factory, local_ca_cn, csrs)


def check_csrs(answer: ServerAnswer, plan: CreatePlan) -> None:
    """The CSRs the scripts will sign: well-formed and self-signed, values of the documented shape.

    The gateway's subject is not checked (fioctl never does; a server may send a CN only), but
    its DNS names must be host names: sign_tls_csr copies them into its extension file. The
    online CA's CSR becomes a device CA, whose OU the backend requires to be the factory.
    """
    for name in _csr_inputs(plan):
        value = answer.csrs.get(name)
        if not value or not value.strip():
            raise ApiError(f"the POST answer has no {name}; nothing was run")
        csr = profiles.load_csr(value.encode(), name)
        profiles.check_server_csr(csr, gateway=name == facts.TLS_CSR, artifact=name)
        ou = profiles.subject_ou(csr)
        if name == facts.ONLINE_CA_CSR and ou != answer.factory:
            raise CheckError(name, f"subject OU is {ou!r}, not the factory {answer.factory!r}")


def _csr_inputs(plan: CreatePlan) -> list[str]:
    return [name for name in (facts.TLS_CSR, facts.ONLINE_CA_CSR) if name in plan.saved]


def save_answer(pki: PkiDir, data: dict[str, Any]) -> Path:
    """factory_certs.json as `jq . > factory_certs.json` saves it; an earlier one is kept
    aside as factory_certs.json.1, .2, ..."""
    if pki.has(facts.FACTORY_CERTS_JSON):
        pki.move_aside(facts.FACTORY_CERTS_JSON, "")
    return pki.write_new(facts.FACTORY_CERTS_JSON, answer_file_bytes(data))


def answer_file_bytes(data: dict[str, Any]) -> bytes:
    """The `jq .` layout: two-space indent, keys in the server's order, UTF-8 left as is."""
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode()


def save_parts(pki: PkiDir, answer: ServerAnswer, names: tuple[str, ...] | list[str]) -> None:
    """The answer's CSRs (0400) and scripts (0700) beside it, as script-era fioctl wrote them;
    one already there (a resumed run) must be the same bytes."""
    contents = {name: (text, facts.FILE_MODE) for name, text in answer.csrs.items()}
    contents.update({name: (text, facts.SCRIPT_MODE) for name, text in answer.scripts.items()})
    for name in names:
        if name not in contents:
            continue
        text, mode = contents[name]
        if pki.has(name):
            if pki.read_bytes(name) != text.encode():
                raise RefusedError(f"{pki / name} is not the answer's {name}; it changed since the first run")
            continue
        pki.write_new(name, text.encode(), mode)


# --- Audit -------------------------------------------------------------------------------------


def audit_gate(start: Start, options: CreateOptions, jail: str, reporter: Reporter) -> audit.AuditReport:
    """Judge every script before any runs: pinned digests first, then high findings."""
    answer = start.answer
    for name, expected in options.expected_sha256.items():
        actual = hashlib.sha256(answer.scripts[name].encode()).hexdigest()
        if actual != expected.lower():
            raise RefusedError(f"script {name} has sha256 {actual}, not the pinned {expected}; nothing was run")
    parsing = audit_parser.Parsing(answer.scripts)  # shfmt parses while the rest of the audit loads
    report = audit.audit_scripts(
        answer.scripts,
        hsm=start.plan.hsm,
        known=reference.known_sets(factory=answer.factory, local_ca_cn=answer.local_ca_cn),
        jail=jail,
        parsing=parsing,
    )
    failing = report.failing(audit.Severity.HIGH)
    if failing and not options.dry_run:
        lines = [f"{item.script}: line {item.finding.line}: {item.finding.id}: {item.finding.message}" for item in failing]
        if not options.allow_unaudited:
            raise RefusedError(
                f"the audit found {len(failing)} high-severity finding(s) in the server's scripts; "
                "nothing was run (see `fioca keys ca audit`; --allow-unaudited overrides)",
                details=lines,
            )
        reporter.note(f"--allow-unaudited: running scripts despite {len(failing)} high finding(s):")
        for line in lines:
            reporter.note(f"  {line}")
    if options.no_jail and not options.dry_run:
        reporter.note("WARNING: --no-jail: the scripts run with your user's rights, your files and the network")
    return report


# --- Run: each step in the jail, in the plan's order -------------------------------------------------


class Steps:
    """Each script in a fresh work dir inside the jail; its products taken, checked, kept."""

    def __init__(
        self, pki: PkiDir, start: Start, report: audit.AuditReport, jail: jails.Jail, options: CreateOptions,
        reporter: Reporter,
    ):
        self.pki = pki
        self.start = start
        self.report = report
        self.jail = jail
        self.options = options
        self.reporter = reporter
        self.env = reference.script_env(factory=start.answer.factory, local_ca_cn=start.answer.local_ca_cn)
        if options.hsm is not None:
            self.env.update(options.hsm.script_env())  # HSM_MODULE / HSM_TOKEN_LABEL / HSM_PIN: HSM mode only

    @property
    def journal(self) -> Journal:
        assert self.start.journal is not None
        return self.start.journal

    def run_all(self) -> None:
        """Every step of the plan, reported, checked, kept and journalled in the plan's order.

        Each script runs in a thread of its own (StepRun). In the jail without an HSM, a step
        starts as soon as every file it is given is kept, so the steps after create_ca run side
        by side, each in its own jail and work dir; with an HSM (one token, watched around each
        script) or without the jail, one at a time, as fioctl runs them."""
        plan = self.start.plan
        steps = plan.steps
        done = {step.script for step in steps if self.done_before(step)}
        side_by_side = plan.side_by_side(jailed=self.jail.contained)
        running: dict[str, StepRun[tuple[datetime, dict[str, bytes]]]] = {}
        self.pki.remove_folder(facts.WORK_DIR)  # left by an earlier version's run that died inside a script
        try:
            for step in steps:
                if step.script in done:
                    self.reporter.progress(f"{step.progress} (done before, verified)")
                    continue
                if step.script == facts.CREATE_CA and self.options.hsm is not None:
                    self.refuse_orphan_token_key()
                self.reporter.progress(step.progress)
                # The step at hand among them: what it waits for was kept before it, either way.
                ready = [
                    later for later in steps
                    if later.script not in done and later.script not in running
                    and set(plan.waits_for(later, side_by_side=side_by_side)) <= done
                ]  # fmt: skip
                if ready:
                    self.journal.note_running([*running, *(later.script for later in ready)])
                    for later in ready:
                        # Held before it starts: a Ctrl-C inside start() leaves it to stop and join.
                        run = running[later.script] = self.step_run(later)
                        run.start()
                running[step.script].shown()
                made_at, products = running[step.script].result()
                del running[step.script]
                self.keep(step, products, made_at)
                done.add(step.script)
        finally:
            for run in running.values():
                run.stop()
            for run in running.values():
                run.join()
            left = [script for script in self.journal.running if self.pki.has(facts.work_dir_of(script))]
            if left != self.journal.running:
                self.journal.note_running(left)

    def step_run(self, step: ScriptStep) -> StepRun[tuple[datetime, dict[str, bytes]]]:
        def work(run: StepRun) -> tuple[datetime, dict[str, bytes]]:
            made_at = datetime.now(UTC).replace(microsecond=0)
            return made_at, self.made_by(step, run)

        return StepRun(step.script, work, show=lambda line: self.reporter.script_stderr(step.script, line))

    def keep(self, step: ScriptStep, products: dict[str, bytes], made_at: datetime) -> None:
        """What the step made, checked (and with --reissue re-made), kept 0400 and journalled."""
        self.check(step, products)
        if self.options.reissue:
            products = self.reissued(step, products, made_at)
        products = canonical(products)
        for name in step.products:
            if self.pki.has(name):  # a product kept by a run that died before journalling it
                self.pki.move_aside(name, ".unjournalled")
            self.pki.write_new(name, products[name])
        digests = {name: hashlib.sha256(data).hexdigest() for name, data in products.items()}
        self.journal.record_step(step.script, digests, made_at=made_at)

    def done_before(self, step: ScriptStep) -> bool:
        """On resume: a journalled step whose kept files are intact and still pass their checks."""
        recorded = self.journal.steps.get(step.script)
        if not recorded:
            return False
        products = {}
        for name, digest in recorded.items():
            if not self.pki.has(name):
                return False
            data = self.pki.read_bytes(name)
            if hashlib.sha256(data).hexdigest() != digest:
                raise RefusedError(
                    f"{self.pki / name} changed since {step.script} made it (its SHA-256 differs from the journal); "
                    "cannot resume safely"
                )
            products[name] = data
        self.check(step, products)
        return True

    def made_by(self, step: ScriptStep, run: StepRun) -> dict[str, bytes]:
        """Run the step's script in a fresh work dir of its own; take what it made, as bytes.
        (In the step's thread: the journal already names the work dir, and the flow's thread
        updates it.)"""
        name = facts.work_dir_of(step.script)
        self.pki.remove_folder(name)  # left by a run that died inside this script
        work_dir = self.pki.make_folder(name)
        try:
            runner = ScriptRunner(
                work_dir,
                jail=self.jail,
                env_extra=self.env,
                limits=ScriptLimits(timeout=self.options.script_timeout),
                on_stderr=run.line,
                on_note=self.reporter.note,
            )
            run.attach(runner)
            for script, text in self.start.answer.scripts.items():  # all four: a script may call a sibling
                runner.install(script, text)
            for staged in step.stages:
                runner.put(staged, self.staged(staged))
            stdout = runner.run(step.script, step.args)
            products = {product: runner.take(product) for product in step.produces}
            if step.stdout_file:
                if not stdout.strip():
                    raise CheckError(step.stdout_file, f"script {step.script} exited 0 but printed no certificate")
                products[step.stdout_file] = stdout
            return products
        finally:
            self.pki.remove_folder(name)  # it held a copy of the root key

    def staged(self, name: str) -> bytes:
        if name in self.start.answer.csrs:
            return self.start.answer.csrs[name].encode()
        return self.pki.read_bytes(name)  # the root, kept by create_ca

    def check(self, step: ScriptStep, products: dict[str, bytes]) -> None:
        """What one script made (or its re-issue), against what its text asked and the trust rules."""
        checks = Checks(self.start.answer, self.pki, self.options.hsm, products)
        for name in step.products:
            checks.product(name, self.asked_for(step, name))

    def asked_for(self, step: ScriptStep, product: str) -> AskedCertificate | None:
        """The certificate the step's text asks openssl for that became `product`; None for a key."""
        if product in (facts.ROOT_KEY, facts.LOCAL_CA_KEY):
            return None
        return asked_for(self.report, step, product, self.env)

    def reissued(self, step: ScriptStep, products: dict[str, bytes], made_at: datetime) -> dict[str, bytes]:
        """--reissue: each certificate re-made in process, with a fresh serial and signature by
        the root (the root itself too), valid from `made_at` (fioca's clock when the step began,
        not a start the script picked); checked again like what the script made."""
        key = self.root_key(products)
        again = dict(products)
        for name, data in products.items():
            if name in (facts.ROOT_KEY, facts.LOCAL_CA_KEY):
                continue
            cert = profiles.load_cert(data, name)
            issuer = None if name == facts.ROOT_CERT else profiles.load_cert(self.pki.read_bytes(facts.ROOT_CERT), facts.ROOT_CERT)
            again[name] = profiles.cert_pem(profiles.reissue(cert, signer_key=key, issuer=issuer, not_before=made_at))
        self.check(step, again)
        return again

    def root_key(self, products: dict[str, bytes]) -> Any:
        if self.options.hsm is not None:
            return hsm.TokenKey(self.options.hsm, hsm.root_public_key(self.options.hsm))
        pem = products[facts.ROOT_KEY] if facts.ROOT_KEY in products else self.pki.read_bytes(facts.ROOT_KEY)
        return profiles.load_private_key(pem, facts.ROOT_KEY)

    def refuse_orphan_token_key(self) -> None:
        """A run killed inside create_ca may have made the token's key pair but no certificate.
        Running create_ca again would make a second root-ca; fioca stops and says how to clear it."""
        found = hsm.root_key_objects(self.options.hsm)
        if found:
            raise RefusedError(
                f"the token '{self.options.hsm.token_label}' already holds root-ca ({', '.join(found)}) but no root "
                "certificate was made for it: an earlier run stopped inside create_ca. Nothing was uploaded; "
                "delete those objects (pkcs11-tool --delete-object --label root-ca ...) and run --resume again"
            )


def canonical(products: dict[str, bytes]) -> dict[str, bytes]:
    """Each certificate as canonical PEM of its DER (keys as they are): what is kept and
    uploaded carries nothing of how the script laid the text out."""
    return {
        name: data if name in (facts.ROOT_KEY, facts.LOCAL_CA_KEY) else profiles.cert_pem(profiles.load_cert(data, name))
        for name, data in products.items()
    }


def asked_for(report: audit.AuditReport, step: ScriptStep, product: str, env: dict[str, str]) -> AskedCertificate:
    """What the step's script text asks openssl for, to make `product`, as openssl reads it
    with the environment `env` the script ran with.

    The audit names each certificate-making command's output as written (`factory_ca.pem`,
    `$2`, or None for stdout; a certificate a sibling script prints into `$crt` counts as the
    caller's), and the plan knows the arguments the script gets.
    """
    positional = {f"${index}": arg for index, arg in enumerate(step.args, start=1)}
    wanted = None if product == step.stdout_file else product
    found = [
        asked for asked in report.script(step.script).asked
        if (positional.get(asked.output, asked.output) if asked.output is not None else None) == wanted
    ]
    if len(found) != 1:
        how = "no openssl command" if not found else f"{len(found)} openssl commands"
        raise CheckError(product, f"the audit finds {how} in {step.script} that makes it, so it cannot be checked")
    return with_environment(found[0], env)


class Checks:
    """The checks of create's products: as asked, and the trust rules (profiles)."""

    def __init__(self, answer: ServerAnswer, pki: PkiDir, hsm_settings: HsmSettings | None, products: dict[str, bytes]):
        self.answer = answer
        self.pki = pki
        self.hsm = hsm_settings
        self.products = products

    def bytes_of(self, name: str) -> bytes:
        return self.products[name] if name in self.products else self.pki.read_bytes(name)

    def cert(self, name: str):
        return profiles.load_cert(self.bytes_of(name), name)

    def product(self, name: str, asked: AskedCertificate | None) -> None:
        factory = self.answer.factory
        if name == facts.ROOT_KEY:
            profiles.check_key_matches(profiles.load_private_key(self.bytes_of(name), name), self.cert(facts.ROOT_CERT), name)
            return
        if name == facts.LOCAL_CA_KEY:
            local = self.cert(facts.LOCAL_CA_CERT)
            profiles.check_key_matches(profiles.load_private_key(self.bytes_of(name), name), local, name)
            return
        root = self.cert(facts.ROOT_CERT)
        cert = self.cert(name)
        csr = csr_for(self.answer, name)
        if asked is not None:
            profiles.check_as_asked(cert, asked, issuer=root, csr=csr, openssl=profiles.openssl_generation(), artifact=name)
        if name == facts.ROOT_CERT:
            profiles.check_root(cert, factory=factory, artifact=name)
            if self.hsm is not None:
                hsm.check_cert_matches_token(self.hsm, cert, name)
        elif name == facts.TLS_CERT:
            profiles.check_gateway_tls(cert, root=root, csr=csr, artifact=name)
        elif name == facts.ONLINE_CA_CERT:
            profiles.check_device_ca(cert, root=root, factory=factory, csr=csr, artifact=name)
        elif name == facts.LOCAL_CA_CERT:
            profiles.check_device_ca(cert, root=root, factory=factory, expected_cn=self.answer.local_ca_cn, artifact=name)


_CSR_OF = {facts.TLS_CERT: facts.TLS_CSR, facts.ONLINE_CA_CERT: facts.ONLINE_CA_CSR}


def csr_for(answer: ServerAnswer, name: str):
    """The server's CSR a certificate was signed for (None for the root and the local CA)."""
    csr_name = _CSR_OF.get(name)
    return profiles.load_csr(answer.csrs[csr_name].encode(), csr_name) if csr_name else None


# --- Verify and upload -------------------------------------------------------------------------


_ROLES = {
    facts.ROOT_CERT: profiles.Role.ROOT,
    facts.TLS_CERT: profiles.Role.GATEWAY_TLS,
    facts.ONLINE_CA_CERT: profiles.Role.DEVICE_CA,
    facts.LOCAL_CA_CERT: profiles.Role.DEVICE_CA,
}
_KEY_OF = {facts.ROOT_CERT: facts.ROOT_KEY, facts.LOCAL_CA_CERT: facts.LOCAL_CA_KEY}


def verified_patch_body(pki: PkiDir, start: Start, report: audit.AuditReport) -> dict[str, str]:
    """The PATCH body, built from the stored bytes and checked whole right before the upload.

    Each file must be the one journalled; each certificate is checked whole
    (profiles.check_upload): the trust rules, exactly what its script's text asked, notBefore
    within minutes of when its step ran, nothing a named profile would not have, SKID and AKID
    computed as OpenSSL and Go compute them (so no identifier can carry data)."""
    journal = start.journal
    recorded = journal.fingerprints()
    stored: dict[str, bytes] = {}
    for name in start.plan.uploaded:
        data = pki.read_bytes(name)
        if hashlib.sha256(data).hexdigest() != recorded.get(name):
            raise RefusedError(f"{pki / name} is not the file create kept (SHA-256 differs from the journal); nothing was sent")
        stored[name] = data
    root = profiles.load_cert(stored[facts.ROOT_CERT], facts.ROOT_CERT)
    for step in start.plan.steps:
        for name in step.products:
            if name not in _ROLES:
                continue
            key_name = _KEY_OF.get(name)
            key = profiles.load_private_key(pki.read_bytes(key_name), key_name) if key_name and pki.has(key_name) else None
            profiles.check_upload(
                profiles.load_cert(stored[name], name),
                role=_ROLES[name],
                factory=start.answer.factory,
                issuer=None if name == facts.ROOT_CERT else root,
                asked=asked_for(report, step, name, reference.script_env(
                    factory=start.answer.factory, local_ca_cn=start.answer.local_ca_cn
                )),
                csr=csr_for(start.answer, name),
                key=key,
                expected_cn=start.answer.local_ca_cn if name == facts.LOCAL_CA_CERT else None,
                made_at=journal.made_at(step.script),
                openssl=profiles.openssl_generation(),
                artifact=name,
            )
    # Only the DER travels, as canonical PEM: how a script broke lines or put blanks around the
    # base64 (which the PEM reader skips) is a channel of its own.
    canonical = {name: profiles.cert_pem(profiles.load_cert(data, name)).decode() for name, data in stored.items()}
    return {field.name: "\n".join(canonical[source] for source in field.sources) for field in start.plan.patch}


class Upload:
    """Ask, then PATCH; a lost answer is followed by a GET before any second try."""

    def __init__(self, api: FactoryApi, pki: PkiDir, options: CreateOptions, reporter: Reporter):
        self.api = api
        self.pki = pki
        self.options = options
        self.reporter = reporter

    def run(self, result: CreateResult) -> None:
        if self.options.resume and self.server_has_our_root(result):
            return
        summary = {
            "factory": self.api.factory,
            "root_fingerprint": result.root_fingerprint,
            "gateway_hosts": result.gateway_hosts,
            "patch_fields": list(result.patch_body),
        }
        if not self.reporter.confirm_upload(summary):
            raise RefusedError(
                f"upload not confirmed; nothing was sent. The new PKI is in {self.pki.path}; the factory still has "
                f"no root of trust; upload it later with: fioca keys ca create {self.pki.path} --resume"
            )
        self.reporter.progress(UPLOADING)
        body = {**result.patch_body, "change-meta": {}}
        try:
            self.api.patch_certs(body)
        except ApiError as exc:
            if exc.status == 409 and self.server_has_our_root(result):
                return  # raced with ourselves: an earlier try of this very upload went through
            if exc.status is not None:  # the server answered: it refused, nothing was applied
                raise self.failed(exc) from None
            # No answer: the PATCH may have been applied. Look before trying once more.
            if self.server_has_our_root(result):
                return
            self.reporter.note("The upload got no answer and did not apply; trying it once more")
            try:
                self.api.patch_certs(body)
            except ApiError as again:
                if again.status is None and self.server_has_our_root(result):
                    return
                raise self.failed(again) from None

    def server_has_our_root(self, result: CreateResult) -> bool:
        """True when the factory's root is ours (an earlier upload went through); refuses when
        the factory has a different root, which no local file can fix."""
        certs = self.api.get_certs()
        if not is_configured(certs):
            return False
        theirs = profiles.fingerprint_sha256(profiles.load_cert(certs.body["root-crt"].encode(), "root-crt on the server"))
        if theirs != result.root_fingerprint:
            raise RefusedError(
                f"factory '{self.api.factory}' already has a different root of trust ({theirs}); the root in "
                f"{self.pki.path} was never uploaded and cannot be; keep it for the record, and ask support "
                "if the factory's root must be reset"
            )
        self.reporter.note("The server already holds this root of trust: the earlier upload went through")
        return True

    def failed(self, exc: ApiError) -> ApiError:
        retry = f"fioca keys ca create {self.pki.path} --resume"
        if self.options.resume and exc.status == 400 and not self.options.fresh_csrs:
            # The first run's CSRs may have expired on the server; the root need not change.
            hint = f"if the server no longer accepts the first run's CSRs, get new ones with: {retry} --fresh-csrs"
        else:
            hint = f"retry the upload with: {retry}"
        return ApiError(
            f"{exc.message}; the new PKI is kept in {self.pki.path}; {hint}", status=exc.status, details=exc.details
        )

