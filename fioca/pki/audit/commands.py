"""The table of command handlers: every program the audit knows, by name, and what it does.

`dispatch` looks the program up in `HANDLERS` (an explicit dict, nothing found by name);
programs of a kind (network tools, interpreters, privilege tools ...) share one handler, and a
program nobody knows is MEDIUM with its path-like operands checked.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from fioca.pki.audit import builtins, fileops, knowledge, openssl, paths, texttools
from fioca.pki.audit.builtins import sets_env
from fioca.pki.audit.report import Severity
from fioca.pki.audit.state import Field, Invocation, Output, Value

Handler = Callable[[Invocation], "Output | None"]

__all__ = ["HANDLERS", "dispatch", "sets_env"]


def network(inv: Invocation) -> Output:
    inv.find("network-access", Severity.HIGH, f"{inv.name} reaches the network")
    for i, f in enumerate(inv.args):
        sent = None
        text = f.text
        previous = inv.args[i - 1].text if i else ""
        if text.startswith("@") or re.match(r"[^=]*=@", text):
            sent = text.split("@", 1)[1].split(";", 1)[0]
        elif previous in ("-T", "--upload-file", "--post-file", "--body-file"):
            sent = text.lstrip("@")
        elif "/" in text and "://" not in text and not text.startswith("-") and ":" not in text.split("/", 1)[0]:
            sent = text
        if sent:
            paths.read(inv.state, Field(Value.of(sent), False, True, inv.line), inv.line, f"{inv.name} (sent over the network)")
    if inv.stdin is not None and inv.stdin.key:
        inv.find("reads-private-key", Severity.HIGH, f"{inv.name} sends the private key {inv.stdin.key} over the network")
    return Output()


def _rated(finding_id: str, severity: Severity, message: str) -> Handler:
    """A kind of program whose running is the finding: `message` names it with {name}."""

    def handler(inv: Invocation) -> Output:
        inv.find(finding_id, severity, message.format(name=inv.name))
        return Output()

    return handler


interpreter = _rated("runs-interpreter", Severity.HIGH, "runs {name}, whose code the audit cannot read")
persistence = _rated("persistence", Severity.HIGH, "{name} installs work that runs later, outside the script")
process_control = _rated("process-control", Severity.MEDIUM, "{name} signals other processes")


def unknown(inv: Invocation) -> Output:
    inv.find("unknown-command", Severity.MEDIUM, f"runs {inv.name}, a program the audit does not know")
    fileops.unknown_files(inv)
    return Output()


def _each(names: set[str] | frozenset[str] | tuple[str, ...], handler: Handler) -> dict[str, Handler]:
    return {name: handler for name in names}


HANDLERS: dict[str, Handler] = {
    **_each(knowledge.NETWORK, network),
    **_each(knowledge.INTERPRETERS, interpreter),
    **_each(knowledge.PERSISTENCE, persistence),
    **_each(knowledge.PRIVILEGE, builtins.privileged),
    **_each(knowledge.PROCESS_CONTROL, process_control),
    **_each(knowledge.DETACHING, builtins.detach),
    **_each(knowledge.CLOCK_FAKERS, builtins.fake_clock),
    **_each(knowledge.READERS, fileops.reader),
    **_each(knowledge.DECODERS, texttools.decoder),
    **_each(("head", "tail", "cut", "sort", "uniq", "wc", "grep", "egrep", "fgrep", "od", "hexdump", "paste", "fold",
             "rev", "tac", "nl", "strings", "comm", "join"), texttools.filter_tool),
    **_each(("nice", "time", "timeout", "stdbuf", "ionice", "chrt", "flock", "exec", "builtin"), builtins.wrapper),
    **_each(("true", "false", ":", "shift", "sleep", "break", "continue", "wait", "logger", "let", "tput", "times",
             "hash"), builtins.noop),
    **_each(("date", "uuidgen", "seq", "expr", "yes", "id", "whoami", "uname", "hostname"), builtins.computed),
    **_each(("type", "which"), builtins.lookup_only),
    **_each(knowledge.SHELLS, builtins.shell),
    **_each(knowledge.DELETERS, fileops.remove),
    **_each(("cp", "mv", "install"), fileops.copy),
    **_each(("awk", "gawk", "mawk", "nawk"), texttools.awk),
    **_each(("export", "local", "readonly", "declare", "typeset"), builtins.export),
    **_each(("exit", "return"), builtins.exit_),
    **_each((".", "source"), builtins.source),
    **_each(("[", "test"), builtins.test),
    **_each(("touch", "truncate"), fileops.touch),
    "echo": builtins.echo, "printf": builtins.printf, "dirname": builtins.dirname, "basename": builtins.basename,
    "pwd": builtins.pwd, "set": builtins.set_, "unset": builtins.unset, "read": builtins.read,
    "getopts": builtins.getopts, "env": builtins.env, "printenv": builtins.printenv, "cd": builtins.cd,
    "trap": builtins.trap, "alias": builtins.alias, "unalias": builtins.unalias, "eval": builtins.eval_,
    "command": builtins.command, "xargs": builtins.xargs, "sudo": builtins.privileged, "doas": builtins.privileged,
    "su": builtins.privileged, "runuser": builtins.privileged, "cat": texttools.cat, "sed": texttools.sed,
    "tr": texttools.tr, "mkdir": fileops.make_dir, "ln": fileops.link, "chmod": fileops.chmod,
    "link": fileops.link, "umask": fileops.umask, "dd": fileops.dd, "tee": fileops.tee, "mktemp": fileops.make_temp, "find": fileops.find,
    "tar": fileops.tar, "openssl": openssl.openssl, "pkcs11-tool": openssl.pkcs11_tool,
    "softhsm2-util": openssl.softhsm2_util, "p11tool": builtins.noop,
}  # fmt: skip


def dispatch(inv: Invocation) -> Output | None:
    return HANDLERS.get(inv.name, unknown)(inv)
