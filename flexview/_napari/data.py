"""Data widget: choose the particles (STAR or .cs), the consensus map and an optional mask, see
what they hold, and choose the training box. The chosen inputs go to the Train widget.
"""
from __future__ import annotations

import numpy as np
from qtpy.QtGui import QFont
from qtpy.QtWidgets import QFormLayout, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QSpinBox, QWidget

from flexview._napari._qt import PathPicker, heading, notify_error, scroll_layout
from flexview.app.context import context_for
from flexview.app.data import DataState
from flexview.app.messages import error_text

PARTICLES_LAYER = "particles"
MAP_LAYER = "consensus"
MASK_LAYER = "mask"


class DataWidget(QWidget):
    """Dock widget over :class:`DataState`; shows the images and maps as layers (scale in Å)."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.state = DataState()
        self.context = context_for(napari_viewer)
        layout = scroll_layout(self)
        layout.addWidget(heading("Inputs"))
        form = QFormLayout()
        self.particles = PathPicker("open", "Particles (*.star *.cs)", "particles.star or .cs")
        self.particles.edit.setToolTip("RELION STAR or cryoSPARC .cs file with poses and CTF")
        self.project_dir = PathPicker("dir", placeholder="optional")
        self.project_dir.edit.setToolTip("folder that relative image paths are resolved against")
        self.map = PathPicker("open", "Maps (*.mrc *.map)", "consensus.mrc")
        self.map.edit.setToolTip("consensus refinement map over the same box as the particles")
        self.mask = PathPicker("open", "Maps (*.mrc *.map)", "optional")
        self.mask.edit.setToolTip("solvent mask; by default the thresholded, dilated consensus map")
        for label, w in (("particles", self.particles), ("project dir", self.project_dir),
                         ("consensus map", self.map), ("mask", self.mask)):
            form.addRow(label, w)
        layout.addLayout(form)
        buttons = QHBoxLayout()
        load = QPushButton("Load")
        load.setToolTip("read the files, check them and show them as layers")
        load.clicked.connect(self.load)
        sample = QPushButton("Sample dataset")
        sample.setToolTip("make (once) and load the built-in synthetic flexible protein")
        sample.clicked.connect(self.load_sample)
        buttons.addWidget(load)
        buttons.addWidget(sample)
        layout.addLayout(buttons)
        layout.addWidget(heading("Training box"))
        box_row = QHBoxLayout()
        self.box = QSpinBox()
        self.box.setSingleStep(2)
        self.box.setEnabled(False)
        self.box.setToolTip("particles and map are Fourier-cropped to this box for training")
        self.box.valueChanged.connect(self._box_changed)
        self.box_info = QLabel("")
        box_row.addWidget(self.box)
        box_row.addWidget(self.box_info, 1)
        layout.addLayout(box_row)
        self.summary = QPlainTextEdit()
        self.summary.setReadOnly(True)
        self.summary.setFont(QFont("monospace", 8))
        self.summary.setMinimumHeight(160)
        layout.addWidget(self.summary)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)

    # ------------------------------------------------------------------ actions
    def load(self) -> bool:
        """Load everything chosen; show it; share the inputs. False (and a message) on bad input."""
        try:
            self.state.load_particles(self.particles.text(), self.project_dir.text() or None)
            if self.map.text():
                self.state.load_map(self.map.text())
            self.state.load_mask(self.mask.text() or None)
        except Exception as exc:
            self.status.setText(error_text(exc))
            notify_error(exc)
            return False
        self._show_layers()
        lo, hi = self.state.box_range()
        self.box.blockSignals(True)
        self.box.setRange(lo, hi)
        self.box.setValue(self.state.box)
        self.box.blockSignals(False)
        self.box.setEnabled(True)
        self._refresh()
        return True

    def load_sample(self) -> bool:
        from flexview._napari.sample import ensure_sample_dataset

        folder = ensure_sample_dataset()
        self.particles.set_text(folder / "particles.star")
        self.map.set_text(folder / "consensus.mrc")
        self.mask.set_text("")
        self.project_dir.set_text("")
        return self.load()

    def _box_changed(self, value: int) -> None:
        if value % 2:
            return
        self.state.set_box(value)
        self._refresh()

    def _refresh(self) -> None:
        s = self.state
        self.summary.setPlainText("\n".join(s.summary()))
        px = s.training_pixel_size()
        self.box_info.setText(f"→ {px:.2f} Å/px, Nyquist {2 * px:.1f} Å")
        problem = s.check_map()
        if s.map_path is None:
            problem = "choose a consensus map"
        self.status.setText(problem or "ready: the Train widget uses these inputs")
        if not problem:
            self.context.set_inputs(s.inputs())

    def _show_layers(self) -> None:
        s = self.state
        px, box = s.particles.pixel_size, s.particles.box
        images = s.sample_images()
        extent = box * px
        # the images stand beside the map and page through with the same slider as its slices
        self._put(PARTICLES_LAYER, images, scale=(extent / len(images), px, px),
                  translate=(0.0, 0.0, extent + 4 * px), colormap="gray")
        if s.consensus is not None:
            self._put(MAP_LAYER, s.consensus, scale=(s.map_pixel_size,) * 3, colormap="gray")
        if s.mask is not None:
            self._put(MASK_LAYER, s.mask, scale=(s.map_pixel_size,) * 3, colormap="cyan", opacity=0.3,
                      blending="additive")
        self.viewer.reset_view()

    def _put(self, name: str, data: np.ndarray, **kwargs) -> None:
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        lo, hi = np.percentile(data, [0.5, 99.9])
        self.viewer.add_image(data, name=name, contrast_limits=(float(lo), float(hi) if hi > lo else float(lo) + 1),
                              **kwargs)
