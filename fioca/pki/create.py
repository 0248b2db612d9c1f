"""`keys ca create`: the documented "behind the scenes" flow, one function per step.

    1. check_not_configured  GET certs/: refuse a configured factory or a PKI dir with a root
    2. request_scripts       POST certs/; save the answer as factory_certs.json
       audit_scripts         judge every script before any of them runs
    3. run_scripts           write CSRs + scripts into a private work dir; run each with `sh`
    4. check_step            each script's products against their profiles, with `cryptography`
    5. store_artifacts       move them into the PKI dir, 0400, never overwriting
    6. upload                after confirmation, PATCH root-crt, tls-crt, ca-crt

`CreateFlow.run()` reads top to bottom as those steps. A dry-run stops after the audit and
returns the plan it would have executed. Every finished step is journalled (fioca/pki/journal.py):
after a failure, `--resume` redoes only what is missing and uploads the root made the first
time; it never makes a second one.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Protocol

import jq

from fioca import facts
from fioca.api import FactoryApi, is_configured
from fioca.errors import ApiError, CheckError, FiocaError, RefusedError
from fioca.pki import audit as script_audit
from fioca.pki import files, profiles, reference
from fioca.pki.journal import WORK_DIR, Journal, sha256_file
from fioca.pki.plan import CreatePlan, ScriptStep, plan_create
from fioca.pki import jail as jails
from fioca.pki import scripts
from fioca.pki.scripts import ScriptLimits, ScriptRunner
from fioca.pki import hsm
from fioca.pki.hsm import HsmSettings

SCRIPT_FIELDS = facts.SCRIPT_NAMES


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


@dataclass
class ServerAnswer:
    """The POST answer, with its fields taken out by jq programs as the document does."""

    raw: bytes
    data: dict[str, Any]
    scripts: dict[str, str]
    scripts_from_server: bool
    factory: str
    local_ca_cn: str
    csrs: dict[str, Any] = field(default_factory=dict)  # tls-csr, ca-csr as taken out

    def field(self, name: str) -> Any:
        return self.csrs[name] if name in self.csrs else jq_field(self.data, name)


@dataclass
class CreateResult:
    plan: CreatePlan
    answer: ServerAnswer
    audit: script_audit.AuditReport
    dry_run: bool
    patch_body: dict[str, str] = field(default_factory=dict)
    root_fingerprint: str = ""
    gateway_hosts: list[str] = field(default_factory=list)
    stored: list[Path] = field(default_factory=list)


# What the audit and the dry-run say about containment; the jail module (bubblewrap) replaces it.
RUNNER_JAIL = "none (scripts run in a private work dir with a minimal environment, not in a jail)"


def known_scripts(*, factory: str, local_ca_cn: str) -> dict[str, dict[str, str]]:
    """The script sets the audit recognises. Transitional: fioca's own scripts are templates
    until the env-based ones land, so they are compared as rendered for this factory."""
    known = reference.known_sets(factory=factory, local_ca_cn=local_ca_cn)
    known[reference.FIOCA] = reference.rendered(factory=factory, local_ca_cn=local_ca_cn)
    return known


@functools.cache
def _jq_program(names: tuple[str, ...]) -> Any:
    # `[."a", ."tls-csr", ...]`: one compiled program takes out every field at once (compiling
    # is the costly part); a JSON string is a valid jq string, so any name is quoted safely.
    return jq.compile("[" + ", ".join(f".[{json.dumps(name)}]" for name in names) + "]")


def jq_fields(data: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """What `jq -r .NAME` gives for each name (None for null or missing)."""
    return dict(zip(names, _jq_program(names).input_value(data).first()))


def jq_field(data: Any, name: str) -> Any:
    return jq_fields(data, (name,))[name]


def read_answer_file(path: Path) -> tuple[bytes, dict[str, Any]]:
    """A saved answer (factory_certs.json): its bytes and its JSON object."""
    try:
        raw = path.expanduser().read_bytes()
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


def save_answer(pki: files.PkiDir, raw: bytes) -> tuple[dict, Path]:
    """Save the answer as `jq . > factory_certs.json` would; an earlier answer is kept aside."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError("the POST answer is not JSON; nothing was run") from None
    if not isinstance(data, dict):
        raise ApiError("the POST answer is not a JSON object; nothing was run")
    # `jq .` layout: two-space indent, keys in the server's order, UTF-8 left as is.
    pretty = json.dumps(data, indent=2, ensure_ascii=False)
    target = pki / facts.FACTORY_CERTS_JSON
    if target.exists():
        target.rename(_free_name(target, numbered=True))
    return data, pki.write_new(facts.FACTORY_CERTS_JSON, (pretty + "\n").encode())


