"""The scripts' syntax, read by a maintained parser: mvdan/sh through `shfmt --to-json`.

`shfmt` (PyPI `shfmt-py`) prints the syntax tree of a POSIX shell script as JSON; this module
turns that tree into the small typed nodes below, which the walker reads. The scripts run with
`/bin/sh`, so the dialect is POSIX: bash-only syntax is a parse error, as it is for dash.

The adapter fails closed. A parse error, a node type or field it does not know, a tree nested
too deeply, or no `shfmt` at all gives a `ParseFailure` (the audit reports it as a HIGH
`unparsable` finding with the line and shfmt's own message), never a partial tree.

The four scripts are parsed by four `shfmt` processes at once (`Parsing`): shfmt spends
its time starting and printing JSON, not parsing, so one call over the four joined texts
measured no faster, and separate calls keep one script from changing how another is read.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

SHFMT_TIMEOUT = 10.0  # seconds; shfmt parses a script in milliseconds


# --- the nodes ---------------------------------------------------------------------------------


@dataclass
class Text:
    """Literal text; `quoted` when quoting (or a backslash) protects it from globbing."""

    value: str
    quoted: bool


@dataclass
class Param:
    """`$x`, `${x}`, `${x:-word}`, `${#x}` ..."""

    name: str
    op: str | None  # "-", ":-", "=", "+", "?", "%", "%%", "#", "##" and the ":" forms
    arg: Word | None
    length: bool
    quoted: bool
    source: str


@dataclass
class Subst:
    """`$(...)` or a backquoted command: runs, and its output becomes text."""

    stmts: list[Stmt]
    quoted: bool
    source: str


@dataclass
class Arith:
    """`$((...))`."""

    expr: Any  # ("num"|"word", Word) | ("un", op, x) | ("bin", op, x, y) | ("paren", x)
    quoted: bool
    source: str


@dataclass
class Opaque:
    """Text whose meaning differs between shells (`$'...'`, `$"..."`): never taken as known."""

    source: str
    quoted: bool


Part = Union[Text, Param, Subst, Arith, Opaque]


@dataclass
class Word:
    """One shell word: its parts in order, as the script spelt it (`source`)."""

    parts: list[Part]
    line: int
    source: str

    def literal(self) -> str | None:
        """The word's text when it has no expansion at all."""
        if all(isinstance(p, Text) for p in self.parts):
            return "".join(p.value for p in self.parts)  # type: ignore[union-attr]
        return None


@dataclass
class Redirect:
    """`>`, `<`, `<<` ... on a command, with its target or here-document."""

    op: str  # ">", ">>", "<", "<>", ">&", "<&", ">|", "<<", "<<-"
    fd: str | None
    target: Word | None
    heredoc: Word | None  # the body, tabs already stripped for <<-
    line: int


@dataclass
class Assign:
    """`name=value` (before a command, or alone)."""

    name: str
    value: Word | None
    line: int


@dataclass
class Call:
    """A simple command: its assignments and its words."""

    assigns: list[Assign]
    args: list[Word]


@dataclass
class If:
    """`if ...; then ...; else ...; fi`."""

    cond: list[Stmt]
    then: list[Stmt]
    orelse: list[Stmt] | None  # an elif is one Stmt holding an If


@dataclass
class Loop:
    """`while ...; do ...; done`, or `until`."""

    until: bool
    cond: list[Stmt]
    body: list[Stmt]


@dataclass
class For:
    """`for name in items; do ...; done`."""

    name: str
    items: list[Word] | None  # None: `for x; do` iterates over "$@"
    body: list[Stmt]


@dataclass
class Case:
    """`case word in pattern) ...;; esac`: each item's patterns and statements."""

    word: Word
    items: list[tuple[list[Word], list[Stmt]]]


@dataclass
class Block:
    """`{ ...; }`, or `( ... )` (a subshell)."""

    stmts: list[Stmt]
    subshell: bool


@dataclass
class Binary:
    """`a && b`, `a || b`, `a | b`."""

    op: str  # "&&", "||", "|"
    left: Stmt
    right: Stmt


