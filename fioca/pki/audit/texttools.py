"""Text tools: what they read, what they print, and the programs some of them run.

`cat` of known files prints known text, and `base64 -d` of known text decodes it, so a command
name hidden that way is still found. `sed` scripts and `awk` programs are read for what runs
commands or writes files (`e`, `w`, `system()`, `print > file`).
"""

from __future__ import annotations

import base64
import binascii
import re

from fioca.pki.audit import getopt, knowledge, paths
from fioca.pki.audit.report import Severity
from fioca.pki.audit.state import (
    COMPUTED,
    EMPTY,
    Field,
    FileInfo,
    Invocation,
    Output,
    Value,
)


def cat(inv: Invocation) -> Output:
    names = inv.operands()
    if not names:
        stdin = inv.stdin or Output()
        return Output(stdin.content, stdin.key, "data", line=stdin.line, reported=True)
    content: Value | None = EMPTY
    key = None
    for f in names:
        if f.text == "-":
            info = FileInfo(inv.stdin.content if inv.stdin else None, inv.stdin.key if inv.stdin else None)
        else:
            info = paths.read(inv.state, f, inv.line, "cat")
        key = key or (info.key if info else None)
        content = content + info.content if content is not None and info is not None and info.content is not None else None
    first = inv.state.file(names[0].text)
    return Output(content, key, "data", line=first.line if first and len(names) == 1 else 0, reported=True)


def filter_tool(inv: Invocation) -> Output:
    """head, tail, cut, sort, grep ...: the first operand is the program for grep/sed/awk."""
    values = knowledge.VALUE_OPTIONS.get(inv.name, set())
    operands = inv.operands(values)
    if inv.name in ("grep", "egrep", "fgrep", "sed", "awk", "gawk", "mawk", "nawk") and operands:
        if not any(t in ("-e", "-f", "--regexp", "--expression", "--file") for t in inv.texts[1:]):
            operands = operands[1:]
    for f in [inv.option("-f", "--file")] if inv.name != "cut" else []:
        if f is not None:
            paths.read(inv.state, f, inv.line, inv.name)
    key = inv.stdin.key if inv.stdin else None
    for f in operands:
        info = paths.read(inv.state, f, inv.line, inv.name)
        key = key or (info.key if info else None)
    if inv.name == "sort" and inv.option("-o") is not None:
        paths.write(inv.state, inv.option("-o"), inv.line, FileInfo(None, key, "data"))
    return Output(Value.unknown(f"$({inv.name})", COMPUTED), key, "data", reported=True)


def sed(inv: Invocation) -> Output:
    """Its scripts (`-e`, `-f`, else the first operand) read for `e` and `w`; its options as GNU
    getopt reads them (`--expression=...`, `-ne SCRIPT`), and HIGH where they cannot be."""
    parsed = getopt.parse(inv.args, getopt.SED)
    if parsed.unknown:
        inv.find("unresolved-value", Severity.HIGH,
                 f"sed {parsed.unknown[0]}: an option the audit does not read as sed does, so it cannot tell what sed runs or writes")  # fmt: skip
    scripts = parsed.values("-e", "--expression")
    for program_file in parsed.values("-f", "--file"):
        program = _program_file(inv, program_file)
        if program is not None:
            scripts.append(Field(Value.of(program), False, True, inv.line))
    given = bool(scripts) or parsed.has("-f", "--file")
    operands = parsed.operands if given else parsed.operands[1:]
    for script in scripts if given else parsed.operands[:1]:
        _sed_script(inv, script)
    if parsed.has("-i", "--in-place"):
        for f in operands:
            paths.write(inv.state, f, inv.line, FileInfo(None, None, "data"))
    key = inv.stdin.key if inv.stdin else None
    for f in operands:
        info = paths.read(inv.state, f, inv.line, inv.name)
        key = key or (info.key if info else None)
    return Output(Value.unknown(f"$({inv.name})", COMPUTED), key, "data", reported=True)


def _sed_script(inv: Invocation, script: Field) -> None:
    """GNU sed runs commands (`e`, the `e` flag of `s`) and writes files (`w`, `W`, the `w` flag)."""
    text = script.value.literal()
    if text is None:
        inv.find("eval-data", Severity.HIGH, f"sed runs a script built at run time ({script.text})")
        return
    for command, argument in _sed_commands(text):
        if command == "e":
            inv.find("eval-data", Severity.HIGH, "sed's e command runs its text as a shell command")
        elif command in ("w", "W"):
            paths.write(inv.state, Field(Value.of(argument), False, True, inv.line), inv.line, FileInfo(None, None, "data"))
        elif command in ("r", "R"):
            paths.read(inv.state, Field(Value.of(argument), False, True, inv.line), inv.line, "sed")


