"""What a server-sent script does, read from its text before anything runs it.

The four script-era scripts (`create_ca`, `sign_tls_csr`, `sign_ca_csr`,
`create_device_ca`) come from the Factory API and run with the user's root key at hand, so
fioca reads each one first: its SHA-256 and diff against the bundled reference, the commands
it runs (with the openssl details that decide the certificates), the files it reads, writes
and deletes, and findings with a severity.

This is not a shell. A small lexer follows POSIX quoting, `$(...)`, backticks, `${...}`,
here-documents and backslash continuations closely enough to know, for every simple command,
its words, its redirections and the variables it expands. Whatever the lexer cannot follow is
a finding (`unparsable`), never a silent pass. `shlex` was the first idea, but it reads `$#`
as the start of a comment, cannot nest `$(...)` and drops the quoting that tells `'$X'` from
`"$X"`, so the lexer below does that one job itself.

Finding ids and their usual severity (some vary with what exactly the script does):

    network-access             HIGH    curl, wget, nc, ssh, /dev/tcp, openssl s_client ...
    absolute-path              HIGH    a path outside the work dir by absolute name (LOW for
                                       /dev/urandom-like devices and program paths)
    outside-workdir            HIGH    ~, $HOME, .. (MEDIUM: a path from the environment, mktemp)
    reads-secret-env           HIGH    $FIOCTL_TOKEN, $HSM_PIN expanded, $ENV::X in a config ...
    reads-environment          HIGH    env, printenv, set without arguments, /proc/*/environ
    reads-env                  LOW     any other environment variable
    reads-hsm-env              INFO    $HSM_MODULE, $HSM_TOKEN_LABEL, env:HSM_PIN (expected)
    reads-private-key          HIGH    the root or local CA key read by anything but openssl
                                       signing options (it could reach stdout, the upload)
    eval-data                  HIGH    eval, source, sh -c with data, `| sh`, a computed
                                       command name, running a file the script wrote,
                                       LD_PRELOAD / OPENSSL_CONF / PKCS11_MODULE_PATH (other
                                       than "$HSM_MODULE") set: code loaded from elsewhere
    runs-interpreter           HIGH    python, perl, node ... with code the audit cannot read
    decodes-data               MEDIUM  base64 -d, xxd -r, gunzip ...
    privilege-change           HIGH    sudo, chown, chmod 777 / setuid (LOW: plain chmod)
    persistence                HIGH    crontab, systemctl, at
    deletes-foreign-file       HIGH    rm / mv / find -delete of anything the script did not write
    overwrites-pki-file        HIGH    writing a PKI file this script is not meant to make
    signs-with-own-key         HIGH    signing with a key or CA the script made itself
    weak-crypto                HIGH    RSA < 2048, curves < 224 bits, MD5 / SHA-1
    validity-exceeds-profile   HIGH    -days (or default_days) beyond the documented profile
    differs-from-profile       LOW     P-256 / SHA-256 not used, but nothing weak
    unresolved-value           MEDIUM  -days or a digest computed at run time
    missing-errexit            MEDIUM  no `#!/bin/sh -e` / `set -e` (or `set +e` later)
    not-a-shell-script         HIGH    a shebang for another interpreter
    hidden-characters          HIGH    bidi / zero-width characters (MEDIUM: other controls)
    background-job             MEDIUM  `&`, nohup, setsid: work that outlives the script
    process-control            MEDIUM  kill, pkill
    endless-loop               MEDIUM  `while true` / `while :` without break or exit
    unknown-command            MEDIUM  a program the audit does not know
    unparsable                 HIGH    the lexer lost track (unterminated quote, here-doc,
                                       `$(`); MEDIUM for block structure it cannot follow
"""

from __future__ import annotations

import bisect
import difflib
import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from enum import IntEnum
from typing import Any

# Validity in days of each script's certificate, from the documented profiles (PKI-SPEC §4).
PROFILE_DAYS: dict[str, int] = {
    "create_ca": 7300,
    "sign_tls_csr": 3650,
    "sign_ca_csr": 3650,
    "create_device_ca": 3650,
}

SCRIPT_KEYS = ("create_ca", "create_device_ca", "sign_tls_csr", "sign_ca_csr")


