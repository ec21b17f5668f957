"""Parameter tables: dataclass fields that carry their help text, unit, choices and bounds.

A parameter dataclass (``TrainConfig``, ``ReconOptions``) declares each field with
:func:`param`, which stores a :class:`Param` in the field's metadata::

    box: int = param(64, "training box: particles and map are Fourier-cropped to it",
                     unit="px", ge=8, multiple_of=2, cli="--box")

and calls :func:`validate` from ``__post_init__``. The command line (``flexview.commands``)
and the napari form (``flexview._napari``) are generated from the same table, so the help,
the defaults and the checks are written once.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import operator
import re
import types
import typing
from dataclasses import dataclass
from typing import Any

from flexview.errors import FlexviewInputError

__all__ = ["Param", "ParamField", "ParameterError", "param", "table", "validate", "check_value",
           "parse_text", "format_value", "describe", "label", "rule"]

KINDS = (bool, int, float, str, dict)
TRUE_WORDS, FALSE_WORDS = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
COMPARE = {"≥": operator.ge, ">": operator.gt, "≤": operator.le, "<": operator.lt}


class ParameterError(FlexviewInputError):
    """A parameter value that is refused; ``name`` is the field, ``reason`` the bare message."""

    def __init__(self, reason: str, name: str, path=None):
        self.name, self.reason = name, reason
        super().__init__(reason, path, name)


@dataclass(frozen=True)
class Param:
    """What a parameter means and which values it accepts.

    ``choices``: the accepted words; with ``pattern`` (``(regex, description)``) values that
    match the regex are accepted too (an open choice: ``cuda:1``, a ``.npy`` path).
    ``ge``/``gt``/``le``/``lt``: inclusive / exclusive bounds of a number; ``multiple_of``: an
    integer step. ``cli``: the command-line option (``"--batch-size"``), None to set the field
    through ``--set NAME=VALUE`` only. ``path``: ``(mode, filter)`` with mode ``"open"`` or
    ``"dir"`` for a file or folder. ``none``: the word that stands for None (shown as the
    default, typed on the command line, placeholder of an empty input). ``hidden``: not a user
    parameter (recorded, not set).
    """

    help: str
    unit: str | None = None
    choices: tuple[str, ...] = ()
    pattern: tuple[str, str] | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    multiple_of: int | None = None
    cli: str | None = None
    path: tuple[str, str] | None = None
    none: str = "none"
    label: str | None = None
    hidden: bool = False


def param(default: Any = dataclasses.MISSING, help: str = "", *, factory=dataclasses.MISSING,
          **options) -> Any:
    """A dataclass field whose metadata holds a :class:`Param` (``options`` are its fields)."""
    if "choices" in options:
        options["choices"] = tuple(options["choices"])
    meta = {"param": Param(help, **options)}
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class ParamField:
    """One row of a parameter table: the field's name, default, value kind and :class:`Param`."""

    name: str
    default: Any
    kind: type
    optional: bool
    param: Param

    @property
    def option(self) -> str:
        """How the command line spells the parameter: its option, or ``--set NAME``."""
        return self.param.cli or f"--set {self.name}"


