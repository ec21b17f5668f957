"""Command-line options generated from a parameter table (:mod:`flexview.params`).

Fields with a ``cli`` option get that option, with help, unit and the true default taken from
the field; every other field is set with ``--set NAME=VALUE``. Values are parsed and checked
by the table, so a refused value names the option the user typed.
"""
from __future__ import annotations

import argparse
import contextlib
import textwrap
from pathlib import Path

from flexview.errors import FlexviewInputError
from flexview.params import ParameterError, ParamField, check_value, describe, parse_text, table

GIVEN = "given_parameters"


class _Given(argparse.Action):
    """Store the option's value and remember that the user gave it."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)
        setattr(namespace, GIVEN, getattr(namespace, GIVEN, frozenset()) | {self.dest})


def _metavar(row: ParamField) -> str:
    p = row.param
    if p.choices:
        return "{" + ",".join(p.choices + ((p.pattern[1],) if p.pattern else ())) + "}"
    if p.path:
        return "DIR" if p.path[0] == "dir" else "FILE"
    return {int: "N", float: "X"}.get(row.kind, row.name.upper())


def add_param_options(parser: argparse.ArgumentParser, cls: type, example: str) -> None:
    """One option per field of ``cls`` with a ``cli`` option name, then ``--set NAME=VALUE``
    (``example``: a ``NAME=VALUE`` for its help). Fields whose ``cli`` is a bare word are
    positional arguments the command adds itself.

    The parser's default of each option is the field's default; the text the user gives is
    parsed and checked by :func:`given_params`, which also tells which options were given.
    """
    for row in table(cls).values():
        p = row.param
        if not p.cli or not p.cli.startswith("-") or p.hidden:
            continue
        helptext = describe(row).replace("%", "%%")
        if row.kind is bool:
            parser.add_argument(p.cli, dest=row.name, action=_Given, nargs=0, const=not row.default,
                                default=row.default,
                                help=f"{'turn off' if row.default else 'turn on'}: {helptext}")
        else:
            parser.add_argument(p.cli, dest=row.name, action=_Given, default=row.default,
                                metavar=_metavar(row), help=helptext)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", dest="set_params",
                        help=f"any other parameter (listed below), e.g. --set {example}; repeatable")


def given_params(args: argparse.Namespace, cls: type) -> dict:
    """The fields of ``cls`` the user gave, by option or ``--set``, parsed and checked."""
    rows = table(cls)
    given = {}
    for name in getattr(args, GIVEN, ()):
        value = getattr(args, name)
        given[name] = value if rows[name].kind is bool else _parse(rows[name], value, rows[name].option)
    for item in args.set_params:
        name, sign, text = item.partition("=")
        name = name.strip()
        if not sign:
            raise FlexviewInputError(f"expected NAME=VALUE, not {item!r}", field="--set")
        if name not in rows or rows[name].param.hidden:
            raise FlexviewInputError(f"unknown parameter {name!r}", field="--set")
        given[name] = _parse(rows[name], text, f"--set {name}")
    _check_paths(rows, given)
    return given


def _parse(row: ParamField, text: str, option: str):
    try:
        return parse_text(row, text)
    except ParameterError as exc:
        raise FlexviewInputError(exc.reason, field=option) from None


def _check_paths(rows: dict[str, ParamField], given: dict) -> None:
    """A file or folder given for a path field must exist (checked after every value parsed)."""
    for name, value in given.items():
        mode, option = rows[name].param.path and rows[name].param.path[0], rows[name].option
        if mode == "open" and value and not Path(value).is_file():
            raise FlexviewInputError("is a folder, not a file" if Path(value).is_dir() else "file not found",
                                     value, option)
        if mode == "dir" and value and not Path(value).is_dir():
            raise FlexviewInputError("is a file, not a folder" if Path(value).exists() else "folder not found",
                                     value, option)


def check_option(cls: type, name: str, value, option: str):
    """``value`` checked against field ``name`` of ``cls``'s table (its kind, bounds and
    choices), for a command option ``option`` that sets the same quantity outside ``cls``."""
    try:
        return check_value(table(cls)[name], value)
    except ParameterError as exc:
        raise FlexviewInputError(exc.reason, field=option) from None


@contextlib.contextmanager
def as_options(options: dict[str, str]):
    """Report an engine refusal of argument ``name`` (a :class:`FlexviewInputError` with that
    field) under the command-line option ``options[name]`` that set it; the file it names stays."""
    try:
        yield
    except FlexviewInputError as exc:
        if exc.field not in options:
            raise
        raise FlexviewInputError(exc.message, exc.path, options[exc.field]) from None


def build(cls: type, values: dict):
    """``cls(**values)``; a refused value is reported under the option that sets it."""
    try:
        return cls(**values)
    except ParameterError as exc:
        row = table(cls).get(exc.name)
        raise FlexviewInputError(exc.reason, field=row.option if row else exc.name) from None


def set_epilog(cls: type, width: int = 96) -> str:
    """The ``--set`` parameters of ``cls`` with unit, default and help, for ``--help``
    (use with :class:`argparse.RawDescriptionHelpFormatter`)."""
    lines = ["parameters set with --set NAME=VALUE:"]
    for row in table(cls).values():
        if not row.param.hidden and not row.param.cli:
            lines += textwrap.wrap(f"{row.name}={_metavar(row)}: {describe(row)}", width, initial_indent="  ",
                                   subsequent_indent="      ", break_on_hyphens=False)
    return "\n".join(lines)
