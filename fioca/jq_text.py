"""`jq -r FILTER FILE`, through the jq library: what `keys ca extract` prints.

The documented flow takes the scripts out of factory_certs.json with `jq -r .create_ca`;
`extract` takes any jq filter the same way and prints what `jq -r` prints: a string as its
raw text, anything else as JSON in jq's layout (two-space indent, keys in document order,
UTF-8 as is, DEL escaped as jq escapes it), one result per line.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

import jq

from fioca.errors import FiocaError, UsageError

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
_KEYWORDS = frozenset(
    ["true", "false", "null", "not", "and", "or", "def", "if", "then", "elif", "else", "end", "as", "reduce", "foreach", "try", "catch", "label", "import", "include", "__loc__"]
)


def as_filter(argument: str, fields: Any) -> str:
    """`extract`'s argument as a jq filter: a plain name is the field of that name (`tls-csr`
    is `.["tls-csr"]`, `missing` gives null, as `jq -r .missing` does), unless it is a jq
    builtin or keyword that the document has no field for (`keys`); anything else is a filter."""
    has_field = isinstance(fields, dict) and argument in fields
    plain = bool(_NAME.fullmatch(argument)) and argument not in _KEYWORDS and argument not in _builtins()
    return f".[{json.dumps(argument)}]" if has_field or plain else argument


@functools.cache
def _builtins() -> frozenset[str]:
    """jq's builtins that take no argument (the ones a bare name would call)."""
    names = jq.compile("[builtins]").input_value(None).first()[0]
    return frozenset(name[:-2] for name in names if name.endswith("/0"))


def run(filter_text: str, document: str, *, source: str) -> list[str]:
    """Each result of `filter_text` on the JSON `document`, as `jq -r` prints it."""
    try:
        program = jq.compile(filter_text)
    except ValueError as error:
        raise UsageError(f"jq filter {filter_text!r} does not compile: {_jq_message(error)}") from None
    try:
        results = program.input_text(document).all()
    except ValueError as error:
        raise FiocaError(f"jq filter {filter_text!r} failed on {source}: {_jq_message(error)}") from None
    return [_raw_output(value) for value in results]


def _raw_output(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False).replace("\x7f", "\\u007f")


def _jq_message(error: ValueError) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0].removeprefix("jq: error: ") if lines else "jq error"
