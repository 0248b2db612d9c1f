"""The audit of the scripts a server sends, read from their text before anything runs them.

    report = audit_scripts(scripts, hsm=False, known=known_sets, jail="bubblewrap 0.8.0")

Each script is parsed by a real shell parser (`parser`: mvdan/sh through shfmt, failing
closed), walked as sh would run it (`walker`, with the handlers of `commands`, `builtins`,
`fileops`, `texttools` and `openssl`, the tables of `knowledge`), and reported (`report`):
its SHA-256, which known script set it equals byte for byte (or a diff against the closest),
the commands it runs, the files it touches, the certificates it asks openssl for, and findings
with a severity. `create` refuses HIGH findings before any script runs.
"""

from __future__ import annotations

from typing import Any

from fioca.pki.audit.report import (
    AuditReport,
    Command,
    Finding,
    ScriptAudit,
    ScriptFinding,
    Severity,
)

__all__ = ["AuditReport", "Command", "Finding", "ScriptAudit", "ScriptFinding", "Severity", "audit_scripts"]


def __getattr__(name: str) -> Any:
    # The parser and the walker load on first use: the CLI imports the report model (light)
    # to build its options, and only an audit needs the rest.
    if name == "audit_scripts":
        from fioca.pki.audit.run import audit_scripts

        return audit_scripts
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
