"""Select widget: lasso or box on the latent scatter → a particle subset → STAR and .cs files
with the latent coordinates as columns ``flexviewLatent1..K``, for RELION or cryoSPARC.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtWidgets import QComboBox, QFormLayout, QHBoxLayout, QLabel, QPushButton, QWidget

from flexview._napari._context import FollowsContextRun
from flexview._napari._plot import theme_colors
from flexview._napari._qt import PathPicker, heading, notify_error, run_folder_row, scroll_layout
from flexview._napari.scatter import ScatterCanvas
from flexview.app.context import context_for
from flexview.app.latent_view import view_names
from flexview.app.messages import error_text
from flexview.app.select import SelectState
from flexview.run import Run

TOOLS = {"lasso": "lasso", "box": "box"}


class SelectWidget(FollowsContextRun, QWidget):
    """Dock widget over :class:`SelectState`."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.state = SelectState()
        self.context = context_for(napari_viewer)
        self._build()
        self.state.run_changed.connect(self._on_run)
        self.state.selection_changed.connect(self._on_selection)
        self.context.run_changed.connect(self._on_context_run)
        if self.context.run is not None:
            self.state.set_run(self.context.run)

    def _build(self) -> None:
        layout = scroll_layout(self)
        self.folder = run_folder_row(layout, self.open_folder)
        form = QFormLayout()
        self.view_choice = QComboBox()
        self.view_choice.currentTextChanged.connect(self._choose_view)
        self.tool = QComboBox()
        self.tool.addItems(list(TOOLS))
        self.tool.setToolTip("lasso: drag around the particles; box: drag a rectangle")
        self.tool.currentTextChanged.connect(lambda name: self.scatter.set_mode(TOOLS[name]))
        form.addRow("view", self.view_choice)
        form.addRow("tool", self.tool)
        layout.addLayout(form)
        self.scatter = ScatterCanvas(theme_colors(self.viewer), mode="lasso")
        self.scatter.polygon_drawn.connect(self.state.select_polygon)
        layout.addWidget(self.scatter)
        buttons = QHBoxLayout()
        invert, clear = QPushButton("Invert"), QPushButton("Clear")
        invert.clicked.connect(self.state.invert)
        clear.clicked.connect(self.state.clear)
        buttons.addWidget(invert)
        buttons.addWidget(clear)
        layout.addLayout(buttons)
        self.count = QLabel("no selection")
        layout.addWidget(self.count)
        layout.addWidget(heading("Export"))
        export_form = QFormLayout()
        self.star = PathPicker("save", "STAR (*.star)", "selected.star")
        self.cs = PathPicker("save", "cryoSPARC (*.cs)", "selected.cs (optional)")
        export_form.addRow("STAR", self.star)
        export_form.addRow(".cs", self.cs)
        layout.addLayout(export_form)
        export = QPushButton("Export selection")
        export.setToolTip("the selected particles with flexviewLatent1..K columns")
        export.clicked.connect(self.export)
        layout.addWidget(export)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        layout.addStretch(1)

    def _on_run(self, run: Run) -> None:
        self.folder.edit.setText(str(run.folder.root))
        self.view_choice.blockSignals(True)
        self.view_choice.clear()
        self.view_choice.addItems(view_names(run.config.latent_dim))
        self.view_choice.blockSignals(False)
        self.scatter.set_view(self.state.view)

    def _choose_view(self, name: str) -> None:
        if name and self.state.run is not None:
            self.state.set_view(name)
            self.scatter.set_view(self.state.view)

    def _on_selection(self, mask) -> None:
        n = int(np.sum(mask))
        total = len(mask)
        self.count.setText(f"{n:,} of {total:,} particles selected" if total else "no selection")
        self.scatter.set_selection(self.state.polygon, mask if n else None)

    def export(self) -> list[Path]:
        try:
            written = self.state.export(self.star.text() or None, self.cs.text() or None)
            if not written:
                raise ValueError("choose a STAR and/or a .cs file name")
        except Exception as exc:
            self.status.setText(error_text(exc))
            notify_error(exc)
            return []
        self.status.setText(f"wrote {self.state.count:,} particles to " + ", ".join(str(p) for p in written))
        return written
