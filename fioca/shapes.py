"""The documented shapes of the values a server or a user hands fioca, checked where they enter.

A factory name, a user's polis-id and a device UUID end up in certificate subjects, file
names and the environment of scripts; each is checked against its shape before it is used,
so none of them can carry shell, config or path syntax. Standard library only.
"""

from __future__ import annotations

import re
import uuid as uuid_module

from fioca.errors import RefusedError

# Factory names are short lowercase-or-mixed slugs (`acme`, `meds-prod`).
FACTORY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# A user's polis-id: an opaque id (hex, UUID or digits); the local CA's CN is fio-<polis-id>.
POLIS_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class ShapeError(RefusedError):
    """A value that does not have its documented shape; the message names it and its source."""

    def __init__(self, message: str):
        super().__init__(f"{message}; nothing was run or sent with it")


def factory_name(value: object, source: str) -> str:
    return _matching(FACTORY_NAME, value, f"factory name from {source}")


def polis_id(value: object, source: str) -> str:
    return _matching(POLIS_ID, value, f"polis-id from {source}")


def local_ca_cn(polis: str) -> str:
    """The local device CA's CN, as the backend requires it: fio-<polis-id>."""
    return f"fio-{polis}"


def device_uuid(value: object, source: str) -> str:
    """A device UUID in its one canonical form: lower-case, hyphenated (8-4-4-4-12).

    Upper case, braces, `urn:uuid:` or missing hyphens are refused, not normalised: the same
    device must never come in under two spellings.
    """
    text = value if isinstance(value, str) else ""
    try:
        canonical = str(uuid_module.UUID(text))
    except ValueError:
        canonical = ""
    if text != canonical:
        raise ShapeError(f"device UUID from {source} must be a lower-case hyphenated UUID, got {_shown(value)}")
    return canonical


def _matching(pattern: re.Pattern[str], value: object, what: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ShapeError(f"{what} must match {pattern.pattern}, got {_shown(value)}")
    return value


def _shown(value: object) -> str:
    # repr() makes control characters visible and quotes the value; long values are cut.
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
