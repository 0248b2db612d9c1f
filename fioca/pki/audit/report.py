"""The audit's report: what each script does and what in it is dangerous, as plain data.

Everything the CLI and `create` import from the audit lives here: severities, findings, the
commands and certificates a script asks for, one `ScriptAudit` per script and the
`AuditReport` over all of them, with its JSON (`to_dict`) and SARIF 2.1.0 (`to_sarif`)
forms. Standard library only, so that reading a report needs nothing of the parser.

`RULES` names every finding id the audit can report, with what it means and its usual
severity (some findings of an id are rated lower or higher for what exactly the script does).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # plain data from the shared contract; only its type is named here
    from fioca.pki.asked import AskedCertificate


class Severity(IntEnum):
    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3

    @classmethod
    def parse(cls, text: str) -> Severity:
        """`"high"` -> `Severity.HIGH`; raises ValueError naming the accepted words."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            choices = "|".join(s.label for s in cls)
            raise ValueError(f"unknown severity {text!r}; expected one of {choices}") from None

    @property
    def label(self) -> str:
        return self.name.lower()

    @property
    def sarif_level(self) -> str:
        return {Severity.HIGH: "error", Severity.MEDIUM: "warning"}.get(self, "note")


@dataclass(frozen=True)
class Rule:
    """What a finding id means, and its usual severity."""

    description: str
    severity: Severity  # the usual one; SARIF's default level


RULES: dict[str, Rule] = {
    "unparsable": Rule("the shell parser refused the script, or the audit could not follow it", Severity.HIGH),
    "not-a-shell-script": Rule("the first line runs the script with another interpreter", Severity.HIGH),
    "hidden-characters": Rule("terminal escapes, bidi or zero-width characters in the text", Severity.HIGH),
    "network-access": Rule("a network tool, /dev/tcp, or openssl talking to the network", Severity.HIGH),
    "unresolved-command": Rule("a command name computed, globbed or hidden at run time", Severity.HIGH),
    "shadowed-command": Rule("a function or alias named like a tool, so the tool's name runs other code", Severity.HIGH),
    "eval-data": Rule("data run as code: eval, sh -c, | sh, a written file run, code loaded by a variable", Severity.HIGH),
    "runs-interpreter": Rule("an interpreter (python, perl ...) whose code the audit cannot read", Severity.HIGH),
    "runs-sibling": Rule("runs another of the four scripts from the work dir (audited on its own)", Severity.INFO),
    "unknown-command": Rule("a program the audit does not know", Severity.MEDIUM),
    "absolute-path": Rule("a path outside the work dir by absolute name", Severity.HIGH),
    "outside-workdir": Rule("~, $HOME, .. or another way out of the work dir", Severity.HIGH),
    "unresolved-path": Rule("a file path built at run time, which may point anywhere", Severity.HIGH),
    "reads-proc": Rule("reads /proc: other processes, their command lines and environments", Severity.HIGH),
    "reads-environment": Rule("prints or reads a whole environment (env, set, /proc/*/environ)", Severity.HIGH),
    "reads-credentials": Rule("reads a credential file (the fioctl config and its token, ssh keys ...)", Severity.HIGH),
    "reads-secret-env": Rule("expands a secret variable where it can leak (output, files, other programs)", Severity.HIGH),
    "hsm-pin-on-command-line": Rule("the HSM PIN on a command line, readable by other local users", Severity.MEDIUM),
    "reads-env": Rule("reads an environment variable fioca does not set", Severity.LOW),
    "reads-hsm-env": Rule("reads a variable fioca sets for the scripts (HSM settings, factory values)", Severity.INFO),
    "reads-private-key": Rule("a private key read by anything but openssl's signing options", Severity.HIGH),
    "literal-key": Rule("a private key written in the script's text", Severity.HIGH),
    "key-from-data": Rule("a key not made by a key-generation command (read or derived from data)", Severity.HIGH),
    "chosen-serial": Rule("a certificate serial computed by the script, which can carry data", Severity.HIGH),
    "chosen-key-identifier": Rule("a subject/authority key identifier written or computed by the script", Severity.HIGH),
    "signs-with-own-key": Rule("signs with a key or CA the script made itself, not the factory root", Severity.HIGH),
    "weak-crypto": Rule("RSA below 2048 bits, curves below 224 bits, MD5 or SHA-1", Severity.HIGH),
    "validity-exceeds-profile": Rule("a validity beyond the documented profile of this script", Severity.HIGH),
    "backdated-validity": Rule("a certificate dated other than now: start dates, faketime", Severity.HIGH),
    "root-pathlen": Rule("a root of trust asking for a path length constraint", Severity.HIGH),
    "unresolved-value": Rule("a validity, digest or option computed at run time", Severity.HIGH),
    "differs-from-profile": Rule("not what the profile uses (curve, digest, serial), but nothing weak", Severity.LOW),
    "privilege-change": Rule("sudo, chown, setuid or world-writable modes", Severity.HIGH),
    "persistence": Rule("work installed to run later: crontab, systemctl, at", Severity.HIGH),
    "background-job": Rule("work that outlives the script: &, nohup, setsid", Severity.HIGH),
    "links-file": Rule("a hard or symbolic link, which keeps or redirects a file beyond the work dir", Severity.HIGH),
    "deletes-foreign-file": Rule("deletes a file the script did not create", Severity.HIGH),
    "overwrites-pki-file": Rule("writes a PKI file this script is not meant to make", Severity.HIGH),
    "decodes-data": Rule("decodes data hidden in the script (base64 -d, xxd -r, unpacking)", Severity.MEDIUM),
    "missing-errexit": Rule("no `set -e`: a failing step does not stop the script", Severity.MEDIUM),
    "process-control": Rule("signals other processes (kill, pkill)", Severity.MEDIUM),
    "endless-loop": Rule("a loop that only ends when killed", Severity.MEDIUM),
}


