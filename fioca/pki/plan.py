"""The steps of `keys ca create` as data: what the real run executes and the dry-run prints.

A plan lists every step in order: saving the answer, each script with what it is given and
what it must make, the checks on what it made, what is kept in the PKI dir, the check of
the stored bytes right before the upload, and the PATCH. The flow (`create.py`) walks this
list and nothing else; the dry-run prints it (`describe()`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from fioca import facts

PROGRESS = {
    facts.CREATE_CA: "Creating offline root CA for Factory",
    facts.SIGN_TLS_CSR: "Signing Foundries.io TLS CSR",
    facts.SIGN_CA_CSR: "Signing Foundries.io CSR for online use",
    facts.CREATE_DEVICE_CA: "Creating local device CA",
}
UPLOADING = "Uploading signed certs to Foundries.io"


@dataclass(frozen=True)
class ScriptStep:
    """Run `./script args...` in a fresh work dir (PKI-SPEC section 3, steps 3-6)."""

    script: str
    args: tuple[str, ...]
    stages: tuple[str, ...]  # files of the PKI dir copied into the work dir first
    produces: tuple[str, ...]  # files the script must leave in the work dir
    stdout_file: str | None = None  # the script's stdout is this artifact
    checks: tuple[str, ...] = ()  # what each product is checked against, for people

    @property
    def progress(self) -> str:
        return PROGRESS[self.script]

    @property
    def products(self) -> tuple[str, ...]:
        return self.produces + ((self.stdout_file,) if self.stdout_file else ())

    @property
    def command(self) -> str:
        line = " ".join((f"./{self.script}", *self.args))
        return f"{line} > {self.stdout_file}" if self.stdout_file else line


@dataclass(frozen=True)
class PatchField:
    """One field of the PATCH: the named PKI-dir files joined with "\\n"."""

    name: str
    sources: tuple[str, ...]


@dataclass(frozen=True)
class CreatePlan:
    """The steps of one create, in order: what it saves, runs, keeps and uploads."""

    online_ca: bool
    local_ca: bool
    hsm: bool
    saved: tuple[str, ...]  # the answer's parts kept in the PKI dir before any step runs
    steps: tuple[ScriptStep, ...]
    patch: tuple[PatchField, ...]

    @property
    def scripts(self) -> tuple[str, ...]:
        return tuple(step.script for step in self.steps)

    @property
    def kept(self) -> tuple[str, ...]:
        """Every file the PKI dir holds once create has finished, in the order it is made."""
        return self.saved + tuple(name for step in self.steps for name in step.products)

    @property
    def uploaded(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(source for field in self.patch for source in field.sources))

    def step(self, script: str) -> ScriptStep:
        return next(step for step in self.steps if step.script == script)

    def waits_for(self, step: ScriptStep, *, side_by_side: bool) -> tuple[str, ...]:
        """The steps kept before `step` starts: side by side, those that make a file it is
        given (the root, for the signing steps); else the step before it."""
        before = self.steps[: self.steps.index(step)]
        if not side_by_side:
            return tuple(earlier.script for earlier in before[-1:])
        return tuple(earlier.script for earlier in before if set(earlier.products) & set(step.stages))

    def side_by_side(self, *, jailed: bool) -> bool:
        """Whether a step starts as soon as the steps it waits for are kept (each script in its
        own jail and work dir), rather than after the step before it: in the jail, without an
        HSM. One token is used by one script at a time, watched around it; and with no jail a
        script has the user's files, which fioca never lets two scripts share."""
        return jailed and not self.hsm

    def describe(self, *, pki_dir: str, jail: str, side_by_side: bool) -> dict:
        """The plan as plain data, for the dry-run's text and JSON output."""
        steps: list[dict] = [
            {
                "kind": "save",
                "what": f"the POST answer as {facts.FACTORY_CERTS_JSON}, and its parts",
                "files": list(self.saved),
            }
        ]
        for step in self.steps:
            steps.append(
                {
                    "kind": "run",
                    "progress": step.progress,
                    "command": step.command,
                    "cwd": os.path.join(pki_dir, facts.work_dir_of(step.script)),
                    "jail": jail,
                    "waits_for": list(self.waits_for(step, side_by_side=side_by_side)),
                    "stages": list(step.stages),
                    "produces": list(step.products),
                    "checks": list(step.checks),
                    "keeps": list(step.products),
                }
            )
        steps.append(
            {
                "kind": "verify",
                "what": "read the uploaded files back from the PKI dir and check them whole, "
                "with the chain, right before the upload",
                "files": list(self.uploaded),
            }
        )
        steps.append(
            {
                "kind": "upload",
                "progress": UPLOADING,
                "patch": {field.name: ' + "\\n" + '.join(field.sources) for field in self.patch},
            }
        )
        return {"pki_dir": pki_dir, "jail": jail, "hsm": self.hsm, "side_by_side": side_by_side, "steps": steps}


