"""Typer's command and group classes, with plain values converted without pydantic, and
usage lines as Click and fioctl write them (`PKI_DIR`, not Typer's `{PKI_DIR}`).

Typer converts every parameter value through a pydantic TypeAdapter, and loading pydantic
costs about as much as loading Typer itself: `fioca keys ca extract` and the `--help` of any
subcommand (whose parent groups' unset `--help` flags are converted too) would start twice as
slowly as they need to. For a `str`, a `Path` or a `bool` that carries no constraint, these
classes convert the value directly, as Typer would. An int or a float (bounds checked), one
of an enum's values, or a list of strings given more than once are taken directly when the
value is one Typer would take as it is (digits for a number, an enum value spelled exactly);
any other value (a refusal, a spelling Typer normalizes), and every other kind of parameter
(checked paths, clamped numbers, other lists), goes through Typer's own conversion, so what
is refused is refused in Typer's words.

This reaches into Typer's parameter objects (`type_descriptor`, `_runtime_param`); the test
suite drives every command through it, so a Typer that changes them fails there, loudly.
"""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import Any, get_args

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


class _Typer(Exception):
    """This value is for Typer's own conversion."""


_DIGITS = re.compile(r"^[0-9]{1,18}$")
_DECIMAL = re.compile(r"^[0-9]{1,15}(\.[0-9]{1,15})?$")


class _Direct:
    """A RuntimeParam that takes the values Typer would take as they are, and hands every
    other value to Typer's conversion (pydantic, loaded only then)."""

    def __init__(self, convert: Any):
        self.convert = convert

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        try:
            return self.convert(value, ctx)
        except _Typer:
            from typer._coercion import build_runtime_param

            return build_runtime_param(param.type_descriptor).coerce(value, param=param, ctx=ctx)


def _number(kind: type, info: Any) -> Any:
    pattern = _DIGITS if kind is int else _DECIMAL

    def convert(value: Any, _ctx: Any) -> Any:
        if value is None:
            return None
        if not (isinstance(value, str) and pattern.match(value)) and type(value) is not kind:
            raise _Typer
        number = kind(value)
        if (info.min is not None and number < info.min) or (info.max is not None and number > info.max):
            raise _Typer  # Typer says which bound
        return number

    return convert


def _choice(kind: type, info: Any) -> Any:
    by_value = {str(member.value): member for member in kind}

    def convert(value: Any, ctx: Any) -> Any:
        if value is None or isinstance(value, kind):
            return value
        if not info.case_sensitive or getattr(ctx, "token_normalize_func", None) or value not in by_value:
            raise _Typer
        return by_value[value]

    return convert


def _strings(value: Any, _ctx: Any) -> Any:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
        raise _Typer
    return list(value)


def _direct(param: Any) -> _Direct | None:
    """The direct conversion of an int, float, enum or repeated-str parameter, if it is one."""
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is None or descriptor.file_annotation is not None:
        return None
    info, annotation = descriptor.parameter_info, descriptor.annotation
    if getattr(info, "parser", None) is not None:
        return None
    multiple = getattr(param, "multiple", False) or getattr(param, "nargs", 1) != 1
    if multiple:
        return _Direct(_strings) if descriptor.is_list and get_args(annotation) == (str,) else None
    if annotation in (int, float) and not info.clamp:
        return _Direct(_number(annotation, info))
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return _Direct(_choice(annotation, info))
    return None


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
    if param is None or getattr(param, "_runtime_param", None) is not None:
        return param
    if _is_plain(param):
        param._runtime_param = _Plain(param.type_descriptor.annotation)
    else:
        param._runtime_param = _direct(param)
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