@dataclass
class Func:
    """`name() body`: a function definition."""

    name: str
    body: Stmt


Command = Union[Call, If, Loop, For, Case, Block, Binary, Func]


@dataclass
class Stmt:
    """One command with what applies to it: `!`, `&`, redirects."""

    cmd: Command
    line: int
    negated: bool = False
    background: bool = False
    redirects: list[Redirect] = field(default_factory=list)


@dataclass
class Script:
    """The whole script: its statements."""

    stmts: list[Stmt]


@dataclass
class ParseFailure:
    """Why a text could not be read, and on which line: the audit reports it as HIGH."""

    line: int
    message: str


class _Unsupported(Exception):
    def __init__(self, what: str, line: int):
        super().__init__(what)
        self.line = line


# --- running shfmt -------------------------------------------------------------------------------


def shfmt_path() -> str | None:
    """The `shfmt` that `shfmt-py` installed next to this Python, else one on PATH."""
    beside = Path(sys.executable).parent / "shfmt"
    if beside.is_file():
        return str(beside)
    return shutil.which("shfmt")


def _command(binary: str) -> list[str]:
    return [binary, "--to-json", "-ln", "posix"]


_ERROR = re.compile(r"^(?:.*?:)?(\d+):(\d+): (.*)")


def _failure_from(stderr: bytes) -> ParseFailure:
    text = stderr.decode("utf-8", "replace").strip().splitlines()
    first = text[0] if text else "shfmt failed without a message"
    m = _ERROR.search(first)
    if m:
        return ParseFailure(max(int(m.group(1)), 1), f"{m.group(3)} (column {m.group(2)})")
    return ParseFailure(1, first)


def _missing() -> ParseFailure:
    return ParseFailure(1, "shfmt is not installed (it comes with the PyPI package shfmt-py); nothing could be read")


def parse(text: str) -> Script | ParseFailure:
    """One script or fragment (the code of `sh -c`, `eval`, a trap, an alias)."""
    return parse_many({"": text})[""]


def parse_many(texts: Mapping[str, object]) -> dict[str, Script | ParseFailure]:
    """Every script by name (the texts among `texts`), one shfmt process each, all running at once."""
    return Parsing(texts).trees()


class Parsing:
    """One shfmt process per script (each text among `scripts`), all started at once: shfmt
    spends its time starting and printing JSON, not parsing, so this is what makes four scripts
    fast. Started early, they parse while the caller goes on (create: while the walker loads);
    `trees()` waits for them."""

    def __init__(self, scripts: Mapping[str, object]):
        binary = shfmt_path()
        self._datas = {name: text.encode("utf-8", "surrogatepass") for name, text in scripts.items() if isinstance(text, str)}
        self._started = {name: _start(binary, data) if binary else _missing() for name, data in self._datas.items()}

    def trees(self) -> dict[str, Script | ParseFailure]:
        return {name: _finish(process, self._datas[name]) if isinstance(process, subprocess.Popen) else process
                for name, process in self._started.items()}  # fmt: skip


