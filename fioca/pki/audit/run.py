"""Auditing a set of scripts: parse each, walk it, compare it with the known sets."""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Mapping
from dataclasses import replace

from fioca.pki.audit import knowledge, parser, walker
from fioca.pki.audit.report import AuditReport, Finding, ScriptAudit, Severity
from fioca.pki.audit.state import World


def audit_scripts(
    scripts: Mapping[str, object], *, hsm: bool, known: dict[str, dict[str, str]], jail: str,
    parsing: parser.Parsing | None = None,
) -> AuditReport:
    """Audit every script (by name, in the order given) as a run in this mode would use it.

    `known` holds the script sets fioca knows (`reference.known_sets`), each by name; `jail`
    says which jail a real run would use, for the report; `parsing`, the parse of these very
    `scripts` when the caller started it already.
    """
    trees = (parsing or parser.Parsing(scripts)).trees()
    report = AuditReport(hsm=hsm, jail=jail)
    worlds: dict[str, World] = {}
    for name, text in scripts.items():
        if not isinstance(text, str):
            finding = Finding("unparsable", Severity.HIGH, 1, "", f"{name} is a JSON {type(text).__name__}, not the text of a script")
            report.scripts.append(ScriptAudit(name=name, size=0, sha256="", findings=[finding]))
            continue
        audit, world = _audit_one(name, text, trees[name], hsm=hsm, known=known)
        report.scripts.append(audit)
        worlds[name] = world
    _add_sibling_certificates(report, worlds)
    return report


def _audit_one(name: str, text: str, tree: parser.Script | parser.ParseFailure, *, hsm: bool,
               known: dict[str, dict[str, str]]) -> tuple[ScriptAudit, World]:  # fmt: skip
    data = text.encode("utf-8", "surrogatepass")
    world = World(name, text.split("\n"), knowledge.profile_for(name))
    if isinstance(tree, parser.ParseFailure):
        state = walker.State(world, hsm)
        walker.check_text(state, text)
        state.find("unparsable", Severity.HIGH, tree.line, f"the shell parser refused the script: {tree.message}; nothing of it is audited")
    else:
        try:
            walker.walk_script(world, tree, text, hsm=hsm)
        except RecursionError:
            walker.State(world, hsm).find("unparsable", Severity.HIGH, 1, "nested too deeply to follow; not audited")
        except Exception as error:  # noqa: BLE001 - an audit that breaks must fail closed, not crash create
            walker.State(world, hsm).find("unparsable", Severity.HIGH, 1,
                                          f"the audit could not follow this script ({type(error).__name__}); not audited")  # fmt: skip
    known_set, closest, diff = _compare(name, text, known)
    audit = ScriptAudit(
        name=name, size=len(data), sha256=hashlib.sha256(data).hexdigest(), known_set=known_set, closest=closest,
        diff=diff, commands=sorted(world.commands, key=lambda c: c.line), reads=list(world.reads), writes=list(world.writes),
        deletes=list(world.deletes), findings=sorted(world.findings, key=lambda f: (f.line, -f.severity, f.id)),
        asked=list(world.asked),
    )  # fmt: skip
    return audit, world


def _compare(name: str, text: str, known: dict[str, dict[str, str]]) -> tuple[str | None, str | None, str]:
    """The known set this text equals byte for byte; else the closest one and the diff to it."""
    candidates = {set_name: texts[name] for set_name, texts in known.items() if isinstance(texts.get(name), str)}
    for set_name, reference in candidates.items():
        if reference == text:
            return set_name, None, ""
    if not candidates:
        return None, None, ""
    lines = text.splitlines()
    closest = max(candidates, key=lambda s: difflib.SequenceMatcher(None, candidates[s].splitlines(), lines).ratio())
    return None, closest, _diff(f"{closest}/{name}", candidates[closest], f"server/{name}", text)


def _diff(left_name: str, left: str, right_name: str, right: str) -> str:
    def lines(s: str) -> list[str]:
        out = s.splitlines(keepends=True)
        if out and not out[-1].endswith("\n"):
            out[-1] += "\n\\ No newline at end of file\n"
        return out

    return "".join(difflib.unified_diff(lines(left), lines(right), fromfile=left_name, tofile=right_name))


def _add_sibling_certificates(report: AuditReport, worlds: dict[str, World]) -> None:
    """`$here/sign_ca_csr device-ca.csr > $crt`: the sibling's certificate is this script's too,
    written where this script sends the sibling's output."""
    audits = {s.name: s for s in report.scripts}
    for name, world in worlds.items():
        for sibling, stdout in world.siblings:
            if sibling == name or sibling not in audits:
                continue
            for asked in audits[sibling].asked:
                output = asked.output if asked.output is not None else stdout
                audits[name].asked.append(replace(asked, output=output))
