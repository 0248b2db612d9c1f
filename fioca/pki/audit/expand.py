"""Words into values, as sh expands them: parameters, command substitutions, arithmetic,
quoting, field splitting and globs, each word giving one list of fields per way it can read.

Variables fioca does not set are unset (the runner gives scripts a minimal environment), so
`$extra` outside the branch that sets it is empty, and `${HSM_TOKEN_LABEL-device-gateway-root}`
is the default without HSM. What fioca sets from the user's settings (the HSM module, label,
PIN; fioca's own factory values) is unknown but trusted; what a program prints is unknown and
computed, and a command name or path built from it is rated for the worst it could be.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from fioca.pki.audit import knowledge
from fioca.pki.audit.parser import Arith, Opaque, Param, Subst, Text, Word
from fioca.pki.audit.report import Severity
from fioca.pki.audit.state import (
    ARG,
    COMPUTED,
    EMPTY,
    ENV,
    HOME,
    MAX_ALTERNATIVES,
    TMP,
    Field,
    Output,
    State,
    Value,
)  # fmt: skip

if TYPE_CHECKING:
    from fioca.pki.audit.parser import Stmt

# The walker runs command substitutions; it hands itself in to avoid an import cycle.
RunSubst = Callable[[State, "list[Stmt]"], Output]

# What makes a word a pattern: * ? or a bracket expression with its closing ] (a lone [ is text).
_GLOB = re.compile(r"[*?]|\[[^\]]+\]")


def has_glob(text: str) -> bool:
    return bool(_GLOB.search(text))


def read_env(state: State, name: str, line: int) -> tuple[Value, ...] | None:
    """An environment variable as fioca's runner sets it (None: unset), with its finding."""
    taint = frozenset({f"env:{name}"})
    if name in knowledge.HSM_VARS:
        if name != knowledge.HSM_PIN:
            state.find("reads-hsm-env", Severity.INFO, line,
                       f"reads ${name}: fioca sets it only in HSM mode, for the PKCS#11 module and token")  # fmt: skip
        return (Value.unknown(f"${name}", ENV, taint),) if state.hsm else None
    if name in knowledge.SCRIPT_VALUE_VARS:
        state.find("reads-hsm-env", Severity.INFO, line, f"reads ${name}: fioca sets it for its own scripts, checked for its shape")
        return (Value.unknown(f"${name}", ENV, taint),)
    if name in knowledge.HOME_VARS:
        return (Value.unknown(f"${name}", HOME, taint),)
    if name in knowledge.TMP_VARS:
        return (Value.unknown(f"${name}", TMP, taint),)
    if name in knowledge.RUNNER_VARS:
        return (Value.unknown(f"${name}", ENV, taint),)
    if knowledge.SECRET_NAME.search(name):
        state.find("reads-secret-env", Severity.HIGH, line, f"reads ${name}, an environment variable that looks like a secret")
    elif name in state.world.assigned:
        pass  # the script's own variable, not set on this path: empty
    else:
        state.find("reads-env", Severity.LOW, line, f"reads ${name}, which fioca does not set (so it is empty)")
    return None


def lookup(state: State, name: str, line: int) -> tuple[Value, ...] | None:
    """What `$name` holds here; None when unset."""
    if name in state.vars:
        return state.vars[name]
    if name in knowledge.SPECIAL_PARAMS:
        return _special(state, name)
    return read_env(state, name, line)


def _special(state: State, name: str) -> tuple[Value, ...] | None:
    if name == "0":
        return (Value.of(f"./{state.world.script}"),)
    if name.isdigit():
        index = int(name) - 1
        if state.positional is None:
            return (Value.unknown(f"${name}", ARG),)
        return (state.positional[index],) if index < len(state.positional) else None
    if name in ("@", "*"):
        if state.positional is None:
            return (Value.unknown(f"${name}", ARG),)
        joined = EMPTY
        for i, value in enumerate(state.positional):
            joined = joined + (Value.of(" ") if i else EMPTY) + value
        return (joined,)
    if name == "#":
        return (Value.of(str(len(state.positional))) if state.positional is not None else Value.unknown("$#", ARG),)
    return (Value.unknown(f"${name}", COMPUTED),)


# --- one word ------------------------------------------------------------------------------------


