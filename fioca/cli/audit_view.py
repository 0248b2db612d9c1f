"""Text layout of an audit report (`fioca keys ca audit --format text`).

A pure function of the report: the CLI prints what it returns. JSON output is
`AuditReport.to_dict()` and needs no layout.
"""

from __future__ import annotations

from fioca.pki.audit import AuditReport, Command, ScriptAudit, Severity

_INDENT = "  "
_ARGV_WIDTH = 100


def render_text(report: AuditReport) -> str:
    """Every script (header, reference, diff, commands, files, findings), then a summary line."""
    blocks = [_script_block(script) for script in report.scripts]
    if not report.scripts:
        blocks.append("no scripts in the answer (a modern answer carries only CSRs)")
    return "\n\n".join(blocks) + "\n\n" + _summary(report) + "\n"


def _script_block(script: ScriptAudit) -> str:
    lines = [f"== {script.name}  {script.size} bytes  sha256 {script.sha256}"]
    if script.matches_reference:
        lines.append("matches the reference")
    elif script.diff:
        lines.append("differs from the reference:")
        lines.extend(_INDENT + line for line in script.diff.rstrip("\n").split("\n"))
    else:
        lines.append("no reference to compare with")
    if script.commands:
        lines.append("commands:")
        for command in script.commands:
            lines.extend(_command_lines(command))
    for label, names in (("reads", script.reads), ("writes", script.writes), ("deletes", script.deletes)):
        lines.append(f"{label}: {', '.join(names) if names else '-'}")
    if script.findings:
        lines.append("findings:")
        width = max(len(f.severity.name) for f in script.findings)
        for finding in script.findings:
            lines.append(f"{_INDENT}{finding.severity.name:<{width}}  line {finding.line}: {finding.id}: {finding.message}")
    else:
        lines.append("findings: none")
    return "\n".join(lines)


def _command_lines(command: Command) -> list[str]:
    argv = " ".join(command.argv)
    if len(argv) > _ARGV_WIDTH:
        argv = argv[: _ARGV_WIDTH - 3] + "..."
    lines = [f"{_INDENT}line {command.line:<4} {argv}"]
    details = []
    if command.key_type:
        key = command.key_type
        if command.curve:
            key += f" {command.curve}"
        if command.key_bits:
            key += f" {command.key_bits} bits"
        details.append(f"key {key}")
    elif command.curve:
        details.append(f"curve {command.curve}")
    if command.days is not None:
        details.append(f"days {command.days}")
    if command.digest:
        details.append(f"digest {command.digest}")
    if command.subject:
        details.append(f"subject {command.subject}")
    pad = _INDENT * 2 + " " * 10
    if details:
        lines.append(pad + ", ".join(details))
    for extension in command.extensions or []:
        lines.append(pad + "ext " + extension)
    return lines


def _summary(report: AuditReport) -> str:
    counts = report.counts()
    parts = ", ".join(f"{counts[s]} {s.label}" for s in sorted(Severity, reverse=True))
    scripts = len(report.scripts)
    return f"{scripts} script{'s' if scripts != 1 else ''} audited: {parts}"