class CreateFlow:
    def __init__(
        self,
        api: FactoryApi | None,
        pki: files.PkiDir,
        options: CreateOptions,
        reporter: Reporter,
        *,
        runner_factory: Callable[..., ScriptRunner] = ScriptRunner,
    ):
        self.api = api
        self.pki = pki
        self.options = options
        self.reporter = reporter
        self.plan = plan_create(online_ca=options.online_ca, local_ca=options.local_ca, hsm=options.hsm is not None)
        self.runner_factory = runner_factory
        self.journal: Journal | None = None
        self.jail: jails.Jail | None = None

    def run(self) -> CreateResult:
        # No jail, no scripts: stop before anything is sent (a dry-run runs none).
        self.jail = None if self.options.dry_run else jails.require()
        journal = Journal.load(self.pki.path) if self.pki.path.is_dir() else None
        if self.options.resume:
            self.check_resumable(journal)
        else:
            self.check_no_unfinished_run(journal)
            self.check_hsm_token()  # a wrong PIN or a token holding root-ca: refused before anything
            self.check_not_configured()  # before anything is written, even the PKI dir
        for note in self.pki.ensure():
            self.reporter.note(note)
        with self.pki.locked():
            answer = self.resumed_answer() if self.options.resume else self.fresh_answer()
            report = self.audit_scripts(answer)
            result = CreateResult(self.plan, answer, report, dry_run=self.options.dry_run)
            if self.options.dry_run:
                return result
            if self.journal is None:
                self.journal = self.begin_journal(answer)
            if not self.journal.stored:
                work_dir = self.work_dir()
                self.run_scripts(answer, work_dir)
                result.stored = self.store_artifacts(work_dir)
                # The work dir held the root key; its only copy now lives in the PKI dir.
                shutil.rmtree(work_dir)
            else:
                result.stored = [self.pki / name for name in self.plan.kept]
                self.verify_stored(answer)
            root = profiles.load_cert(self.pki.read_bytes(facts.ROOT_CERT), facts.ROOT_CERT)
            tls = profiles.load_cert(self.pki.read_bytes(facts.TLS_CERT), facts.TLS_CERT)
            self.check_before_upload(answer)
            result.patch_body = self.patch_body()
            result.root_fingerprint = profiles.fingerprint_sha256(root)
            result.gateway_hosts = profiles.gateway_hosts(tls)
            self.upload(result)
            self.journal.finish()
            return result

    def dry_run_saved(self, path: Path, *, factory: str | None) -> CreateResult:
        """The dry-run from a saved answer: no server, nothing written."""
        raw, data = read_answer_file(path)
        scripts = {name: data.get(name) for name in SCRIPT_FIELDS if isinstance(data.get(name), str)}
        inferred = reference.infer_values(scripts)
        if inferred and factory not in (None, inferred[0]):
            inferred = None
        if not inferred and not factory:
            raise RefusedError(f"cannot tell which factory {path} is for: pass -f/--factory")
        factory_name, cn = inferred or (factory, "fio-<user id>")
        answer = answer_from(data, raw, factory=factory_name, local_ca_cn=cn, on_note=self.reporter.note)
        check_csrs(answer, self.plan)
        return CreateResult(self.plan, answer, self.audit_scripts(answer), dry_run=True)

    # Step 1 -----------------------------------------------------------------------------
    def check_not_configured(self) -> None:
        self.check_no_local_root()
        certs = self.api.get_certs()
        if is_configured(certs):
            raise RefusedError(
                f"factory '{self.api.factory}' already has a root of trust "
                f"(GET {self.api.certs_url} -> {certs.status}); the root can be set only once; nothing was written"
            )

    def check_no_local_root(self) -> None:
        for name in (facts.ROOT_KEY, facts.ROOT_CERT):
            if self.pki.has(name):
                raise RefusedError(
                    f"PKI dir {self.pki.path} already holds a root of trust ({name}); "
                    "the root can be set only once; use another directory"
                )

    def check_hsm_token(self) -> None:
        """HSM mode: log in to the token and refuse one that already holds a root-ca key.

        A dry-run never touches the token (nor uses a PIN attempt)."""
        if self.options.hsm is not None and not self.options.dry_run:
            hsm.check_ready_for_new_root(self.options.hsm)

    def check_no_unfinished_run(self, journal: Journal | None) -> None:
        if journal is not None:
            raise RefusedError(
                f"PKI dir {self.pki.path} holds an unfinished `keys ca create` ({self.progress_of(journal)}); "
                f"finish it with: fioca keys ca create {self.pki.path} --resume"
            )

    def check_resumable(self, journal: Journal | None) -> None:
        if journal is None:
            raise RefusedError(f"nothing to resume in {self.pki.path}: it holds no unfinished `keys ca create`")
        if journal.factory != self.api.factory:
            raise RefusedError(
                f"the unfinished create in {self.pki.path} is for factory '{journal.factory}', not '{self.api.factory}'"
            )
        if journal.hsm != (self.options.hsm is not None):
            where = "on an HSM: pass the same --hsm-module and --hsm-token-label" if journal.hsm else "in a file: drop the HSM flags"
            raise RefusedError(f"the unfinished create in {self.pki.path} keeps its root key {where}")

    @staticmethod
    def progress_of(journal: Journal) -> str:
        if journal.stored:
            return "every file is made; the upload did not finish"
        done = ", ".join(journal.steps) or "no script"
        return f"finished: {done}"

    # Step 2 -----------------------------------------------------------------------------
    def fresh_answer(self) -> ServerAnswer:
        self.check_no_local_root()  # again under the lock: another run may have made one
        return self.request_scripts()

    def resumed_answer(self) -> ServerAnswer:
        """The first run's answer (and plan), from the journal re-read under the lock."""
        self.journal = Journal.load(self.pki.path)
        self.check_resumable(self.journal)
        self.plan = plan_create(
            online_ca=self.journal.online_ca, local_ca=self.journal.local_ca, hsm=self.options.hsm is not None
        )
        answer = self.saved_answer(self.journal)
        return self.refresh_csrs() if self.options.fresh_csrs else answer

    def request_scripts(self) -> ServerAnswer:
        resp = self.api.post_certs({})
        data, path = save_answer(self.pki, resp.raw)
        self.reporter.note(f"Saved the server's answer as {path}")
        polis_id = str(self.api.users_self()["polis-id"])
        answer = answer_from(
            data, resp.raw, factory=self.api.factory, local_ca_cn=f"fio-{polis_id}", on_note=self.reporter.note
        )
        check_csrs(answer, self.plan)
        return answer

    def saved_answer(self, journal: Journal) -> ServerAnswer:
        """On resume: the answer the first run saved, unchanged since (its SHA-256 is journalled)."""
        raw = self.pki.read_bytes(facts.FACTORY_CERTS_JSON)
        if hashlib.sha256(raw).hexdigest() != journal.answer_sha256:
            raise RefusedError(
                f"{self.pki / facts.FACTORY_CERTS_JSON} changed since the first run; cannot resume safely"
            )
        answer = answer_from(json.loads(raw), raw, factory=journal.factory, local_ca_cn=journal.local_ca_cn)
        check_csrs(answer, self.plan)
        self.reporter.note(f"Resuming the create in {self.pki.path} ({self.progress_of(journal)})")
        return answer

    def refresh_csrs(self) -> ServerAnswer:
        """--resume --fresh-csrs: ask the server for new CSRs and sign them with the root made
        the first time. The gateway and online-CA files of the first run are kept as *.stale."""
        resp = self.api.post_certs({})
        data, path = save_answer(self.pki, resp.raw)
        self.reporter.note(f"Saved the server's new answer as {path}")
        answer = answer_from(
            data, resp.raw, factory=self.journal.factory, local_ca_cn=self.journal.local_ca_cn,
            on_note=self.reporter.note,
        )
        check_csrs(answer, self.plan)
        signing = [step for step in self.plan.steps if step.script in ("sign_tls_csr", "sign_ca_csr")]
        if self.journal.stored:
            # Back into the work dir go the files the first run's other steps made (the root
            # among them); what the new CSRs replace steps aside, never overwritten.
            work_dir = self.work_dir()
            for step in self.plan.steps:
                names = [*step.produces, step.stdout_file, step.script, *step.args]
                for name in filter(None, names):
                    source = self.pki / name
                    if step in signing:
                        if source.exists():
                            source.rename(_free_name(self.pki / f"{name}.stale"))
                    elif source.exists() and not (work_dir / name).exists():
                        shutil.copy2(source, work_dir / name)
            self.journal.stored = False
        for step in signing:
            self.journal.steps.pop(step.script, None)
        self.journal.answer_sha256 = hashlib.sha256(self.pki.read_bytes(facts.FACTORY_CERTS_JSON)).hexdigest()
        self.journal.save()
        return answer

    def begin_journal(self, answer: ServerAnswer) -> Journal:
        return Journal.begin(
            self.pki.path,
            factory=answer.factory,
            online_ca=self.plan.online_ca,
            local_ca=self.plan.local_ca,
            hsm=self.plan.hsm,
            local_ca_cn=answer.local_ca_cn,
            answer_sha256=hashlib.sha256(self.pki.read_bytes(facts.FACTORY_CERTS_JSON)).hexdigest(),
        )

    def audit_scripts(self, answer: ServerAnswer) -> script_audit.AuditReport:
        report = script_audit.audit_scripts(
            answer.scripts,
            hsm=self.options.hsm is not None,
            known=known_scripts(factory=answer.factory, local_ca_cn=answer.local_ca_cn),
            jail=RUNNER_JAIL,
        )
        for name, expected in self.options.expected_sha256.items():
            actual = hashlib.sha256(answer.scripts[name].encode()).hexdigest()
            if actual != expected.lower():
                raise RefusedError(f"script {name} has sha256 {actual}, not the pinned {expected}; nothing was run")
        failing = report.failing(script_audit.Severity.HIGH)
        if failing and not self.options.dry_run:
            lines = [f"{item.script}: line {item.finding.line}: {item.finding.id}: {item.finding.message}" for item in failing]
            if not self.options.allow_unaudited:
                raise RefusedError(
                    f"the audit found {len(failing)} high-severity finding(s) in the server's scripts; "
                    "nothing was run (see `fioca keys ca audit`; --allow-unaudited overrides)",
                    details=lines,
                )
            self.reporter.note(f"--allow-unaudited: running scripts despite {len(failing)} high finding(s):")
            for line in lines:
                self.reporter.note(f"  {line}")
        return report

    # Step 3 -----------------------------------------------------------------------------
    def work_dir(self) -> Path:
        """The private work dir, inside the PKI dir so that a crash never strands the root key
        somewhere else; a resumed run finds it again."""
        path = self.pki / WORK_DIR
        path.mkdir(mode=0o700, exist_ok=True)
        path.chmod(0o700)
        return path

    def run_scripts(self, answer: ServerAnswer, work_dir: Path) -> None:
        runner = self.runner_factory(
            work_dir,
            jail=self.jail,
            limits=ScriptLimits(timeout=self.options.script_timeout),
            # HSM_MODULE / HSM_TOKEN_LABEL / HSM_PIN in HSM mode only, never otherwise.
            env_extra=self.options.hsm.script_env() if self.options.hsm is not None else None,
        )
        for name in self.plan.inputs:
            _put(work_dir / name, answer.field(name))
        for step in self.plan.steps:
            if step.script not in self.journal.steps:  # a finished step keeps the script that ran
                _put(work_dir / step.script, answer.scripts[step.script], mode=0o700)
        for step in self.plan.steps:
            if self.step_still_good(step, answer, work_dir):
                self.reporter.progress(f"{step.progress} (done before, verified)")
                continue
            if step.script == "create_ca" and self.plan.hsm:
                self.check_no_orphan_token_key()
            self.reporter.progress(step.progress)
            for name in (*step.produces, step.stdout_file):
                if name:
                    (work_dir / name).unlink(missing_ok=True)  # a half-made product of an earlier try
            runner.on_stderr = lambda line, script=step.script: self.reporter.script_stderr(script, line)
            stdout = runner.run(step.script, step.args)
            if step.stdout_file:
                if not stdout.strip():
                    raise CheckError(step.stdout_file, f"script {step.script} exited 0 but printed no certificate")
                # Written by fioca, as a new file: never through a name the script planted.
                runner.put(step.stdout_file, stdout, replace=True)
            produced = {name: work_dir / name for name in (*step.produces, step.stdout_file) if name}
            for name in produced:
                runner.take(name)  # a regular file with one link, or refused
            # Step 4, per step: nothing is journalled as done before it passed its checks.
            self.check_step(step.script, answer, work_dir)
            self.journal.record_step(step.script, produced)

    def check_no_orphan_token_key(self) -> None:
        """A run killed inside create_ca may have made the token's key pair but no certificate.
        Running create_ca again would make a second root-ca; fioca stops and says how to clear it."""
        found = hsm.root_key_objects(self.options.hsm)
        if found:
            raise RefusedError(
                f"the token '{self.options.hsm.token_label}' already holds root-ca ({', '.join(found)}) but no root "
                "certificate was made for it: an earlier run stopped inside create_ca. Nothing was uploaded; "
                "delete those objects (pkcs11-tool --delete-object --label root-ca ...) and run --resume again"
            )

    def step_still_good(self, step: ScriptStep, answer: ServerAnswer, work_dir: Path) -> bool:
        """On resume: a journalled step whose files are intact and still pass their checks."""
        recorded = self.journal.steps.get(step.script)
        if not recorded:
            return False
        for name, digest in recorded.items():
            path = work_dir / name
            if not path.is_file() or sha256_file(path) != digest:
                return False
        self.check_step(step.script, answer, work_dir)
        return True

    # Step 4 -----------------------------------------------------------------------------
    def check_step(self, script: str, answer: ServerAnswer, folder: Path) -> None:
        """Check what one script made: the trust tier, then that it is exactly what a known script
        set asks for (the audit cannot yet say what this script's own text asked)."""

        def cert(name: str):
            return profiles.load_cert((folder / name).read_bytes(), name)

        def key(name: str):
            return profiles.load_private_key((folder / name).read_bytes(), name)

        def csr(name: str):
            return profiles.load_csr((folder / name).read_bytes(), name)

        factory = answer.factory
        root = cert(facts.ROOT_CERT)
        if script == "create_ca":
            profiles.check_root(root, factory=factory, artifact=facts.ROOT_CERT)
            profiles.check_made_by_scripts(root, profiles.Role.ROOT, factory=factory, artifact=facts.ROOT_CERT)
            if self.options.hsm is None:
                profiles.check_key_matches(key(facts.ROOT_KEY), root, facts.ROOT_KEY)
            elif (folder / facts.ROOT_KEY).exists():
                raise CheckError(facts.ROOT_KEY, "written in HSM mode: the root key must exist only on the token")
            else:
                hsm.check_cert_matches_token(self.options.hsm, root, facts.ROOT_CERT)
        elif script == "sign_tls_csr":
            tls, tls_csr = cert(facts.TLS_CERT), csr(facts.TLS_CSR)
            profiles.check_gateway_tls(tls, root=root, csr=tls_csr, artifact=facts.TLS_CERT)
            profiles.check_made_by_scripts(
                tls, profiles.Role.GATEWAY_TLS, issuer=root, csr=tls_csr, artifact=facts.TLS_CERT
            )
        elif script == "sign_ca_csr":
            online, online_csr = cert(facts.ONLINE_CA_CERT), csr(facts.ONLINE_CA_CSR)
            profiles.check_device_ca(online, root=root, factory=factory, csr=online_csr, artifact=facts.ONLINE_CA_CERT)
            profiles.check_made_by_scripts(
                online, profiles.Role.DEVICE_CA, issuer=root, csr=online_csr, artifact=facts.ONLINE_CA_CERT
            )
        elif script == "create_device_ca":
            local = cert(facts.LOCAL_CA_CERT)
            profiles.check_device_ca(
                local, root=root, factory=factory, expected_cn=answer.local_ca_cn, artifact=facts.LOCAL_CA_CERT
            )
            profiles.check_made_by_scripts(local, profiles.Role.DEVICE_CA, issuer=root, artifact=facts.LOCAL_CA_CERT)
            profiles.check_key_matches(key(facts.LOCAL_CA_KEY), local, facts.LOCAL_CA_KEY)

    # Step 5 -----------------------------------------------------------------------------
    def store_artifacts(self, work_dir: Path) -> list[Path]:
        """Link every artifact into the PKI dir; one already there from a crashed run must be
        the same bytes, never replaced."""
        stored = []
        for name in self.plan.kept:
            data = scripts.take(work_dir, name)
            target = self.pki / name
            if target.exists() and target.read_bytes() == data:
                stored.append(target)
                continue
            stored.append(self.pki.write_new(name, data))
        self.journal.mark_stored()
        return stored

    def verify_stored(self, answer: ServerAnswer) -> None:
        """On resume after the files were stored: they must be the journalled ones, still good."""
        for name, digest in self.journal.fingerprints().items():
            path = self.pki / name
            if not path.is_file() or sha256_file(path) != digest:
                raise RefusedError(
                    f"{path} is missing or changed since it was made (SHA-256 differs from the journal); "
                    "cannot resume safely"
                )
        for step in self.plan.steps:
            self.check_step(step.script, answer, self.pki.path)

    # Step 6 -----------------------------------------------------------------------------
    def check_before_upload(self, answer: ServerAnswer) -> None:
        """Every certificate about to leave, re-read from its stored bytes and checked whole
        (profiles.check_upload), against the time fioca stored it."""

        def stored(name: str) -> tuple[Any, datetime]:
            made_at = datetime.fromtimestamp((self.pki / name).stat().st_mtime, timezone.utc)
            return profiles.load_cert(self.pki.read_bytes(name), name), made_at

        def server_csr(name: str):
            return profiles.load_csr(answer.field(name).encode(), name)

        factory = answer.factory
        root, made_at = stored(facts.ROOT_CERT)
        root_key = None if self.plan.hsm else profiles.load_private_key(self.pki.read_bytes(facts.ROOT_KEY), facts.ROOT_KEY)
        profiles.check_upload(
            root, role=profiles.Role.ROOT, factory=factory, key=root_key, made_at=made_at, artifact=facts.ROOT_CERT
        )
        issued = [(facts.TLS_CERT, profiles.Role.GATEWAY_TLS, server_csr(facts.TLS_CSR), None, None)]
        if self.plan.online_ca:
            issued.append((facts.ONLINE_CA_CERT, profiles.Role.DEVICE_CA, server_csr(facts.ONLINE_CA_CSR), None, None))
        if self.plan.local_ca:
            local_key = profiles.load_private_key(self.pki.read_bytes(facts.LOCAL_CA_KEY), facts.LOCAL_CA_KEY)
            issued.append((facts.LOCAL_CA_CERT, profiles.Role.DEVICE_CA, None, local_key, answer.local_ca_cn))
        for name, role, csr, key, cn in issued:
            cert, made_at = stored(name)
            profiles.check_upload(
                cert, role=role, factory=factory, issuer=root, csr=csr, key=key, expected_cn=cn, made_at=made_at,
                artifact=name,
            )  # fmt: skip

    def patch_body(self) -> dict[str, str]:
        return {
            f.name: "\n".join(self.pki.read_bytes(source).decode() for source in f.sources) for f in self.plan.patch
        }

    def upload(self, result: CreateResult) -> None:
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
                f"upload not confirmed; nothing was sent. The new PKI is in {self.pki.path}; "
                f"the factory still has no root of trust; upload it later with: "
                f"fioca keys ca create {self.pki.path} --resume"
            )
        self.reporter.progress("Uploading signed certs to Foundries")
        try:
            self.api.patch_certs(result.patch_body)
        except ApiError as exc:
            if exc.status == 409 and self.server_has_our_root(result):
                return  # raced with ourselves: an earlier try of this very upload went through
            if exc.status is not None:  # the server answered: it refused, nothing was applied
                raise self.upload_failed(exc) from None
            # No answer: the PATCH may have been applied. Look before trying once more.
            if self.server_has_our_root(result):
                return
            self.reporter.note("The upload got no answer and did not apply; trying it once more")
            try:
                self.api.patch_certs(result.patch_body)
            except ApiError as again:
                if again.status is None and self.server_has_our_root(result):
                    return
                raise self.upload_failed(again) from None

    def server_has_our_root(self, result: CreateResult) -> bool:
        """True when the factory's root is ours (an earlier upload went through); refuses when
        the factory has a different root, which no local file can fix."""
        certs = self.api.get_certs()
        if not is_configured(certs):
            return False
        theirs = profiles.load_server_cert(certs.body["root-crt"].encode(), "root-crt on the server")
        if profiles.fingerprint_sha256(theirs) != result.root_fingerprint:
            raise RefusedError(
                f"factory '{self.api.factory}' already has a different root of trust "
                f"({profiles.fingerprint_sha256(theirs)}); the root in {self.pki.path} was never uploaded and "
                "cannot be; keep it for the record, and ask support if the factory's root must be reset"
            )
        self.reporter.note("The server already holds this root of trust: the earlier upload went through")
        return True

    def upload_failed(self, exc: ApiError) -> ApiError:
        retry = f"fioca keys ca create {self.pki.path} --resume"
        if self.options.resume and exc.status == 400 and not self.options.fresh_csrs:
            # The first run's CSRs may have expired on the server; the root need not change.
            hint = f"if the server no longer accepts the first run's CSRs, get new ones with: {retry} --fresh-csrs"
        else:
            hint = f"retry the upload with: {retry}"
        return ApiError(
            f"{exc.message}; the new PKI is kept in {self.pki.path}; {hint}",
            status=exc.status,
            details=exc.details,
        )