@dataclass(frozen=True)
class Finding:
    """One thing a script does that the audit reports, on one line of it."""

    id: str
    severity: Severity
    line: int  # 1-based line of the script
    text: str  # the script's source line, stripped
    message: str
    # False for a finding in a branch that cannot run in the audited mode (the HSM branch of
    # an audit without HSM, or the other way round): it keeps its severity, the message says so.
    in_mode: bool = True

    def __post_init__(self) -> None:
        # One line, whatever the script spelt in a value it names (`printf 'a\nDone: ...'`): a
        # finding is shown as one line of a refusal or a note, never as two.
        object.__setattr__(self, "message", self.message.replace("\n", "\\n"))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "severity": self.severity.label}


@dataclass(eq=False)
class Command:
    """One simple command as it runs; the openssl fields stay None for other programs."""

    line: int
    argv: list[str]  # values as far as the audit resolves them; the rest as written ($csr)
    subcommand: str | None = None
    key_type: str | None = None  # "ec", "rsa", ...
    curve: str | None = None
    key_bits: int | None = None
    days: int | None = None
    digest: str | None = None
    subject: str | None = None
    extensions: list[str] | None = None  # "name = value" lines from the config it reads
    in_mode: bool = True  # False in a branch that cannot run in the audited mode

    @property
    def program(self) -> str:
        return self.argv[0] if self.argv else ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(eq=False)
class ScriptAudit:
    """What one script is and does, as read from its text."""

    name: str
    size: int
    sha256: str
    # The known script set (fioca's own, api-2023, api-2026) this text equals byte for byte;
    # else None, with a unified diff against the closest one.
    known_set: str | None = None
    closest: str | None = None
    diff: str = ""
    commands: list[Command] = field(default_factory=list)
    reads: list[str] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    # What each certificate-making command asks openssl for; create compares the products.
    asked: list[AskedCertificate] = field(default_factory=list)

    @property
    def max_severity(self) -> Severity | None:
        return max((f.severity for f in self.findings), default=None)

    def to_dict(self) -> dict[str, Any]:
        worst = self.max_severity
        return {
            "name": self.name,
            "size": self.size,
            "sha256": self.sha256,
            "known_set": self.known_set,
            "closest": self.closest,
            "diff": self.diff,
            "commands": [c.to_dict() for c in self.commands],
            "reads": list(self.reads),
            "writes": list(self.writes),
            "deletes": list(self.deletes),
            "asked": [asdict(a) for a in self.asked],
            "findings": [f.to_dict() for f in self.findings],
            "max_severity": worst.label if worst is not None else None,
        }


