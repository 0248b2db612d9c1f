"""Walks a script's syntax tree as sh would run it, recording what every command does.

One `State` goes into every walk, nested ones too: `$(...)` and backquotes, subshells,
functions (walked where they are called, with their arguments), aliases, `sh -c` and `eval`
code, `.` files the script wrote, and exit traps (walked at the end, when every file the
script made is known). Each walk shares the script's world (files, findings, profile).

`if` branches whose condition the mode decides (`[ -n "$HSM_MODULE" ]`) are walked as live in
the mode audited and as not-in-mode in the other, so their findings say which; other branches
are both live, and a variable set in either holds both values after the `if`.

Commands are dispatched through one explicit table (`commands.HANDLERS`); a command name the
walk cannot resolve to one program (computed, globbed, hidden) is rated for the worst.
"""

from __future__ import annotations

import fnmatch
import re

from fioca.pki.audit import commands, knowledge, paths
from fioca.pki.audit.expand import Expander
from fioca.pki.audit.parser import (
    Binary,
    Block,
    Call,
    Case,
    For,
    Func,
    If,
    Loop,
    ParseFailure,
    Script,
    Stmt,
    Text,
    Word,
    parse,
)  # fmt: skip
from fioca.pki.audit.report import Command, Severity
from fioca.pki.audit.state import (
    COMPUTED,
    EMPTY,
    MAX_ALTERNATIVES,
    MAX_DEPTH,
    Field,
    FileInfo,
    Invocation,
    Output,
    State,
    Value,
    World,
)  # fmt: skip

_HARMLESS_FIRST = {"set", "trap", ":", "true", "false", "echo", "printf", "[", "test", "exit", "shift", "local",
                   "export", "readonly", "unset"}  # fmt: skip


def walk_script(world: World, script: Script, text: str, *, hsm: bool) -> None:
    """The whole script: its text, its tree, its traps, the functions nothing called."""
    state = State(world, hsm)
    world.files.update(paths.inputs_of(world.script, hsm))
    world.assigned = set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", text)) | set(re.findall(r"\b(?:for|read)\s+([A-Za-z_][A-Za-z0-9_]*)", text))
    check_text(state, text)
    walk(state, script.stmts)
    state.ended = False
    for code, line in world.traps:
        run_code(state, code, line, "in the exit trap: ")
    for name in sorted(set(state.functions) - state.world.called):
        call_function(state.dead("in a function nothing calls", hsm=state.hsm), name, [], 1, None)
    _check_errexit(state)


def walk(state: State, stmts: list[Stmt]) -> Output:
    out = Output()
    for stmt in stmts:
        if state.ended:
            break
        out = run_stmt(state, stmt)
    return out


def run_subst(state: State, stmts: list[Stmt]) -> Output:
    """`$(...)`: a subshell whose output becomes text."""
    return walk(state.copy(), stmts)


def run_stmt(state: State, stmt: Stmt, stdin: Output | None = None, *, piped: bool = False) -> Output:
    if stmt.background:
        state.find("background-job", Severity.HIGH, stmt.line, "starts a background job (&) that can outlive the script")
    stdin, targets, to_stderr = _redirects(state, stmt, stdin)
    where = targets[-1][0].text if targets else "stderr" if to_stderr else "|" if piped else None
    cmd = stmt.cmd
    if isinstance(cmd, Call):
        out = run_call(state, cmd, stmt.line, stdin, where)
    elif isinstance(cmd, If):
        out = _if(state, cmd)
    elif isinstance(cmd, Loop):
        out = _loop(state, cmd, stmt.line)
    elif isinstance(cmd, For):
        out = _for(state, cmd, stmt.line)
    elif isinstance(cmd, Case):
        out = _case(state, cmd, stmt.line)
    elif isinstance(cmd, Block):
        out = walk(state.copy(), cmd.stmts) if cmd.subshell else walk(state, cmd.stmts)
    elif isinstance(cmd, Binary):
        out = _binary(state, cmd, stdin)
    else:
        out = _define(state, cmd, stmt.line)
    if stmt.negated and out.truth is not None:
        out = Output(out.content, out.key, out.origin, not out.truth, out.by_mode)
    for target, append in targets:
        _write_output(state, target, append, out, stmt)
    return Output(truth=out.truth, by_mode=out.by_mode) if targets or to_stderr else out


# --- redirections ---------------------------------------------------------------------------------


