"""A form for :class:`~flexview.train.config.TrainConfig`, generated from its parameter table
(:mod:`flexview.params`): one input per field, its default filled in, a tooltip with the field's
help, unit, default and bounds; choices become drop-downs, bounds spin-box ranges, paths pickers.
"""
from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QCheckBox, QComboBox, QFormLayout, QLineEdit, QSpinBox, QWidget

from flexview._napari._qt import PathPicker
from flexview.errors import FlexviewInputError
from flexview.params import ParamField, describe, label, parse_text, table
from flexview.train.config import TrainConfig

ESSENTIAL = ("box", "latent_dim", "epochs", "batch_size", "cells_across", "device")
INPUTS = tuple(name for name, row in table(TrainConfig).items() if row.param.path)
SPIN_LIMIT = 10_000_000


def spin_range(row: ParamField) -> tuple[int, int]:
    """Smallest and largest value a spin box for the integer field ``row`` offers."""
    p = row.param
    low = p.ge if p.ge is not None else p.gt + 1 if p.gt is not None else -SPIN_LIMIT
    high = p.le if p.le is not None else p.lt - 1 if p.lt is not None else SPIN_LIMIT
    return int(low), int(high)


def make_input(row: ParamField) -> QWidget:
    """The input widget of one field (see :class:`ConfigForm`)."""
    p = row.param
    if p.path:
        w = PathPicker(p.path[0], p.path[1], p.none if row.optional else "")
        w.edit.setToolTip(describe(row))
        return w
    if row.kind is bool:
        w = QCheckBox()
    elif p.choices:
        w = QComboBox()
        w.addItems(([p.none] if row.optional else []) + list(p.choices))
        w.setEditable(p.pattern is not None)
    elif row.kind is int and not row.optional:
        w = QSpinBox()
        w.setRange(*spin_range(row))
        w.setSingleStep(p.multiple_of or 1)
    else:
        w = QLineEdit()
        if row.optional:
            w.setPlaceholderText(p.none)
    w.setToolTip(describe(row))
    return w


class ConfigForm:
    """Inputs for the fields of a parameter dataclass (default TrainConfig), placed in
    QFormLayouts chosen by the caller.

    ``widgets[name]`` is the input of field ``name``; :meth:`config` reads them back, raising
    :class:`FlexviewInputError` naming the field when a value is refused.
    """

    def __init__(self, cls: type = TrainConfig):
        self.cls = cls
        self.fields = {name: row for name, row in table(cls).items() if not row.param.hidden}
        self.widgets: dict[str, QWidget] = {name: make_input(row) for name, row in self.fields.items()}
        self.set_values({name: row.default for name, row in self.fields.items()})

    def add_rows(self, layout: QFormLayout, names) -> None:
        for name in names:
            layout.addRow(label(self.fields[name]), self.widgets[name])

    def set_values(self, values: dict) -> None:
        for name, value in values.items():
            if name in self.widgets:
                _show(self.fields[name], self.widgets[name], value)

    def values(self) -> dict:
        """Field values as the dataclass expects them (empty optional fields → None)."""
        return {name: _read(row, self.widgets[name]) for name, row in self.fields.items()}

    def config(self):
        values = self.values()
        for name, row in self.fields.items():
            if row.param.path and not row.optional and not values[name]:
                raise FlexviewInputError("choose a file", field=name)
        return self.cls(**values)


def _show(row: ParamField, w: QWidget, value: Any) -> None:
    if isinstance(w, PathPicker):
        w.set_text(value or "")
    elif isinstance(w, QCheckBox):
        w.setChecked(bool(value))
    elif isinstance(w, QComboBox):
        w.setCurrentText(row.param.none if value is None else str(value))
    elif isinstance(w, QSpinBox):
        w.setValue(int(value))
    else:
        w.setText("" if value is None else str(value))


def _read(row: ParamField, w: QWidget) -> Any:
    if isinstance(w, PathPicker):
        return parse_text(row, w.text()) if row.optional else w.text()
    if isinstance(w, QCheckBox):
        return w.isChecked()
    if isinstance(w, QComboBox):
        return parse_text(row, w.currentText())
    if isinstance(w, QSpinBox):
        return int(w.value())
    return parse_text(row, w.text())