class Severity(IntEnum):
    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3

    @classmethod
    def parse(cls, text: str) -> Severity:
        """`"high"` -> `Severity.HIGH`; raises ValueError naming the accepted words."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            choices = "|".join(s.label for s in cls)
            raise ValueError(f"unknown severity {text!r}; expected one of {choices}") from None

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Finding:
    id: str
    severity: Severity
    line: int
    text: str  # the script's source line, stripped
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "severity": self.severity.label}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        return cls(**{**data, "severity": Severity.parse(data["severity"])})


@dataclass
class Command:
    """One simple command; the openssl fields stay None for other programs."""

    line: int
    argv: list[str]  # words after quote removal, expansions kept as written ($csr)
    subcommand: str | None = None
    key_type: str | None = None  # "ec", "rsa", ...
    curve: str | None = None
    key_bits: int | None = None
    days: int | None = None
    digest: str | None = None
    subject: str | None = None
    extensions: list[str] | None = None  # "name = value" lines from the config it wrote

    @property
    def program(self) -> str:
        return self.argv[0] if self.argv else ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Command:
        return cls(**data)


@dataclass
class ScriptAudit:
    name: str
    size: int
    sha256: str
    matches_reference: bool
    diff: str
    commands: list[Command] = field(default_factory=list)
    reads: list[str] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def max_severity(self) -> Severity | None:
        return max((f.severity for f in self.findings), default=None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size": self.size,
            "sha256": self.sha256,
            "matches_reference": self.matches_reference,
            "diff": self.diff,
            "commands": [c.to_dict() for c in self.commands],
            "reads": list(self.reads),
            "writes": list(self.writes),
            "deletes": list(self.deletes),
            "findings": [f.to_dict() for f in self.findings],
            "max_severity": self.max_severity.label if self.max_severity is not None else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScriptAudit:
        fields = {k: v for k, v in data.items() if k != "max_severity"}
        fields["commands"] = [Command.from_dict(c) for c in data["commands"]]
        fields["findings"] = [Finding.from_dict(f) for f in data["findings"]]
        return cls(**fields)


@dataclass(frozen=True)
class ScriptFinding:
    script: str
    finding: Finding


@dataclass
class AuditReport:
    scripts: list[ScriptAudit] = field(default_factory=list)

    @property
    def max_severity(self) -> Severity | None:
        return max((s.max_severity for s in self.scripts if s.max_severity is not None), default=None)

    def failing(self, level: Severity) -> list[ScriptFinding]:
        """Every finding at or above `level`, with the script it was found in."""
        return [ScriptFinding(s.name, f) for s in self.scripts for f in s.findings if f.severity >= level]

    def counts(self) -> dict[Severity, int]:
        counts = {severity: 0 for severity in Severity}
        for script in self.scripts:
            for finding in script.findings:
                counts[finding.severity] += 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {
            "scripts": [s.to_dict() for s in self.scripts],
            "max_severity": self.max_severity.label if self.max_severity is not None else None,
            "counts": {severity.label: n for severity, n in self.counts().items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AuditReport:
        return cls(scripts=[ScriptAudit.from_dict(s) for s in data["scripts"]])


# ---------------------------------------------------------------------------------------------
# Lexing


class _LexError(Exception):
    def __init__(self, message: str, pos: int):
        super().__init__(message)
        self.pos = pos


@dataclass
class _Param:
    name: str
    pos: int


@dataclass
class _Heredoc:
    delimiter: str
    strip_tabs: bool
    expand: bool  # unquoted delimiter: $var, $(...) and `...` in the body run
    pos: int
    body: str = ""  # as the file will read, expansions left as written
    body_pos: int = 0
    params: list[_Param] = field(default_factory=list)
    subs: list[list[Any]] = field(default_factory=list)


@dataclass
class _Word:
    raw: str
    value: str  # quotes removed; $x, $(...) kept as text
    pos: int
    params: list[_Param] = field(default_factory=list)
    subs: list[list[Any]] = field(default_factory=list)  # token lists of $(...) / `...`
    glob: bool = False  # unquoted * ? [
    quoted: bool = False
    io_number: bool = False  # the 2 in 2>/dev/null

    @property
    def literal(self) -> bool:
        return not self.params and not self.subs


@dataclass
class _Op:
    text: str
    pos: int


@dataclass
class _Newline:
    pos: int


_OPERATORS = (";;", "&&", "||", "<<-", "<<<", "<<", ">>", ">&", "<&", "<>", ">|", "|", "&", ";", "<", ">", "(", ")")
_SPECIAL_PARAMS = set("#?@*$!-0123456789")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_VAR_RE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


class _Lexer:
    """Tokens of a POSIX sh script; nested `$(...)` and backticks are lexed in place."""

    def __init__(self, text: str):
        self.text = text
        self.pending: list[_Heredoc] = []

    def tokens(self, start: int = 0, stop: str | None = None) -> tuple[list[Any], int]:
        """Tokens from `start` to the end, or to the `stop` (")" or "`") that closes a nest."""
        text, n = self.text, len(self.text)
        out: list[Any] = []
        pos, depth = start, 0
        heredoc_next = False
        while pos < n:
            c = text[pos]
            if c == "\n":
                out.append(_Newline(pos))
                pos = self._read_heredocs(pos + 1)
                continue
            if c in " \t\r":
                pos += 1
                continue
            if c == "\\" and text.startswith("\n", pos + 1):
                pos += 2
                continue
            if c == "#":
                end = text.find("\n", pos)
                pos = n if end < 0 else end
                continue
            if stop == "`" and c == "`":
                return out, pos
            if c in "<>" and text.startswith("(", pos + 1):
                # Process substitution <(...) / >(...): a command whose output is a file name.
                sub, end = self.tokens(pos + 2, ")")
                out.append(_Word(text[pos : end + 1], text[pos : end + 1], pos, subs=[sub]))
                pos = end + 1
                continue
            if c in "|&;<>()":
                op = next(o for o in _OPERATORS if text.startswith(o, pos))
                if stop == ")" and op == "(":
                    depth += 1
                elif stop == ")" and op == ")":
                    if depth == 0:
                        return out, pos
                    depth -= 1
                out.append(_Op(op, pos))
                heredoc_next = op in ("<<", "<<-")
                pos += len(op)
                continue
            word, pos = self._word(pos, stop)
            if heredoc_next:
                heredoc_next = False
                doc = _Heredoc(
                    delimiter=word.value,
                    strip_tabs=out[-1].text == "<<-",
                    expand=not word.quoted and "\\" not in word.raw,
                    pos=word.pos,
                )
                self.pending.append(doc)
                out.append(doc)
                continue
            if word.raw.isdigit() and pos < n and text[pos] in "<>":
                word.io_number = True
            out.append(word)
        if stop is not None:
            raise _LexError(f"no closing {stop!r}", start)
        if self.pending:
            raise _LexError(f"here-document <<{self.pending[0].delimiter} has no end line", self.pending[0].pos)
        return out, pos

    def _read_heredocs(self, pos: int) -> int:
        """Bodies of the here-documents opened on the line that just ended."""
        text = self.text
        while self.pending:
            doc = self.pending.pop(0)
            doc.body_pos = pos
            lines: list[str] = []
            while True:
                if pos >= len(text):
                    raise _LexError(f"here-document <<{doc.delimiter} has no end line", doc.pos)
                end = text.find("\n", pos)
                end = len(text) if end < 0 else end
                line = text[pos:end]
                line_start, pos = pos, end + 1
                if (line.lstrip("\t") if doc.strip_tabs else line) == doc.delimiter:
                    body_end = line_start
                    break
                lines.append(line.lstrip("\t") if doc.strip_tabs else line)
            if doc.expand:
                value, doc.params, doc.subs, _ = self._scan_text(doc.body_pos, max(body_end, doc.body_pos), "heredoc")
                doc.body = value
            else:
                doc.body = "\n".join(lines) + ("\n" if lines else "")
        return pos

    def _word(self, pos: int, stop: str | None) -> tuple[_Word, int]:
        text, n = self.text, len(self.text)
        start = pos
        value: list[str] = []
        word = _Word("", "", start)
        while pos < n:
            c = text[pos]
            if c in " \t\r\n|&;<>()" or (stop == "`" and c == "`"):
                break
            if c == "\\":
                if text.startswith("\n", pos + 1):
                    pos += 2
                    continue
                value.append(text[pos + 1 : pos + 2])
                word.quoted = True
                pos += 2
            elif c == "'":
                end = text.find("'", pos + 1)
                if end < 0:
                    raise _LexError("unterminated single quote", pos)
                value.append(text[pos + 1 : end])
                word.quoted = True
                pos = end + 1
            elif c == '"':
                inner, params, subs, end = self._scan_text(pos + 1, None, "double")
                value.append(inner)
                word.params += params
                word.subs += subs
                word.quoted = True
                pos = end + 1
            elif c == "$" or c == "`":
                piece, pos = self._expansion(pos, word.params, word.subs)
                value.append(piece)
            else:
                if c in "*?[":
                    word.glob = True
                value.append(c)
                pos += 1
        word.raw = text[start:pos]
        word.value = "".join(value)
        return word, pos

    def _scan_text(self, start: int, end: int | None, mode: str) -> tuple[str, list[_Param], list[list[Any]], int]:
        """Expansions inside a double-quoted string (to its closing quote, `end` None) or an
        unquoted here-document body (to `end`). One pass, so nesting costs no rescans."""
        text = self.text
        limit = len(text) if end is None else end
        value: list[str] = []
        params: list[_Param] = []
        subs: list[list[Any]] = []
        pos = start
        while pos < limit:
            c = text[pos]
            if mode == "double" and c == '"':
                return "".join(value), params, subs, pos
            if c == "\\" and pos + 1 < limit and text[pos + 1] in "$`\\\n" + ('"' if mode == "double" else ""):
                if text[pos + 1] != "\n":
                    value.append(text[pos + 1])
                pos += 2
            elif c == "$" or c == "`":
                piece, pos = self._expansion(pos, params, subs)
                value.append(piece)
            else:
                value.append(c)
                pos += 1
        if mode == "double":
            raise _LexError("unterminated double quote", start - 1)
        return "".join(value), params, subs, pos

    def _expansion(self, pos: int, params: list[_Param], subs: list[list[Any]]) -> tuple[str, int]:
        """One `$...` or backtick expansion at `pos`: its text, and where it ends."""
        text, n = self.text, len(self.text)
        if text[pos] == "`":
            sub, end = self.tokens(pos + 1, "`")
            subs.append(sub)
            return text[pos : end + 1], end + 1
        nxt = text[pos + 1 : pos + 2]
        if text.startswith("$((", pos):
            end = self._arith_end(pos + 3)
            inner = text[pos + 3 : end]
            # Names in arithmetic are read without a `$`; both forms count as reads.
            for m in re.finditer(r"\$?\{?([A-Za-z_][A-Za-z0-9_]*)", inner):
                params.append(_Param(m.group(1), pos + 3 + m.start()))
            for m in re.finditer(r"\$([#?@*$!0-9-])", inner):
                params.append(_Param(m.group(1), pos + 3 + m.start()))
            if "$(" in inner or "`" in inner:
                raise _LexError("command substitution inside arithmetic", pos)
            return text[pos : end + 2], end + 2
        if nxt == "(":
            sub, end = self.tokens(pos + 2, ")")
            subs.append(sub)
            return text[pos : end + 1], end + 1
        if nxt == "{":
            end = self._brace_end(pos + 2)
            inner = text[pos + 2 : end]
            m = re.match(r"[#!]?([A-Za-z_][A-Za-z0-9_]*|[#?@*$!0-9-])", inner)
            if not m:
                raise _LexError("bad ${...} expansion", pos)
            params.append(_Param(m.group(1), pos))
            # ${x:-$(cmd)}: the word after the operator expands too.
            _, more_params, more_subs, _ = self._scan_text(pos + 2 + m.end(), end, "heredoc")
            params += more_params
            subs += more_subs
            return text[pos : end + 1], end + 1
        m = _NAME_RE.match(text, pos + 1)
        if m:
            params.append(_Param(m.group(0), pos))
            return text[pos : m.end()], m.end()
        if nxt and nxt in _SPECIAL_PARAMS:
            params.append(_Param(nxt, pos))
            return text[pos : pos + 2], pos + 2
        return "$", pos + 1  # a lone $ is a literal dollar sign

    def _arith_end(self, pos: int) -> int:
        depth = 0
        n = len(self.text)
        while pos < n:
            c = self.text[pos]
            if c == "(":
                depth += 1
            elif c == ")":
                if depth == 0:
                    if self.text.startswith("))", pos):
                        return pos
                    raise _LexError("unbalanced $((...))", pos)
                depth -= 1
            pos += 1
        raise _LexError("no closing '))'", pos)

    def _brace_end(self, pos: int) -> int:
        depth = 0
        n = len(self.text)
        while pos < n:
            c = self.text[pos]
            if c == "\\":
                pos += 2
                continue
            if c == "'":
                end = self.text.find("'", pos + 1)
                if end < 0:
                    break
                pos = end + 1
                continue
            if c == "{":
                depth += 1
            elif c == "}":
                if depth == 0:
                    return pos
                depth -= 1
            pos += 1
        raise _LexError("no closing '}'", pos)


# ---------------------------------------------------------------------------------------------
# Parsing tokens into simple commands


@dataclass
class _Redirect:
    op: str
    target: _Word | _Heredoc
    fd: str | None


@dataclass
class _Simple:
    pos: int
    words: list[_Word] = field(default_factory=list)
    assigns: list[_Word] = field(default_factory=list)
    redirects: list[_Redirect] = field(default_factory=list)
    background: bool = False
    function_names: list[str] = field(default_factory=list)  # defined here, `name() {`
    for_var: str | None = None
    for_words: list[_Word] = field(default_factory=list)

    in_function: bool = False  # inside a function body: runs when called, not where it stands

    def empty(self) -> bool:
        return not (self.words or self.assigns or self.redirects or self.for_var or self.for_words or self.function_names)


@dataclass
class _Structure:
    """What the parser noticed about blocks: loops without exits, unbalanced keywords."""

    problems: list[tuple[int, str]] = field(default_factory=list)
    endless_loops: list[int] = field(default_factory=list)


_REDIRECT_OPS = {"<", ">", ">>", ">|", "<>", ">&", "<&", "<<", "<<-", "<<<"}
_OPENERS = {"if": "fi", "while": "done", "until": "done", "for": "done", "case": "esac", "{": "}"}
_CLOSERS = {"fi", "done", "esac", "}"}
_SKIP_WORDS = {"then", "else", "elif", "do", "!", "in"}


def _parse(tokens: list[Any], structure: _Structure) -> list[_Simple]:
    """Simple commands in source order; if/while/for/case keywords are stepped over."""
    commands: list[_Simple] = []
    stack: list[dict[str, Any]] = []  # open blocks
    current = _Simple(pos=0)
    i = 0

    function_pending = False

    def finish() -> None:
        nonlocal current
        if not current.empty():
            current.in_function = any(f.get("function") for f in stack)
            commands.append(current)
        current = _Simple(pos=0)

    def frame(kind: str) -> dict[str, Any] | None:
        for f in reversed(stack):
            if f["kind"] == kind:
                return f
        return None

    while i < len(tokens):
        tok = tokens[i]
        at_start = not current.words and not current.assigns and not current.redirects
        case_frame = stack[-1] if stack and stack[-1]["kind"] == "case" else None
        if case_frame is not None and case_frame["expect_pattern"] and at_start:
            if isinstance(tok, _Newline) or (isinstance(tok, _Op) and tok.text == ";"):
                i += 1
                continue
            if isinstance(tok, _Word) and tok.value == "esac":
                stack.pop()
                i += 1
                continue
            # A pattern list: words and | up to the closing ).
            j = i
            while j < len(tokens) and not (isinstance(tokens[j], _Op) and tokens[j].text == ")"):
                if isinstance(tokens[j], _Newline):
                    structure.problems.append((tokens[i].pos, "case pattern without ')'"))
                    break
                j += 1
            case_frame["expect_pattern"] = False
            i = j + 1
            continue
        if isinstance(tok, _Newline) or (isinstance(tok, _Op) and tok.text in (";", "&&", "||", "|", "&", ";;")):
            if isinstance(tok, _Op) and tok.text == "&":
                current.background = True
            loop = frame("while")
            if loop is not None and loop["cond_pending"] and current.words:
                loop["cond_pending"] = False
                loop["endless"] = current.words[0].value in ("true", ":") and len(current.words) == 1
                if loop["kind_word"] == "until":
                    loop["endless"] = current.words[0].value == "false"
            finish()
            if isinstance(tok, _Op) and tok.text == ";;":
                if case_frame is not None:
                    case_frame["expect_pattern"] = True
                else:
                    structure.problems.append((tok.pos, "';;' outside case"))
            i += 1
            continue
        if isinstance(tok, _Op) and tok.text in ("(", ")"):
            nxt = tokens[i + 1] if i + 1 < len(tokens) else None
            if tok.text == "(" and len(current.words) == 1 and not current.assigns and isinstance(nxt, _Op) and nxt.text == ")":
                current.function_names.append(current.words[0].value)
                current.words = []
                finish()
                function_pending = True
                i += 2
                continue
            if not at_start and tok.text == "(":
                structure.problems.append((tok.pos, "unexpected '('"))
            finish()
            i += 1
            continue
        if isinstance(tok, _Op) and tok.text in _REDIRECT_OPS:
            target = tokens[i + 1] if i + 1 < len(tokens) else None
            if not isinstance(target, (_Word, _Heredoc)):
                structure.problems.append((tok.pos, f"'{tok.text}' without a target"))
                i += 1
                continue
            fd = None
            if current.words and current.words[-1].io_number:
                fd = current.words.pop().value
            if current.pos == 0 and not current.words:
                current.pos = tok.pos
            current.redirects.append(_Redirect(tok.text, target, fd))
            i += 2
            continue
        if isinstance(tok, _Heredoc):  # only reachable after a malformed redirect
            i += 1
            continue
        word: _Word = tok
        if at_start and word.quoted is False:
            v = word.value
            if v in _SKIP_WORDS:
                if v in ("do", "then") and not stack:
                    structure.problems.append((word.pos, f"'{v}' outside a block"))
                i += 1
                continue
            if v in _OPENERS:
                entry: dict[str, Any] = {"kind": v, "pos": word.pos, "function": function_pending and v == "{"}
                function_pending = False
                if v in ("while", "until"):
                    entry.update(kind="while", kind_word=v, cond_pending=True, endless=False, exits=False)
                if v == "case":
                    entry["expect_pattern"] = False
                stack.append(entry)
                i += 1
                if v == "for":
                    current.pos = word.pos
                    if i < len(tokens) and isinstance(tokens[i], _Word):
                        current.for_var = tokens[i].value
                        i += 1
                    while i < len(tokens) and isinstance(tokens[i], _Word) and tokens[i].value != "do":
                        if tokens[i].value != "in":
                            current.for_words.append(tokens[i])
                        i += 1
                    finish()
                elif v == "case":
                    current.pos = word.pos
                    if i < len(tokens) and isinstance(tokens[i], _Word):
                        current.for_words.append(tokens[i])  # the case subject is expanded
                        i += 1
                    if i < len(tokens) and isinstance(tokens[i], _Word) and tokens[i].value == "in":
                        i += 1
                    else:
                        structure.problems.append((word.pos, "case without 'in'"))
                    finish()
                    entry["expect_pattern"] = True
                continue
            if v in _CLOSERS:
                expected = {"fi": "if", "done": "while|for", "esac": "case", "}": "{"}[v]
                top = stack[-1]["kind"] if stack else None
                if top is None or top not in expected.split("|"):
                    structure.problems.append((word.pos, f"'{v}' does not close an open block"))
                else:
                    closed = stack.pop()
                    if closed["kind"] == "while" and closed["endless"] and not closed["exits"]:
                        structure.endless_loops.append(closed["pos"])
                i += 1
                continue
        if at_start and _NAME_RE.fullmatch(word.raw.split("=", 1)[0] or "-") and "=" in word.raw and not current.words:
            current.assigns.append(word)
        else:
            if not current.words and not current.assigns:
                current.pos = word.pos
            if word.value in ("break", "exit", "return") and not current.words:
                loop = frame("while")
                if loop is not None:
                    loop["exits"] = True
            current.words.append(word)
        if current.pos == 0:
            current.pos = word.pos
        i += 1
    finish()
    for f in stack:
        structure.problems.append((f["pos"], f"'{f.get('kind_word', f['kind'])}' block is never closed"))
    return commands


# ---------------------------------------------------------------------------------------------
# What the commands mean

_NETWORK = {
    "curl", "wget", "nc", "ncat", "netcat", "socat", "ssh", "scp", "sftp", "rsync", "telnet",
    "ftp", "tftp", "lftp", "nslookup", "dig", "host", "ping", "ping6", "git", "http", "https",
    "xh", "aria2c", "smbclient", "mail", "mailx", "sendmail", "mutt", "busctl", "openvpn",
    "pip", "pip3", "npm", "apt", "apt-get", "yum", "dnf", "apk",
}  # fmt: skip
_INTERPRETERS = {"python", "python2", "python3", "perl", "ruby", "node", "nodejs", "php", "lua", "tclsh", "Rscript", "gdb", "vim", "vi", "expect"}
_SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "ash", "mksh", "fish", "csh", "tcsh"}
_PRIVILEGE = {"sudo", "su", "doas", "pkexec", "chown", "chgrp", "setfacl", "chattr", "setcap", "mount", "umount",
              "chroot", "runuser", "nsenter", "unshare", "capsh", "passwd", "useradd", "usermod", "visudo", "insmod", "modprobe"}  # fmt: skip
_PERSISTENCE = {"crontab", "at", "batch", "systemctl", "service", "launchctl", "update-rc.d", "loginctl", "systemd-run"}
_WRAPPERS = {"command", "builtin", "exec", "nohup", "nice", "time", "timeout", "env", "sudo", "doas", "setsid",
             "stdbuf", "ionice", "chrt", "flock", "xargs", "busybox", "runuser", "su"}  # fmt: skip
_ENV_DUMPERS = {"env", "printenv", "compgen"}
_KNOWN = {
    "openssl", "pkcs11-tool", "cat", "echo", "printf", "grep", "egrep", "fgrep", "sed", "awk", "tr", "cut",
    "head", "tail", "wc", "sort", "uniq", "test", "[", "[[", "true", "false", ":", "exit", "return", "set",
    "shift", "read", "local", "export", "readonly", "unset", "trap", "type", "which", "date", "uuidgen",
    "sleep", "break", "continue", "wait", "cd", "pwd", "umask", "expr", "seq", "mktemp", "dd", "find",
    "basename", "dirname", "readlink", "realpath", "rm", "rmdir", "unlink", "shred", "mkdir", "cp", "mv",
    "ln", "touch", "chmod", "ls", "stat", "file", "tee", "base64", "xxd", "od", "hexdump", "cmp", "diff",
    "md5sum", "sha1sum", "sha256sum", "sha512sum", "yes", "getopts", "install", "truncate", "id", "whoami",
    "uname", "hostname", "logger", "tput", "declare", "typeset", "let", "paste", "fold", "rev", "tac", "nl",
    "gzip", "gunzip", "zcat", "bzip2", "xz", "tar", "uudecode", "kill", "pkill", "killall", "eval", "source",
    ".", "softhsm2-util", "p11tool",
}  # fmt: skip

_SECRET_NAME = re.compile(r"TOKEN|PIN|PASS|SECRET|KEY|CRED|AUTH|PRIVATE|COOKIE|SESSION|^FIOCTL_|^OSF|^AWS_|^GITHUB_|^SSH_")
_HSM_VARS = {"HSM_MODULE", "HSM_TOKEN_LABEL"}
# Variables that make openssl or the loader run a shared library (or config) from where they point.
# Only PKCS11_MODULE_PATH="$HSM_MODULE" is expected: the pkcs11 engine loads the user's own module.
_LOADS_CODE_VARS = {"PKCS11_MODULE_PATH", "LD_PRELOAD", "LD_LIBRARY_PATH", "OPENSSL_CONF", "OPENSSL_ENGINES", "OPENSSL_MODULES"}
_PATH_ENV = {"HOME", "PWD", "OLDPWD", "TMPDIR", "TMP", "TEMP", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_RUNTIME_DIR"}
_ALLOWED_DEVICES = {"/dev/null", "/dev/stdout", "/dev/stderr", "/dev/stdin", "/dev/fd/0", "/dev/fd/1", "/dev/fd/2"}
_RANDOM_DEVICES = {"/dev/urandom", "/dev/random", "/dev/zero"}
_BIDI_OR_INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

# PKI files a script must not write unless it is the one meant to make them (PKI-SPEC §1, §3).
_PKI_FILES = {
    "factory_ca.key", "factory_ca.pem", "local-ca.key", "local-ca.pem", "tls-crt", "tls-csr", "ca-csr",
    "online-crt", "ca-crt", "est-tls-crt", "factory_certs.json", *SCRIPT_KEYS,
}  # fmt: skip
_EXPECTED_OUTPUTS = {"create_ca": {"factory_ca.key", "factory_ca.pem"}, "create_device_ca": {"$1", "$2"}}
_PRIVATE_KEYS = {"factory_ca.key", "local-ca.key"}

_WEAK_DIGESTS = {"md2", "md4", "md5", "mdc2", "sha1", "sha", "ripemd160", "rmd160", "whirlpool"}
_DIGESTS = _WEAK_DIGESTS | {"sha224", "sha256", "sha384", "sha512", "sha512-224", "sha512-256", "sha3-224",
                            "sha3-256", "sha3-384", "sha3-512", "sm3", "blake2b512", "blake2s256", "shake128", "shake256"}  # fmt: skip
_PROFILE_CURVES = {"prime256v1", "p-256", "secp256r1"}

# openssl options that take a value (across the subcommands scripts use).
_OPENSSL_ARG_OPTS = {
    "in", "out", "config", "extfile", "extensions", "key", "keyout", "keyform", "CAkeyform", "CA", "CAkey",
    "CAserial", "CAform", "days", "set_serial", "subj", "newkey", "name", "pkeyopt", "algorithm", "engine",
    "passin", "passout", "signkey", "inform", "outform", "md", "digest", "paramfile", "reqexts", "addext",
    "certfile", "CAfile", "CApath", "untrusted", "rand", "writerand", "sigopt", "vfyopt", "nameopt", "certopt",
    "reqopt", "ext", "checkhost", "checkemail", "checkip", "set_subject", "force_pubkey", "inkey", "cert",
    "keyfile", "cipher", "pass", "iter", "kdf", "K", "iv", "S", "connect", "host", "port", "url", "servername",
    "crlexts", "section", "startdate", "enddate", "crl_reason", "revoke", "crldays", "crlhours", "policy",
    "outdir", "ss_cert", "spkac", "param_out", "conv_form", "param_enc", "copy_extensions", "not_before",
    "not_after", "dgst", "accept", "proxy", "kdfopt", "propquery", "provider", "provider-path", "CRL",
    "crl_compromise", "crl_CA_compromise", "valid", "peerkey", "sigfile",
}  # fmt: skip
# Options that take a value only in some subcommands (`req -verify` is a flag, `dgst -verify` is not).
_OPENSSL_SUB_ARG_OPTS = {
    "dgst": {"sign", "verify", "prverify", "signature", "mac", "macopt", "hmac"},
    "pkeyutl": {"sigfile", "peerkey"},
    "smime": {"sign", "signer", "recip"},
    "cms": {"sign", "signer", "recip"},
}
_OPENSSL_READ_OPTS = {"in", "config", "extfile", "key", "CA", "CAkey", "CAserial", "signkey", "paramfile", "certfile",
                      "CAfile", "untrusted", "inkey", "cert", "keyfile", "ss_cert", "spkac", "peerkey", "signature",
                      "prverify", "verify", "sign", "signer", "CRL", "sigfile"}  # fmt: skip
_OPENSSL_WRITE_OPTS = {"out", "keyout", "writerand", "param_out", "outdir"}
_OPENSSL_NETWORK = {"s_client", "s_server", "s_time", "ocsp", "cmp", "tsget", "httpd"}
_OPENSSL_KEY_DUMPERS = {"pkey", "ec", "rsa", "dsa", "pkcs8", "pkcs12", "base64", "enc", "asn1parse", "dgst", "pkeyutl",
                        "rsautl", "smime", "cms", "crl", "spkac", "storeutl"}  # fmt: skip
_OPENSSL_DECODERS = {"base64", "enc"}

# Options that take a value for common text tools, so their values are not taken for files.
_VALUE_OPTS = {
    "head": {"-n", "-c"}, "tail": {"-n", "-c"}, "cut": {"-d", "-f", "-c", "-b"}, "sort": {"-k", "-t", "-o"},
    "grep": {"-e", "-f", "-m", "-A", "-B", "-C", "--regexp", "--file"}, "sed": {"-e", "-f", "--expression", "--file"},
    "xxd": {"-l", "-s", "-c", "-g"}, "od": {"-A", "-t", "-N", "-j"}, "base64": {"-w"}, "diff": {"-U"},
    "awk": {"-F", "-v", "-f"}, "tar": {"-C", "-f"}, "mkdir": {"-m"}, "install": {"-m", "-o", "-g"},
    "cp": {"-t"}, "mv": {"-t"}, "ln": {"-t"}, "truncate": {"-s"}, "mktemp": {"-p", "--tmpdir"},
}  # fmt: skip


def _is_option(value: str) -> bool:
    return value.startswith("-") and value != "-"


@dataclass
class _Config:
    """An openssl config or extfile the script wrote: sections of (key, value, offset) entries."""

    sections: dict[str, list[tuple[str, str, int]]]

    @classmethod
    def parse(cls, body: str) -> _Config:
        sections: dict[str, list[tuple[str, str, int]]] = {"": []}
        name = ""
        for offset, raw in enumerate(body.split("\n")):
            line = raw.split("#", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
            if not line:
                continue
            m = re.fullmatch(r"\[\s*([^\]]*?)\s*\]", line)
            if m:
                name = m.group(1)
                sections.setdefault(name, [])
                continue
            if "=" in line:
                key, value = line.split("=", 1)
                sections.setdefault(name, []).append((key.strip(), value.strip(), offset))
            else:
                sections.setdefault(name, []).append((line, "", offset))
        return cls(sections)

    def get(self, section: str, key: str) -> str | None:
        for k, v, _ in self.sections.get(section, []):
            if k == key:
                return v
        return None

    def entries(self, section: str) -> list[str]:
        return [f"{k} = {v}" for k, v, _ in self.sections.get(section, [])]


@dataclass
class _FileContent:
    body: str
    pos: int  # where the body starts in the script, for line numbers


class _Auditor:
    """Walks the simple commands of one script in order and records what each does."""

    def __init__(self, name: str, text: str, profile_days: dict[str, int]):
        self.name = name
        self.text = text
        self.lines = text.split("\n")
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.max_days = profile_days.get(name)
        self.findings: list[Finding] = []
        self.seen: set[Finding] = set()
        self.commands: list[Command] = []
        # Ordered sets of file names.
        self.reads: dict[str, None] = {}
        self.writes: dict[str, None] = {}
        self.deletes: dict[str, None] = {}
        self.in_function = False
        self.deferring_done = False
        self.deferred_deletes: list[tuple[_Word, bool]] = []
        self.written: set[str] = set()
        self.created_dirs: set[str] = set()
        self.locals: dict[str, str] = {}
        self.functions: set[str] = set()
        self.contents: dict[str, _FileContent] = {}
        self.errexit_pos: int | None = None
        self.first_effect_pos: int | None = None
        self.lexer = _Lexer(text)
        self.traps: list[list[_Word]] = []
        self.structure = _Structure()

    # -- recording ---------------------------------------------------------------------------

    def line_of(self, pos: int) -> int:
        return bisect.bisect_right(self.line_starts, pos)

    def find(self, finding_id: str, severity: Severity, pos: int, message: str) -> None:
        line = self.line_of(pos)
        text = self.lines[line - 1].strip() if 0 < line <= len(self.lines) else ""
        finding = Finding(finding_id, severity, line, text, message)
        if finding not in self.seen:
            self.seen.add(finding)
            self.findings.append(finding)

    @staticmethod
    def _add(names: dict[str, None], name: str) -> None:
        names.setdefault(name, None)

    # -- the walk ----------------------------------------------------------------------------

    def run(self) -> None:
        self.check_characters()
        self.check_shebang()
        try:
            tokens, _ = self.lexer.tokens()
        except _LexError as error:
            self.find("unparsable", Severity.HIGH, error.pos, f"cannot follow the script from here: {error}; the rest is not audited")
            return
        self.walk(_parse(tokens, self.structure))
        for argv in self.traps:
            self.shell(argv, ["trap", "-c", argv[2].value])
        self.deferring_done = True
        for word, recursive in self.deferred_deletes:
            self.delete(word, recursive)
        for pos, problem in self.structure.problems:
            self.find("unparsable", Severity.MEDIUM, pos, f"cannot follow the block structure: {problem}")
        for pos in self.structure.endless_loops:
            self.find("endless-loop", Severity.MEDIUM, pos, "loop whose condition is always true and has no break or exit; it only ends when killed")
        self.check_errexit()

    def walk(self, commands: list[_Simple]) -> None:
        for simple in commands:
            self.simple(simple)

    def walk_tokens(self, tokens: list[Any]) -> None:
        self.walk(_parse(tokens, self.structure))

    def expand(self, word: _Word | _Heredoc) -> None:
        """The variable reads and command substitutions a word performs when expanded."""
        for sub in word.subs:
            self.walk_tokens(sub)
        for param in word.params:
            self.read_param(param.name, param.pos)

    def read_param(self, name: str, pos: int) -> None:
        if name in _SPECIAL_PARAMS or name in self.locals:
            return
        if name == "HSM_PIN":
            self.find("reads-secret-env", Severity.HIGH, pos,
                      "expands $HSM_PIN into the script: the PIN lands on a command line or in output; "
                      "the reference only names it (env:HSM_PIN) so openssl and pkcs11-tool read it themselves")  # fmt: skip
        elif name in _HSM_VARS:
            self.find("reads-hsm-env", Severity.INFO, pos,
                      f"reads ${name}: fioca sets it only in HSM mode, for the PKCS#11 module and token")  # fmt: skip
        elif _SECRET_NAME.search(name):
            self.find("reads-secret-env", Severity.HIGH, pos, f"reads ${name}, an environment variable that looks like a secret")
        else:
            self.find("reads-env", Severity.LOW, pos, f"reads ${name} from the environment")

    def sets_env(self, name: str, value: str, pos: int) -> None:
        """`NAME=value` or `export NAME=value` of a variable that makes a program load code."""
        if name not in _LOADS_CODE_VARS:
            return
        if name == "PKCS11_MODULE_PATH" and value in ("$HSM_MODULE", "${HSM_MODULE}"):
            return  # the reference: the engine loads the module the user chose (read as INFO above)
        self.find("eval-data", Severity.HIGH, pos, f"sets {name}={value}: openssl or the loader runs code from there")

    def read_env_reference(self, value: str, pos: int) -> None:
        """`env:NAME` as openssl -passin/-passout or pkcs11-tool --pin name it."""
        if value.startswith("env:"):
            name = value[4:]
            if name == "HSM_PIN":
                self.find("reads-hsm-env", Severity.INFO, pos, "passes env:HSM_PIN: the tool reads the PIN from the environment, as the reference does")
            else:
                self.read_param(name, pos)
        elif value.startswith("file:"):
            self.path(value[5:], pos, "read")

    def resolve(self, word: _Word) -> str:
        """The word with local variables that hold plain text put in place."""

        def local(m: re.Match[str]) -> str:
            value = self.locals.get(m.group(1) or m.group(2))
            return m.group(0) if value is None or "$(" in value or "`" in value else value

        return _VAR_RE.sub(local, word.value) if "$" in word.value else word.value

    def simple(self, cmd: _Simple) -> None:
        self.in_function = cmd.in_function
        for name in cmd.function_names:
            self.functions.add(name)
        for word in cmd.for_words:
            self.expand(word)
        if cmd.for_var:
            self.locals[cmd.for_var] = "$" + cmd.for_var
        for assign in cmd.assigns:
            self.expand(assign)
            name, value = assign.raw.split("=", 1)
            self.sets_env(name, assign.value.split("=", 1)[1] if "=" in assign.value else "", assign.pos)
            self.locals[name] = assign.value.split("=", 1)[1] if "=" in assign.value else ""
            self.locals[name] = self.resolve(_Word("", self.locals[name], 0))
        for word in cmd.words:
            self.expand(word)
        for redirect in cmd.redirects:
            self.expand(redirect.target)
        if cmd.background:
            self.find("background-job", Severity.MEDIUM, cmd.pos, "starts a background job that can outlive the script")
        argv = cmd.words
        stdin_doc = next((r.target for r in cmd.redirects if isinstance(r.target, _Heredoc)), None)
        if argv:
            self.command(argv, cmd, stdin_doc)
        self.redirections(cmd, argv)

    def redirections(self, cmd: _Simple, argv: list[_Word]) -> None:
        content = self.content_of(argv, cmd)
        for redirect in cmd.redirects:
            target = redirect.target
            if isinstance(target, _Heredoc):
                continue
            value = self.resolve(target)
            if redirect.op in (">&", "<&") and (value.isdigit() or value == "-"):
                continue  # fd duplication, not a file
            if redirect.op == "<<<":
                continue  # a here-string is data
            if redirect.op == "<":
                self.uses(target, "read")
            else:
                self.uses(target, "write")
                if content is not None and not value.startswith("/dev/"):
                    if redirect.op == ">>" and value in self.contents:
                        self.contents[value] = _FileContent(self.contents[value].body + content.body, self.contents[value].pos)
                    else:
                        self.contents[value] = content
            if redirect.op == "<>":
                self.uses(target, "read")

    def content_of(self, argv: list[_Word], cmd: _Simple) -> _FileContent | None:
        """What `cat <<EOF`, `echo` or `printf` print, when it is known text."""
        if not argv:
            return None
        program = self.resolve(argv[0])
        doc = next((r.target for r in cmd.redirects if isinstance(r.target, _Heredoc)), None)
        if program in ("cat", "tee") and doc is not None:
            return _FileContent(doc.body, doc.body_pos)
        args = [self.resolve(w) for w in argv[1:]]
        if program == "echo":
            while args and args[0] in ("-n", "-e", "-E"):
                args.pop(0)
            return _FileContent(" ".join(args).replace("\\n", "\n") + "\n", argv[0].pos)
        if program == "printf" and args:
            fmt, rest = args[0].replace("\\n", "\n"), args[1:]
            if "%s" in fmt and rest:
                per = fmt.count("%s")
                chunks = [rest[i : i + per] for i in range(0, len(rest), per)]
                out = "".join(fmt.replace("%s", "{}").format(*(c + [""] * (per - len(c)))) for c in chunks)
            else:
                out = fmt
            return _FileContent(out, argv[0].pos)
        return None

    # -- paths --------------------------------------------------------------------------------

    def uses(self, word: _Word, access: str) -> str:
        """Record a file the script reads, writes or deletes, and check where it is."""
        value = self.resolve(word)
        self.path(value, word.pos, access, word=word)
        return value

    def path(self, value: str, pos: int, access: str, *, word: _Word | None = None) -> None:
        record = {"read": self.reads, "write": self.writes, "delete": self.deletes}.get(access)
        if record is not None and value not in _ALLOWED_DEVICES:
            self._add(record, value)
        if access == "write":
            self.written.add(value)
            self.check_pki_overwrite(value, pos)
        verb = {"read": "reads", "write": "writes", "delete": "deletes"}.get(access, "uses")
        if value.startswith(("/dev/tcp/", "/dev/udp/")):
            self.find("network-access", Severity.HIGH, pos, f"{verb} {value}: a network connection")
            return
        if re.match(r"/proc/[^/]+/environ", value):
            self.find("reads-environment", Severity.HIGH, pos, f"{verb} {value}: a process's environment")
            return
        if value.startswith("~") or re.match(r"\$\{?(HOME|XDG_[A-Z_]+)\b", value):
            self.find("outside-workdir", Severity.HIGH, pos, f"{verb} {value}: the user's home, outside the work dir")
            return
        if value.startswith("/"):
            if value in _ALLOWED_DEVICES or re.fullmatch(r"/dev/fd/[0-2]", value):
                return
            if value in _RANDOM_DEVICES and access == "read":
                self.find("absolute-path", Severity.LOW, pos, f"reads {value}")
                return
            self.find("absolute-path", Severity.HIGH, pos, f"{verb} {value}, outside the work dir")
            return
        if ".." in re.split(r"/+", value):
            self.find("outside-workdir", Severity.HIGH, pos, f"{verb} {value}: '..' leaves the work dir")
            return
        m = re.match(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", value)
        if m and m.group(1) not in self.locals and m.group(1) not in _HSM_VARS:
            self.find("outside-workdir", Severity.MEDIUM, pos, f"{verb} {value}: a path from the environment may point anywhere")
        if word is not None and word.subs and access in ("write", "delete"):
            self.find("outside-workdir", Severity.MEDIUM, pos, f"{verb} a path computed at run time: {value}")

    def check_pki_overwrite(self, value: str, pos: int) -> None:
        expected = _EXPECTED_OUTPUTS.get(self.name, set())
        inputs = {"$1"} if self.name in ("sign_tls_csr", "sign_ca_csr") else set()
        base = value[2:] if value.startswith("./") else value
        if (base in _PKI_FILES or base in inputs) and base not in expected:
            self.find("overwrites-pki-file", Severity.HIGH, pos, f"writes {value}, a PKI file {self.name} is not meant to make")

    def delete(self, word: _Word, recursive: bool) -> None:
        value = self.resolve(word)
        self._add(self.deletes, value)
        self.path(value, word.pos, "check", word=word)
        base = value[2:] if value.startswith("./") else value
        if word.glob:
            self.find("deletes-foreign-file", Severity.HIGH, word.pos, f"deletes {value}: a glob matches files the script did not create")
        elif base in self.written or value in self.written or base in self.created_dirs:
            return
        elif self.in_function and not self.deferring_done:
            # A function may run after the files it cleans up exist: decide at the end.
            self.deferred_deletes.append((word, recursive))
            return
        elif not word.literal and value not in self.written:
            self.find("deletes-foreign-file", Severity.HIGH, word.pos, f"deletes {value}, a path computed at run time that the script did not create")
        else:
            what = "a directory tree" if recursive else "a file"
            self.find("deletes-foreign-file", Severity.HIGH, word.pos, f"deletes {value}, {what} the script did not create")

    # -- one command --------------------------------------------------------------------------

    def command(self, argv: list[_Word], cmd: _Simple, stdin_doc: _Heredoc | None) -> None:
        head = argv[0]
        program = self.resolve(head)
        values = [program] + [self.resolve(w) for w in argv[1:]]
        self.commands.append(Command(line=self.line_of(head.pos), argv=[w.value for w in argv]))
        if not head.literal and ("$" in program or "`" in program):
            self.find("eval-data", Severity.HIGH, head.pos, f"runs a command whose name is computed at run time ({head.value})")
            return
        base = program.rsplit("/", 1)[-1]
        if "/" in program:
            if program.startswith("/"):
                self.find("absolute-path", Severity.LOW, head.pos, f"runs {program} by absolute path")
            elif program in self.written or program.lstrip("./") in self.written:
                self.find("eval-data", Severity.HIGH, head.pos, f"runs {program}, a file the script wrote itself")
                return
            else:
                self.path(program, head.pos, "run")
        if base not in ("set", "trap", ":", "true", "false", "echo", "printf", "[", "test", "exit", "shift", "local", "export", "readonly", "unset", "if") and self.first_effect_pos is None:
            self.first_effect_pos = head.pos
        if base in self.functions:
            return
        handler_name = {":": "colon", ".": "dot", "[": "test", "[[": "test"}.get(base, base.replace("-", "_"))
        handler = getattr(self, "cmd_" + handler_name, None) if handler_name.replace("_", "").isalnum() else None
        if handler is not None:
            handler(argv, values, cmd)
        elif base in _NETWORK:
            self.find("network-access", Severity.HIGH, head.pos, f"{base} reaches the network")
            self.network_uploads(argv, values)
        elif base in _INTERPRETERS:
            self.find("runs-interpreter", Severity.HIGH, head.pos, f"runs {base}, whose code the audit cannot read")
        elif base in _SHELLS:
            self.shell(argv, values)
        elif base in _PRIVILEGE:
            self.find("privilege-change", Severity.HIGH, head.pos, f"{base} changes privileges or ownership")
            self.operand_paths(argv[1:], "check")
        elif base in _PERSISTENCE:
            self.find("persistence", Severity.HIGH, head.pos, f"{base} installs work that outlives the script")
        elif base in _WRAPPERS:
            pass  # the command inside is audited below
        elif base in _KNOWN:
            self.operand_paths(argv[1:], "read")
        else:
            self.find("unknown-command", Severity.MEDIUM, head.pos, f"runs {base}, a program the audit does not know")
            self.operand_paths(argv[1:], "check")
        if base in _WRAPPERS:
            self.wrapped(argv, values, cmd)

    def operand_paths(self, words: list[_Word], access: str, skip_values: set[str] | None = None) -> list[_Word]:
        """Operands that look like files: not options, not the values of options."""
        operands: list[_Word] = []
        skip_next = False
        for word in words:
            if skip_next:
                skip_next = False
                continue
            value = word.value
            if value == "--":
                continue
            if _is_option(value):
                skip_next = bool(skip_values and value in skip_values)
                continue
            operands.append(word)
        for word in operands:
            value = self.resolve(word)
            if access == "none":
                continue
            if access == "check":
                if "/" in value or value.startswith(("~", "$HOME", "${HOME")):
                    self.path(value, word.pos, "check")
            else:
                self.uses(word, access)
        return operands

    def network_uploads(self, argv: list[_Word], values: list[str]) -> None:
        """Files a network command sends: curl -d @f / -F x=@f / -T f, scp and rsync sources."""
        for i, value in enumerate(values[1:], start=1):
            sent = None
            if "@" in value and (value.startswith("@") or re.match(r"[^=]*=@", value)):
                sent = value.split("@", 1)[1].split(";", 1)[0]
            elif values[i - 1] in ("-T", "--upload-file", "--post-file", "--body-file"):
                sent = value
            elif value.startswith("--post-file=") or value.startswith("--body-file="):
                sent = value.split("=", 1)[1]
            if sent:
                self.path(sent, argv[i].pos, "read")
                if self.is_foreign_private_key(sent):
                    self.find("reads-private-key", Severity.HIGH, argv[i].pos, f"sends {sent} over the network")
        for word in argv[1:]:
            value = self.resolve(word)
            if not _is_option(value) and ("/" in value or value.startswith("~")) and "://" not in value and ":" not in value.split("/", 1)[0]:
                self.path(value, word.pos, "read")
                if self.is_foreign_private_key(value):
                    self.find("reads-private-key", Severity.HIGH, word.pos, f"sends {value} over the network")

    def wrapped(self, argv: list[_Word], values: list[str], cmd: _Simple) -> None:
        """`timeout 5 curl ...`, `env X=1 cmd`, `xargs rm`: audit the command inside."""
        base = values[0].rsplit("/", 1)[-1]
        rest = list(argv[1:])
        while rest:
            value = rest[0].value
            if _is_option(value):
                rest.pop(0)
                if base in ("sudo", "doas", "runuser", "su") and value in ("-u", "-g", "-c", "-l"):
                    if value == "-c" and rest:
                        self.shell([argv[0], _Word("-c", "-c", rest[0].pos), rest[0]], ["sh", "-c", rest[0].value])
                        return
                    if rest:
                        rest.pop(0)
                elif base == "nice" and value == "-n" and rest:
                    rest.pop(0)
                continue
            if base == "env" and "=" in value:
                rest.pop(0)
                continue
            if base == "timeout" and re.fullmatch(r"[0-9.]+[smhd]?", value):
                rest.pop(0)
                continue
            if base == "flock" and not rest[1:]:
                break
            if base == "flock":
                rest.pop(0)
                continue
            break
        if base == "env" and not rest:
            return
        if base in ("command", "type", "which") and any(v in ("-v", "-V") for v in values[1:]):
            return  # only asks whether a program exists
        if rest:
            if base == "xargs":
                inner = self.resolve(rest[0]).rsplit("/", 1)[-1]
                if inner in _SHELLS or inner in ("eval", "source", "."):
                    self.find("eval-data", Severity.HIGH, rest[0].pos, f"xargs {inner}: runs data as code")
                    return
                if inner in ("rm", "rmdir", "unlink", "shred", "mv"):
                    self.find("deletes-foreign-file", Severity.HIGH, rest[0].pos, f"xargs {inner}: deletes files named by data")
            self.command(rest, _Simple(pos=rest[0].pos), None)

    # -- handlers for commands with something to say -----------------------------------------

    def cmd_eval(self, argv: list[_Word], values: list[str], cmd: _Simple) -> None:
        self.find("eval-data", Severity.HIGH, argv[0].pos, "eval runs data as code")

    cmd_source = cmd_eval

    def cmd_dot(self, argv: list[_Word], values: list[str], cmd: _Simple) -> None:
        self.find("eval-data", Severity.HIGH, argv[0].pos, f"'. {' '.join(values[1:])}' runs another file as part of the script")
        self.operand_paths(argv[1:], "read")

    def shell(self, argv: list[_Word], values: list[str]) -> None:
        """sh -c 'literal' is audited as a script; sh reading stdin or data is eval."""
        base = values[0].rsplit("/", 1)[-1]
        if "-c" in values[1:]:
            index = values.index("-c", 1)
            if index + 1 < len(argv) and argv[index + 1].literal:
                code = argv[index + 1].value
                inner = _Auditor(self.name, code, {})
                inner.locals = dict(self.locals)
                inner.written = set(self.written)
                inner.created_dirs = set(self.created_dirs)
                inner.functions = set(self.functions)
                inner.run_fragment()
                line = self.line_of(argv[0].pos)
                for f in inner.findings:
                    self.find(f.id, f.severity, argv[0].pos, f"in {base} -c: {f.message}")
                for c in inner.commands:
                    c.line = line
                    self.commands.append(c)
                return
            self.find("eval-data", Severity.HIGH, argv[0].pos, f"{base} -c runs code built at run time")
            return
        operands = [w for w in argv[1:] if not _is_option(w.value)]
        if not operands or values[1:2] == ["-s"]:
            self.find("eval-data", Severity.HIGH, argv[0].pos, f"{base} runs code it reads from its input (a pipe or here-document)")
            return
        script = self.resolve(operands[0])
        if script in self.written:
            self.find("eval-data", Severity.HIGH, argv[0].pos, f"{base} {script} runs a file the script wrote itself")
        else:
            self.find("eval-data", Severity.HIGH, argv[0].pos, f"{base} {script} runs another script the audit cannot see")
            self.path(script, operands[0].pos, "read")

    def run_fragment(self) -> None:
        try:
            tokens, _ = self.lexer.tokens()
        except _LexError as error:
            self.find("unparsable", Severity.HIGH, 0, f"cannot follow the code: {error}")
            return
        self.walk(_parse(tokens, self.structure))

    def cmd_set(self, argv: list[_Word], values: list[str], cmd: _Simple) -> None:
        args = values[1:]
        if not args:
            self.find("reads-environment", Severity.HIGH, argv[0].pos, "'set' without arguments prints every variable, secrets included")
            return
        for i, arg in enumerate(args):
            if arg == "--":
                break
            if re.fullmatch(r"-[a-zA-Z]*e[a-zA-Z]*", arg) or (arg == "-o" and args[i + 1 : i + 2] == ["errexit"]):
                if self.errexit_pos is None:
                    self.errexit_pos = argv[0].pos
            if re.fullmatch(r"\+[a-zA-Z]*e[a-zA-Z]*", arg) or (arg == "+o" and args[i + 1 : i + 2] == ["errexit"]):
                self.find("missing-errexit", Severity.MEDIUM, argv[0].pos, "'set +e' turns errexit off: a failing step no longer stops the script")

    def cmd_export(self, argv: list[_Word], values: list[str], cmd: _Simple) -> None:
        args = [v for v in values[1:] if not _is_option(v)]
        if not args or values[1:] == ["-p"]:
            self.find("reads-environment", Severity.HIGH, argv[0].pos, f"'{values[0]}' without names prints every variable, secrets included")
            return
        for word in argv[1:]:
            if _is_option(word.value):
                continue
            name, _, value = word.value.partition("=")
            if _NAME_RE.fullmatch(name):
                if "=" in word.value:
                    self.sets_env(name, value, word.pos)
                    self.locals[name] = self.resolve(_Word("", value, 0))
                elif values[0] != "export":
                    self.locals[name] = "$" + name  # `local x`: a variable of the script

    cmd_local = cmd_readonly = cmd_declare = cmd_typeset = cmd_export

    def cmd_read(self, argv: list[_Word], values: list[str], cmd: _Simple) -> None:
        skip = False
        for value in values[1:]:
            if skip:
                skip = False
            elif _is_option(value):
                skip = value in ("-p", "-d", "-n", "-t", "-u", "-a")
            elif _NAME_RE.fullmatch(value):
                self.locals[value] = "$" + value

    def cmd_getopts(self, argv: list[_Word], values: list[str], cmd: _Simple) -> None:
        if len(values) > 2:
            self.locals[values[2]] = "$" + values[2]
        self.locals["OPTARG"] = "$OPTARG"

    def cmd_env(self, argv: list[_Word], values: list[str], cmd: _Simple) -> None:
        rest = [v for v in values[1:] if not _is_option(v) and "=" not in v]
        if not rest:
            self.find("reads-environment", Severity.HIGH, argv[0].pos, "'env' without a command prints the whole environment, secrets included")

    def cmd_printenv(self, argv: list[_Word], values: list[str], cmd: _Simple) -> None:
        for name in values[1:]:
            if not _is_option(name):
                self.read_param(name, argv[0].pos)
        if len(values) == 1:
            self.find("reads-environment", Severity.HIGH, argv[0].pos, "'printenv' prints the whole environment, secrets included")

    def cmd_compgen(self, argv: list[_Word], values: list[str], cmd: _Simple) -> None:
        self.find("reads-environment", Severity.HIGH, argv[0].pos, "compgen lists the variables of the environment")

    def cmd_trap(self, argv: list[_Word], values: list[str], cmd: _Simple) -> None:
        if len(argv) >= 3 and values[1] != "-":
            action = argv[1]
            if action.literal:
                # Runs when the script exits: audited after the walk, knowing every file it wrote.
                self.traps.append([argv[0], _Word("-c", "-c", action.pos), action])
            else:
                self.find("eval-data", Severity.HIGH, action.pos, "trap runs code built at run time")

    def cmd_cd(self, argv: list[_Word], values: list[str], cmd: _Simple) -> None:
        operands = [w for w in argv[1:] if not _is_option(w.value)]
        if not operands:
            self.find("outside-workdir", Severity.HIGH, argv[0].pos, "'cd' without a directory goes to the user's home")
        elif values[-1] == "-":
            self.find("outside-workdir", Severity.MEDIUM, argv[0].pos, "'cd -' goes back to a directory outside the script's view")
        else:
            self.path(self.resolve(operands[0]), operands[0].pos, "check")
            if not operands[0].literal:
                self.find("outside-workdir", Severity.MEDIUM, operands[0].pos, f"cd {values[-1]}: a directory computed at run time")

    def cmd_test(self, argv: list[_Word], values: list[str], cmd: _Simple) -> None:
        file_tests = {"-e", "-f", "-d", "-r", "-w", "-x", "-s", "-L", "-h", "-b", "-c", "-p", "-S", "-g", "-u", "-k", "-O", "-G", "-N"}
        for i, value in enumerate(values[1:-1], start=1):
            if value in file_tests:
                self.path(self.resolve(argv[i + 1]), argv[i + 1].pos, "check")

    def cmd_rm(self, argv: list[_Word], values: list[str], cmd: _Simple) -> None:
        recursive = any(re.fullmatch(r"-[a-zA-Z]*[rR][a-zA-Z]*|--recursive", v) for v in values[1:])
        for word in argv[1:]:
            if not _is_option(word.value) and word.value != "--":
                self.delete(word, recursive)

    cmd_rmdir = cmd_unlink = cmd_shred = cmd_rm

    def cmd_mkdir(self, argv: list[_Word], values: list[str], cmd: _Simple) -> None:
        for word in self.operand_paths(argv[1:], "write", _VALUE_OPTS["mkdir"]):
            self.created_dirs.add(self.resolve(word))

    def cmd_touch(self, argv: list[_Word], values: list[str], cmd: _Simple) -> None:
        self.operand_paths(argv[1:], "write")

    def cmd_tee(self, argv: list[_Word], values: list[str], cmd: _Simple) -> None:
        content = self.content_of(argv, cmd)
        for word in self.operand_paths(argv[1:], "write"):
            if content is not None:
                self.contents[self.resolve(word)] = content

    def cmd_cp(self, argv: list[_Word], values: list[str], cmd: _Simple) -> None:
        base = values[0].rsplit("/", 1)[-1]
        operands = self.operand_paths(argv[1:], "none", _VALUE_OPTS.get(base))
        target_opt = next((i for i, v in enumerate(values) if v in ("-t", "--target-directory")), None)
        if target_opt is not None and target_opt + 1 < len(argv):
            sources, dest = operands, argv[target_opt + 1]
            sources = [w for w in sources if w is not dest]
        else:
            sources, dest = operands[:-1], operands[-1] if operands else None
        for word in sources:
            if base == "mv":
                self.delete(word, recursive=True)
            self.uses(word, "read")
            if base == "mv" and self.resolve(word) in self.contents and dest is not None:
                self.contents[self.resolve(dest)] = self.contents[self.resolve(word)]
        if dest is not None:
            self.uses(dest, "write")

    cmd_mv = cmd_ln = cmd_install = cmd_cp

    def cmd_chmod(self, argv: list[_Word], values: list[str], cmd: _Simple) -> None:
        operands = [w for w in argv[1:] if not _is_option(w.value) or re.fullmatch(r"-[rwxXst]+", w.value)]
        if not operands:
            return
        mode = self.resolve(operands[0])
        loose = re.fullmatch(r"0*[0-7]*[2367]|[0-7]*[4-7][0-7]{3}", mode) or re.search(r"[ao]?[+=][rwxX]*[ws]|[ug]\+[rwx]*s", mode) or mode.startswith("+")
        world_or_setid = bool(loose) and (re.fullmatch(r"\d+", mode) is None or mode[-1] in "2367" or (len(mode) >= 4 and mode[-4] in "4567"))
        if world_or_setid:
            self.find("privilege-change", Severity.HIGH, argv[0].pos, f"chmod {mode}: makes files world-writable or set-id")
        else:
            self.find("privilege-change", Severity.LOW, argv[0].pos, f"chmod {mode}: changes permissions")
        for word in operands[1:]:
            self.path(self.resolve(word), word.pos, "check")

    def cmd_umask(self, argv: list[_Word], values: list[str], cmd: _Simple) -> None:
        if len(values) > 1:
            self.find("privilege-change", Severity.LOW, argv[0].pos, f"umask {values[1]}: changes the mode of files it creates")

    def cmd_kill(self, argv: list[_Word], values: list[str], cmd: _Simple) -> None:
        self.find("process-control", Severity.MEDIUM, argv[0].pos, f"{values[0]} signals other processes")

    cmd_pkill = cmd_killall = cmd_kill

    def cmd_nohup(self, argv: list[_Word], values: list[str], cmd: _Simple) -> None:
        self.find("background-job", Severity.MEDIUM, argv[0].pos, f"{values[0]} detaches work from the script")

    cmd_setsid = cmd_nohup

    def cmd_mktemp(self, argv: list[_Word], values: list[str], cmd: _Simple) -> None:
        operands = self.operand_paths(argv[1:], "none", _VALUE_OPTS["mktemp"])
        tmpdir = next((values[i + 1] for i, v in enumerate(values[:-1]) if v in ("-p", "--tmpdir")), None)
        if "-t" in values or not operands or (tmpdir is not None and tmpdir.startswith("/")):
            self.find("outside-workdir", Severity.MEDIUM, argv[0].pos, "mktemp creates its file in the system temp dir, outside the work dir")

    def text_tool(self, argv: list[_Word], values: list[str], cmd: _Simple, program_operands: int) -> None:
        base = values[0].rsplit("/", 1)[-1]
        opts = _VALUE_OPTS.get(base, set())
        has_program_opt = any(v in ("-e", "-f", "--regexp", "--expression", "--file") for v in values[1:])
        for i, value in enumerate(values[1:-1], start=1):
            if value in ("-f", "--file"):
                self.uses(argv[i + 1], "read")
        operands = self.operand_paths(argv[1:], "none", opts)
        if not has_program_opt:
            operands = operands[program_operands:]
        in_place = base == "sed" and any(v.startswith("-i") or v == "--in-place" for v in values[1:])
        self.private_key_reads(operands, base)
        for word in operands:
            self.uses(word, "read")
            if in_place:
                self.uses(word, "write")
        if base == "sort" and "-o" in values[1:-1]:
            self.uses(argv[values.index("-o") + 1], "write")

    def cmd_grep(self, argv: list[_Word], values: list[str], cmd: _Simple) -> None:
        self.text_tool(argv, values, cmd, 1)

    cmd_egrep = cmd_fgrep = cmd_sed = cmd_grep

    def cmd_awk(self, argv: list[_Word], values: list[str], cmd: _Simple) -> None:
        program = next((v for v in values[1:] if not _is_option(v)), "")
        if re.search(r"\bsystem\s*\(|\|\s*getline|getline\s*<|\|&|print[^;}]*[|>]", program):
            self.find("eval-data", Severity.HIGH, argv[0].pos, "awk program runs commands or writes files")
        self.text_tool(argv, values, cmd, 1)

    def cmd_tr(self, argv: list[_Word], values: list[str], cmd: _Simple) -> None:
        return  # tr's operands are character sets

    def cmd_echo(self, argv: list[_Word], values: list[str], cmd: _Simple) -> None:
        return  # data, not files

    cmd_printf = cmd_exit = cmd_return = cmd_true = cmd_false = cmd_shift = cmd_sleep = cmd_echo
    cmd_basename = cmd_dirname = cmd_expr = cmd_seq = cmd_date = cmd_uuidgen = cmd_yes = cmd_echo
    cmd_break = cmd_continue = cmd_wait = cmd_unset = cmd_type = cmd_which = cmd_logger = cmd_let = cmd_echo

    def cmd_colon(self, argv: list[_Word], values: list[str], cmd: _Simple) -> None:
        return

    def cmd_head(self, argv: list[_Word], values: list[str], cmd: _Simple) -> None:
        base = values[0].rsplit("/", 1)[-1]
        operands = self.operand_paths(argv[1:], "read", _VALUE_OPTS.get(base))
        self.private_key_reads(operands, base)

    cmd_tail = cmd_cut = cmd_sort = cmd_xxd = cmd_od = cmd_diff = cmd_head

    def cmd_base64(self, argv: list[_Word], values: list[str], cmd: _Simple) -> None:
        if any(v in ("-d", "--decode", "-D") for v in values[1:]):
            self.find("decodes-data", Severity.MEDIUM, argv[0].pos, "base64 -d decodes data hidden in the script")
        self.operand_paths(argv[1:], "read", _VALUE_OPTS["base64"])
        self.private_key_reads(argv[1:], values[0])

    def cmd_xxd(self, argv: list[_Word], values: list[str], cmd: _Simple) -> None:
        if "-r" in values[1:]:
            self.find("decodes-data", Severity.MEDIUM, argv[0].pos, "xxd -r decodes data hidden in the script")
        self.operand_paths(argv[1:], "read", _VALUE_OPTS["xxd"])
        self.private_key_reads(argv[1:], values[0])

    def cmd_gunzip(self, argv: list[_Word], values: list[str], cmd: _Simple) -> None:
        self.find("decodes-data", Severity.MEDIUM, argv[0].pos, f"{values[0]} unpacks data hidden in the script")
        self.operand_paths(argv[1:], "read")

    cmd_zcat = cmd_uudecode = cmd_gunzip

    def cmd_gzip(self, argv: list[_Word], values: list[str], cmd: _Simple) -> None:
        if any(v in ("-d", "--decompress") for v in values[1:]):
            self.cmd_gunzip(argv, values, cmd)
        else:
            self.operand_paths(argv[1:], "read")

    cmd_bzip2 = cmd_xz = cmd_gzip

    def cmd_tar(self, argv: list[_Word], values: list[str], cmd: _Simple) -> None:
        if any(re.fullmatch(r"-?[a-zA-Z]*x[a-zA-Z]*|--extract", v) for v in values[1:2]) or "--extract" in values:
            self.find("decodes-data", Severity.MEDIUM, argv[0].pos, "tar extracts files the audit cannot see")
        self.operand_paths(argv[1:], "check")

    def cmd_cat(self, argv: list[_Word], values: list[str], cmd: _Simple) -> None:
        self.operand_paths(argv[1:], "read")
        self.private_key_reads(argv[1:], values[0])

    cmd_tac = cmd_nl = cmd_fold = cmd_rev = cmd_paste = cmd_cmp = cmd_cat
    cmd_md5sum = cmd_sha1sum = cmd_sha256sum = cmd_sha512sum = cmd_ls = cmd_stat = cmd_file = cmd_cat
    cmd_readlink = cmd_realpath = cmd_wc = cmd_uniq = cmd_cat

    def private_key_reads(self, words: list[_Word], program: str) -> None:
        for word in words:
            value = self.resolve(word)
            if self.is_foreign_private_key(value):
                self.find("reads-private-key", Severity.HIGH, word.pos, f"{program} reads {value}: the private key could reach the output or the network")

    def is_foreign_private_key(self, value: str) -> bool:
        base = value[2:] if value.startswith("./") else value
        if base in _PRIVATE_KEYS or (self.name == "create_device_ca" and base == "$1"):
            return True  # the root and local CA keys, even when this script just made them
        if base in self.written:
            return False
        return base in _PRIVATE_KEYS or base.endswith(".key") or "id_rsa" in base or "id_ed25519" in base

    def cmd_dd(self, argv: list[_Word], values: list[str], cmd: _Simple) -> None:
        for word in argv[1:]:
            value = self.resolve(word)
            if value.startswith("if="):
                self.path(value[3:], word.pos, "read")
                if self.is_foreign_private_key(value[3:]):
                    self.find("reads-private-key", Severity.HIGH, word.pos, f"dd reads {value[3:]}")
            elif value.startswith("of="):
                self.path(value[3:], word.pos, "write")

    def cmd_find(self, argv: list[_Word], values: list[str], cmd: _Simple) -> None:
        roots = []
        for word in argv[1:]:
            if _is_option(word.value) or word.value in ("!", "("):
                break
            roots.append(word)
        for word in roots:
            self.path(self.resolve(word), word.pos, "read")
        if "-delete" in values:
            for word in roots or [argv[0]]:
                self.find("deletes-foreign-file", Severity.HIGH, word.pos, f"find -delete removes files under {self.resolve(word) if roots else '.'} it did not create")
        for i, value in enumerate(values):
            if value in ("-exec", "-execdir", "-ok", "-okdir") and i + 1 < len(argv):
                inner = []
                for word in argv[i + 1 :]:
                    if word.value in (";", "+"):
                        break
                    inner.append(word)
                if inner:
                    name = self.resolve(inner[0]).rsplit("/", 1)[-1]
                    if name in ("rm", "rmdir", "unlink", "shred", "mv"):
                        self.find("deletes-foreign-file", Severity.HIGH, inner[0].pos, f"find -exec {name} deletes files it did not create")
                    else:
                        self.command(inner, _Simple(pos=inner[0].pos), None)

    # -- openssl and pkcs11-tool --------------------------------------------------------------

    def cmd_pkcs11_tool(self, argv: list[_Word], values: list[str], cmd: _Simple) -> None:
        head = argv[0]
        i = 1
        types = []
        while i < len(argv):
            value = values[i]
            option, _, inline = value.partition("=")
            nxt = inline or (values[i + 1] if i + 1 < len(values) else "")
            nxt_word = argv[i + 1] if not inline and i + 1 < len(argv) else argv[i]
            if option in ("--module", "--output-file", "-o", "--input-file", "-i", "--write-object", "-w", "--pin", "-p",
                          "--so-pin", "--new-pin", "--type", "-y", "--token-label", "--label", "-a", "--id", "-d",
                          "--key-type", "--slot", "--mechanism", "-m", "--object-index", "--signature-format", "--login-type"):  # fmt: skip
                if option == "--module":
                    if not (nxt_word.params and all(p.name == "HSM_MODULE" for p in nxt_word.params)):
                        self.path(self.resolve(nxt_word), nxt_word.pos, "read")
                elif option in ("--output-file", "-o"):
                    self.uses(nxt_word, "write")
                elif option in ("--input-file", "-i", "--write-object", "-w"):
                    self.uses(nxt_word, "read")
                elif option in ("--pin", "-p"):
                    self.read_env_reference(nxt, nxt_word.pos)
                elif option in ("--type", "-y"):
                    types.append(nxt)
                i += 1 if inline else 2
                continue
            if option in ("--read-object", "-r") and any(t in ("privkey", "secrkey") for t in values):
                self.find("reads-private-key", Severity.HIGH, argv[i].pos, "pkcs11-tool --read-object of a private key")
            if option in ("--delete-object", "-b"):
                self.find("deletes-foreign-file", Severity.HIGH, argv[i].pos, "pkcs11-tool --delete-object removes an object from the token")
            if option in ("--init-token", "--init-pin", "--change-pin", "--unlock-pin", "--so-pin"):
                self.find("privilege-change", Severity.HIGH, argv[i].pos, f"pkcs11-tool {option} changes the token's credentials")
            i += 1
        if any(v in ("--read-object", "-r") for v in values) and any(t in ("privkey", "secrkey") for t in types):
            self.find("reads-private-key", Severity.HIGH, head.pos, "pkcs11-tool --read-object of a private key")

    def cmd_openssl(self, argv: list[_Word], values: list[str], cmd: _Simple) -> None:
        command = self.commands[-1]
        head = argv[0]
        if len(argv) < 2:
            return
        sub = values[1]
        command.subcommand = sub
        opts: dict[str, list[tuple[str, _Word]]] = {}
        flags: list[str] = []
        positional: list[_Word] = []
        i = 2
        while i < len(argv):
            value = values[i]
            if _is_option(value):
                name = value[1:]
                takes_value = name in _OPENSSL_ARG_OPTS or name in _OPENSSL_SUB_ARG_OPTS.get(sub, set())
                if takes_value and i + 1 < len(argv):
                    opts.setdefault(name, []).append((values[i + 1], argv[i + 1]))
                    i += 2
                    continue
                flags.append(name)
            else:
                positional.append(argv[i])
            i += 1

        def opt(name: str) -> tuple[str, _Word] | None:
            return opts[name][-1] if name in opts else None

        uses_engine_key = {"keyform": opt("keyform"), "CAkeyform": opt("CAkeyform")}
        for name, entries in opts.items():
            for value, word in entries:
                if value.startswith("pkcs11:") or (name in ("key", "signkey") and uses_engine_key["keyform"] and uses_engine_key["keyform"][0] == "engine") or (
                    name == "CAkey" and uses_engine_key["CAkeyform"] and uses_engine_key["CAkeyform"][0] == "engine"
                ):
                    continue  # a key on the token, not a file
                if name in _OPENSSL_READ_OPTS:
                    self.uses(word, "read")
                elif name in _OPENSSL_WRITE_OPTS:
                    self.uses(word, "write")
                elif name in ("passin", "passout", "pass"):
                    self.read_env_reference(value, word.pos)
                elif name == "rand":
                    for part in value.split(":"):
                        self.path(part, word.pos, "read")
                elif name == "engine" and value != "pkcs11":
                    self.path(value, word.pos, "check")
                    self.find("eval-data", Severity.HIGH, word.pos, f"loads the openssl engine {value}: a shared library runs inside openssl")
        if "CAcreateserial" in flags and opt("CA"):
            ca = opt("CA")[0]
            stem = ca.rsplit(".", 1)[0] if "." in ca.rsplit("/", 1)[-1] else ca
            self.path(stem + ".srl", head.pos, "write")

        # Network
        if sub in _OPENSSL_NETWORK or opt("url") or opt("connect"):
            self.find("network-access", Severity.HIGH, head.pos, f"openssl {sub} talks to the network")
        # Decoding
        if sub in _OPENSSL_DECODERS and ("d" in flags or "base64" in flags and "d" in flags):
            self.find("decodes-data", Severity.MEDIUM, head.pos, f"openssl {sub} -d decodes data hidden in the script")
        # Key material leaving the signing options
        if sub in _OPENSSL_KEY_DUMPERS:
            for name in ("in", "inkey", "sign", "key"):
                entry = opt(name)
                if entry and self.is_foreign_private_key(entry[0]) and "pubout" not in flags:
                    self.find("reads-private-key", Severity.HIGH, entry[1].pos,
                              f"openssl {sub} -{name} {entry[0]}: reads the private key outside the signing options")  # fmt: skip

        # Key type, curve, size
        if sub == "ecparam" and opt("name"):
            command.key_type, command.curve = "ec", opt("name")[0]
        elif sub == "genrsa":
            command.key_type = "rsa"
            bits = next((self.resolve(w) for w in reversed(positional)), "2048")
            command.key_bits = int(bits) if bits.isdigit() else None
        elif sub == "genpkey" and opt("algorithm"):
            command.key_type = opt("algorithm")[0].lower()
        if opt("newkey"):
            spec = opt("newkey")[0]
            kind, _, detail = spec.partition(":")
            command.key_type = kind.lower()
            if kind.lower() == "rsa":
                command.key_bits = int(detail) if detail.isdigit() else 2048
        for value, _word in opts.get("pkeyopt", []):
            key, _, setting = value.partition(":")
            if key in ("ec_paramgen_curve", "group"):
                command.curve = setting
            elif key == "rsa_keygen_bits" and setting.isdigit():
                command.key_bits = int(setting)
        if command.key_type == "rsa" and command.key_bits is None and sub in ("genpkey", "req"):
            command.key_bits = 2048
        self.check_key(command, head.pos)

        # Validity
        days_entry = opt("days")
        if days_entry:
            self.check_days(days_entry[0], days_entry[1].pos, f"openssl {sub} -days", command)
        for name in ("enddate", "not_after", "startdate", "not_before"):
            if opt(name):
                self.find("unresolved-value", Severity.MEDIUM, opt(name)[1].pos, f"-{name} sets validity by date; the audit cannot compare it with the profile")

        # Digest
        digest = next((f for f in flags if f in _DIGESTS), None)
        for name in ("md", "digest"):
            if opt(name):
                digest = opt(name)[0]
        if digest is not None:
            command.digest = digest
            self.check_digest(digest, head.pos)

        # Config and extensions
        config = self.config_for(opt("config"))
        extfile = self.config_for(opt("extfile"))
        extensions: list[str] | None = None
        section = opt("extensions")[0] if opt("extensions") else None
        if sub == "x509" and extfile is not None:
            section = section or extfile.get("", "extensions") or ""
            extensions = extfile.entries(section)
        elif sub == "req" and config is not None:
            if "x509" in flags:
                section = section or config.get("req", "x509_extensions")
            else:
                section = opt("reqexts")[0] if opt("reqexts") else config.get("req", "req_extensions")
            if section:
                extensions = config.entries(section)
            dn = config.get("req", "distinguished_name")
            if dn:
                command.subject = ", ".join(f"{k}={v}" for k, v, _ in config.sections.get(dn, []))
        elif sub == "ca" and (extfile or config) is not None:
            source = extfile or config
            section = section or (source.get("", "extensions") if extfile else None)
            if section:
                extensions = source.entries(section)
        for value, _word in opts.get("addext", []):
            extensions = (extensions or []) + [re.sub(r"\s*=\s*", " = ", value, count=1)]
        if extensions is not None:
            command.extensions = extensions
        if opt("subj"):
            command.subject = opt("subj")[0]

        # Signing with something other than the root
        ca_key = opt("CAkey")
        if ca_key and not ca_key[0].startswith("pkcs11:") and ca_key[0] in self.written:
            self.find("signs-with-own-key", Severity.HIGH, ca_key[1].pos, f"signs with {ca_key[0]}, a key the script made itself, not the factory root")
        ca_cert = opt("CA")
        if ca_cert and ca_cert[0] in self.written and self.name != "create_ca":
            self.find("signs-with-own-key", Severity.HIGH, ca_cert[1].pos, f"names {ca_cert[0]} as the issuer, a certificate the script made itself")
        if self.name in PROFILE_DAYS and self.name != "create_ca":
            if (sub == "req" and "x509" in flags) or (sub == "x509" and opt("signkey")) or "selfsign" in flags:
                self.find("signs-with-own-key", Severity.HIGH, head.pos, f"makes a self-signed certificate; {self.name} must sign with the factory root")

    def config_for(self, entry: tuple[str, _Word] | None) -> _Config | None:
        """The config file an openssl option names, if this script wrote it; checks its content."""
        if entry is None:
            return None
        name = entry[0]
        content = self.contents.get(name) or self.contents.get(name[2:] if name.startswith("./") else "./" + name)
        if content is None:
            return None
        config = _Config.parse(content.body)
        # A body line's position: line numbers of the here-document's own lines.
        body_line_start = self.line_of(content.pos)

        def pos_of(offset: int) -> int:
            line = body_line_start + offset
            return self.line_starts[min(line, len(self.line_starts)) - 1]

        for section, entries in config.sections.items():
            for key, value, offset in entries:
                pos = pos_of(offset)
                for m in re.finditer(r"\$\{?ENV::([A-Za-z_][A-Za-z0-9_]*)", value):
                    self.read_param(m.group(1), pos)
                if key in (".include", "include") or key.startswith(".include ") or key.startswith("include "):
                    target = value or key.split(None, 1)[-1]
                    self.path(target, pos, "read")
                if value.startswith("/") or value.startswith("~"):
                    self.path(value, pos, "read")
                if key in ("dynamic_path", "MODULE_PATH", "engines", "providers", "openssl_conf"):
                    self.find("eval-data", Severity.HIGH, pos, f"the openssl config sets {key}: it can load code into openssl")
                if key == "default_md":
                    self.check_digest(value, pos)
                if key == "default_days":
                    self.check_days(value, pos, "default_days", None)
                if key == "default_bits" and value.isdigit() and int(value) < 2048:
                    self.find("weak-crypto", Severity.HIGH, pos, f"default_bits = {value}: RSA below 2048 bits")
        return config

    def check_key(self, command: Command, pos: int) -> None:
        if command.key_type == "rsa":
            if command.key_bits is not None and command.key_bits < 2048:
                self.find("weak-crypto", Severity.HIGH, pos, f"RSA key of {command.key_bits} bits; 2048 is the least, the profile is EC P-256")
            else:
                self.find("differs-from-profile", Severity.LOW, pos, "RSA key; the profile is EC P-256")
        elif command.key_type in ("dsa", "dh"):
            self.find("weak-crypto", Severity.HIGH, pos, f"{command.key_type.upper()} key; the profile is EC P-256")
        if command.curve is not None:
            bits = re.search(r"(\d{3})", command.curve)
            if bits and int(bits.group(1)) < 224:
                self.find("weak-crypto", Severity.HIGH, pos, f"curve {command.curve} is weaker than 224 bits; the profile is P-256")
            elif command.curve.lower() not in _PROFILE_CURVES:
                self.find("differs-from-profile", Severity.LOW, pos, f"curve {command.curve}; the profile is P-256 (prime256v1)")

    def check_digest(self, digest: str, pos: int) -> None:
        name = digest.lower().lstrip("-")
        if "$" in name:
            self.find("unresolved-value", Severity.MEDIUM, pos, f"digest {digest} is chosen at run time")
        elif name in _WEAK_DIGESTS:
            self.find("weak-crypto", Severity.HIGH, pos, f"digest {name}: broken for signatures; the profile is SHA-256")
        elif name != "sha256" and name != "default":
            self.find("differs-from-profile", Severity.LOW, pos, f"digest {name}; the profile is SHA-256")

    def check_days(self, value: str, pos: int, what: str, command: Command | None) -> None:
        if value.isdigit():
            days = int(value)
            if command is not None:
                command.days = days
            if self.max_days is not None and days > self.max_days:
                self.find("validity-exceeds-profile", Severity.HIGH, pos, f"{what} {days}: beyond the {self.max_days} days of the {self.name} profile")
        else:
            self.find("unresolved-value", Severity.MEDIUM, pos, f"{what} {value}: validity computed at run time, cannot compare with the profile")

    # -- whole-script checks ------------------------------------------------------------------

    def check_characters(self) -> None:
        for m in _BIDI_OR_INVISIBLE.finditer(self.text):
            self.find("hidden-characters", Severity.HIGH, m.start(), f"invisible or bidi control character U+{ord(m.group()):04X}: the text may not read as it runs")
        for m in _CONTROL.finditer(self.text):
            severity = Severity.HIGH if m.group() == "\x00" else Severity.MEDIUM
            self.find("hidden-characters", severity, m.start(), f"control character U+{ord(m.group()):04X}")
        if "\r" in self.text:
            self.find("unparsable", Severity.MEDIUM, self.text.index("\r"), "carriage returns (CRLF line ends): sh reads them as part of the words")

    def check_shebang(self) -> None:
        first = self.lines[0] if self.lines else ""
        m = re.match(r"#!\s*(\S+)(?:\s+(.*))?", first)
        if not m:
            return
        interpreter, args = m.group(1), (m.group(2) or "").split()
        if interpreter.endswith("/env") and args:
            interpreter, args = args[0], args[1:]
        if interpreter.rsplit("/", 1)[-1] not in ("sh", "bash", "dash", "ash", "ksh"):
            self.find("not-a-shell-script", Severity.HIGH, 0, f"the first line runs it with {interpreter}; only sh scripts are audited")
        elif any(re.fullmatch(r"-[a-zA-Z]*e[a-zA-Z]*", a) for a in args):
            self.errexit_pos = 0

    def check_errexit(self) -> None:
        if self.errexit_pos is not None and (self.first_effect_pos is None or self.errexit_pos <= self.first_effect_pos):
            return
        where = 0 if self.errexit_pos is None else self.errexit_pos
        if self.errexit_pos is None:
            message = "no '#!/bin/sh -e' and no 'set -e': a failing step does not stop the script"
        else:
            message = "'set -e' comes after the first command: the steps before it may fail silently"
        self.find("missing-errexit", Severity.MEDIUM, where, message)


# ---------------------------------------------------------------------------------------------
# Public entry points


def _diff(name: str, reference: str, text: str) -> str:
    def lines(s: str) -> list[str]:
        out = s.splitlines(keepends=True)
        if out and not out[-1].endswith("\n"):
            out[-1] += "\n\\ No newline at end of file\n"
        return out

    return "".join(difflib.unified_diff(lines(reference), lines(text), fromfile=f"reference/{name}", tofile=f"server/{name}"))


def audit_script(name: str, text: str, reference: str | None, *, profile_days: dict[str, int] | None = None) -> ScriptAudit:
    """Audit one script's text; `reference` is the bundled script rendered for this factory."""
    data = text.encode("utf-8", "surrogatepass")
    matches = reference is not None and data == reference.encode("utf-8", "surrogatepass")
    auditor = _Auditor(name, text, PROFILE_DAYS if profile_days is None else profile_days)
    try:
        auditor.run()
    except RecursionError:
        auditor.find("unparsable", Severity.HIGH, 0, "nested too deeply to follow; not audited")
    except Exception as error:  # noqa: BLE001 - an audit that breaks must fail closed, not crash create
        auditor.find("unparsable", Severity.HIGH, 0, f"the audit could not follow this script ({type(error).__name__}); not audited")
    findings = sorted(auditor.findings, key=lambda f: (f.line, -f.severity, f.id))
    return ScriptAudit(
        name=name,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        matches_reference=matches,
        diff="" if reference is None or matches else _diff(name, reference, text),
        commands=auditor.commands,
        reads=list(auditor.reads),
        writes=list(auditor.writes),
        deletes=list(auditor.deletes),
        findings=findings,
    )


def script_texts(answer: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """The script entries of a POST answer, in the order create runs them."""
    for name in ("create_ca", "sign_tls_csr", "sign_ca_csr", "create_device_ca"):
        if name in answer and answer[name] is not None:
            yield name, answer[name]


def audit_answer(answer: dict[str, Any], references: dict[str, str]) -> AuditReport:
    """Audit every script in a POST answer (factory_certs.json) against the references."""
    report = AuditReport()
    for name, text in script_texts(answer):
        if not isinstance(text, str):
            report.scripts.append(
                ScriptAudit(
                    name=name, size=0, sha256="", matches_reference=False, diff="",
                    findings=[Finding("unparsable", Severity.HIGH, 0, "", f"{name} is a JSON {type(text).__name__}, not the text of a script")],
                )  # fmt: skip
            )
            continue
        report.scripts.append(audit_script(name, text, references.get(name)))
    return report


def severity_names() -> Iterable[str]:
    return [s.label for s in Severity]