def _redirects(state: State, stmt: Stmt, stdin: Output | None) -> tuple[Output | None, list[tuple[Field, bool]], bool]:
    """The statement's input, the files its output goes to (appended or not), whether it goes to stderr."""
    expander = Expander(state, run_subst)
    targets: list[tuple[Field, bool]] = []
    to_stderr = False
    for redirect in stmt.redirects:
        if redirect.heredoc is not None:
            content = expander.value(redirect.heredoc)
            _check_written_text(state, content, redirect.line, "a here-document")
            stdin = Output(content, None, "data", line=redirect.heredoc.line)
            continue
        target = expander.value(redirect.target) if redirect.target else EMPTY
        field = Field(target, False, True, redirect.line)
        fd = redirect.fd or ("0" if redirect.op in ("<", "<&", "<>") else "1")
        if redirect.op in (">&", "<&"):
            if target.text == "2" and fd == "1":
                to_stderr = True
            elif not (target.text.isdigit() or target.text == "-"):
                paths.write(state, field, redirect.line, FileInfo(None, None, "data"))
            continue
        if redirect.op in ("<", "<>"):
            info = paths.read(state, field, redirect.line, "the redirection", signing=True)
            stdin = Output(info.content if info else None, info.key if info else None, "data")
        if redirect.op != "<":
            if fd == "1":
                targets.append((field, redirect.op == ">>"))
            else:
                # Another fd (`2>f`, `exec 3>f`) writes whatever goes to it: unknown data, not
                # what the file held before (a generated key stays generated only untouched).
                paths.write(state, field, redirect.line, FileInfo(None, None, "data"))
    return stdin, targets, to_stderr


def _write_output(state: State, target: Field, append: bool, out: Output, stmt: Stmt) -> None:
    """`> file` or `>> file` of what a command printed."""
    if target.text in knowledge.ALLOWED_DEVICES:
        return
    content, key, origin, first = out.content, out.key, out.origin, out.line
    if append:
        before = state.file(target.text)
        content = before.content + content if before and before.content is not None and content is not None else None
        key = key or (before.key if before else None)
    paths.write(state, Field(target.value, False, True, stmt.line), stmt.line, FileInfo(content, key, origin, line=first))


def _check_written_text(state: State, content: Value, line: int, what: str) -> None:
    if "env:HSM_PIN" in content.taints:
        state.find("reads-secret-env", Severity.HIGH, line, f"writes the HSM PIN into {what}")


# --- compound commands -----------------------------------------------------------------------------


def _if(state: State, node: If) -> Output:
    test = walk(state, node.cond)
    if state.ended:
        return Output()
    if test.truth is None:
        then_state = state.copy()
        out = walk(then_state, node.then)
        if node.orelse is not None:
            else_state = state.copy()
            walk(else_state, node.orelse)
            then_state.merge(else_state)
            state.vars, state.ended = then_state.vars, then_state.ended
        else:
            state.merge(then_state)
        state.functions.update(then_state.functions)
        state.aliases.update(then_state.aliases)
        return out
    live, dead = (node.then, node.orelse) if test.truth else (node.orelse, node.then)
    if test.by_mode:
        dead_state = state.dead("in a branch that runs only " + ("without HSM" if state.hsm else "in HSM mode"), hsm=not state.hsm)
    else:
        dead_state = state.dead("in a branch that never runs", hsm=state.hsm)
    dead_state.by_mode = test.by_mode or state.by_mode
    saved, state.by_mode = state.by_mode, test.by_mode or state.by_mode
    out = walk(state, live or [])  # first, so that what both branches do is reported as live
    state.by_mode = saved
    walk(dead_state, dead or [])
    return out


def _loop(state: State, node: Loop, line: int) -> Output:
    walk(state, node.cond)
    if _always(node) and not _exits(node.body):
        state.find("endless-loop", Severity.MEDIUM, line, "a loop whose condition never changes and that has no break or exit: it ends only when killed")
    return _rounds(state, node.body, {})


def _rounds(state: State, body: list[Stmt], loop_vars: dict[str, tuple[Value, ...]]) -> Output:
    """A loop body runs any number of times: walked once to see which variables it changes,
    then again with those unknown (a value built over rounds is not one the audit can read)."""
    probe = state.copy()
    probe.world = state.world.fork()
    probe.vars.update(loop_vars)
    walk(probe, body)
    changed = {n for n, v in probe.vars.items() if n not in loop_vars and v != state.vars.get(n)}
    rounds = state.copy()
    rounds.vars.update(loop_vars)
    for name in changed:
        rounds.vars[name] = (Value.unknown(f"${name}", COMPUTED),)
    out = walk(rounds, body)
    for name in loop_vars:
        rounds.vars.setdefault(name, loop_vars[name])
    state.merge(rounds)
    return out


