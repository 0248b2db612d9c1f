"""One exception tree for fioca; the CLI maps each to one line on stderr and an exit code.

Library code raises these and never prints or exits. Messages say what failed and what to
do next, and never carry a token, a PIN or key material.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2  # kept for Typer/Click usage errors
    REFUSED = 3  # fioca refused to go on (audit finding, existing root, no confirmation)
    CHECK_FAILED = 4  # an artifact failed its certificate profile check
    SCRIPT_FAILED = 5  # a server-sent script failed, timed out or misbehaved
    HTTP = 6  # the API answered with an error or could not be reached
    INTERRUPTED = 130


class FiocaError(Exception):
    """Base of every error fioca reports to the user."""

    exit_code: ExitCode = ExitCode.ERROR

    def __init__(self, message: str, *, details: list[str] | None = None):
        super().__init__(message)
        self.message = message
        # Extra lines shown under the message (fioctl's " * error" style lines).
        self.details = details or []


class ConfigError(FiocaError):
    """Missing or unreadable settings: factory, token, server, config file."""


class UsageError(FiocaError):
    exit_code = ExitCode.USAGE


class RefusedError(FiocaError):
    """fioca chose not to go on: the action would overwrite, repeat or run something unsafe."""

    exit_code = ExitCode.REFUSED


class CheckError(FiocaError):
    """An artifact does not match its certificate profile; names the artifact and the rule."""

    exit_code = ExitCode.CHECK_FAILED

    def __init__(self, artifact: str, rule: str):
        super().__init__(f"{artifact}: {rule}")
        self.artifact = artifact
        self.rule = rule


class ScriptError(FiocaError):
    """A script failed: non-zero exit, timeout, too much output, or touched what it must not."""

    exit_code = ExitCode.SCRIPT_FAILED


class ApiError(FiocaError):
    """The Factory API answered with an error status or was unreachable."""

    exit_code = ExitCode.HTTP

    def __init__(self, message: str, *, status: int | None = None, details: list[str] | None = None):
        super().__init__(message, details=details)
        self.status = status


class Interrupted(FiocaError):
    """Ctrl-C, reported by a flow that can say what state it left and what to run next. The
    message is the whole line shown, e.g. "Interrupted while create_ca ran; nothing was sent;
    the journal in PKI_DIR says what is done: run `fioca keys ca create PKI_DIR --resume`".
    A plain KeyboardInterrupt, or any other error once `fioca.interrupts.received()`, is shown
    as "Interrupted." alone (exit 130 either way)."""

    exit_code = ExitCode.INTERRUPTED


class PkiDirError(FiocaError):
    """The PKI directory cannot be used as asked (missing, a file, not writable, locked)."""
