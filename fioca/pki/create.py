"""`keys ca create`: the documented "behind the scenes" flow, one function per step.

    1. check_not_configured  GET certs/: refuse a configured factory or a PKI dir with a root
    2. request_scripts       POST certs/; save the answer as factory_certs.json
       audit_scripts         judge every script before any of them runs
    3. run_scripts           write CSRs + scripts into a private work dir; run each with `sh`
    4. check_artifacts       every artifact against its profile, with `cryptography`
    5. store_artifacts       move them into the PKI dir, 0400, never overwriting
    6. upload                after confirmation, PATCH root-crt, tls-crt, ca-crt

`CreateFlow.run()` reads top to bottom as those steps. A dry-run stops after the audit and
returns the plan it would have executed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import jq

from fioca.api import FactoryApi, is_configured
from fioca.errors import ApiError, CheckError, RefusedError
from fioca.pki import audit as script_audit
from fioca.pki import files, profiles, reference
from fioca.pki.plan import CreatePlan, plan_create
from fioca.pki.scripts import ScriptLimits, ScriptRunner, default_watch_list, require_tools

SCRIPT_FIELDS = reference.SCRIPT_NAMES


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


@dataclass
class ServerAnswer:
    """The POST answer, with its fields taken out by jq programs as the document does."""

    raw: bytes
    data: dict[str, Any]
    scripts: dict[str, str]
    scripts_from_server: bool
    factory: str
    local_ca_cn: str

    def field(self, name: str) -> Any:
        return jq_field(self.data, name)


@dataclass
class CreateResult:
    plan: CreatePlan
    answer: ServerAnswer
    audit: Any  # script_audit.AuditReport
    dry_run: bool
    work_dir: Path | None = None
    patch_body: dict[str, str] = field(default_factory=dict)
    root_fingerprint: str = ""
    gateway_hosts: list[str] = field(default_factory=list)
    stored: list[Path] = field(default_factory=list)


def jq_field(data: Any, name: str) -> Any:
    """`jq -r .NAME`, with the name passed as data so names like tls-csr need no quoting."""
    return jq.compile(".[$name]", args={"name": name}).input_value(data).first()


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
    target = pki / files.FACTORY_CERTS_JSON
    if target.exists():
        n = 1
        while (pki / f"{files.FACTORY_CERTS_JSON}.{n}").exists():
            n += 1
        target.rename(pki / f"{files.FACTORY_CERTS_JSON}.{n}")
    return data, pki.write_new(files.FACTORY_CERTS_JSON, (pretty + "\n").encode())


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
        self.plan = plan_create(online_ca=options.online_ca, local_ca=options.local_ca)
        self.runner_factory = runner_factory

    def run(self) -> CreateResult:
        require_tools("sh", "openssl")
        self.check_not_configured()  # before anything is written, even the PKI dir
        for note in self.pki.ensure():
            self.reporter.note(note)
        with self.pki.locked():
            self.check_no_local_root()  # again under the lock: another run may have made one
            answer = self.request_scripts()
            report = self.audit_scripts(answer)
            result = CreateResult(self.plan, answer, report, dry_run=self.options.dry_run)
            if self.options.dry_run:
                return result
            work_dir = files.private_work_dir()
            try:
                self.run_scripts(answer, work_dir)
                artifacts = self.check_artifacts(answer, work_dir)
                result.stored = self.store_artifacts(work_dir)
            finally:
                # The work dir held the root key; its only copy now lives in the PKI dir.
                shutil.rmtree(work_dir, ignore_errors=True)
            result.patch_body = self.patch_body()
            result.root_fingerprint = profiles.fingerprint_sha256(artifacts["root"])
            result.gateway_hosts = profiles.gateway_hosts(artifacts["tls"])
            self.upload(result)
            return result

    def dry_run_saved(self, path: Path, *, factory: str | None) -> CreateResult:
        """The dry-run from a saved answer: no server, nothing written."""
        try:
            raw = path.read_bytes()
            data = json.loads(raw)
        except OSError as exc:
            raise RefusedError(f"cannot read {path}: {exc.strerror}") from None
        except (ValueError, UnicodeDecodeError):
            raise RefusedError(f"{path} is not JSON") from None
        if not isinstance(data, dict):
            raise RefusedError(f"{path} is not a JSON object")
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
        for name in (files.ROOT_KEY, files.ROOT_CERT):
            if self.pki.has(name):
                raise RefusedError(
                    f"PKI dir {self.pki.path} already holds a root of trust ({name}); "
                    "the root can be set only once; use another directory"
                )

    # Step 2 -----------------------------------------------------------------------------
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

    def audit_scripts(self, answer: ServerAnswer):
        references = reference.rendered(factory=answer.factory, local_ca_cn=answer.local_ca_cn)
        report = script_audit.audit_answer({**answer.data, **answer.scripts}, references)
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
    def run_scripts(self, answer: ServerAnswer, work_dir: Path) -> None:
        runner = self.runner_factory(
            work_dir,
            watch=default_watch_list(self.pki.path),
            limits=ScriptLimits(timeout=self.options.script_timeout),
        )
        for name in self.plan.inputs:
            csr = answer.field(name)
            (work_dir / name).write_text(csr)
        for step in self.plan.steps:
            runner.install(step.script, answer.scripts[step.script])
        for step in self.plan.steps:
            self.reporter.progress(step.progress)
            runner.on_stderr = lambda line, script=step.script: self.reporter.script_stderr(script, line)
            stdout = runner.run(step.script, step.args)
            if step.stdout_file:
                if not stdout.strip():
                    raise CheckError(step.stdout_file, f"script {step.script} exited 0 but printed no certificate")
                (work_dir / step.stdout_file).write_text(stdout)
            for name in step.produces:
                if not (work_dir / name).is_file():
                    raise CheckError(name, f"script {step.script} exited 0 but did not write {name}")

    # Step 4 -----------------------------------------------------------------------------
    def check_artifacts(self, answer: ServerAnswer, work_dir: Path) -> dict[str, Any]:
        def read(name: str) -> bytes:
            return (work_dir / name).read_bytes()

        factory = answer.factory
        root = profiles.load_cert(read(files.ROOT_CERT), files.ROOT_CERT)
        profiles.check_root(root, factory=factory, artifact=files.ROOT_CERT)
        profiles.check_key_matches(profiles.load_private_key(read(files.ROOT_KEY), files.ROOT_KEY), root, files.ROOT_KEY)
        tls = profiles.load_cert(read(files.TLS_CERT), files.TLS_CERT)
        tls_csr = profiles.load_csr(read(files.TLS_CSR), files.TLS_CSR)
        profiles.check_gateway_tls(tls, root=root, csr=tls_csr, artifact=files.TLS_CERT)
        artifacts = {"root": root, "tls": tls}
        if self.plan.online_ca:
            online = profiles.load_cert(read(files.ONLINE_CA_CERT), files.ONLINE_CA_CERT)
            ca_csr = profiles.load_csr(read(files.ONLINE_CA_CSR), files.ONLINE_CA_CSR)
            profiles.check_device_ca(online, root=root, factory=factory, csr=ca_csr, artifact=files.ONLINE_CA_CERT)
            artifacts["online"] = online
        if self.plan.local_ca:
            local = profiles.load_cert(read(files.LOCAL_CA_CERT), files.LOCAL_CA_CERT)
            profiles.check_device_ca(
                local, root=root, factory=factory, expected_cn=answer.local_ca_cn, artifact=files.LOCAL_CA_CERT
            )
            local_key = profiles.load_private_key(read(files.LOCAL_CA_KEY), files.LOCAL_CA_KEY)
            profiles.check_key_matches(local_key, local, files.LOCAL_CA_KEY)
            artifacts["local"] = local
        return artifacts

    # Step 5 -----------------------------------------------------------------------------
    def store_artifacts(self, work_dir: Path) -> list[Path]:
        stored = []
        for name in self.plan.kept:
            stored.append(self.pki.write_new(name, (work_dir / name).read_bytes()))
        return stored

    # Step 6 -----------------------------------------------------------------------------
    def patch_body(self) -> dict[str, str]:
        return {
            f.name: "\n".join(self.pki.read_bytes(source).decode() for source in f.sources) for f in self.plan.patch
        }

    def upload(self, result: CreateResult) -> None:
        summary = {
            "factory": self.api.factory,
            "root_fingerprint": result.root_fingerprint,
            "gateway_hosts": result.gateway_hosts,
            "patch_fields": list(result.patch_body),
        }
        if not self.reporter.confirm_upload(summary):
            raise RefusedError(
                f"upload not confirmed; nothing was sent. The new PKI is in {self.pki.path}; "
                "the factory still has no root of trust"
            )
        self.reporter.progress("Uploading signed certs to Foundries")
        self.api.patch_certs(result.patch_body)


def check_csrs(answer: ServerAnswer, plan: CreatePlan) -> None:
    """The CSRs the scripts will sign must be well-formed, self-signed and for this factory."""
    for name in plan.inputs:
        value = answer.field(name)
        if not isinstance(value, str) or not value.strip():
            raise ApiError(f"the POST answer has no {name}; nothing was run")
        csr = profiles.load_csr(value.encode(), name)
        if not csr.is_signature_valid:
            raise CheckError(name, "the CSR's self-signature does not verify")
        ou = profiles.subject_ou(csr)
        if ou != answer.factory:
            raise CheckError(name, f"subject OU is {ou!r}, not the factory {answer.factory!r}")


def answer_from(
    data: dict, raw: bytes, *, factory: str, local_ca_cn: str, on_note: Callable[[str], None] = lambda _l: None
) -> ServerAnswer:
    """Take the scripts out of an answer, or fall back to the bundled ones when it has none."""
    present = {name: jq_field(data, name) for name in SCRIPT_FIELDS}
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
    for name in ("tls-csr", "ca-csr"):
        value = jq_field(data, name)
        if value is not None and not isinstance(value, str):
            raise ApiError(f"the POST answer's {name} is not a string; nothing was run")
    return ServerAnswer(raw, data, scripts, from_server, factory, local_ca_cn)