def _always(node: Loop) -> bool:
    if len(node.cond) != 1 or not isinstance(node.cond[0].cmd, Call) or len(node.cond[0].cmd.args) != 1:
        return False
    word = node.cond[0].cmd.args[0].literal()
    return word == "false" if node.until else word in ("true", ":")


def _exits(stmts: list[Stmt]) -> bool:
    for stmt in stmts:
        cmd = stmt.cmd
        if isinstance(cmd, Call) and cmd.args and cmd.args[0].literal() in ("break", "exit", "return"):
            return True
        nested = []
        if isinstance(cmd, If):
            nested = cmd.cond + cmd.then + (cmd.orelse or [])
        elif isinstance(cmd, (Loop,)):
            nested = cmd.cond + cmd.body
        elif isinstance(cmd, Block):
            nested = cmd.stmts
        elif isinstance(cmd, Binary):
            nested = [cmd.left, cmd.right]
        elif isinstance(cmd, Case):
            nested = [s for _, body in cmd.items for s in body]
        if nested and _exits(nested):
            return True
    return False


def _for(state: State, node: For, line: int) -> Output:
    expander = Expander(state, run_subst)
    if node.items is None:
        values = [v for v in (state.positional or (Value.unknown("$@", "arg"),))]
    else:
        values = [f.value for word in node.items for alt in expander.fields(word) for f in alt]
    return _rounds(state, node.body, {node.name: tuple(dict.fromkeys(values)) or (EMPTY,)})


def _case(state: State, node: Case, line: int) -> Output:
    expander = Expander(state, run_subst)
    if "env:HSM_PIN" in expander.value(node.word).taints:
        state.find("reads-secret-env", Severity.HIGH, line, "a case on the HSM PIN: which branch runs tells its characters")
    out = Output()
    for patterns, body in node.items:
        for pattern in patterns:
            expander.value(pattern)
        branch = state.copy()
        out = walk(branch, body)
        state.merge(branch)
    return out


def _binary(state: State, node: Binary, stdin: Output | None) -> Output:
    if node.op == "|":
        left = run_stmt(state.copy(), node.left, stdin, piped=True)
        return run_stmt(state.copy(), node.right, left)
    left = run_stmt(state, node.left, stdin)
    right_state = state.copy()
    out = run_stmt(right_state, node.right)
    if not right_state.ended:
        state.merge(right_state)
    return Output(out.content, out.key, out.origin)


def _define(state: State, node: Func, line: int) -> Output:
    state.functions[node.name] = node.body
    if node.name in knowledge.TOOLS:
        state.find("shadowed-command", Severity.HIGH, line,
                   f"defines a function named {node.name}: every later `{node.name}` runs its body instead, not the tool")  # fmt: skip
    return Output()


def call_function(state: State, name: str, args: list[Field], line: int, stdin: Output | None) -> Output:
    """A function runs in the caller's shell, with its own arguments."""
    state.world.called.add(name)
    if state.depth >= MAX_DEPTH:
        state.find("unparsable", Severity.HIGH, line, f"calls {name} nested too deeply to follow; not audited further")
        return Output()
    saved = (state.positional, state.in_function, state.depth)
    state.positional, state.in_function, state.depth = tuple(f.value for f in args), True, state.depth + 1
    out = run_stmt(state, state.functions[name], stdin)
    state.positional, state.in_function, state.depth = saved
    if state.returned:
        state.ended = state.returned = False
    return out


# --- simple commands ------------------------------------------------------------------------------


def run_call(state: State, node: Call, line: int, stdin: Output | None, stdout: str | None) -> Output:
    expander = Expander(state, run_subst)
    if node.args and node.args[0].literal() is not None and _unquoted(node.args[0]):
        alias = state.aliases.get(node.args[0].literal())
        if alias is not None:
            return _through_alias(state, node, alias, line)
    assigned = [(a, expander.values(a.value) if a.value else [EMPTY]) for a in node.assigns]
    alternatives = _argv_alternatives(expander, node.args)
    prefix_of = node.args[0].literal() if node.args else None
    for assign, values in assigned:
        for value in values:
            commands.sets_env(state, assign.name, value, assign.line, before=prefix_of)
        if not node.args:
            state.assign(assign.name, tuple(values))
    out = Output()
    for argv in alternatives:
        if argv:
            out = run_argv(state, argv, line, stdin, stdout, taints=frozenset(expander.taints))
    return out


