"""Select widget: lasso or box on the latent scatter → a particle subset → STAR and .cs files
with the latent coordinates as columns ``flexviewLatent1..K``, for RELION or cryoSPARC.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from psygnal import Signal
from qtpy.QtWidgets import QComboBox, QFormLayout, QHBoxLayout, QLabel, QPushButton, QWidget

from flexview._napari._context import FollowsContextRun, context_for
from flexview._napari._plot import theme_colors
from flexview._napari._qt import PathPicker, error_text, heading, notify_error, run_folder_row, scroll_layout
from flexview._napari.latent_view import LatentView, view_names
from flexview._napari.scatter import ScatterCanvas
from flexview.errors import FlexviewInputError
from flexview.io import read_particles, write_cs, write_star
from flexview.io.particles import ParticleSet
from flexview.run import Run
from flexview.train.runfolder import LATENT_COLUMN

TOOLS = {"lasso": "lasso", "box": "box"}


class SelectState:
    """The run, a view of its latents and the selected particles ``mask`` (M,) bool.

    Signals: ``run_changed(Run)``, ``selection_changed(mask)``.
    """

    run_changed = Signal(object)
    selection_changed = Signal(object)

    def __init__(self):
        self.run: Run | None = None
        self.view: LatentView | None = None
        self.mask: np.ndarray = np.zeros(0, dtype=bool)
        self.polygon: np.ndarray | None = None
        self._particles: ParticleSet | None = None

    def set_run(self, run: Run) -> None:
        self.run, self._particles = run, None
        self.view = LatentView(run.latents)
        self.run_changed.emit(run)
        self.clear()

    def set_view(self, name: str) -> None:
        self.view = LatentView(self.run.latents, name)
        self.clear()

    # ------------------------------------------------------------------ selecting
    def select_polygon(self, polygon: np.ndarray) -> int:
        """Select the particles inside ``polygon`` (P, 2), in the coordinates of :attr:`view`
        (latent coordinates for a K = 2 run). Returns the count."""
        self.polygon = np.asarray(polygon, dtype=float).reshape(-1, 2)
        self.mask = self.view.inside(self.polygon)
        self.selection_changed.emit(self.mask)
        return int(self.mask.sum())

    def invert(self) -> int:
        self.polygon = None
        self.mask = ~self.mask
        self.selection_changed.emit(self.mask)
        return int(self.mask.sum())

    def clear(self) -> None:
        self.polygon = None
        self.mask = np.zeros(0 if self.run is None else len(self.run.latents), dtype=bool)
        self.selection_changed.emit(self.mask)

    @property
    def count(self) -> int:
        return int(self.mask.sum())

    # ------------------------------------------------------------------ export
    def particles(self) -> ParticleSet:
        """The run's input particles (its ``config.particles``), with latent columns added."""
        if self._particles is None:
            cfg = self.run.config
            particles = read_particles(cfg.particles, cfg.project_dir)
            z = self.run.latents
            if len(particles) != len(z):
                raise FlexviewInputError(f"the file has {len(particles)} particles but the run has "
                                         f"{len(z)} latent rows", cfg.particles, "particles")
            columns = {LATENT_COLUMN.format(k + 1): z[:, k].astype(np.float64) for k in range(z.shape[1])}
            self._particles = particles.with_columns(**columns)
        return self._particles

    def subset(self) -> ParticleSet:
        if self.count == 0:
            raise ValueError("nothing selected: draw a lasso or a box on the scatter")
        return self.particles().subset(np.nonzero(self.mask)[0])

    def export(self, star: str | Path | None = None, cs: str | Path | None = None) -> list[Path]:
        """Write the selected particles as STAR and/or .cs; returns the paths written."""
        subset = self.subset()
        written = []
        if star:
            write_star(star, subset)
            written.append(Path(star))
        if cs:
            write_cs(cs, subset)
            written.append(Path(cs))
        return written


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
