"""Explore widget: pick a latent point on the scatter (or with one slider per dimension) and see
the convected density ``run.generate(z)`` in 3-D, rendered off the GUI thread, with optional
flow arrows and the deformed mesh.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QHBoxLayout, QLabel, QPushButton, QWidget
from superqt import QLabeledDoubleSlider

from flexview._napari import _layers
from flexview._napari._plot import theme_colors
from flexview._napari._qt import PathPicker, Relay, heading, notify_error, scroll_layout
from flexview._napari.scatter import ScatterCanvas
from flexview.app.context import context_for
from flexview.app.explore import ExploreState, Rendered
from flexview.app.latent_view import LatentView, view_names
from flexview.app.messages import error_text
from flexview.app.render import LatestRenderer
from flexview.run import Run

PLUGIN, WIDGET = "flexview", "Explore"


class ExploreWidget(QWidget):
    """Dock widget over :class:`ExploreState`."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.state = ExploreState()
        self.context = context_for(napari_viewer)
        self.shown: Rendered | None = None
        self.last_seconds = float("nan")
        self._threshold = None
        self._relay = Relay()
        self._relay.arrived.connect(self._show)
        self.renderer = LatestRenderer(self._render_request, self._deliver, self._failed)
        self._build()
        self.state.view_changed.connect(self._on_view)
        self.state.z_changed.connect(self._on_z)
        self.context.run_changed.connect(self._on_context_run)
        self.destroyed.connect(self.renderer.close)
        if self.context.run is not None:
            self.open_run(self.context.run)

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        layout = scroll_layout(self)
        layout.addWidget(heading("Run folder"))
        row = QHBoxLayout()
        self.folder = PathPicker("dir", placeholder="a run folder written by training")
        open_button = QPushButton("Open")
        open_button.clicked.connect(lambda: self.open_folder(self.folder.text()))
        row.addWidget(self.folder)
        row.addWidget(open_button)
        layout.addLayout(row)
        self.info = QLabel("no run open")
        self.info.setWordWrap(True)
        layout.addWidget(self.info)
        form = QFormLayout()
        self.view_choice = QComboBox()
        self.view_choice.setToolTip("the plane of latent space shown in the scatter (PCA when K > 2)")
        self.view_choice.currentTextChanged.connect(self._choose_view)
        form.addRow("view", self.view_choice)
        self.rendering = QComboBox()
        self.rendering.addItems(list(_layers.RENDERINGS))
        self.rendering.setCurrentText(_layers.default_rendering())
        self.rendering.setToolTip("iso-surface, or attenuated / plain maximum-intensity projection "
                                  "(iso-surfaces take seconds per draw without a GPU)")
        self.rendering.currentTextChanged.connect(self._options_changed)
        form.addRow("rendering", self.rendering)
        layout.addLayout(form)
        self.scatter = ScatterCanvas(theme_colors(self.viewer), mode="pick")
        self.scatter.setToolTip("click or drag to set the latent point")
        self.scatter.picked.connect(self._pick)
        layout.addWidget(self.scatter)
        self.sliders_box = QFormLayout()
        layout.addLayout(self.sliders_box)
        self.sliders: list[QLabeledDoubleSlider] = []
        options = QHBoxLayout()
        self.arrows = QCheckBox("flow arrows ×")
        self.arrows.setToolTip("displacement of every mesh vertex at z, magnified by the factor")
        self.arrow_scale = QDoubleSpinBox()
        self.arrow_scale.setRange(0.1, 100.0)
        self.arrow_scale.setValue(self.state.arrow_scale)
        self.mesh = QCheckBox("deformed mesh")
        self.mesh.setToolTip("surface of the tetrahedral mesh moved by the flow at z")
        options.addWidget(self.arrows)
        options.addWidget(self.arrow_scale)
        options.addStretch(1)
        self.arrows.toggled.connect(self._options_changed)
        self.mesh.toggled.connect(self._options_changed)
        self.arrow_scale.valueChanged.connect(self._options_changed)
        layout.addLayout(options)
        layout.addWidget(self.mesh)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        layout.addStretch(1)

    # ------------------------------------------------------------------ opening
    def open_folder(self, folder: str | Path) -> Run | None:
        """Load the run folder (GPU when present) and show it; errors go to a notification."""
        try:
            run = self.context.open_run(folder)
        except Exception as exc:
            self.status.setText(error_text(exc))
            notify_error(exc)
            return None
        return self.open_run(run)

    def open_run(self, run: Run) -> Run:
        self.folder.edit.setText(str(run.folder.root))
        self._threshold = None
        self.state.open(run)
        self.context.set_run(run)
        cfg = run.config
        self.info.setText(f"{len(run.latents):,} particles, K = {cfg.latent_dim}, box {run.box} "
                          f"at {run.pixel_size:.2f} Å/px, mesh {run.mesh.n_vertices} vertices "
                          f"({run.model.canonical.volume.device.type})")
        return run

    def _on_context_run(self, run) -> None:
        if run is not None and run is not self.state.run:
            self.open_run(run)

    def _on_view(self, view: LatentView) -> None:
        names = view_names(view.latent_dim)
        if [self.view_choice.itemText(i) for i in range(self.view_choice.count())] != names:
            self.view_choice.blockSignals(True)
            self.view_choice.clear()
            self.view_choice.addItems(names)
            self.view_choice.blockSignals(False)
            self._make_sliders()
        self.view_choice.blockSignals(True)
        self.view_choice.setCurrentText(view.name)
        self.view_choice.blockSignals(False)
        self.scatter.set_view(view)
        if self.state.z is not None:
            self.scatter.set_marker(view.project(self.state.z))

    def _make_sliders(self) -> None:
        while self.sliders_box.rowCount():
            self.sliders_box.removeRow(0)
        self.sliders = []
        for k in range(self.state.run.config.latent_dim):
            slider = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
            slider.setRange(*self.state.slider_range(k))
            slider.setDecimals(2)
            slider.valueChanged.connect(lambda value, k=k: self._slide(k, value))
            self.sliders_box.addRow(f"z{k + 1}", slider)
            self.sliders.append(slider)

    # ------------------------------------------------------------------ interaction
    def _choose_view(self, name: str) -> None:
        if name:
            self.state.set_view(name)

    def _pick(self, uv) -> None:
        self.state.pick(uv)

    def _slide(self, k: int, value: float) -> None:
        if self.state.z is not None and not np.isclose(self.state.z[k], value):
            self.state.set_component(k, value)

    def _on_z(self, z: np.ndarray) -> None:
        self.request_render()  # first: the volume renders while the GUI thread updates the controls
        for k, slider in enumerate(self.sliders):
            slider.blockSignals(True)
            slider.setValue(float(z[k]))
            slider.blockSignals(False)
        if self.state.view is not None:
            self.scatter.set_marker(self.state.view.project(z))

    def _options_changed(self, *_) -> None:
        self.state.arrow_scale = float(self.arrow_scale.value())
        layer = _layers.find_layer(self.viewer, _layers.DENSITY)
        if layer is not None and layer.rendering != self.rendering.currentText():
            layer.rendering = self.rendering.currentText()
        if not self.arrows.isChecked():
            _layers.remove_layer(self.viewer, _layers.ARROWS)
        if not self.mesh.isChecked():
            _layers.remove_layer(self.viewer, _layers.MESH)
        self.request_render()

    # ------------------------------------------------------------------ rendering (off the GUI thread)
    def request_render(self) -> None:
        if self.state.z is not None:
            self.renderer.request((self.state.z.copy(), self.arrows.isChecked(), self.mesh.isChecked()))

    def _render_request(self, request) -> Rendered:
        # one CPU thread: the GUI thread draws at the same time, and OpenMP threads that spin
        # against it cost far more than they gain on volumes this small
        torch.set_num_threads(1)
        z, arrows, mesh = request
        return self.state.render(z, arrows, mesh)

    def _deliver(self, request, result: Rendered, seconds: float) -> None:
        self._hand_over((result, seconds, None))

    def _failed(self, request, exc: BaseException) -> None:
        self._hand_over((None, 0.0, exc))

    def _hand_over(self, item) -> None:
        try:
            self._relay.arrived.emit(item)
        except RuntimeError:  # the viewer closed while a volume was rendering
            pass

    def _show(self, item) -> None:
        result, seconds, exc = item
        if exc is not None:
            self.status.setText(error_text(exc))
            notify_error(exc)
            return
        run = self.state.run
        if self._threshold is None:
            self._threshold = self.state.iso_threshold()
        _layers.show_volume(self.viewer, _layers.DENSITY, result.volume, run.pixel_size,
                            rendering=self.rendering.currentText(), iso_threshold=self._threshold)
        density = self.viewer.layers[_layers.DENSITY]
        if result.vectors is not None:
            _layers.show_vectors(self.viewer, result.vectors)
        if result.surface is not None:
            _layers.show_surface(self.viewer, result.surface)
        if self.viewer.layers.selection.active is not density and (result.vectors is not None
                                                                   or result.surface is not None):
            self.viewer.layers.selection.active = density  # its controls (rendering, threshold) stay in view
        self.shown, self.last_seconds = result, seconds
        zs = ", ".join(f"{v:+.2f}" for v in result.z)
        self.status.setText(f"z = ({zs}): rendered in {seconds * 1e3:.0f} ms")


def open_run_in_viewer(viewer, run_folder: str | Path) -> ExploreWidget:
    """Dock the Explore widget in ``viewer`` and open ``run_folder`` in it."""
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    widget.open_folder(run_folder)
    return widget


def show_run(run_folder: str | Path, title: str = "flexview") -> None:
    """Open a napari window on ``run_folder`` (Explore docked) and run the event loop."""
    import napari

    viewer = napari.Viewer(title=title)
    open_run_in_viewer(viewer, run_folder)
    napari.run()