def _argv_alternatives(expander: Expander, words: list[Word]) -> list[list[Field]]:
    """Each way the command line can read; past MAX_ALTERNATIVES, the words that vary are
    taken as unknown (rated for the worst), never dropped."""
    per_word = [expander.fields(word) for word in words]
    count = 1
    for options in per_word:
        count *= len(options)
    if count > MAX_ALTERNATIVES:
        per_word = [options if len(options) == 1 else [[Field(Value.unknown(w.source, COMPUTED), line=w.line)]]
                    for w, options in zip(words, per_word)]  # fmt: skip
    alternatives: list[list[Field]] = [[]]
    for options in per_word:
        alternatives = [done + more for done in alternatives for more in options]
    return alternatives


def _unquoted(word: Word) -> bool:
    return all(isinstance(p, Text) and not p.quoted for p in word.parts)


def _through_alias(state: State, node: Call, alias: str, line: int) -> Output:
    name = node.args[0].literal()
    words = list(node.args[1:])
    # POSIX (and dash): an alias whose value ends in a blank has the next word checked for an
    # alias too, so `alias a='command '; a b` runs b's value.
    while alias[-1:] in (" ", "\t") and words and _unquoted(words[0]) and words[0].literal() in state.aliases:
        alias += state.aliases[words.pop(0).literal()]
    rest = " ".join(w.source for w in words)
    nested = state.nested(line, f"through the alias {name}: ")
    nested.aliases.pop(name, None)  # an alias is not expanded inside itself
    return run_code(nested, f"{alias} {rest}", line, "", reuse=True)


def run_argv(state: State, argv: list[Field], line: int, stdin: Output | None, stdout: str | None = None,
             *, bypass_functions: bool = False, taints: frozenset[str] = frozenset()) -> Output:  # fmt: skip
    """One command with its arguments expanded: resolve the program, then its handler."""
    record = Command(line=state.at_line or line, argv=[f.text for f in argv], in_mode=state.in_mode)
    state.world.commands.append(record)
    names = _resolve(state, argv[0], line)
    out = Output()
    for name in names:
        base = name.rsplit("/", 1)[-1]
        if state.world.first_effect_line is None and base not in _HARMLESS_FIRST:
            state.world.first_effect_line = line
        if "/" in name and not _program_path(state, argv[0], name, line, stdout):
            continue
        _check_secrets(state, argv, base, line, stdin, taints)
        if base in state.functions and not bypass_functions and "/" not in name:
            out = call_function(state, base, argv[1:], line, stdin)
            continue
        invocation = Invocation(state, argv, base, line, stdin, stdout, record, _run_nested_argv, run_code)
        out = commands.dispatch(invocation) or Output()
    return out


def _run_nested_argv(state: State, argv: list[Field], line: int, stdin: Output | None) -> Output:
    """A command another one runs (timeout, env, xargs, find -exec, command): never a function
    of the script when reached through `command`, which its handler says by the state."""
    return run_argv(state, argv, line, stdin, bypass_functions=True)


def _resolve(state: State, head: Field, line: int) -> list[str]:
    """The program(s) a command name can be; computed or globbed names are findings."""
    value = head.value
    if head.glob:
        base = value.text.rsplit("/", 1)[-1]
        matched = sorted(t for t in knowledge.TOOLS if fnmatch.fnmatchcase(t, base))
        shown = ", ".join(matched) if matched else "any program"
        state.find("unresolved-command", Severity.HIGH, line, f"runs {value.text}, a glob: it can run {shown}")
        return matched
    if not value.known:
        state.find("unresolved-command", Severity.HIGH, line,
                   f"runs a command whose name is computed at run time ({value.text}): it can be any program")  # fmt: skip
        return []
    if value.computed:
        state.find("unresolved-command", Severity.HIGH, line,
                   f"runs a command whose name a program printed at run time (it is {value.text}): a hidden name")  # fmt: skip
    return [value.text] if value.text else []