class Expander:
    """Expands the words of one command; `run_subst` walks `$(...)` with the same state."""

    def __init__(self, state: State, run_subst: RunSubst):
        self.state = state
        self.run_subst = run_subst
        # Everything expanded flowed from these, even what left no field ($HSM_PIN unset).
        self.taints: set[str] = set()

    def fields(self, word: Word) -> list[list[Field]]:
        """Each way the word can read, as the fields it gives after splitting."""
        accs: list[tuple[list[Field], Value | None, bool, bool]] = [([], None, False, False)]
        for part in word.parts:
            options = self.part(part, word.line)
            accs = [_add(acc, option, word.line) for acc in accs for option in options]
            if len(accs) > MAX_ALTERNATIVES:
                return [[Field(Value.unknown(word.source, COMPUTED), line=word.line)]]
        out = []
        for fields, current, glob, quoted in accs:
            if current is not None:
                fields = fields + [Field(current, glob, quoted, word.line)]
            out.append(fields)
        return _unique(out)

    def values(self, word: Word) -> list[Value]:
        """Each way the word can read as one value: assignments, here-documents, case words."""
        accs: list[Value] = [EMPTY]
        for part in word.parts:
            options = self.part(part, word.line, quoted=True)
            accs = list(dict.fromkeys(acc + option[0] for acc in accs for option in options))
            if len(accs) > MAX_ALTERNATIVES:
                return [Value.unknown(word.source, COMPUTED)]
        return accs

    def value(self, word: Word) -> Value:
        """One value, the only way the word reads, or unknown."""
        values = self.values(word)
        if len(values) == 1:
            return values[0]
        taints = frozenset().union(*(v.taints for v in values))
        return Value.unknown(word.source, COMPUTED, taints)

    def part(self, part: object, line: int, *, quoted: bool = False) -> list[tuple[Value, bool, bool, bool]]:
        """(value, split it, quoted, may glob) for each way one part reads."""
        if isinstance(part, Text):
            glob = not part.quoted and not quoted and has_glob(part.value)
            return [(Value.of(part.value), False, part.quoted or quoted, glob)]
        if isinstance(part, Opaque):
            return [(Value.unknown(part.source, COMPUTED), False, True, False)]
        if isinstance(part, Param):
            split = not (part.quoted or quoted)
            values = self.param(part, line)
            self.taints.update(t for v in values for t in v.taints)
            return [(v, split, not split, False) for v in values]
        if isinstance(part, Subst):
            split = not (part.quoted or quoted)
            return [(self.subst(part), split, not split, False)]
        if isinstance(part, Arith):
            return [(self.arith(part), False, True, False)]
        raise TypeError(type(part).__name__)

    def subst(self, part: Subst) -> Value:
        out = self.run_subst(self.state, part.stmts)
        if out.content is not None and out.content.prefix:
            value = out.content.rstrip_newlines()
            return Value(value.parts, value.taints | _key_taint(out), value.computed or out.origin != "path")
        taints = frozenset().union(*[v.taints for v in [out.content] if v]) | _key_taint(out)
        return Value.unknown(part.source, COMPUTED, taints)

    def param(self, part: Param, line: int) -> list[Value]:
        state = self.state
        base = lookup(state, part.name, line)
        mode_taint = frozenset({f"env:{part.name}"}) if part.name in knowledge.HSM_VARS else frozenset()
        if part.name in state.world.set_by_mode:
            mode_taint |= {"mode"}  # unset here, set on the other mode's path
        op = part.op
        if part.name == knowledge.HSM_PIN and (part.length or op in ("%", "%%", "#", "##")):
            state.find("reads-secret-env", Severity.HIGH, line,
                       f"{part.source} takes the HSM PIN apart: its characters can reach a file, a serial, anything")  # fmt: skip
        if part.length:
            return [Value.of(str(len(v.text))) if v.known else Value.unknown(part.source, COMPUTED) for v in base or (EMPTY,)]
        # The word after the operator is audited whether or not it is used: what the audit
        # cannot tell empty from set would run it.
        word = self.values(part.arg) if part.arg is not None and op not in ("%", "%%", "#", "##") else [EMPTY]
        if op is None or op in ("?", ":?"):
            return [v.tainted(*mode_taint) for v in base or (EMPTY,)]
        if op in ("-", ":-", "=", ":="):
            chosen = word if base is None else [c for v in base for c in _default(v, word, op.startswith(":"))]
            if op in ("=", ":=") and base is None:
                state.assign(part.name, tuple(chosen))
            return [v.tainted(*mode_taint) for v in dict.fromkeys(chosen)]
        if op in ("+", ":+"):
            if base is None:
                return [EMPTY.tainted(*mode_taint)]
            chosen = [c for v in base for c in _alternate(v, word, op.startswith(":"))]
            return [v.tainted(*mode_taint) for v in dict.fromkeys(chosen)]
        return [self.trim(v, part) for v in base or (EMPTY,)]

    def trim(self, value: Value, part: Param) -> Value:
        """`${x%pat}`, `${x##pat}` ...: computed when the value and the pattern are known."""
        pattern = self.value(part.arg).literal() if part.arg else ""
        text = value.literal()
        if text is None or pattern is None:
            return Value.unknown(part.source, COMPUTED, value.taints)
        cuts = [i for i in range(len(text) + 1)]
        if part.op in ("%", "%%"):
            order = cuts if part.op == "%%" else reversed(cuts)
            for i in order:
                if fnmatch.fnmatchcase(text[i:], pattern):
                    return Value.of(text[:i], taints=value.taints)
        else:
            order = reversed(cuts) if part.op == "##" else cuts
            for i in order:
                if fnmatch.fnmatchcase(text[:i], pattern):
                    return Value.of(text[i:], taints=value.taints)
        return value

    def arith(self, part: Arith) -> Value:
        number = self.number(part.expr)
        return Value.of(str(number)) if number is not None else Value.unknown(part.source, COMPUTED)

    def number(self, node: tuple) -> int | None:
        kind = node[0]
        if kind == "word":
            value = self.value(node[1]).literal()
            if value is None:
                return None
            value = value.strip()
            if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
                held = lookup(self.state, value, node[1].line)
                value = held[0].literal() if held and len(held) == 1 else "0" if held is None else None
                if value is None:
                    return None
            try:
                return int(value, 0) if value else 0
            except ValueError:
                return None
        if kind == "paren":
            return self.number(node[1])
        if kind == "un":
            x = self.number(node[2])
            return None if x is None else {"-": -x, "+": x, "!": int(not x), "~": ~x}.get(node[1])
        x, y = self.number(node[2]), self.number(node[3])
        if x is None or y is None:
            return None
        return _binary(node[1], x, y)


