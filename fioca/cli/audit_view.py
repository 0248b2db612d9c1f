"""Text layout of an audit report (`fioca keys ca audit --format text`).

A pure function of the report: the CLI prints what it returns. JSON output is
`AuditReport.to_dict()`, SARIF `AuditReport.to_sarif()`; neither needs a layout. The script
text quoted in diffs came from the server: control characters are shown escaped, so that no
byte of it can rewrite the terminal.
"""

from __future__ import annotations

import re

from fioca.pki.asked import AskedCertificate
from fioca.pki.audit.report import AuditReport, Command, ScriptAudit, Severity

_INDENT = "  "
_ARGV_WIDTH = 100
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")


def render_text(report: AuditReport) -> str:
    """The mode and jail, every script (header, known set, diff, commands, certificates,
    files, findings), then a summary line."""
    head = f"audited for a run {'with the root key on an HSM' if report.hsm else 'without HSM'}; jail: {report.jail or 'unknown'}"
    blocks = [head] + [_script_block(script) for script in report.scripts]
    if not report.scripts:
        blocks.append("no scripts in the answer (a modern answer carries only CSRs)")
    return _safe("\n\n".join(blocks) + "\n\n" + _summary(report) + "\n")


def _safe(text: str) -> str:
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}" if ord(m.group()) > 0xFF else f"\\x{ord(m.group()):02x}", text)


def _script_block(script: ScriptAudit) -> str:
    lines = [f"== {script.name}  {script.size} bytes  sha256 {script.sha256}"]
    if script.known_set:
        lines.append(f"matches the known script set {script.known_set}")
    elif script.diff:
        lines.append(f"matches no known script; differs from the closest ({script.closest}):")
        lines.extend(_INDENT + line for line in script.diff.rstrip("\n").split("\n"))
    else:
        lines.append("no known script to compare with")
    if script.commands:
        lines.append("commands:")
        for command in script.commands:
            lines.extend(_command_lines(command))
    if script.asked:
        lines.append("certificates asked for:")
        lines.extend(_asked_line(asked) for asked in script.asked)
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
    lines = [f"{_INDENT}line {command.line:<4} {argv}" + ("" if command.in_mode else "   (not in this mode)")]
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


def _asked_line(asked: AskedCertificate) -> str:
    where = asked.output or "stdout"
    days = asked.days if asked.days is not None else "computed"
    signed = "self-signed" if asked.self_signed else "signed by a CA"
    extensions = "unknown" if asked.extensions is None else str(len(asked.extensions))
    return (f"{_INDENT}{asked.script} line {asked.line}: {asked.command} -> {where}, {signed}, days {days}, "
            f"digest {asked.digest or 'default'}, {extensions} extension(s)")  # fmt: skip


def _summary(report: AuditReport) -> str:
    counts = report.counts()
    parts = ", ".join(f"{counts[s]} {s.label}" for s in sorted(Severity, reverse=True))
    scripts = len(report.scripts)
    return f"{scripts} script{'s' if scripts != 1 else ''} audited: {parts}"
