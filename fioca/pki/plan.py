"""The steps of `keys ca create` as data.

One plan object drives the real run, the dry-run and the audit's view of what will run: a
dry-run prints exactly the steps a real run would execute, because both read this plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fioca import facts


@dataclass(frozen=True)
class ScriptStep:
    """Run `./script args...` in the work dir (PKI-SPEC section 3, steps 3-6)."""

    script: str
    args: tuple[str, ...]
    progress: str  # the line fioctl prints before the step
    produces: tuple[str, ...]  # files the script must leave in the work dir
    stdout_file: str | None = None  # the script's stdout is this artifact

    @property
    def command(self) -> str:
        line = " ".join((f"./{self.script}", *self.args))
        return f"{line} > {self.stdout_file}" if self.stdout_file else line


@dataclass(frozen=True)
class PatchField:
    """One field of the PATCH: the named work-dir files joined with "\\n"."""

    name: str
    sources: tuple[str, ...]


@dataclass(frozen=True)
class CreatePlan:
    online_ca: bool
    local_ca: bool
    hsm: bool
    inputs: tuple[str, ...]  # files written into the work dir before any step runs
    steps: tuple[ScriptStep, ...]
    patch: tuple[PatchField, ...]
    kept: tuple[str, ...] = field(default=())  # what moves into the PKI dir, in order

    @property
    def scripts(self) -> tuple[str, ...]:
        return tuple(step.script for step in self.steps)

    def describe(self, work_dir: Path | str, pki_dir: Path | str) -> dict:
        """The plan as plain data, for the dry-run's text and JSON output."""
        return {
            "work_dir": str(work_dir),
            "pki_dir": str(pki_dir),
            "hsm": self.hsm,
            "inputs": list(self.inputs),
            "steps": [
                {
                    "progress": step.progress,
                    "command": step.command,
                    "cwd": str(work_dir),
                    "produces": list(step.produces) + ([step.stdout_file] if step.stdout_file else []),
                }
                for step in self.steps
            ],
            "kept": list(self.kept),
            "patch": {f.name: " + \"\\n\" + ".join(f.sources) for f in self.patch},
        }


def plan_create(*, online_ca: bool = True, local_ca: bool = True, hsm: bool = False) -> CreatePlan:
    root_files = (facts.ROOT_CERT,) if hsm else (facts.ROOT_KEY, facts.ROOT_CERT)
    steps = [
        ScriptStep("create_ca", (), "Creating offline root CA for Factory", produces=root_files),
        ScriptStep(
            "sign_tls_csr", (facts.TLS_CSR,), "Signing Foundries TLS CSR", produces=(), stdout_file=facts.TLS_CERT
        ),
    ]
    inputs = [facts.TLS_CSR]
    ca_sources: list[str] = []
    if online_ca:
        inputs.append(facts.ONLINE_CA_CSR)
        steps.append(
            ScriptStep(
                "sign_ca_csr",
                (facts.ONLINE_CA_CSR,),
                "Signing Foundries CSR for online use",
                produces=(),
                stdout_file=facts.ONLINE_CA_CERT,
            )
        )
        ca_sources.append(facts.ONLINE_CA_CERT)
    if local_ca:
        steps.append(
            ScriptStep(
                "create_device_ca",
                (facts.LOCAL_CA_KEY, facts.LOCAL_CA_CERT),
                "Creating local device CA",
                produces=(facts.LOCAL_CA_KEY, facts.LOCAL_CA_CERT),
            )
        )
        ca_sources.append(facts.LOCAL_CA_CERT)
    patch = [PatchField("root-crt", (facts.ROOT_CERT,)), PatchField("tls-crt", (facts.TLS_CERT,))]
    if ca_sources:
        patch.append(PatchField("ca-crt", tuple(ca_sources)))
    kept = [*root_files, facts.TLS_CERT]
    kept += [name for step in steps[2:] for name in (step.stdout_file, *step.produces) if name]
    kept += inputs + [step.script for step in steps]
    return CreatePlan(
        online_ca=online_ca,
        local_ca=local_ca,
        hsm=hsm,
        inputs=tuple(inputs),
        steps=tuple(steps),
        patch=tuple(patch),
        kept=tuple(kept),
    )
