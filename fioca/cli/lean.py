"""Typer's command and group classes, with plain values converted without pydantic, and
usage lines as Click and fioctl write them (`PKI_DIR`, not Typer's `{PKI_DIR}`).

Typer converts every parameter value through a pydantic TypeAdapter, and loading pydantic
costs about as much as loading Typer itself: `fioca keys ca extract` and the `--help` of any
subcommand (whose parent groups' unset `--help` flags are converted too) would start twice as
slowly as they need to. For a `str`, a `Path` or a `bool` that carries no constraint, these
classes convert the value directly, as Typer would; anything else (enums, numbers with
bounds, lists, checked paths) still goes through Typer's own conversion.

This reaches into Typer's parameter objects (`type_descriptor`, `_runtime_param`); the test
suite drives every command through it, so a Typer that changes them fails there, loudly.
"""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import Any

from typer.core import TyperCommand, TyperGroup

_PLAIN = (str, Path, bool)
_REQUIRED = re.compile(r"^\{([A-Z0-9_]+)\}(\.\.\.)?$")


class _Plain:
    """A RuntimeParam for one plain type: None stays None, anything else becomes the type."""

    def __init__(self, kind: type):
        self.kind = kind

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        if value is None or isinstance(value, self.kind):
            return value
        return self.kind(value)


def _is_plain(param: Any) -> bool:
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is None or descriptor.annotation not in _PLAIN:
        return False
    if getattr(param, "multiple", False) or getattr(param, "nargs", 1) != 1:
        return False
    info = descriptor.parameter_info
    checked = ("exists", "resolve_path", "allow_dash", "writable", "parser")
    return not any(getattr(info, name, None) for name in checked)


def _lean(param: Any) -> Any:
    if param is not None and _is_plain(param) and getattr(param, "_runtime_param", None) is None:
        param._runtime_param = _Plain(param.type_descriptor.annotation)
    return param


def _names_a_value(param: Any) -> bool:
    kind = getattr(param, "param_type_name", "")
    if kind == "argument":
        return True
    if kind != "option" or param.is_flag:
        return False
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    return not (isinstance(annotation, type) and issubclass(annotation, Enum))


class _LeanParams:
    def get_params(self, ctx: Any) -> list[Any]:
        # Here rather than in __init__: Typer appends the root's completion options later.
        params = [_lean(param) for param in super().get_params(ctx)]  # type: ignore[misc]
        for param in params:
            if param.metavar is None and _names_a_value(param):
                # PKI_DIR, --count COUNT: upper-case, as usage lines and the explicit metavars say
                # (Typer would write <path>, <int range>); a choice keeps its list, <text|json>.
                param.metavar = param.name.upper()
        return params

    def get_help_option(self, ctx: Any) -> Any:
        return _lean(super().get_help_option(ctx))  # type: ignore[misc]

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        # Typer writes a required argument as {PKI_DIR}; usage lines elsewhere, and fioctl's, say PKI_DIR.
        self.get_params(ctx)
        return [_REQUIRED.sub(r"\1\2", piece) for piece in super().collect_usage_pieces(ctx)]  # type: ignore[misc]


class LeanCommand(_LeanParams, TyperCommand):
    pass


class LeanGroup(_LeanParams, TyperGroup):
    pass
