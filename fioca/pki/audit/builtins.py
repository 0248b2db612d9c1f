"""The shell's own commands and the programs that run other commands or code.

Variables (`export`, `read`, `set --`), tests (`[ -n "$HSM_MODULE" ]`, decided when the mode
or known values decide them), `exit`, traps and aliases; and everything that runs more code:
`eval`, `.`, `sh -c`, `| sh`, wrappers (`timeout`, `env`, `nohup`, `xargs` ...). Code the
audit can read is walked with the same state; code it cannot read is HIGH.
"""

from __future__ import annotations

import re

from fioca.pki.audit import knowledge, paths
from fioca.pki.audit.expand import read_env
from fioca.pki.audit.report import Severity
from fioca.pki.audit.state import (
    ARG,
    COMPUTED,
    EMPTY,
    ENV,
    Field,
    Invocation,
    Output,
    State,
    Value,
)

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def sets_env(state: State, name: str, value: Value, line: int, *, before: str | None = None) -> None:
    """`NAME=value` of a variable that makes programs load code or fake the clock."""
    if name in knowledge.CLOCK_VARS:
        state.find("backdated-validity", Severity.HIGH, line, f"sets {name}: certificates get dates other than now")
    if name not in knowledge.LOADS_CODE_VARS or (name == "IFS" and before == "read"):
        return
    if name == "PKCS11_MODULE_PATH" and value.only_from("HSM_MODULE"):
        return  # the reference: the engine loads the module the user chose
    state.find("eval-data", Severity.HIGH, line, f"sets {name}={value.text}: programs load code from where it points, or split words otherwise")


# --- printing ----------------------------------------------------------------------------------


def echo(inv: Invocation) -> Output:
    """dash's echo: `-n` is its only option, and it always reads escapes (`\\0157` is `o`,
    `\\c` ends the output), so `echo 'openssl_c\\0157nf'` writes `openssl_conf`."""
    args = inv.args
    newline = True
    while args and args[0].text == "-n":
        newline = False
        args = args[1:]
    out = EMPTY
    for i, f in enumerate(args):
        for piece in ((" ",) if i else ()) + f.value.parts:
            if not isinstance(piece, str):
                out = out + Value((piece,), f.value.taints, f.value.computed)
                continue
            text, stopped = _echo_escapes(piece)
            out = out + Value.of(text, taints=f.value.taints)
            if stopped:
                return Output(out, None, "data")
    return Output(out + Value.of("\n" if newline else ""), None, "data")


def _echo_escapes(text: str) -> tuple[str, bool]:
    """(the text as dash's echo prints it, whether `\\c` stopped it)."""
    out, i = [], 0
    while i < len(text):
        if text[i] != "\\" or i + 1 == len(text):
            out.append(text[i])
            i += 1
            continue
        if text[i + 1] == "c":
            return "".join(out), True
        octal = re.match(r"0[0-7]{0,3}|[1-7][0-7]{0,2}", text[i + 1 :])
        if octal:
            out.append(chr(int(octal.group(0), 8) & 0xFF))
            i += 1 + octal.end()
            continue
        chunk, i = _escape(text, i)
        out.append(chunk)
    return "".join(out), False


def printf(inv: Invocation) -> Output:
    if not inv.args:
        return Output(EMPTY, None, "data")
    fmt = inv.args[0].value.literal()
    if fmt is None:
        return Output(Value.unknown("$(printf ...)", COMPUTED, _taints(inv.args)), None, "data")
    return Output(format_printf(fmt, [f.value for f in inv.args[1:]]), None, "data")


def format_printf(fmt: str, args: list[Value]) -> Value:
    """printf's format: escapes (\\n, \\NNN octal) and %s %d %b %c, repeated over the arguments."""
    out = EMPTY
    queue = list(args)
    while True:
        out = out + _format_once(fmt, queue)
        if not queue or not re.search(r"%[^%]", fmt):
            return Value(out.parts, out.taints, True)