def _free_name(path: Path, *, numbered: bool = False) -> Path:
    """The first of `path` (unless `numbered`), `path.1`, `path.2`, ... that does not exist."""
    n = 0 if not numbered else 1
    candidate = path if not numbered else path.with_name(f"{path.name}.1")
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}.{n}")
    return candidate


def _put(path: Path, text: str, mode: int = 0o600) -> None:
    """Write a work-dir input; on resume it is already there with the same content."""
    if path.exists():
        if path.read_text() == text:
            return
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def check_csrs(answer: ServerAnswer, plan: CreatePlan) -> None:
    """The CSRs the scripts will sign must be well-formed and self-signed; the online CA's must be
    for this factory (a device CA's OU is the factory). The gateway's subject is not checked:
    fioctl never does, and a server may send a CN only."""
    for name in plan.inputs:
        value = answer.field(name)
        if not isinstance(value, str) or not value.strip():
            raise ApiError(f"the POST answer has no {name}; nothing was run")
        csr = profiles.load_csr(value.encode(), name)
        if not csr.is_signature_valid:
            raise CheckError(name, "the CSR's self-signature does not verify")
        ou = profiles.subject_ou(csr)
        if name == facts.ONLINE_CA_CSR and ou != answer.factory:
            raise CheckError(name, f"subject OU is {ou!r}, not the factory {answer.factory!r}")
        profiles.check_server_csr(csr, gateway=name == facts.TLS_CSR, artifact=name)