def plan_create(*, online_ca: bool = True, local_ca: bool = True, hsm: bool = False) -> CreatePlan:
    """The documented flow for these options (PKI-SPEC section 3)."""
    root_files = (facts.ROOT_CERT,) if hsm else (facts.ROOT_KEY, facts.ROOT_CERT)
    steps = [_create_ca_step(root_files, hsm), _sign_tls_step(root_files)]
    saved = [facts.FACTORY_CERTS_JSON, facts.TLS_CSR]
    ca_sources: list[str] = []
    if online_ca:
        saved.append(facts.ONLINE_CA_CSR)
        steps.append(_sign_ca_step(root_files))
        ca_sources.append(facts.ONLINE_CA_CERT)
    if local_ca:
        steps.append(_create_device_ca_step(root_files))
        ca_sources.append(facts.LOCAL_CA_CERT)
    saved += list(facts.SCRIPT_NAMES)
    patch = [PatchField("root-crt", (facts.ROOT_CERT,)), PatchField("tls-crt", (facts.TLS_CERT,))]
    if ca_sources:
        patch.append(PatchField("ca-crt", tuple(ca_sources)))
    return CreatePlan(online_ca, local_ca, hsm, tuple(saved), tuple(steps), tuple(patch))


# Each signing step is given the root files: its certificate, and its key unless on a token.


def _create_ca_step(root_files: tuple[str, ...], hsm: bool) -> ScriptStep:
    return ScriptStep(
        facts.CREATE_CA,
        (),
        stages=(),
        produces=root_files,
        checks=(
            f"{facts.ROOT_CERT}: exactly what create_ca's text asks openssl for; the root-of-trust rules "
            "(self-signed CA, OU = the factory, P-256, ECDSA-SHA256, valid from now)",
            f"{facts.ROOT_KEY}: matches {facts.ROOT_CERT}" if not hsm else "the token's root-ca key matches it",
        ),
    )


def _sign_tls_step(root_files: tuple[str, ...]) -> ScriptStep:
    return ScriptStep(
        facts.SIGN_TLS_CSR,
        (facts.TLS_CSR,),
        stages=(*root_files, facts.TLS_CSR),
        produces=(),
        stdout_file=facts.TLS_CERT,
        checks=(f"{facts.TLS_CERT}: as sign_tls_csr asks; signed by the root; the CSR's key and DNS names; serverAuth",),
    )


def _sign_ca_step(root_files: tuple[str, ...]) -> ScriptStep:
    return ScriptStep(
        facts.SIGN_CA_CSR,
        (facts.ONLINE_CA_CSR,),
        stages=(*root_files, facts.ONLINE_CA_CSR),
        produces=(),
        stdout_file=facts.ONLINE_CA_CERT,
        checks=(
            f"{facts.ONLINE_CA_CERT}: as sign_ca_csr asks; signed by the root; the CSR's key; "
            "a device CA (CA:TRUE, keyCertSign) with OU = the factory",
        ),
    )


def _create_device_ca_step(root_files: tuple[str, ...]) -> ScriptStep:
    return ScriptStep(
        facts.CREATE_DEVICE_CA,
        (facts.LOCAL_CA_KEY, facts.LOCAL_CA_CERT),
        stages=root_files,
        produces=(facts.LOCAL_CA_KEY, facts.LOCAL_CA_CERT),
        checks=(
            f"{facts.LOCAL_CA_CERT}: as create_device_ca asks; signed by the root; a device CA with "
            "CN = fio-<polis-id>, OU = the factory",
            f"{facts.LOCAL_CA_KEY}: matches {facts.LOCAL_CA_CERT}",
        ),
    )