def _emptiness(value: Value) -> tuple[bool, bool]:
    """(surely empty, maybe empty): what fioca sets from the user's settings is never empty."""
    empty = value.known and not value.text
    return empty, empty or (not value.known and not value.prefix and value.kinds() != {ENV})


def _default(value: Value, word: list[Value], colon: bool) -> list[Value]:
    """`${x-word}` / `${x:-word}` of a set variable: x, or the word where x may be empty."""
    empty, maybe_empty = _emptiness(value)
    if not colon or not maybe_empty:
        return [value]
    return word if empty else [value] + word


def _alternate(value: Value, word: list[Value], colon: bool) -> list[Value]:
    """`${x+word}` / `${x:+word}` of a set variable: the word, or nothing where x may be empty."""
    empty, maybe_empty = _emptiness(value)
    if not colon or not maybe_empty:
        return word
    return [EMPTY] if empty else word + [EMPTY]


def _binary(op: str, x: int, y: int) -> int | None:
    table = {
        "+": lambda: x + y, "-": lambda: x - y, "*": lambda: x * y, "/": lambda: int(x / y) if y else None,
        "%": lambda: x % y if y else None, "<<": lambda: x << y if 0 <= y < 64 else None, ">>": lambda: x >> y,
        "&": lambda: x & y, "|": lambda: x | y, "^": lambda: x ^ y, "&&": lambda: int(bool(x and y)),
        "||": lambda: int(bool(x or y)), "==": lambda: int(x == y), "!=": lambda: int(x != y),
        "<": lambda: int(x < y), ">": lambda: int(x > y), "<=": lambda: int(x <= y), ">=": lambda: int(x >= y),
    }  # fmt: skip
    compute = table.get(op)
    return compute() if compute else None


def _key_taint(out: Output) -> frozenset[str]:
    return frozenset({f"key:{out.key}"}) if out.key else frozenset()


def _add(acc: tuple, option: tuple[Value, bool, bool, bool], line: int) -> tuple:
    """One more part onto a word being built, splitting unquoted expansions into fields."""
    fields, current, glob, quoted = acc
    value, split, part_quoted, part_glob = option
    fields = list(fields)
    if not split:
        if part_quoted or value.parts or current is not None:
            current = (current or EMPTY) + value
        return fields, current, glob or part_glob, quoted or part_quoted
    pieces = value.split()
    first = value.parts[0] if value.parts else ""
    last = value.parts[-1] if value.parts else ""
    starts_blank = isinstance(first, str) and first[:1] in (" ", "\t", "\n")
    ends_blank = isinstance(last, str) and last[-1:] in (" ", "\t", "\n")
    glob_here = any(has_glob(p.prefix) for p in pieces)
    if current is not None and (starts_blank or not pieces) and (starts_blank or value.text):
        fields.append(Field(current, glob, quoted, line))
        current, glob, quoted = None, False, False
    for i, piece in enumerate(pieces):
        current = piece if current is None else current + piece
        glob = glob or glob_here
        if i < len(pieces) - 1 or ends_blank:
            fields.append(Field(current, glob, quoted, line))
            current, glob, quoted = None, False, False
    return fields, current, glob, quoted


def _unique(alternatives: list[list[Field]]) -> list[list[Field]]:
    seen, out = set(), []
    for fields in alternatives:
        key = tuple((f.value, f.glob) for f in fields)
        if key not in seen:
            seen.add(key)
            out.append(fields)
    return out
