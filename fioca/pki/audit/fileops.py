"""Commands that make, copy, link, delete and change files.

A copy or a rename carries what the audit knows of a file (its content, the key it holds), so
a key copied under another name is still the key. Deleting is fine only for what the script
made itself; a link, hard or symbolic, is HIGH: it keeps a file reachable, or sends a write,
beyond the work dir.
"""

from __future__ import annotations

import re

from fioca.pki.audit import getopt, knowledge, paths
from fioca.pki.audit.report import Severity
from fioca.pki.audit.state import (
    ARG,
    COMPUTED,
    TMP,
    Field,
    FileInfo,
    Invocation,
    Output,
    Value,
)


def remove(inv: Invocation) -> Output:
    recursive = any(re.fullmatch(r"-[a-zA-Z]*[rR][a-zA-Z]*|--recursive", t) for t in inv.texts[1:])
    for f in inv.operands():
        delete(inv, f, recursive)
    return Output()


def delete(inv: Invocation, field: Field, recursive: bool) -> None:
    state = inv.state
    name = paths.check(state, field, "delete", inv.line)
    if field.glob:
        matched = ", ".join(paths.glob_matches(state, field.text)) or "files"
        inv.find("deletes-foreign-file", Severity.HIGH, f"deletes {field.text}: a glob that matches {matched} the script did not create")
        return
    if name is None:
        if not field.value.kinds():
            inv.find("deletes-foreign-file", Severity.HIGH, f"deletes {field.text}, outside the work dir")
        return
    info = state.file(name)
    if (info is not None and info.written) or name in state.world.created_dirs:
        state.world.files.pop(name, None)
        return
    what = "a directory tree" if recursive else "a file"
    inv.find("deletes-foreign-file", Severity.HIGH, f"deletes {field.text}, {what} the script did not create")


def make_dir(inv: Invocation) -> Output:
    for f in inv.operands(knowledge.VALUE_OPTIONS["mkdir"]):
        name = paths.check(inv.state, f, "write", inv.line)
        if name is not None:
            inv.state.world.created_dirs.add(name)
    return Output()


def touch(inv: Invocation) -> Output:
    for f in inv.operands(knowledge.VALUE_OPTIONS.get(inv.name, set())):
        before = inv.state.file(f.text)
        paths.write(inv.state, f, inv.line, before or FileInfo(None, None, "data"))
    return Output()


def copy(inv: Invocation) -> Output:
    """cp, mv, install: each source's content and key go with it to the destination. Options
    are read as GNU getopt reads them (`cp -t. src` copies into `.`); what cannot be read so,
    and copies whose written names cannot be told (folders, globs), are HIGH."""
    parsed = getopt.parse(inv.args, _COPY_OPTIONS[inv.name])
    if parsed.unknown:
        inv.find("unresolved-value", Severity.HIGH,
                 f"{inv.name} {parsed.unknown[0]}: an option the audit does not read as {inv.name} does, so it cannot tell what is written")  # fmt: skip
    if inv.name == "cp" and parsed.has("-l", "-s", "--link", "--symbolic-link"):
        return link(inv)
    if inv.name == "cp" and parsed.has("-r", "-R", "-a", "--recursive", "--archive"):
        inv.find("unresolved-path", Severity.HIGH, f"{inv.name} copies folders: the files it writes cannot be named")
    operands = parsed.operands
    target_dirs = parsed.values("-t", "--target-directory")
    if target_dirs:
        sources, dest = operands, target_dirs[-1]
    elif len(operands) >= 2:
        sources, dest = operands[:-1], operands[-1]
    else:
        return Output()
    into_dir = bool(target_dirs) or len(sources) > 1 or (dest.value.literal() or "").endswith("/") \
        or paths.norm(dest.text) in inv.state.world.created_dirs  # fmt: skip
    for source in sources:
        if source.glob:
            inv.find("unresolved-path", Severity.HIGH, f"{inv.name} {source.text}: the files a glob names are written, and cannot be named")
        info = paths.read(inv.state, source, inv.line, inv.name, signing=True) or FileInfo(None)
        target = dest
        if into_dir:
            target = Field(dest.value + Value.of("/" + source.text.rsplit("/", 1)[-1]), False, True, inv.line)
        paths.write(inv.state, target, inv.line, info)
        if inv.name == "mv":
            delete(inv, source, recursive=False)
    return Output()


_COPY_OPTIONS = {"cp": getopt.CP, "mv": getopt.MV, "install": getopt.INSTALL}


def link(inv: Invocation) -> Output:
    symbolic = any(t in ("-s", "--symbolic", "--symbolic-link") or re.fullmatch(r"-[a-zA-Z]*s[a-zA-Z]*", t) for t in inv.texts[1:])
    kind = "a symbolic link: a write through it lands where it points" if symbolic else \
        "a hard link: the file stays reachable under another name after the work dir is gone"  # fmt: skip
    inv.find("links-file", Severity.HIGH, f"{inv.name} makes {kind}")
    for f in inv.operands(knowledge.VALUE_OPTIONS.get(inv.name, set())):
        paths.check(inv.state, f, "check", inv.line)
    target = inv.option("-t", "--target-directory")
    if target is not None:
        paths.check(inv.state, target, "write", inv.line)
    return Output()


