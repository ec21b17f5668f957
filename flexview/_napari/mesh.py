"""Mesh widget: build the regular mesh over the consensus map, paint segments, choose which
interfaces to fuse, cut, save, and hand the mesh file to Train.

:class:`~flexview.app.mesh.MeshState` holds the bookkeeping and calls the same engine as
``flexview mesh``; :class:`MeshWidget` is the Qt view over it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtGui import QColor, QFont
from qtpy.QtWidgets import (QDoubleSpinBox, QFormLayout, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QPushButton,
                            QSpinBox, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from flexview._napari import _layers
from flexview._napari._qt import PathPicker, heading, notify_error, scroll_layout
from flexview.app.context import context_for
from flexview.app.geometry import boundary_faces, physical_to_world
from flexview.app.mesh import MeshState, vertex_average, vertex_segment
from flexview.app.messages import error_text
from flexview.errors import FlexviewInputError
from flexview.model.mesh import TetMesh

MAP_LAYER = "mesh map"
SEGMENTS_LAYER = "segments"
BASE_LAYER = "mesh"
CUT_LAYER = "cut mesh"


class MeshWidget(QWidget):
    """Dock widget over :class:`MeshState`; the map, the mesh and the segments are layers (scale Å)."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.state = MeshState()
        self.context = context_for(napari_viewer)
        self._filling = False
        self._relabel = QTimer(self)
        self._relabel.setSingleShot(True)
        self._relabel.setInterval(300)
        self._relabel.timeout.connect(self.update_segments)
        self._build()
        self.state.changed.connect(self._refresh)
        self.context.inputs_changed.connect(self._on_inputs)
        if self.context.inputs is not None:
            self._on_inputs(self.context.inputs)
        self._refresh()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        layout = scroll_layout(self)
        self._build_map(layout)
        self._build_segments(layout)
        self._build_fusion(layout)
        self._build_output(layout)

    def _build_map(self, layout: QVBoxLayout) -> None:
        layout.addWidget(heading("Map"))
        form = QFormLayout()
        self.map = PathPicker("open", "Maps (*.mrc *.map)", "consensus.mrc (or choose it in Data)")
        self.box = QSpinBox()
        self.box.setRange(0, 1024)
        self.box.setSingleStep(2)
        self.box.setSpecialValueText("map box")
        self.box.setToolTip("training box: the map is Fourier-cropped to it (as in Train)")
        form.addRow("consensus map", self.map)
        form.addRow("training box", self.box)
        self.threshold = QLineEdit()
        self.threshold.setToolTip("density threshold; empty: automatic (Otsu)")
        self.cell_size = _spin(QDoubleSpinBox(), (0.0, 1000.0), 0.0, "cell (cube) edge in Å; overrides cells across",
                               suffix=" Å")
        self.cell_size.setSpecialValueText("auto")
        self.cells = _spin(QSpinBox(), (1, 200), 20, "cells across the box (cryoSPARC default 20)")
        self.dilate = _spin(QDoubleSpinBox(), (0.0, 100.0), 6.0, "dilation of the thresholded map covered by the mesh",
                            suffix=" Å")
        for label, w in (("threshold", self.threshold), ("cell size", self.cell_size),
                         ("cells across", self.cells), ("dilation", self.dilate)):
            form.addRow(label, w)
        layout.addLayout(form)
        self.build_button = QPushButton("Build mesh")
        self.build_button.setToolTip("regular tetrahedral mesh over the map, coloured by rigidity weight")
        self.build_button.clicked.connect(self.build)
        layout.addWidget(self.build_button)
        self.mesh_info = QLabel("")
        self.mesh_info.setWordWrap(True)
        layout.addWidget(self.mesh_info)

    def _build_segments(self, layout: QVBoxLayout) -> None:
        layout.addWidget(heading("Segments"))
        hint = QLabel(f"paint the \"{SEGMENTS_LAYER}\" layer coarsely (brush, fill, erase; 0 is solvent), "
                      "or start from a proposal")
        hint.setWordWrap(True)
        layout.addWidget(hint)
        row = QHBoxLayout()
        self.n_segments = _spin(QSpinBox(), (1, 50), 2, "")
        self.n_segments.setPrefix("parts: ")
        propose = QPushButton("Propose segments")
        propose.setToolTip("watershed of the thresholded map into this many parts")
        propose.clicked.connect(self.propose)
        row.addWidget(self.n_segments)
        row.addWidget(propose, 1)
        layout.addLayout(row)
        self.segment_table = _table(["segment", "voxels", "rigid", "pinned"], self._segment_item_changed)
        layout.addWidget(self.segment_table)

    def _build_fusion(self, layout: QVBoxLayout) -> None:
        layout.addWidget(heading("Fusion"))
        self.pair_table = _table(["fuse", "touching segments"], self._pair_item_changed)
        layout.addWidget(self.pair_table)
        self.fuse = QLineEdit()
        self.fuse.setPlaceholderText("e.g. 1>2, 2>3 (join 2 to 1, then 3 to 2)")
        self.fuse.setToolTip("fuse list in 3DFlex syntax: a tree grown from its first segment")
        self.fuse.editingFinished.connect(lambda: self.state.set_fuse_text(self.fuse.text()))
        fuse_form = QFormLayout()
        fuse_form.addRow("fuse", self.fuse)
        layout.addLayout(fuse_form)
        self.tree = QLabel("")
        self.tree.setFont(QFont("monospace", 8))
        self.tree.setWordWrap(True)
        layout.addWidget(self.tree)

    def _build_output(self, layout: QVBoxLayout) -> None:
        layout.addWidget(heading("Cut and save"))
        self.cut_button = QPushButton("Cut")
        self.cut_button.setToolTip("split the mesh into one submesh per segment, fused where listed")
        self.cut_button.clicked.connect(self.cut)
        layout.addWidget(self.cut_button)
        row = QHBoxLayout()
        self.out = PathPicker("save", "Meshes (*.npz)", "mesh.npz")
        save = QPushButton("Save mesh…")
        save.setToolTip("write the mesh (.npz) and use it in Train")
        save.clicked.connect(self.save)
        row.addWidget(self.out)
        row.addWidget(save)
        layout.addLayout(row)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        layout.addStretch(1)

    # ------------------------------------------------------------------ actions
    def _on_inputs(self, inputs) -> None:
        self.map.set_text(inputs.consensus_map)
        self.box.setValue(int(inputs.box))

    def _threshold(self) -> float | None:
        text = self.threshold.text().strip()
        if not text:
            return None
        try:
            return float(text)
        except ValueError as exc:
            raise FlexviewInputError(f"the threshold must be a number, not {text!r}", field="threshold") from exc

    def _fail(self, exc: BaseException) -> bool:
        self.status.setText(error_text(exc))
        notify_error(exc)
        return False

    def build(self) -> bool:
        """Load the map at the training box, build the mesh, show it. False (and a message) on bad input."""
        s = self.state
        try:
            if not self.map.text():
                raise FlexviewInputError("choose a consensus map", field="consensus map")
            box = self.box.value() or None
            stale = s.density is None or s.map_path != Path(self.map.text())
            if stale or (box or s.density.shape[0]) != s.density.shape[0]:
                s.load_map(self.map.text(), box)
            s.build(self._threshold(), self.cell_size.value() or None, self.cells.value(), self.dilate.value())
        except Exception as exc:
            return self._fail(exc)
        self.threshold.setPlaceholderText(f"automatic: {s.auto_threshold():.4g}")
        self._show_map()
        self._show_base()
        self.status.setText("mesh built: paint segments, or save it as it is")
        return True

    def labels_layer(self):
        """The "segments" Labels layer over the map's box (created empty on first use)."""
        s = self.state
        layer = _layers.find_layer(self.viewer, SEGMENTS_LAYER)
        if layer is not None and layer.data.shape == s.density.shape:
            return layer
        if layer is not None:
            self.viewer.layers.remove(layer)
        layer = self.viewer.add_labels(np.zeros(s.density.shape, np.int32), name=SEGMENTS_LAYER,
                                       scale=(s.pixel_size,) * 3, opacity=0.5)
        layer.events.paint.connect(lambda _: self._relabel.start())
        layer.events.data.connect(lambda _: self._relabel.start())
        return layer

    def propose(self) -> bool:
        try:
            if self.state.density is None and not self.build():
                return False
            labels = self.state.propose(self._threshold(), self.n_segments.value())
        except Exception as exc:
            return self._fail(exc)
        self.labels_layer().data = labels.astype(np.int32)
        self.update_segments()
        return True

    def update_segments(self) -> None:
        """Read the painted labels: segments present and which of them touch."""
        layer = _layers.find_layer(self.viewer, SEGMENTS_LAYER)
        if layer is not None:
            self.state.set_labels(np.asarray(layer.data))

    def cut(self) -> bool:
        layer = _layers.find_layer(self.viewer, SEGMENTS_LAYER)
        try:
            if layer is None:
                raise FlexviewInputError("paint or propose segments first", field=SEGMENTS_LAYER)
            self.update_segments()
            mesh = self.state.cut_with(np.asarray(layer.data))
        except Exception as exc:
            return self._fail(exc)
        self._show_cut(layer)
        self.status.setText(f"cut: {mesh.n_cells} cells, {mesh.n_vertices} vertices in "
                            f"{len(np.unique(mesh.segment))} segments")
        return True

    def save(self) -> Path | None:
        """Write the mesh (cut, else regular) and put its path in Train's ``mesh`` field."""
        try:
            if self.out.path() is None:
                raise FlexviewInputError("choose where to save the mesh (.npz)", field="mesh file")
            path = self.state.save(self.out.path())
        except Exception as exc:
            self._fail(exc)
            return None
        self.context.set_mesh(path)
        self.status.setText(f"saved {path}; Train's mesh field now uses it")
        return path

    # ------------------------------------------------------------------ layers
    def _show_map(self) -> None:
        s = self.state
        layer = _layers.find_layer(self.viewer, MAP_LAYER)
        if layer is not None:
            self.viewer.layers.remove(layer)
        lo = self._threshold()  # solvent below the threshold stays black
        lo = s.auto_threshold() if lo is None else lo
        hi = float(s.density.max())
        self.viewer.add_image(s.density.astype(np.float32), name=MAP_LAYER, scale=(s.pixel_size,) * 3,
                              colormap="gray", contrast_limits=(lo, hi if hi > lo else lo + 1.0),
                              rendering=_layers.default_rendering(), blending="additive")
        self.labels_layer()
        self.viewer.layers.move(self.viewer.layers.index(SEGMENTS_LAYER), len(self.viewer.layers) - 1)
        self.viewer.reset_view()

    def _put_surface(self, name: str, mesh: TetMesh, values: np.ndarray, colors=None, colormap="viridis"):
        verts = physical_to_world(mesh.vertices, mesh.box, mesh.pixel_size)
        data = (verts, boundary_faces(mesh.cells), values)
        layer = _layers.find_layer(self.viewer, name)
        if layer is not None:
            self.viewer.layers.remove(layer)
        layer = self.viewer.add_surface(data, name=name, colormap=colormap, opacity=0.25,
                                        blending="translucent", vertex_colors=colors)
        layer.wireframe.visible = True
        layer.wireframe.color = "#9ad4ff"
        return layer

    def _show_base(self) -> None:
        mesh = self.state.base
        _layers.remove_layer(self.viewer, CUT_LAYER)
        layer = self._put_surface(BASE_LAYER, mesh, vertex_average(mesh, mesh.rigidity_weight))
        lo, hi = float(mesh.rigidity_weight.min()), float(mesh.rigidity_weight.max())
        layer.contrast_limits = (lo, hi if hi > lo else lo + 1.0)
        if self.viewer.dims.ndisplay != 3:
            self.viewer.dims.ndisplay = 3

    def _show_cut(self, labels_layer) -> None:
        mesh = self.state.cut
        seg = vertex_segment(mesh)
        colors = np.array([labels_layer.get_color(int(v)) for v in np.unique(seg)], np.float32)
        rgba = colors[np.searchsorted(np.unique(seg), seg)]
        rgba[:, 3] = 1.0
        self._put_surface(CUT_LAYER, mesh, seg.astype(np.float64), colors=rgba)
        base = _layers.find_layer(self.viewer, BASE_LAYER)
        if base is not None:
            base.visible = False

    # ------------------------------------------------------------------ state → view
    def _refresh(self) -> None:
        s = self.state
        self._filling = True
        base = s.base
        self.mesh_info.setText("" if base is None else
                               f"{base.n_cells} cells, {base.n_vertices} vertices, cube edge "
                               f"{base.grid_spacing:.2f} Å, box {base.box} at {base.pixel_size:.3f} Å/px; "
                               f"rigidity weight {base.rigidity_weight.min():.2f}–{base.rigidity_weight.max():.2f}")
        layer = _layers.find_layer(self.viewer, SEGMENTS_LAYER)
        counts = {}
        if layer is not None and s.segments:
            ids, n = np.unique(np.asarray(layer.data), return_counts=True)
            counts = dict(zip(ids.tolist(), n.tolist()))
        self.segment_table.setRowCount(len(s.segments))
        for row, seg in enumerate(s.segments):
            name = QTableWidgetItem(str(seg))
            name.setFlags(Qt.ItemFlag.ItemIsEnabled)
            if layer is not None:
                name.setBackground(QColor.fromRgbF(*[float(c) for c in layer.get_color(seg)]))
            self.segment_table.setItem(row, 0, name)
            voxels = QTableWidgetItem(str(counts.get(seg, "")))
            voxels.setFlags(Qt.ItemFlag.ItemIsEnabled)
            self.segment_table.setItem(row, 1, voxels)
            for col, chosen in ((2, s.rigid), (3, s.pinned)):
                self.segment_table.setItem(row, col, _check_item(seg in chosen))
        checked = s.checked_pairs()
        self.pair_table.setRowCount(len(s.pairs))
        for row, (a, b) in enumerate(s.pairs):
            self.pair_table.setItem(row, 0, _check_item((a, b) in checked))
            pair = QTableWidgetItem(f"{a} – {b}")
            pair.setFlags(Qt.ItemFlag.ItemIsEnabled)
            self.pair_table.setItem(row, 1, pair)
        self.fuse.setText(s.fuse_text)
        problem = s.fuse_problem() if s.segments else ""
        self.tree.setText(f"<span style='color:#ff6b6b'>{problem}</span>" if problem else
                          "<pre>" + s.tree_text() + "</pre>" if s.segments else "")
        self._filling = False

    def _segment_item_changed(self, item: QTableWidgetItem) -> None:
        if self._filling or item.column() not in (2, 3):
            return
        seg = self.state.segments[item.row()]
        self.state.set_flag(seg, "rigid" if item.column() == 2 else "pinned",
                            item.checkState() == Qt.CheckState.Checked)

    def _pair_item_changed(self, item: QTableWidgetItem) -> None:
        if self._filling or item.column() != 0:
            return
        self.state.set_pair_checked(self.state.pairs[item.row()], item.checkState() == Qt.CheckState.Checked)


def _check_item(on: bool) -> QTableWidgetItem:
    item = QTableWidgetItem("")
    item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsUserCheckable)
    item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)
    return item


def _spin(spin, limits, value, tip: str, suffix: str = ""):
    """``spin`` (a QSpinBox or QDoubleSpinBox) with its range, value, tooltip and suffix set."""
    spin.setRange(*limits)
    spin.setValue(value)
    if tip:
        spin.setToolTip(tip)
    if suffix:
        spin.setSuffix(suffix)
    return spin


def _table(headers: list[str], on_change) -> QTableWidget:
    """A short table with stretched columns and no row numbers; ``on_change(item)`` on edits."""
    table = QTableWidget(0, len(headers))
    table.setHorizontalHeaderLabels(headers)
    table.verticalHeader().setVisible(False)
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
    table.setMaximumHeight(140)
    table.itemChanged.connect(on_change)
    return table