def _format_once(fmt: str, queue: list[Value]) -> Value:
    out = EMPTY
    i = 0
    while i < len(fmt):
        c = fmt[i]
        if c == "\\" and i + 1 < len(fmt):
            text, i = _escape(fmt, i)
            out = out + Value.of(text)
            continue
        if c == "%" and i + 1 < len(fmt):
            m = re.match(r"%[-+ #0]*\d*(?:\.\d+)?([sdibcxXou%])", fmt[i:])
            if m is None:
                out = out + Value.of(c)
                i += 1
                continue
            i += m.end()
            if m.group(1) == "%":
                out = out + Value.of("%")
                continue
            arg = queue.pop(0) if queue else EMPTY
            if m.group(1) in "b":
                literal = arg.literal()
                arg = Value.of(_escapes(literal)) if literal is not None else arg
            elif m.group(1) not in "sc" and arg.literal() is not None:
                arg = Value.of(_number(m.group(0), arg.literal()))
            out = out + arg
            continue
        out = out + Value.of(c)
        i += 1
    return out


def _escape(text: str, i: int) -> tuple[str, int]:
    nxt = text[i + 1]
    m = re.match(r"[0-7]{1,3}", text[i + 1 :])
    if m:
        return chr(int(m.group(0), 8)), i + 1 + m.end()
    simple = {"n": "\n", "t": "\t", "\\": "\\", "a": "\a", "b": "\b", "f": "\f", "r": "\r", "v": "\v", "e": "\x1b"}
    return simple.get(nxt, "\\" + nxt), i + 2