def _start(binary: str, data: bytes) -> subprocess.Popen | ParseFailure:
    """shfmt, already fed: it reads all of its input before it writes, so this cannot block."""
    try:
        process = subprocess.Popen(_command(binary), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as error:
        return ParseFailure(1, f"cannot run shfmt: {error.strerror}")
    try:
        process.stdin.write(data)
        process.stdin.close()
    except BrokenPipeError:
        pass  # it stopped reading: its exit status and stderr say why
    process.stdin = None  # fed: communicate() only reads
    return process


def _finish(process: subprocess.Popen, data: bytes) -> Script | ParseFailure:
    try:
        out, err = process.communicate(timeout=SHFMT_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        return ParseFailure(1, f"shfmt did not finish within {SHFMT_TIMEOUT:.0f}s")
    if process.returncode != 0:
        return _failure_from(err)
    return _convert_file(out, data)


def _convert_file(out: bytes, data: bytes) -> Script | ParseFailure:
    try:
        tree = json.loads(out)
    except RecursionError:
        return ParseFailure(1, "the script is nested too deeply to follow")
    except ValueError:
        return ParseFailure(1, "shfmt printed something that is not a syntax tree")
    if not isinstance(tree, dict) or tree.get("Type") != "File":
        return ParseFailure(1, "shfmt printed something that is not a syntax tree")
    try:
        return Script(_Converter(data).stmts(tree.get("Stmts") or []))
    except _Unsupported as error:
        return ParseFailure(max(error.line, 1), f"the parser gave {error}, which the audit does not know")
    except RecursionError:
        return ParseFailure(1, "the script is nested too deeply to follow")
    except (KeyError, TypeError, AttributeError) as error:
        return ParseFailure(1, f"the syntax tree has a shape the audit does not know ({type(error).__name__})")


# --- JSON tree -> nodes ------------------------------------------------------------------------

# Fields that only say where things are, or hold comments: never meaning.
_POSITIONS = {"Type", "Pos", "End", "Position", "ValuePos", "ValueEnd", "OpPos", "Comments", "Semicolon", "Lparen",
              "Rparen", "Left", "Right", "Dollar", "Rbrace", "Lbrace", "IfPos", "ThenPos", "FiPos", "ElsePos", "DoPos",
              "DonePos", "InPos", "CasePos", "EsacPos", "WhilePos", "ForPos", "Esac", "OpEnd", "Last", "Name"}  # fmt: skip
_REDIRECTS = {">", ">>", "<", "<>", ">&", "<&", ">|", "<<", "<<-"}
_BINARY = {"&&", "||", "|"}
_PARAM_OPS = {"-", ":-", "=", ":=", "+", ":+", "?", ":?", "%", "%%", "#", "##"}
_DQ_ESCAPES = "$`\"\\"
_HEREDOC_ESCAPES = "$`\\"


class _Converter:
    def __init__(self, data: bytes):
        self.data = data

    # positions
    @staticmethod
    def line(node: dict) -> int:
        return int(node.get("Pos", {}).get("Line", 1))

    def source(self, node: dict) -> str:
        return self.data[node["Pos"]["Offset"] : node["End"]["Offset"]].decode("utf-8", "replace")

    def strict(self, node: dict, allowed: set[str], what: str) -> None:
        """A field this adapter does not read, set to something, is a node it does not know."""
        for key, value in node.items():
            if not (key in allowed or key in _POSITIONS or value in (None, False, [], {}, "") or _is_position(value)):
                raise _Unsupported(f"{what} with {key}", self.line(node))

    # statements
    def stmts(self, nodes: list) -> list[Stmt]:
        return [self.stmt(n) for n in nodes]

    def stmt(self, node: dict) -> Stmt:
        self.strict(node, {"Cmd", "Negated", "Background", "Redirs"}, "a statement")
        cmd = self.command(node["Cmd"]) if node.get("Cmd") else Call([], [])
        redirects = [self.redirect(r) for r in node.get("Redirs") or []]
        return Stmt(cmd, self.line(node), bool(node.get("Negated")), bool(node.get("Background")), redirects)

    def command(self, node: dict) -> Command:
        kind = node.get("Type")
        handler = self._COMMANDS.get(kind)
        if handler is None:
            raise _Unsupported(f"a {kind} command", self.line(node))
        return handler(self, node)

    def call(self, node: dict) -> Call:
        self.strict(node, {"Assigns", "Args"}, "a command")
        assigns = []
        for a in node.get("Assigns") or []:
            self.strict(a, {"Value", "Naked"}, "an assignment")
            assigns.append(Assign(a["Name"]["Value"], self.word(a["Value"]) if a.get("Value") else None, self.line(a)))
        return Call(assigns, [self.word(w) for w in node.get("Args") or []])

    def if_clause(self, node: dict) -> If:
        self.strict(node, {"Cond", "Then", "Else"}, "an if")
        orelse = None
        other = node.get("Else")
        if other and other.get("Cond"):
            orelse = [Stmt(self.if_clause(other), self.line(other))]
        elif other and other.get("Then"):
            orelse = self.stmts(other["Then"])
        return If(self.stmts(node.get("Cond") or []), self.stmts(node.get("Then") or []), orelse)

    def while_clause(self, node: dict) -> Loop:
        self.strict(node, {"Cond", "Do", "Until"}, "a loop")
        return Loop(bool(node.get("Until")), self.stmts(node.get("Cond") or []), self.stmts(node.get("Do") or []))

    def for_clause(self, node: dict) -> For:
        self.strict(node, {"Loop", "Do"}, "a for loop")
        loop = node["Loop"]
        if loop.get("Type") != "WordIter":
            raise _Unsupported(f"a {loop.get('Type')} loop", self.line(node))
        items = [self.word(w) for w in loop.get("Items") or []] if loop.get("InPos") else None
        return For(loop["Name"]["Value"], items, self.stmts(node.get("Do") or []))

    def case_clause(self, node: dict) -> Case:
        self.strict(node, {"Word", "Items"}, "a case")
        items = []
        for item in node.get("Items") or []:
            if item.get("Op") not in (";;", None):
                raise _Unsupported(f"a case item ending {item.get('Op')}", self.line(item))
            items.append(([self.word(w) for w in item.get("Patterns") or []], self.stmts(item.get("Stmts") or [])))
        return Case(self.word(node["Word"]), items)

    def block(self, node: dict) -> Block:
        self.strict(node, {"Stmts"}, "a block")
        return Block(self.stmts(node.get("Stmts") or []), subshell=node.get("Type") == "Subshell")

    def binary(self, node: dict) -> Binary:
        self.strict(node, {"Op", "X", "Y"}, "a binary command")
        if node.get("Op") not in _BINARY:
            raise _Unsupported(f"the operator {node.get('Op')}", self.line(node))
        return Binary(node["Op"], self.stmt(node["X"]), self.stmt(node["Y"]))

    def func(self, node: dict) -> Func:
        self.strict(node, {"Body", "Parens"}, "a function")
        return Func(node["Name"]["Value"], self.stmt(node["Body"]))

    _COMMANDS = {
        "CallExpr": call, "IfClause": if_clause, "WhileClause": while_clause, "ForClause": for_clause,
        "CaseClause": case_clause, "Block": block, "Subshell": block, "BinaryCmd": binary, "FuncDecl": func,
    }  # fmt: skip

    def redirect(self, node: dict) -> Redirect:
        self.strict(node, {"Op", "N", "Word", "Hdoc"}, "a redirection")
        op = node.get("Op")
        if op not in _REDIRECTS:
            raise _Unsupported(f"the redirection {op}", self.line(node))
        fd = node["N"]["Value"] if node.get("N") else None
        target = self.word(node["Word"]) if node.get("Word") else None
        body = None
        if op in ("<<", "<<-"):
            expands = target is not None and all(isinstance(p, Text) and not p.quoted for p in target.parts)
            body = self.heredoc(node.get("Hdoc") or {"Parts": []}, expands, strip_tabs=op == "<<-")
        return Redirect(op, fd, None if body is not None else target, body, self.line(node))

    # words
    def word(self, node: dict) -> Word:
        return Word(self.parts(node.get("Parts") or [], quoted=False), self.line(node), self.source(node))

    def parts(self, nodes: list, *, quoted: bool) -> list[Part]:
        out: list[Part] = []
        for node in nodes:
            kind = node.get("Type")
            if kind == "Lit":
                out.extend(_unquoted_text(node["Value"]) if not quoted else [Text(_unescape(node["Value"], _DQ_ESCAPES), True)])
            elif kind == "SglQuoted":
                out.append(Opaque(self.source(node), quoted) if node.get("Dollar") else Text(node["Value"], True))
            elif kind == "DblQuoted":
                if node.get("Dollar"):
                    out.append(Opaque(self.source(node), quoted))
                else:
                    out.extend(self.parts(node.get("Parts") or [], quoted=True))
            elif kind in self._PARTS:
                out.append(self._PARTS[kind](self, node, quoted))
            else:
                raise _Unsupported(f"a {kind} in a word", self.line(node))
        return out

    def param(self, node: dict, quoted: bool) -> Param:
        self.strict(node, {"Short", "Length", "Param", "Exp"}, "an expansion")
        exp = node.get("Exp")
        if exp and exp.get("Op") not in _PARAM_OPS:
            raise _Unsupported(f"the expansion operator {exp.get('Op')}", self.line(node))
        arg = self.word(exp["Word"]) if exp and exp.get("Word") else None
        return Param(node["Param"]["Value"], exp.get("Op") if exp else None, arg, bool(node.get("Length")), quoted,
                     self.source(node))  # fmt: skip

    def subst(self, node: dict, quoted: bool) -> Subst:
        self.strict(node, {"Stmts", "Backquotes"}, "a command substitution")
        return Subst(self.stmts(node.get("Stmts") or []), quoted, self.source(node))

    def arith(self, node: dict, quoted: bool) -> Arith:
        self.strict(node, {"X"}, "an arithmetic expansion")
        return Arith(self.arith_expr(node["X"]), quoted, self.source(node))

    _PARTS = {"ParamExp": param, "CmdSubst": subst, "ArithmExp": arith}

    def arith_expr(self, node: dict) -> Any:
        kind = node.get("Type")
        if kind == "Word":
            return ("word", Word(self.parts(node.get("Parts") or [], quoted=True), self.line(node), self.source(node)))
        if kind == "BinaryArithm":
            return ("bin", node["Op"], self.arith_expr(node["X"]), self.arith_expr(node["Y"]))
        if kind == "UnaryArithm":
            return ("un", node["Op"] + ("post" if node.get("Post") else ""), self.arith_expr(node["X"]))
        if kind == "ParenArithm":
            return ("paren", self.arith_expr(node["X"]))
        raise _Unsupported(f"a {kind} in arithmetic", self.line(node))

    def heredoc(self, node: dict, expands: bool, *, strip_tabs: bool) -> Word:
        parts: list[Part] = []
        for part in node.get("Parts") or []:
            if part.get("Type") == "Lit":
                parts.append(Text(_unescape(part["Value"], _HEREDOC_ESCAPES) if expands else part["Value"], True))
            elif expands and part.get("Type") in self._PARTS:
                parts.append(self._PARTS[part["Type"]](self, part, True))
            else:
                raise _Unsupported(f"a {part.get('Type')} in a here-document", self.line(node) if node.get("Pos") else 1)
        if strip_tabs:
            parts = _strip_tabs(parts)
        line = self.line(node) if node.get("Pos") else 1
        return Word(parts, line, self.source(node) if node.get("Pos") else "")


def _is_position(value: Any) -> bool:
    return isinstance(value, dict) and set(value) <= {"Offset", "Line", "Col"}


def _unescape(text: str, escapable: str) -> str:
    """Backslash rules inside double quotes and here-documents: only some characters escape."""
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and (text[i + 1] in escapable or text[i + 1] == "\n"):
            if text[i + 1] != "\n":
                out.append(text[i + 1])
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _unquoted_text(text: str) -> list[Text]:
    """An unquoted literal: a backslash quotes the next character, backslash-newline vanishes."""
    out: list[Text] = []
    plain: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            if plain:
                out.append(Text("".join(plain), False))
                plain = []
            if text[i + 1] != "\n":
                out.append(Text(text[i + 1], True))
            i += 2
            continue
        plain.append(text[i])
        i += 1
    if plain:
        out.append(Text("".join(plain), False))
    return out


def _strip_tabs(parts: list[Part]) -> list[Part]:
    """`<<-`: leading tabs go from every line of the body (and before the end line)."""
    out: list[Part] = []
    at_line_start = True
    for part in parts:
        if isinstance(part, Text):
            lines = part.value.split("\n")
            fixed = [line.lstrip("\t") if (i > 0 or at_line_start) else line for i, line in enumerate(lines)]
            out.append(Text("\n".join(fixed), True))
            at_line_start = part.value.endswith("\n")
        else:
            out.append(part)
            at_line_start = False
    return out