def _program_path(state: State, head: Field, name: str, line: int, stdout: str | None) -> bool:
    """A command named by a path: a program of the system, or a file of the work dir."""
    if name.startswith("/"):
        paths.check(state, Field(head.value, False, True, line), "run", line)
        return name.startswith(knowledge.PROGRAM_DIRS)
    local = paths.norm(name)
    info = state.file(local)
    if info is not None and info.written:
        state.find("eval-data", Severity.HIGH, line, f"runs {name}, a file the script wrote itself")
    elif local in knowledge.PROFILES and info is not None:
        state.world.siblings.append((local, stdout))
        state.find("runs-sibling", Severity.INFO, line, f"runs {name}, the work dir's {local} (audited on its own)")
    else:
        paths.check(state, Field(head.value, False, True, line), "run", line)
        state.find("eval-data", Severity.HIGH, line, f"runs {name}, a program the audit cannot see")
    return False


def _check_secrets(state: State, argv: list[Field], base: str, line: int, stdin: Output | None,
                   taints: frozenset[str]) -> None:  # fmt: skip
    """The HSM PIN on a command line; a private key fed to a program that is not openssl."""
    pin = "env:HSM_PIN"
    if (pin in taints or any(pin in f.value.taints for f in argv[1:])) and base not in ("[", "test"):
        if base in ("pkcs11-tool", "openssl"):
            state.find("hsm-pin-on-command-line", Severity.MEDIUM, line,
                       f"puts $HSM_PIN on {base}'s command line, which other local users can read; fioca's own "
                       "scripts name it instead (--pin env:HSM_PIN, -passin env:HSM_PIN)")  # fmt: skip
        else:
            state.find("reads-secret-env", Severity.HIGH, line, f"hands the HSM PIN to {base}: it can reach output, files or the network")
    if stdin is not None and stdin.key and not stdin.reported and base != "openssl":
        state.find("reads-private-key", Severity.HIGH, line, f"{base} reads the private key {stdin.key} on its input")


def run_code(state: State, code: str, line: int, context: str, *, reuse: bool = False) -> Output:
    """Shell text the script runs (sh -c, eval, a trap, an alias): parsed and walked here."""
    nested = state if reuse else state.nested(line, context)
    if nested.depth >= MAX_DEPTH:
        nested.find("unparsable", Severity.HIGH, line, "code nested too deeply to follow; not audited further")
        return Output()
    tree = parse(code)
    if isinstance(tree, ParseFailure):
        nested.find("unparsable", Severity.HIGH, line, f"cannot parse the code it runs: {tree.message}")
        return Output()
    out = walk(nested, tree.stmts)
    if not reuse:
        state.ended = state.ended or (nested.ended and not nested.returned)
    return out


# --- the text as a whole ------------------------------------------------------------------------


def check_text(state: State, text: str) -> None:
    """Characters that hide what the text says, the interpreter line, a key written in it."""
    lines = text.split("\n")
    for number, line in enumerate(lines, start=1):
        for m in knowledge.INVISIBLE.finditer(line):
            state.find("hidden-characters", Severity.HIGH, number,
                       f"invisible or bidi control character U+{ord(m.group()):04X}: the text may not read as it runs")  # fmt: skip
        for m in knowledge.CONTROL.finditer(line):
            state.find("hidden-characters", Severity.HIGH, number,
                       f"control character U+{ord(m.group()):04X}: a terminal shows other text than the script holds")  # fmt: skip
        if re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----", line):
            state.find("literal-key", Severity.HIGH, number, "a private key written in the script: a key the server chose")
    m = re.match(r"#!\s*(\S+)(?:\s+(.*))?", lines[0] if lines else "")
    if not m:
        return
    interpreter, args = m.group(1), (m.group(2) or "").split()
    if interpreter.endswith("/env") and args:
        interpreter, args = args[0], args[1:]
    if interpreter.rsplit("/", 1)[-1] not in ("sh", "dash", "bash", "ash", "ksh"):
        state.find("not-a-shell-script", Severity.HIGH, 1, f"the first line runs it with {interpreter}; only sh scripts are audited")
    elif any(re.fullmatch(r"-[a-zA-Z]*e[a-zA-Z]*", a) for a in args):
        state.world.errexit_line = 0


def _check_errexit(state: State) -> None:
    world = state.world
    if world.errexit_line is not None and (world.first_effect_line is None or world.errexit_line <= world.first_effect_line):
        return
    if world.errexit_line is None:
        state.find("missing-errexit", Severity.MEDIUM, 1, "no '#!/bin/sh -e' and no 'set -e': a failing step does not stop the script")
    else:
        state.find("missing-errexit", Severity.MEDIUM, world.errexit_line,
                   "'set -e' comes after the first command: the steps before it may fail silently")  # fmt: skip
