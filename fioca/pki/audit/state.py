"""What the walker knows at one point of a script: values, variables, files, findings.

A `Value` is what a word or variable holds as far as the audit can tell: known text, and
`Unknown` pieces for what only the run decides (an argument, an HSM setting, a program's
output), each with where it came from. A variable holds one value per way the script can have
reached that point (the branches of an `if`), so `$extra` is `-engine pkcs11 -keyform engine`
on one path and empty on the other.

`State` is passed into every walk, nested ones included (`sh -c`, `$(...)`, functions,
aliases, `.` files, traps): its `world` (files, findings, the commands seen, the script's
profile) is shared by all of them; its variables are copied where the shell copies them
(subshells, command substitutions, branches).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Union

from fioca.pki.asked import AskedCertificate
from fioca.pki.audit import knowledge
from fioca.pki.audit.report import Command, Finding, Severity

if TYPE_CHECKING:
    from fioca.pki.audit.parser import Stmt

MAX_ALTERNATIVES = 8  # ways a word can read; beyond, the word is taken as unknown
MAX_DEPTH = 40  # nested walks (functions calling functions, sh -c in sh -c ...)

# Where an unknown piece comes from.
ARG = "arg"  # an argument fioca passes (a file name of the plan): trusted
ENV = "env"  # a variable fioca sets from the user's settings (HSM module, label, PIN)
HOME = "home"  # the user's home ($HOME, ~)
TMP = "tmp"  # the system's temp dir
COMPUTED = "computed"  # a program's output, or anything else the audit cannot resolve


@dataclass(frozen=True)
class Unknown:
    """A piece of a value the audit cannot know, and where it comes from (`kind`)."""

    source: str  # as the script wrote it: $1, $HSM_MODULE, $(date)
    kind: str


Piece = Union[str, Unknown]


@dataclass(frozen=True)
class Value:
    """A shell value as far as the audit knows it: known text and unknown pieces."""

    parts: tuple[Piece, ...] = ()
    taints: frozenset[str] = frozenset()  # what flowed in: "env:HSM_PIN", "key:factory_ca.key"
    computed: bool = False  # made by a program (printf, cat ...): a name built so is hidden

    @classmethod
    def of(cls, text: str, *, taints: frozenset[str] = frozenset(), computed: bool = False) -> Value:
        return cls((text,) if text else (), taints, computed)

    @classmethod
    def unknown(cls, source: str, kind: str, taints: frozenset[str] = frozenset()) -> Value:
        return cls((Unknown(source, kind),), taints, kind == COMPUTED)

    def __add__(self, other: Value) -> Value:
        parts = list(self.parts)
        for piece in other.parts:
            if parts and isinstance(piece, str) and isinstance(parts[-1], str):
                parts[-1] += piece
            else:
                parts.append(piece)
        return Value(tuple(parts), self.taints | other.taints, self.computed or other.computed)

    @property
    def known(self) -> bool:
        return all(isinstance(p, str) for p in self.parts)

    @property
    def text(self) -> str:
        """The value for people: known text, and unknown pieces as the script wrote them."""
        return "".join(p if isinstance(p, str) else p.source for p in self.parts)

    def literal(self) -> str | None:
        return self.text if self.known else None

    @property
    def prefix(self) -> str:
        """The known text it starts with."""
        out = []
        for piece in self.parts:
            if not isinstance(piece, str):
                break
            out.append(piece)
        return "".join(out)

    @property
    def lead(self) -> Unknown | None:
        """The unknown piece it starts with, if it starts with one."""
        return self.parts[0] if self.parts and isinstance(self.parts[0], Unknown) else None

    def kinds(self) -> set[str]:
        return {p.kind for p in self.parts if isinstance(p, Unknown)}

    def only_from(self, variable: str) -> bool:
        """Nothing but the value of one variable fioca sets (empty when it is unset)."""
        return self.taints == {f"env:{variable}"} and all(isinstance(p, Unknown) and p.kind == ENV for p in self.parts)

    def tainted(self, *more: str) -> Value:
        return replace(self, taints=self.taints | frozenset(more))

    def split(self) -> list[Value]:
        """Field splitting of an unquoted expansion: known blanks separate fields; an unknown
        piece stays in its field (what it holds is judged where it is used)."""
        fields: list[Value] = []
        current: list[Piece] = []
        started = False
        for piece in self.parts:
            if isinstance(piece, Unknown):
                current.append(piece)
                started = True
                continue
            chunks = re.split(r"[ \t\n]+", piece)
            for i, chunk in enumerate(chunks):
                if i > 0 and started:
                    fields.append(Value(tuple(current), self.taints, self.computed))
                    current, started = [], False
                if chunk:
                    current.append(chunk)
                    started = True
        if started:
            fields.append(Value(tuple(current), self.taints, self.computed))
        return fields

    def rstrip_newlines(self) -> Value:
        if self.parts and isinstance(self.parts[-1], str):
            last = self.parts[-1].rstrip("\n")
            return Value(self.parts[:-1] + ((last,) if last else ()), self.taints, self.computed)
        return self


EMPTY = Value()


@dataclass(frozen=True)
class Field:
    """One argument after expansion."""

    value: Value
    glob: bool = False  # unquoted * ? [ : the shell matches file names
    quoted: bool = False
    line: int = 0

    @property
    def text(self) -> str:
        return self.value.text


@dataclass(eq=False)
class FileInfo:
    """A file of the work dir as the walk knows it."""

    content: Value | None  # what it holds when the audit knows (here-documents, echo)
    key: str | None = None  # the private key it holds (a file name or a label), if any
    origin: str = "input"  # "input" (there before), "keygen", "data", "unknown"
    written: bool = False  # by this script
    line: int = 0  # where its known content starts in the script (a here-document's first line)


@dataclass(eq=False)
class Output:
    """What a command prints: its content as far as known, and whether it is a key; for a
    test (`[`), whether it is true when the audit can tell, and whether the mode decides it."""

    content: Value | None = None
    key: str | None = None
    origin: str = "unknown"  # "keygen", "data", "path" (dirname, basename), "unknown"
    truth: bool | None = None
    by_mode: bool = False
    line: int = 0  # where known content starts in the script
    reported: bool = False  # the key it carries was already reported where it was read


@dataclass(eq=False)
class Invocation:
    """One command about to run, as its handler sees it."""

    state: State
    argv: list[Field]
    name: str  # the program, as resolved: "openssl", "cp" ...
    line: int
    stdin: Output | None
    stdout: str | None  # where its output goes: a file of the work dir, "|", "stderr"; None: the script's
    command: Command  # the report's record of it, which handlers complete
    run_argv: Callable[[State, list[Field], int, Output | None], Output]  # a command it runs
    run_code: Callable[[State, str, int, str], Output]  # shell text it runs (sh -c, eval ...)

    @property
    def args(self) -> list[Field]:
        return self.argv[1:]

    @property
    def texts(self) -> list[str]:
        return [f.text for f in self.argv]

    def find(self, finding_id: str, severity: Severity, message: str) -> None:
        self.state.find(finding_id, severity, self.line, message)

    def operands(self, value_options: set[str] | frozenset[str] = frozenset()) -> list[Field]:
        """The arguments that are not options nor the values of options."""
        out: list[Field] = []
        skip = False
        ended = False
        for f in self.args:
            text = f.text
            if skip:
                skip = False
            elif not ended and text == "--":
                ended = True
            elif not ended and text.startswith("-") and text != "-" and f.value.known:
                skip = text in value_options
            else:
                out.append(f)
        return out

    def option(self, *names: str) -> Field | None:
        """The value given to the last of these options (`-o x` or `--opt=x`)."""
        found = None
        for i, f in enumerate(self.args):
            if f.text in names and i + 1 < len(self.args):
                found = self.args[i + 1]
            for name in names:
                if name.startswith("--") and f.text.startswith(name + "="):
                    found = Field(Value.of(f.text[len(name) + 1 :]), False, True, f.line)
        return found


@dataclass(eq=False)
class World:
    """What all walks of one script share."""

    script: str
    lines: list[str]
    profile: knowledge.Profile
    findings: list[Finding] = field(default_factory=list)
    seen: set[tuple] = field(default_factory=set)
    commands: list[Command] = field(default_factory=list)
    reads: dict[str, None] = field(default_factory=dict)
    writes: dict[str, None] = field(default_factory=dict)
    deletes: dict[str, None] = field(default_factory=dict)
    files: dict[str, FileInfo] = field(default_factory=dict)
    created_dirs: set[str] = field(default_factory=set)
    asked: list[AskedCertificate] = field(default_factory=list)
    siblings: list[tuple[str, str | None]] = field(default_factory=list)  # (script, where its stdout goes)
    traps: list[tuple[str, int]] = field(default_factory=list)  # code run at exit, the line that set it
    called: set[str] = field(default_factory=set)  # functions some path called
    configs_read: set[tuple[str, int]] = field(default_factory=set)  # (file, line) whose entries were checked
    assigned: set[str] = field(default_factory=set)  # variables the script sets somewhere
    set_by_mode: set[str] = field(default_factory=set)  # ... in a branch the mode decides
    errexit_line: int | None = None
    first_effect_line: int | None = None

    def fork(self) -> World:
        """For a branch that cannot run in the audited mode: its findings and commands count,
        but the files it would make, and the certificates it would ask for, do not."""
        return replace(self, files=dict(self.files), created_dirs=set(self.created_dirs), reads={}, writes={},
                       deletes={}, asked=[], siblings=[], traps=list(self.traps))  # fmt: skip

    def record(self, access: str, name: str) -> None:
        target = {"read": self.reads, "write": self.writes, "delete": self.deletes}[access]
        target.setdefault(name, None)


def norm(path: str) -> str:
    """`./a`, `a`, `d/./a` and `d//a` are one file of the work dir, as for the kernel: two
    spellings of a name must never be two files to the audit. (`..` stays: it is refused.)"""
    if not path:
        return path
    parts = [part for part in path.split("/") if part not in ("", ".")]
    lead = "/" if path.startswith("/") else ""
    return lead + "/".join(parts) if parts else lead or "."


@dataclass(eq=False)
class State:
    """One path of the walk: variables, functions, the mode, where it is nested."""

    world: World
    hsm: bool  # the mode this path runs in
    vars: dict[str, tuple[Value, ...]] = field(default_factory=dict)
    positional: tuple[Value, ...] | None = None  # None: the script's own arguments
    functions: dict[str, Stmt] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    in_mode: bool = True  # False in a branch that cannot run in the audited mode
    at_line: int | None = None  # nested code: its findings go on the line that ran it
    context: str = ""  # said before each message of nested code: "in sh -c: "
    depth: int = 0
    ended: bool = False  # exit (or return in a function) was reached on this path
    returned: bool = False  # ended by `return`: the function ends, the script goes on
    in_function: bool = False
    dead_note: str = ""  # why this path cannot run in the audited mode
    by_mode: bool = False  # inside a branch the mode decides: what it sets depends on the mode

    def assign(self, name: str, values: tuple[Value, ...]) -> None:
        """`name=value`: a value set where the mode decided the branch says so (`mode` taint),
        so that a test of it later is known to be decided by the mode too."""
        if self.by_mode:
            self.world.set_by_mode.add(name)
        self.vars[name] = tuple(v.tainted("mode") for v in values) if self.by_mode else values

    @property
    def profile(self) -> knowledge.Profile:
        return self.world.profile

    def copy(self) -> State:
        return replace(self, vars=dict(self.vars), functions=dict(self.functions), aliases=dict(self.aliases))

    def nested(self, line: int, context: str) -> State:
        """The same world and variables, for code the script builds and runs (sh -c, eval, a trap)."""
        state = self.copy()
        state.at_line = self.at_line or line
        state.context = self.context + context
        state.depth = self.depth + 1
        return state

    def dead(self, note: str, *, hsm: bool) -> State:
        """A copy for a branch that cannot run in the audited mode (walked in the mode it runs in)."""
        state = self.copy()
        state.world = self.world.fork()
        state.in_mode, state.dead_note, state.hsm = False, note, hsm
        return state

    def merge(self, other: State) -> None:
        """After two paths meet again: each variable holds what either path left in it."""
        if other.ended:
            return
        if self.ended:
            self.vars, self.ended = dict(other.vars), False
            return
        for name in set(self.vars) | set(other.vars):
            mine = self.vars.get(name, (EMPTY,))
            theirs = other.vars.get(name, (EMPTY,))
            merged = tuple(dict.fromkeys(mine + theirs))
            self.vars[name] = merged if len(merged) <= MAX_ALTERNATIVES else (Value.unknown(f"${name}", COMPUTED),)
        self.functions.update(other.functions)
        self.aliases.update(other.aliases)

    def find(self, finding_id: str, severity: Severity, line: int, message: str) -> None:
        line = self.at_line or line or 1
        text = self.world.lines[line - 1].strip() if 0 < line <= len(self.world.lines) else ""
        message = self.context + message
        if not self.in_mode:
            message += f" ({self.dead_note})"
        key = (finding_id, severity, line, message)
        if key not in self.world.seen:
            self.world.seen.add(key)
            self.world.findings.append(Finding(finding_id, severity, line, text, message, self.in_mode))

    def file(self, path: str) -> FileInfo | None:
        return self.world.files.get(norm(path))

    def put_file(self, path: str, info: FileInfo) -> None:
        self.world.files[norm(path)] = info