def answer_from(
    data: dict, raw: bytes, *, factory: str, local_ca_cn: str, on_note: Callable[[str], None] = lambda _l: None
) -> ServerAnswer:
    """Take the scripts out of an answer, or fall back to the bundled ones when it has none."""
    taken = jq_fields(data, (*SCRIPT_FIELDS, facts.TLS_CSR, facts.ONLINE_CA_CSR))
    present = {name: taken[name] for name in SCRIPT_FIELDS}
    for name, value in present.items():
        if value is not None and not isinstance(value, str):
            raise ApiError(f"the POST answer's {name} is not a string; nothing was run")
    from_server = all(isinstance(value, str) for value in present.values())
    if from_server:
        scripts = present
    else:
        if any(present.values()):
            raise ApiError("the POST answer has some scripts but not all four; nothing was run")
        on_note("The answer carries no scripts (today's API sends none): using fioca's bundled reference scripts")
        scripts = reference.rendered(factory=factory, local_ca_cn=local_ca_cn)
    csrs = {name: taken[name] for name in (facts.TLS_CSR, facts.ONLINE_CA_CSR)}
    for name, value in csrs.items():
        if value is not None and not isinstance(value, str):
            raise ApiError(f"the POST answer's {name} is not a string; nothing was run")
    return ServerAnswer(raw, data, scripts, from_server, factory, local_ca_cn, csrs)