def _escapes(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            chunk, i = _escape(text, i)
            out.append(chunk)
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _number(spec: str, text: str) -> str:
    try:
        return spec % int(text, 0) if spec[-1] in "dioxXu" else text
    except (ValueError, TypeError):
        return text


def _join(fields: list[Field]) -> Value:
    out = EMPTY
    for i, f in enumerate(fields):
        out = out + (Value.of(" ") if i else EMPTY) + f.value
    return out


def _taints(fields: list[Field]) -> frozenset[str]:
    return frozenset().union(*(f.value.taints for f in fields))


def dirname(inv: Invocation) -> Output:
    names = inv.operands()
    text = names[0].value.literal() if names else None
    if text is None:
        return Output(Value.unknown("$(dirname ...)", ARG) if names and names[0].value.kinds() <= {ARG} else None)
    head = text.rstrip("/").rsplit("/", 1)
    return Output(Value.of((head[0] or "/") if len(head) == 2 else ".") + Value.of("\n"), None, "path")


def basename(inv: Invocation) -> Output:
    names = inv.operands()
    text = names[0].value.literal() if names else None
    if text is None:
        return Output(None)
    base = text.rstrip("/").rsplit("/", 1)[-1]
    if len(names) > 1 and names[1].value.literal() and base.endswith(names[1].value.literal()):
        base = base[: -len(names[1].value.literal())]
    return Output(Value.of(base + "\n"), None, "path")


def pwd(inv: Invocation) -> Output:
    return Output(Value.unknown("$(pwd)", ARG) + Value.of("\n"), None, "path")


# --- tests and control ------------------------------------------------------------------------


def test(inv: Invocation) -> Output:
    """`[ ... ]` / `test ...`: true or false when known values (or the mode) decide it."""
    args = inv.args[:-1] if inv.name == "[" and inv.args and inv.args[-1].text == "]" else inv.args
    negate = False
    if args and args[0].text == "!":
        negate, args = True, args[1:]
    for i, f in enumerate(args[:-1]):
        if re.fullmatch(r"-[efdrwxsLhbcpSgukOGN]", f.text):
            paths.check(inv.state, args[i + 1], "check", inv.line)
    pin = [f for f in args if "env:HSM_PIN" in f.value.taints]
    if pin and not (len(args) == 2 and args[0].text in ("-n", "-z")):
        inv.find("reads-secret-env", Severity.HIGH, f"tests the HSM PIN's value ({inv.name} ... {pin[0].text}): the outcome tells it")
    truth = _truth(args)
    by_mode = any(t.startswith("env:HSM_") or t == "mode" for f in args for t in f.value.taints)
    return Output(truth=None if truth is None else truth != negate, by_mode=by_mode)


def _truth(args: list[Field]) -> bool | None:
    if len(args) == 1:
        return _non_empty(args[0].value)
    if len(args) == 2 and args[0].text in ("-n", "-z"):
        non_empty = _non_empty(args[1].value)
        return None if non_empty is None else non_empty == (args[0].text == "-n")
    if len(args) == 3 and args[1].text in ("=", "!="):
        left, right = args[0].value.literal(), args[2].value.literal()
        if left is None or right is None:
            return None
        return (left == right) == (args[1].text == "=")
    return None


def _non_empty(value: Value) -> bool | None:
    if value.known:
        return bool(value.text)
    # What fioca sets from the user's settings is never empty; anything else may be.
    return True if value.kinds() == {ENV} or value.prefix else None


def exit_(inv: Invocation) -> Output:
    inv.state.ended = True
    inv.state.returned = inv.name == "return" and inv.state.in_function
    return Output()


def set_(inv: Invocation) -> Output:
    state, texts = inv.state, inv.texts[1:]
    if not texts:
        inv.find("reads-environment", Severity.HIGH, "'set' without arguments prints every variable, secrets included")
        return Output()
    for i, arg in enumerate(texts):
        if arg == "--":
            state.positional = tuple(f.value for f in inv.args[i + 1 :])
            break
        if re.fullmatch(r"-[a-zA-Z]*e[a-zA-Z]*", arg) or (arg == "-o" and texts[i + 1 : i + 2] == ["errexit"]):
            if state.world.errexit_line is None:
                state.world.errexit_line = inv.line
        if re.fullmatch(r"\+[a-zA-Z]*e[a-zA-Z]*", arg) or (arg == "+o" and texts[i + 1 : i + 2] == ["errexit"]):
            inv.find("missing-errexit", Severity.MEDIUM, "'set +e' turns errexit off: a failing step no longer stops the script")
    return Output()


def export(inv: Invocation) -> Output:
    names = [f for f in inv.args if not f.text.startswith("-")]
    if not names:
        inv.find("reads-environment", Severity.HIGH, f"'{inv.name}' without names prints every variable, secrets included")
        return Output()
    for f in names:
        if not f.value.parts or not isinstance(f.value.parts[0], str):
            continue
        name, eq, _ = f.value.parts[0].partition("=")
        if not _NAME.fullmatch(name):
            continue
        if eq:
            value = Value((f.value.parts[0][len(name) + 1 :],) + f.value.parts[1:], f.value.taints, f.value.computed)
            value = Value(tuple(p for p in value.parts if p != ""), value.taints, value.computed)
            sets_env(inv.state, name, value, inv.line)
            inv.state.assign(name, (value,))
        elif inv.name != "export" and name not in inv.state.vars:
            inv.state.assign(name, (EMPTY,))
    return Output()


def unset(inv: Invocation) -> Output:
    for f in inv.operands():
        inv.state.vars.pop(f.text, None)
        inv.state.functions.pop(f.text, None)
    return Output()


def read(inv: Invocation) -> Output:
    for f in inv.operands({"-p", "-d", "-n", "-t", "-u", "-a"}):
        if _NAME.fullmatch(f.text):
            inv.state.vars[f.text] = (Value.unknown(f"${f.text}", COMPUTED),)
    return Output()


def getopts(inv: Invocation) -> Output:
    if len(inv.args) > 1 and _NAME.fullmatch(inv.args[1].text):
        inv.state.vars[inv.args[1].text] = (Value.unknown(f"${inv.args[1].text}", COMPUTED),)
    inv.state.vars["OPTARG"] = (Value.unknown("$OPTARG", COMPUTED),)
    return Output()


def env(inv: Invocation) -> Output:
    rest = list(inv.args)
    while rest and (rest[0].text.startswith("-") or "=" in rest[0].text):
        if "=" in rest[0].text and not rest[0].text.startswith("-"):
            name, _, value = rest[0].text.partition("=")
            sets_env(inv.state, name, Value.of(value, taints=rest[0].value.taints), inv.line)
        rest = rest[1:]
    if not rest:
        inv.find("reads-environment", Severity.HIGH, "'env' without a command prints the whole environment, secrets included")
        return Output()
    return inv.run_argv(inv.state, rest, inv.line, inv.stdin)


def printenv(inv: Invocation) -> Output:
    names = inv.operands()
    if not names:
        inv.find("reads-environment", Severity.HIGH, "'printenv' prints the whole environment, secrets included")
    for f in names:
        read_env(inv.state, f.text, inv.line)
    return Output()


def cd(inv: Invocation) -> Output:
    """The audit reads every path from the work dir: after a `cd` anywhere else, `factory_ca.key`
    may be another file than the one it followed (a key the script wrote as data)."""
    names = inv.operands()
    if not names:
        inv.find("outside-workdir", Severity.HIGH, "'cd' without a directory goes to the user's home")
    elif names[0].text == "-":
        inv.find("outside-workdir", Severity.HIGH, "'cd -' goes back to a directory outside the script's view")
    else:
        paths.check(inv.state, names[0], "check", inv.line)
        if names[0].value.kinds() - {ARG}:
            inv.find("unresolved-path", Severity.HIGH, f"cd {names[0].text}: a directory chosen at run time")
        elif paths.norm(names[0].text).rstrip("/") not in ("", "."):
            inv.find("unresolved-path", Severity.HIGH,
                     f"cd {names[0].text}: the audit follows files from the work dir only; after it, no path names the file the audit read")  # fmt: skip
    return Output()


def trap(inv: Invocation) -> Output:
    if len(inv.args) < 2 or inv.args[0].text in ("-", "") or inv.args[0].text.isdigit():
        return Output()
    action = inv.args[0].value
    if action.known:
        inv.state.world.traps.append((action.text, inv.line))  # walked at the end, with every file known
    else:
        inv.find("eval-data", Severity.HIGH, f"trap runs code built at run time ({action.text})")
    return Output()


def alias(inv: Invocation) -> Output:
    for f in inv.args:
        name, eq, value = f.text.partition("=")
        if not eq:
            continue
        if not f.value.known:
            inv.find("unresolved-command", Severity.HIGH, f"alias {name} runs a command built at run time")
            continue
        inv.state.aliases[name] = value
        if name in knowledge.TOOLS:
            inv.find("shadowed-command", Severity.HIGH, f"alias {name}={value}: every later `{name}` runs that instead")
    return Output()


def unalias(inv: Invocation) -> Output:
    for f in inv.args:
        inv.state.aliases.pop(f.text, None)
    return Output()


# --- code from data ----------------------------------------------------------------------------


def eval_(inv: Invocation) -> Output:
    code = _join(inv.args)
    if not code.known:
        inv.find("eval-data", Severity.HIGH, f"eval runs code built at run time ({code.text})")
        return Output()
    inv.find("eval-data", Severity.LOW, "eval runs text the audit could read (audited as code)")
    return inv.run_code(inv.state, code.text, inv.line, "in eval: ")


def source(inv: Invocation) -> Output:
    names = inv.operands()
    if not names:
        return Output()
    info = paths.read(inv.state, names[0], inv.line, inv.name, signing=True)
    if info is not None and info.written and info.content is not None and info.content.known:
        inv.find("eval-data", Severity.LOW, f"'{inv.name} {names[0].text}' runs a file the script wrote (audited as code)")
        return inv.run_code(inv.state, info.content.text, inv.line, f"in {names[0].text}: ")
    inv.find("eval-data", Severity.HIGH, f"'{inv.name} {names[0].text}' runs a file as part of the script that the audit cannot see")
    return Output()


def shell(inv: Invocation) -> Output:
    """`sh -c CODE`, `sh FILE`, `... | sh`."""
    texts = inv.texts[1:]
    if "-c" in texts:
        index = texts.index("-c")
        code = inv.args[index + 1].value if index + 1 < len(inv.args) else EMPTY
        if not code.known:
            inv.find("eval-data", Severity.HIGH, f"{inv.name} -c runs code built at run time ({code.text})")
            return Output()
        nested = inv.state.nested(inv.line, f"in {inv.name} -c: ")
        nested.positional = tuple(f.value for f in inv.args[index + 3 :])
        return inv.run_code(nested, code.text, inv.line, "")
    operands = inv.operands()
    if operands and "-s" not in texts:
        name = paths.norm(operands[0].text)
        info = inv.state.file(name)
        if info is not None and not info.written and name in knowledge.PROFILES:
            inv.state.world.siblings.append((name, inv.stdout))
            inv.find("runs-sibling", Severity.INFO, f"runs {name}, the work dir's {name} (audited on its own)")
            return Output()
        paths.read(inv.state, operands[0], inv.line, inv.name, signing=True)
        inv.find("eval-data", Severity.HIGH, f"{inv.name} {operands[0].text} runs a script the audit cannot see")
        return Output()
    stdin = inv.stdin
    if stdin is not None and stdin.content is not None and stdin.content.known and not stdin.content.computed:
        inv.find("eval-data", Severity.MEDIUM, f"{inv.name} runs code from its input (audited as code)")
        return inv.run_code(inv.state, stdin.content.text, inv.line, f"in {inv.name}: ")
    inv.find("eval-data", Severity.HIGH, f"{inv.name} runs code it reads from its input (a pipe or here-document)")
    return Output()


# --- programs that run a command ----------------------------------------------------------------

_WRAPPER_VALUES = {"timeout": {"-s", "-k", "--signal", "--kill-after"}, "nice": {"-n"}, "ionice": {"-c", "-n"},
                   "chrt": {"-p"}, "stdbuf": {"-i", "-o", "-e"}, "flock": {"-w", "-E"}, "sudo": {"-u", "-g"},
                   "doas": {"-u"}, "runuser": {"-u", "-g"}, "su": {"-c", "-s"}, "faketime": {"-f"}}  # fmt: skip


def _inner(inv: Invocation) -> list[Field]:
    """The command after the wrapper's own options (and its duration, its lock file ...)."""
    values = _WRAPPER_VALUES.get(inv.name, set())
    rest = list(inv.args)
    while rest and rest[0].text.startswith("-") and rest[0].text != "-":
        rest = rest[2:] if rest[0].text in values else rest[1:]
    if inv.name in ("timeout", "flock", "faketime", "chrt") and rest:
        rest = rest[1:]  # the duration, the lock file, the fake time, the priority
    return rest


def command(inv: Invocation) -> Output:
    if any(f.text in ("-v", "-V") for f in inv.args):
        return Output()  # only asks whether a program exists
    return wrapper(inv)


def wrapper(inv: Invocation) -> Output:
    rest = _inner(inv)
    if inv.name == "su" and "-c" in inv.texts:
        code = inv.args[inv.texts.index("-c")]  # texts[0] is su itself
        return inv.run_code(inv.state, code.text, inv.line, "in su -c: ") if code.value.known else Output()
    return inv.run_argv(inv.state, rest, inv.line, inv.stdin) if rest else Output()


def detach(inv: Invocation) -> Output:
    inv.find("background-job", Severity.HIGH, f"{inv.name} detaches work from the script: it can outlive it and fioca")
    return wrapper(inv)


def fake_clock(inv: Invocation) -> Output:
    inv.find("backdated-validity", Severity.HIGH, f"{inv.name} fakes the clock: certificates get dates other than now")
    return wrapper(inv)


def privileged(inv: Invocation) -> Output:
    inv.find("privilege-change", Severity.HIGH, f"{inv.name} changes privileges or ownership")
    if inv.name in ("sudo", "doas", "runuser", "su"):
        return wrapper(inv)
    for f in inv.operands():
        paths.check(inv.state, f, "check", inv.line)
    return Output()


def xargs(inv: Invocation) -> Output:
    rest = _inner(inv)
    if not rest:
        return Output()
    inner = rest[0].text.rsplit("/", 1)[-1]
    if inner in knowledge.SHELLS or inner in ("eval", "source", "."):
        inv.find("eval-data", Severity.HIGH, f"xargs {inner}: runs data as code")
        return Output()
    if inner in knowledge.DELETERS or inner == "mv":
        inv.find("deletes-foreign-file", Severity.HIGH, f"xargs {inner}: deletes files named by data")
        return Output()
    data = Field(Value.unknown("(xargs input)", COMPUTED), False, False, inv.line)
    return inv.run_argv(inv.state, rest + [data], inv.line, None)


def lookup_only(inv: Invocation) -> Output:
    """type, which, hash: ask about programs, run none."""
    return Output()


def noop(inv: Invocation) -> Output:
    return Output()


def computed(inv: Invocation) -> Output:
    """date, uuidgen, seq ...: print something the audit does not compute."""
    return Output(Value.unknown(f"$({inv.name})", COMPUTED), None, "data")