def _sed_commands(text: str) -> list[tuple[str, str]]:
    """(command letter, its file or flags) of each command of a sed script, roughly as GNU sed reads it."""
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(text):
        m = re.match(r"[\s;{}!]*(?:(?:\d+|\$|/(?:\\.|[^/])*/)(?:,(?:\d+|\$|/(?:\\.|[^/])*/))?)?[\s!]*", text[i:])
        i += m.end() if m else 0
        if i >= len(text):
            break
        c = text[i]
        if c in "sy" and i + 1 < len(text):
            delim = text[i + 1]
            j, parts = i + 2, 0
            while j < len(text) and parts < 2:
                if text[j] == "\\":
                    j += 1
                elif text[j] == delim:
                    parts += 1
                j += 1
            flags = re.match(r"[^;\n}]*", text[j:]).group(0)
            if c == "s" and "e" in re.sub(r"w.*", "", flags):
                out.append(("e", ""))
            if c == "s" and "w" in flags:
                out.append(("w", flags.split("w", 1)[1].strip()))
            i = j + len(flags)
        elif c in "wWrRe":
            rest = re.match(r"[^\n]*", text[i + 1 :]).group(0)
            out.append((c, rest.strip()))
            i += 1 + len(rest)
        elif c in "aic":
            i += 1 + len(re.match(r"[^\n]*", text[i + 1 :]).group(0))
        elif c in ":bt":
            i += 1 + len(re.match(r"[^;\n]*", text[i + 1 :]).group(0))
        else:
            i += 1
    return out


def awk(inv: Invocation) -> Output:
    program_file = inv.option("-f")
    if program_file is not None:
        program = _program_file(inv, program_file)
    else:
        first = next(iter(inv.operands(knowledge.VALUE_OPTIONS["awk"])), None)
        program = first.value.literal() if first is not None else ""
        if program is None:
            inv.find("eval-data", Severity.HIGH, f"awk runs a program built at run time ({first.text})")
    if program:
        _awk_program(inv, program)
    return filter_tool(inv)


def _program_file(inv: Invocation, f: Field) -> str | None:
    """`awk -f FILE`, `sed -f FILE`: the program, when the script wrote it as known text."""
    info = paths.read(inv.state, f, inv.line, inv.name)
    if info is None or not info.written or info.content is None or not info.content.known:
        inv.find("eval-data", Severity.HIGH, f"{inv.name} -f {f.text} runs a program the audit cannot read")
        return None
    return info.content.text


def _awk_program(inv: Invocation, text: str) -> None:
    if re.search(r"\bsystem\s*\(|\|\s*getline|\|&|print[^;}]*\|", text):
        inv.find("eval-data", Severity.HIGH, "the awk program runs commands (system(), pipes)")
    for m in re.finditer(r"print[f]?[^;}]*?>>?\s*(\"[^\"]*\"|\S+)", text):
        target = m.group(1).strip('"')
        if m.group(1).startswith('"'):
            paths.write(inv.state, Field(Value.of(target), False, True, inv.line), inv.line, FileInfo(None))
        else:
            inv.find("unresolved-path", Severity.HIGH, f"the awk program writes to {target}, a file named at run time")
    for m in re.finditer(r"getline\s*<\s*(\"[^\"]*\"|\S+)", text):
        paths.read(inv.state, Field(Value.of(m.group(1).strip('"')), False, True, inv.line), inv.line, "awk")


def decoder(inv: Invocation) -> Output:
    """base64 -d, xxd -r, gunzip ...: hidden data; base64 of known text is decoded here."""
    flags = knowledge.DECODERS.get(inv.name, ())
    decoding = not flags or any(t in flags for t in inv.texts[1:])
    if not decoding:
        return filter_tool(inv)
    inv.find("decodes-data", Severity.MEDIUM, f"{inv.name} decodes data hidden in the script")
    out = filter_tool(inv)
    source = inv.stdin.content if inv.stdin and not inv.operands() else None
    if inv.name == "base64" and source is not None and source.known:
        try:
            decoded = base64.b64decode("".join(source.text.split()), validate=True).decode("utf-8")
            return Output(Value.of(decoded, computed=True), out.key, "data", reported=True)
        except (binascii.Error, UnicodeDecodeError, ValueError):
            pass
    return out


def tr(inv: Invocation) -> Output:
    stdin = inv.stdin
    return Output(Value.unknown("$(tr)", COMPUTED, stdin.content.taints if stdin and stdin.content else frozenset()),
                  stdin.key if stdin else None, "data", reported=True)  # fmt: skip