@dataclass(frozen=True)
class ScriptFinding:
    """A finding with the script it was found in."""

    script: str
    finding: Finding


@dataclass(eq=False)
class AuditReport:
    """The audit of all the scripts of one answer, for one mode."""

    scripts: list[ScriptAudit] = field(default_factory=list)
    hsm: bool = False  # audited as an HSM-mode run would use the scripts
    jail: str = ""  # the jail a real run would use, e.g. "bubblewrap 0.8.0"

    @property
    def max_severity(self) -> Severity | None:
        return max((s.max_severity for s in self.scripts if s.max_severity is not None), default=None)

    def script(self, name: str) -> ScriptAudit:
        return next(script for script in self.scripts if script.name == name)

    def failing(self, level: Severity) -> list[ScriptFinding]:
        """Every finding at or above `level`, with the script it was found in."""
        return [ScriptFinding(s.name, f) for s in self.scripts for f in s.findings if f.severity >= level]

    def counts(self) -> dict[Severity, int]:
        counts = {severity: 0 for severity in Severity}
        for script in self.scripts:
            for finding in script.findings:
                counts[finding.severity] += 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        worst = self.max_severity
        return {
            "hsm": self.hsm,
            "jail": self.jail,
            "scripts": [s.to_dict() for s in self.scripts],
            "max_severity": worst.label if worst is not None else None,
            "counts": {severity.label: n for severity, n in self.counts().items()},
        }

    def to_sarif(self, *, tool_version: str = "") -> dict[str, Any]:
        """SARIF 2.1.0: one run of the tool `fioca`, a rule per finding id, each script an artifact."""
        ids = sorted({f.id for s in self.scripts for f in s.findings})
        rule_index = {rule_id: i for i, rule_id in enumerate(ids)}
        driver: dict[str, Any] = {"name": "fioca", "rules": [_sarif_rule(rule_id) for rule_id in ids]}
        if tool_version:
            driver["version"] = tool_version
        results = [
            _sarif_result(f, script.name, index, rule_index[f.id])
            for index, script in enumerate(self.scripts)
            for f in script.findings
        ]
        run = {
            "tool": {"driver": driver},
            "artifacts": [_sarif_artifact(s) for s in self.scripts],
            "results": results,
            "properties": {"hsm": self.hsm, "jail": self.jail},
        }
        return {
            "$schema": "https://docs.oasis-open.org/sarif/sarif/v2.1.0/os/schemas/sarif-schema-2.1.0.json",
            "version": "2.1.0",
            "runs": [run],
        }


def _sarif_rule(rule_id: str) -> dict[str, Any]:
    rule = RULES.get(rule_id, Rule(rule_id, Severity.HIGH))
    return {
        "id": rule_id,
        "shortDescription": {"text": rule.description},
        "defaultConfiguration": {"level": rule.severity.sarif_level},
    }


def _sarif_result(finding: Finding, script: str, artifact: int, rule: int) -> dict[str, Any]:
    return {
        "ruleId": finding.id,
        "ruleIndex": rule,
        "level": finding.severity.sarif_level,
        "message": {"text": finding.message},
        "locations": [
            {
                "physicalLocation": {
                    "artifactLocation": {"uri": script, "index": artifact},
                    "region": {"startLine": max(finding.line, 1), "snippet": {"text": finding.text}},
                }
            }
        ],
        "properties": {"severity": finding.severity.label, "inMode": finding.in_mode},
    }


def _sarif_artifact(script: ScriptAudit) -> dict[str, Any]:
    artifact: dict[str, Any] = {"location": {"uri": script.name}, "length": script.size, "mimeType": "text/x-shellscript"}
    if script.sha256:
        artifact["hashes"] = {"sha-256": script.sha256}
    artifact["properties"] = {"knownSet": script.known_set, "closest": script.closest}
    return artifact