def _kind(hint) -> tuple[type, bool]:
    """``int | None`` → (int, True); ``float`` → (float, False)."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and rest[0] in KINDS:
            return rest[0], len(rest) < len(args)
    elif (typing.get_origin(hint) or hint) in KINDS:
        return typing.get_origin(hint) or hint, False
    raise TypeError(f"unsupported parameter type {hint!r}")


@functools.cache
def table(cls: type) -> dict[str, ParamField]:
    """The parameter table of the dataclass ``cls``, in field order."""
    hints = typing.get_type_hints(cls)
    rows = {}
    for f in dataclasses.fields(cls):
        if "param" not in f.metadata:
            raise TypeError(f"{cls.__name__}.{f.name} is not declared with param()")
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        kind, optional = _kind(hints[f.name])
        rows[f.name] = ParamField(f.name, default, kind, optional, f.metadata["param"])
    return rows


def validate(obj) -> None:
    """Check (and normalise: ints given for floats become floats) every field of ``obj``."""
    for row in table(type(obj)).values():
        object.__setattr__(obj, row.name, check_value(row, getattr(obj, row.name)))


def check_value(row: ParamField, value: Any) -> Any:
    """``value`` as field ``row`` stores it; raises :class:`ParameterError` naming the field."""
    if value is None:
        if row.optional:
            return None
        raise ParameterError("a value is needed", row.name)
    value = _typed(row, value)
    if row.kind in (int, float):
        _check_number(row, value)
    elif row.kind is str and (row.param.choices or row.param.pattern):
        _check_word(row, value)
    return value


def _typed(row: ParamField, value: Any) -> Any:
    kind = row.kind
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if kind is float and isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    if kind in (str, dict) and isinstance(value, kind):
        return value
    wanted = {bool: "true or false", int: "a whole number", float: "a number", str: "text",
              dict: "a table"}[kind]
    raise ParameterError(f"must be {wanted}, not {value!r}", row.name)


def rule(row: ParamField) -> str:
    """The bounds of a number field in words: ``"≥ 8 and even"`` (empty when unbounded)."""
    p = row.param
    words = [f"{sign} {format_value(b)}" for sign, b in zip(COMPARE, (p.ge, p.gt, p.le, p.lt))
             if b is not None]
    if p.multiple_of:
        words.append("even" if p.multiple_of == 2 else f"a multiple of {p.multiple_of}")
    return " and ".join(words)


def _check_number(row: ParamField, value: float) -> None:
    p = row.param
    if not math.isfinite(value):
        raise ParameterError(f"must be a finite number, not {value!r}", row.name)
    bounds = [(sign, b) for sign, b in zip(COMPARE, (p.ge, p.gt, p.le, p.lt)) if b is not None]
    ok = all(COMPARE[sign](value, b) for sign, b in bounds)
    if not ok or (p.multiple_of and value % p.multiple_of):
        raise ParameterError(f"must be {rule(row)}, not {format_value(value)}", row.name)


def _check_word(row: ParamField, value: str) -> None:
    p = row.param
    if value in p.choices or (p.pattern and re.fullmatch(p.pattern[0], value)):
        return
    allowed = list(p.choices) + ([p.pattern[1]] if p.pattern else [])
    text = allowed[0] if len(allowed) == 1 else ", ".join(allowed[:-1]) + " or " + allowed[-1]
    raise ParameterError(f"must be {text}, not {value!r}", row.name)


def parse_text(row: ParamField, text: str) -> Any:
    """The value of field ``row`` written as ``text`` (command line, form input), checked.

    Empty text, ``none`` and the field's ``none`` word give None where the field allows it.
    """
    text = str(text).strip()
    if row.optional and text.lower() in ("", "none", row.param.none.lower()):
        return None
    if row.kind is str:
        return check_value(row, text)
    if row.kind is bool and text.lower() in TRUE_WORDS + FALSE_WORDS:
        return text.lower() in TRUE_WORDS
    if row.kind is dict:
        raise ParameterError("is recorded by flexview and cannot be set", row.name)
    try:
        value = int(text) if row.kind is int else float(text) if row.kind is float else None
    except ValueError:
        value = None
    if value is None:
        wanted = {bool: "true or false", int: "a whole number", float: "a number"}[row.kind]
        raise ParameterError(f"{text!r} is not {wanted}", row.name)
    return check_value(row, value)


def format_value(value: Any, row: ParamField | None = None) -> str:
    """A value as the help and the form show it: ``0.001``, ``64``, ``linearised``, the none word."""
    if value is None:
        return row.param.none if row is not None else "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def describe(row: ParamField) -> str:
    """Help text with unit, accepted range and default: ``"training box … (px; ≥ 8 and even;
    default 64)"``."""
    parts = [text for text in (row.param.unit, rule(row) if row.kind in (int, float) else "") if text]
    parts.append("required" if row.default == "" else f"default {format_value(row.default, row)}")
    return f"{row.param.help} ({'; '.join(parts)})"


def label(row: ParamField) -> str:
    """Short label of a form row: the field name without its unit suffix, and the unit."""
    if row.param.label:
        return row.param.label
    words = re.sub(r"_(A|deg|kv|mm|px)$", "", row.name).replace("_", " ")
    return f"{words} ({row.param.unit})" if row.param.unit else words