def chmod(inv: Invocation) -> Output:
    operands = [f for f in inv.args if not f.text.startswith("-") or re.fullmatch(r"-[rwxXst]+", f.text)]
    if not operands:
        return Output()
    mode = operands[0].text
    numeric = re.fullmatch(r"[0-7]+", mode)
    if numeric:
        bits = int(mode, 8)
        loose = bool(bits & 0o6000 or bits & 0o022)
    else:
        loose = bool(re.search(r"[ao]?[+=][rwxX]*w|[+=][rwxXt]*s", mode)) and not re.match(r"^(u|g)[+=]w", mode)
    if loose:
        inv.find("privilege-change", Severity.HIGH, f"chmod {mode}: makes files writable by others or set-id")
    else:
        inv.find("privilege-change", Severity.LOW, f"chmod {mode}: changes permissions")
    for f in operands[1:]:
        paths.check(inv.state, f, "check", inv.line)
    return Output()


def umask(inv: Invocation) -> Output:
    if len(inv.args) > 0:
        inv.find("privilege-change", Severity.LOW, f"umask {inv.args[0].text}: changes the mode of the files it creates")
    return Output()


def dd(inv: Invocation) -> Output:
    info = None
    for f in inv.args:
        text = f.text
        if text.startswith(("if=", "of=")):
            inner = Field(Value((f.value.parts[0][3:],) + f.value.parts[1:], f.value.taints) if isinstance(
                f.value.parts[0], str) else f.value, False, True, inv.line)  # fmt: skip
            if text.startswith("if="):
                info = paths.read(inv.state, inner, inv.line, "dd", signing=True)
            else:
                paths.write(inv.state, inner, inv.line, info or FileInfo(None, inv.stdin.key if inv.stdin else None, "data"))
    return Output(None, info.key if info else None, "data", reported=True)


def tee(inv: Invocation) -> Output:
    stdin = inv.stdin or Output()
    for f in inv.operands():
        paths.write(inv.state, f, inv.line, FileInfo(stdin.content, stdin.key, stdin.origin, line=stdin.line))
    return Output(stdin.content, stdin.key, stdin.origin, line=stdin.line, reported=True)


def make_temp(inv: Invocation) -> Output:
    operands = inv.operands(knowledge.VALUE_OPTIONS["mktemp"])
    place = inv.option("-p", "--tmpdir")
    outside = "-t" in inv.texts or not operands or (place is not None and place.text.startswith("/"))
    if outside:
        inv.find("outside-workdir", Severity.MEDIUM, "mktemp makes its file in the system temp dir, outside the work dir")
    kind = TMP if outside else ARG
    return Output(Value.unknown("$(mktemp)", kind) + Value.of("\n"), None, "path")


def find(inv: Invocation) -> Output:
    roots = []
    for f in inv.args:
        if f.text.startswith("-") or f.text in ("!", "("):
            break
        roots.append(f)
    for f in roots:
        paths.check(inv.state, f, "read", inv.line)
    texts = inv.texts
    if "-delete" in texts:
        where = ", ".join(f.text for f in roots) or "."
        inv.find("deletes-foreign-file", Severity.HIGH, f"find -delete removes files under {where} it did not create")
    for i, text in enumerate(texts):
        if text in ("-exec", "-execdir", "-ok", "-okdir"):
            inner = []
            for f in inv.argv[i + 1 :]:
                if f.text in (";", "+"):
                    break
                inner.append(Field(Value.unknown("{}", COMPUTED), False, True, inv.line) if f.text == "{}" else f)
            if inner and inner[0].text in knowledge.DELETERS:
                inv.find("deletes-foreign-file", Severity.HIGH, f"find -exec {inner[0].text} deletes files it did not create")
            elif inner:
                inv.run_argv(inv.state, inner, inv.line, None)
    return Output()


def tar(inv: Invocation) -> Output:
    first = inv.texts[1] if len(inv.texts) > 1 else ""
    if re.fullmatch(r"-?[a-zA-Z]*x[a-zA-Z]*", first) or "--extract" in inv.texts:
        inv.find("decodes-data", Severity.MEDIUM, "tar extracts files the audit cannot see")
    for f in inv.operands(knowledge.VALUE_OPTIONS["tar"]):
        paths.read(inv.state, f, inv.line, "tar")
    return Output()


def operand_reads(inv: Invocation) -> list[FileInfo | None]:
    """The operands of a program that reads files (ls, stat, sha256sum ...)."""
    return [paths.read(inv.state, f, inv.line, inv.name) for f in inv.operands(knowledge.VALUE_OPTIONS.get(inv.name, set()))]


def reader(inv: Invocation) -> Output:
    infos = operand_reads(inv)
    key = next((i.key for i in infos if i is not None and i.key), None)
    return Output(Value.unknown(f"$({inv.name})", COMPUTED), key, "data", reported=True)


def unknown_files(inv: Invocation) -> None:
    """Operands of a program the audit does not know, checked where they look like paths."""
    for f in inv.operands():
        if "/" in f.text or f.text.startswith("~") or f.value.lead is not None:
            paths.check(inv.state, f, "check", inv.line)
