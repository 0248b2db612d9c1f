"""Where a path points and what a file holds: the checks every reader and writer shares.

A path is fine when it stays in the work dir by a name the audit can read (or an argument
fioca passes). Anything else is rated for the worst it could reach: the network (`/dev/tcp`),
other processes (`/proc`), credentials (the fioctl config and its token), the user's home,
or, when it is built at run time, anywhere.

Files carry what the audit knows of them (`state.FileInfo`): their content when the script
wrote known text, and whether they hold a private key. A key stays a key through copies and
renames, so reading a copy is reading the key.
"""

from __future__ import annotations

import fnmatch
import re

from fioca import facts
from fioca.pki.audit import knowledge
from fioca.pki.audit.report import Severity
from fioca.pki.audit.state import (
    COMPUTED,
    ENV,
    HOME,
    TMP,
    Field,
    FileInfo,
    State,
    Value,
    norm,
)

_VERBS = {"read": "reads", "write": "writes", "delete": "deletes", "run": "runs", "check": "uses"}


def check(state: State, field: Field, access: str, line: int) -> str | None:
    """Check and record one path; its name in the work dir when it is one the audit can follow."""
    value = field.value
    text = value.text
    verb = _VERBS[access]
    if _outside(state, value, text, verb, access, line):
        return None
    if access in ("read", "write", "delete"):
        state.world.record(access, text)
    if field.glob:
        return None
    computed = COMPUTED in value.kinds()
    if computed:
        state.find("unresolved-path", Severity.HIGH, line, f"{verb} {text}: a path built at run time, which may point anywhere")
        return None
    if access in ("write", "delete") and ENV in value.kinds():
        state.find("outside-workdir", Severity.HIGH, line, f"{verb} {text}: a path under the user's settings, outside the work dir")
        return None
    name = norm(text)
    if access == "write":
        _check_pki_overwrite(state, name, line)
    return name


def _outside(state: State, value: Value, text: str, verb: str, access: str, line: int) -> bool:
    """True (with its finding) when the path leaves the work dir; allowed devices too."""
    lead = value.lead
    prefix = value.prefix
    if knowledge.CREDENTIAL_PATH.search(text):
        state.find("reads-credentials", Severity.HIGH, line, f"{verb} {text}: where credentials live (the fioctl token, ssh keys)")
        return True
    if lead is not None and lead.kind == HOME or prefix.startswith("~"):
        state.find("outside-workdir", Severity.HIGH, line, f"{verb} {text}: the user's home, outside the work dir")
        return True
    if lead is not None and lead.kind == TMP:
        state.find("outside-workdir", Severity.MEDIUM, line, f"{verb} {text}: the system's temp dir, outside the work dir")
        return True
    if prefix.startswith("/"):
        return _absolute(state, value, text, verb, access, line)
    if lead is not None and lead.kind == COMPUTED and access != "check":
        state.find("unresolved-path", Severity.HIGH, line, f"{verb} {text}: a path built at run time, which may point anywhere")
        return True
    if ".." in re.split(r"/+", text):
        state.find("outside-workdir", Severity.HIGH, line, f"{verb} {text}: '..' leaves the work dir")
        return True
    return False


def _absolute(state: State, value: Value, text: str, verb: str, access: str, line: int) -> bool:
    prefix = value.prefix
    if prefix.startswith(knowledge.NETWORK_DEVICES):
        state.find("network-access", Severity.HIGH, line, f"{verb} {text}: a network connection")
    elif prefix.startswith("/proc/") or prefix == "/proc":
        if "environ" in text:
            state.find("reads-environment", Severity.HIGH, line, f"{verb} {text}: a process's environment (the API token)")
        else:
            state.find("reads-proc", Severity.HIGH, line, f"{verb} {text}: other processes, their command lines and files")
    elif value.known and (text in knowledge.ALLOWED_DEVICES or re.fullmatch(r"/dev/fd/[0-2]", text)):
        pass
    elif value.known and text in knowledge.RANDOM_DEVICES and access == "read":
        state.find("absolute-path", Severity.LOW, line, f"reads {text}")
    elif access == "run" and value.known and text.startswith(knowledge.PROGRAM_DIRS):
        state.find("absolute-path", Severity.LOW, line, f"runs {text} by absolute path")
    else:
        state.find("absolute-path", Severity.HIGH, line, f"{verb} {text}, outside the work dir")
    return True


def _check_pki_overwrite(state: State, name: str, line: int) -> None:
    profile = state.profile
    if (name in knowledge.PKI_FILES or name in profile.inputs) and name not in profile.outputs:
        state.find("overwrites-pki-file", Severity.HIGH, line, f"writes {name}, a PKI file {profile.script} is not meant to make")


# --- what files hold ----------------------------------------------------------------------------


def key_of(state: State, name: str) -> str | None:
    """The private key a work-dir file holds, if it holds one (by what made it, or its name)."""
    info = state.file(name)
    if info is not None and info.written:
        return info.key
    if info is not None and info.key:
        return info.key
    if name in knowledge.PRIVATE_KEYS or name in knowledge.PRIVATE_KEY_ARGS.get(state.profile.script, set()):
        return name
    return name if knowledge.KEY_NAME.search(name) else None


def glob_matches(state: State, pattern: str) -> list[str]:
    """The files a glob can match: every file the audit knows of and every PKI file name."""
    names = set(state.world.files) | knowledge.PKI_FILES
    base = pattern.rsplit("/", 1)[-1]
    return sorted(n for n in names if fnmatch.fnmatchcase(n, norm(pattern)) or fnmatch.fnmatchcase(n, base))


def read(state: State, field: Field, line: int, program: str, *, signing: bool = False) -> FileInfo | None:
    """Read one file; a private key read by anything but openssl's signing options is HIGH."""
    name = check(state, field, "read", line)
    keys = []
    if field.glob:
        keys = [n for n in glob_matches(state, field.text) if key_of(state, n)]
    elif name is not None and key_of(state, name):
        keys = [key_of(state, name)]
    if keys and not signing:
        state.find("reads-private-key", Severity.HIGH, line,
                   f"{program} reads {field.text}, the private key {keys[0]}: it could reach the output or the network")  # fmt: skip
    if name is None:
        return None
    info = state.file(name)
    if info is None:
        info = FileInfo(None, key_of(state, name), "input", False)
    return info


def write(state: State, field: Field, line: int, info: FileInfo) -> str | None:
    """Write one file with what the audit knows of its content."""
    name = check(state, field, "write", line)
    if name is not None:
        state.put_file(name, FileInfo(info.content, info.key, info.origin, True, info.line))
    return name


def inputs_of(script: str, hsm: bool) -> dict[str, FileInfo]:
    """The files in the work dir before a script runs (PKI-SPEC 3): the CSR it signs, the root,
    its siblings."""
    files: dict[str, FileInfo] = {name: FileInfo(None, None, "script") for name in facts.SCRIPT_NAMES}
    if script != facts.CREATE_CA:
        files[facts.ROOT_CERT] = FileInfo(None)
        if not hsm:
            files[facts.ROOT_KEY] = FileInfo(None, facts.ROOT_KEY)
    if script in (facts.SIGN_TLS_CSR, facts.SIGN_CA_CSR):
        files["$1"] = FileInfo(None)
    return files
