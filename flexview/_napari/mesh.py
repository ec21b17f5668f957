"""Mesh widget: build the regular mesh over the consensus map, paint segments, choose which
interfaces to fuse, cut, save, and hand the mesh file to Train.

:class:`MeshState` holds the science-free bookkeeping (segments present, touching pairs, the fuse
list and its validation) and calls the same engine as ``flexview mesh``; :class:`MeshWidget` is
the Qt view over it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from psygnal import Signal
from qtpy.QtCore import Qt, QTimer
from qtpy.QtGui import QColor, QFont
from qtpy.QtWidgets import (QDoubleSpinBox, QFormLayout, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QPushButton,
                            QSpinBox, QTableWidget, QTableWidgetItem, QWidget)

from flexview._napari import _layers
from flexview._napari._context import context_for
from flexview._napari._qt import PathPicker, error_text, heading, notify_error, scroll_layout
from flexview.errors import FlexviewInputError
from flexview.model.cutmesh import (check_fuse_tree, cut_mesh, format_fuse, fuse_from_edges, parse_fuse,
                                    propose_segments, touching_pairs)
from flexview.model.mesh import TetMesh, auto_threshold, build_regular_mesh, read_map_at_box

MAP_LAYER = "mesh map"
SEGMENTS_LAYER = "segments"
BASE_LAYER = "mesh"
CUT_LAYER = "cut mesh"


class MeshState:
    """Map, base mesh, segments and fusion choices of a hand-cut mesh. Signal ``changed()``."""

    changed = Signal()

    def __init__(self):
        self.map_path: Path | None = None
        self.density: np.ndarray | None = None
        self.pixel_size: float | None = None
        self.base: TetMesh | None = None
        self.cut: TetMesh | None = None
        self.segments: list[int] = []
        self.pairs: list[tuple[int, int]] = []
        self.fuse_text = ""
        self.rigid: set[int] = set()
        self.pinned: set[int] = set()

    # ------------------------------------------------------------------ map and base mesh
    def load_map(self, path: str | Path, box: int | None = None) -> np.ndarray:
        """Read the map, Fourier-cropped to the training ``box`` (as ``flexview mesh --box``)."""
        self.density, self.pixel_size = read_map_at_box(path, box)
        self.map_path, self.base, self.cut = Path(path), None, None
        self.changed.emit()
        return self.density

    def auto_threshold(self) -> float:
        return auto_threshold(self.density)

    def build(self, threshold: float | None = None, cell_size_A: float | None = None,
              cells_across: int = 20, dilate_A: float = 6.0) -> TetMesh:
        """The regular mesh over the thresholded, dilated map (``flexview mesh`` without segments)."""
        if self.density is None:
            raise FlexviewInputError("choose a consensus map first", field="consensus map")
        self.base = build_regular_mesh(self.density, self.pixel_size, threshold=threshold,
                                       cell_size_A=cell_size_A or None, cells_across=cells_across,
                                       dilate_A=dilate_A)
        self.cut = None
        self.changed.emit()
        return self.base

    def propose(self, threshold: float | None = None, n_segments: int = 2) -> np.ndarray:
        """A starting segmentation: watershed of the thresholded map into ``n_segments`` parts."""
        if self.density is None:
            raise FlexviewInputError("choose a consensus map first", field="consensus map")
        t = self.auto_threshold() if threshold is None else threshold
        return propose_segments(self.density, t, n_segments, max(2, self.density.shape[0] // 10))

    # ------------------------------------------------------------------ segments and fusion
    def set_labels(self, labels: np.ndarray) -> None:
        """Take the segments and the touching pairs from a label volume; drop choices that no longer apply."""
        ids = np.unique(labels)
        segments = [int(s) for s in ids if s != 0]
        pairs = touching_pairs(labels) if segments else []
        if (segments, pairs) != (self.segments, self.pairs):
            self.segments, self.pairs = segments, pairs
            self.rigid &= set(segments)
            self.pinned &= set(segments)
            kept = [p for p in self._parsed() if tuple(sorted(p)) in pairs]
            self.fuse_text = format_fuse(kept) if kept != self._parsed() else self.fuse_text
        self.changed.emit()

    def _parsed(self) -> list[tuple[int, int]]:
        try:
            return parse_fuse(self.fuse_text)
        except FlexviewInputError:
            return []

    def checked_pairs(self) -> set[tuple[int, int]]:
        """The touching pairs that the fuse list joins, as ``(min, max)``."""
        return {tuple(sorted(p)) for p in self._parsed()}

    def set_fuse_text(self, text: str) -> None:
        self.fuse_text = text.strip()
        self.changed.emit()

    def set_pair_checked(self, pair: tuple[int, int], on: bool) -> None:
        """Fuse (or not) a touching pair; the fuse list is rewritten as a tree from its root."""
        current = self._parsed()
        edges = self.checked_pairs()
        edges = edges | {tuple(sorted(pair))} if on else edges - {tuple(sorted(pair))}
        root = current[0][0] if current else None
        self.fuse_text = format_fuse(fuse_from_edges(edges, root))
        self.changed.emit()

    def set_flag(self, segment: int, kind: str, on: bool) -> None:
        """Mark a segment ``"rigid"`` or ``"pinned"`` (or clear the mark)."""
        chosen = self.rigid if kind == "rigid" else self.pinned
        (chosen.add if on else chosen.discard)(int(segment))
        self.changed.emit()

    def fuse_problem(self) -> str:
        """"" when the fuse list is a tree over touching segments, else the reason."""
        try:
            pairs = parse_fuse(self.fuse_text)
            check_fuse_tree(pairs, self.segments)
        except FlexviewInputError as exc:
            return str(exc)
        for a, b in pairs:
            if tuple(sorted((a, b))) not in self.pairs:
                return f"'{a}>{b}': segments {a} and {b} do not touch, so they cannot be fused"
        return ""

    def tree_text(self) -> str:
        """The fusion tree as indented lines (``"0\\n└ 1\\n  └ 2"``), or the separate segments."""
        pairs = self._parsed()
        if not pairs:
            return "no fusion: every segment moves on its own"
        children: dict[int, list[int]] = {}
        for a, b in pairs:
            children.setdefault(a, []).append(b)
        lines: list[str] = []

        def walk(node: int, depth: int) -> None:
            lines.append(("  " * (depth - 1) + "└ " if depth else "") + str(node))
            for child in children.get(node, []):
                walk(child, depth + 1)

        walk(pairs[0][0], 0)
        alone = [s for s in self.segments if s not in {x for p in pairs for x in p}]
        if alone:
            lines.append("separate: " + ", ".join(map(str, alone)))
        return "\n".join(lines)

    # ------------------------------------------------------------------ cut and save
    def cut_with(self, labels: np.ndarray, rigid_weight: float = 20.0) -> TetMesh:
        """Cut the base mesh by ``labels`` (over the map's box) with the current choices."""
        if self.base is None:
            raise FlexviewInputError("build the mesh first", field="mesh")
        problem = self.fuse_problem()
        if problem:
            raise FlexviewInputError(problem, field="--fuse")
        labels = np.asarray(labels)
        px = self.pixel_size if labels.shape[0] == self.base.box else None
        self.cut = cut_mesh(self.base, labels, self.fuse_text, rigid=sorted(self.rigid),
                            pinned=sorted(self.pinned), rigid_weight=rigid_weight, labels_pixel_size=px)
        self.changed.emit()
        return self.cut

    def mesh(self) -> TetMesh | None:
        """The mesh to save: the cut mesh when there is one, else the base mesh."""
        return self.cut if self.cut is not None else self.base

    def save(self, path: str | Path) -> Path:
        mesh = self.mesh()
        if mesh is None:
            raise FlexviewInputError("build the mesh first", field="mesh")
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(".npz")
        mesh.save(path)
        return path


def vertex_average(mesh: TetMesh, values: np.ndarray) -> np.ndarray:
    """Per-vertex mean of a per-cell quantity (C,) over the cells that hold the vertex, (V,)."""
    total = np.bincount(mesh.cells.ravel(), np.repeat(values, 4), minlength=mesh.n_vertices)
    count = np.bincount(mesh.cells.ravel(), minlength=mesh.n_vertices)
    return total / np.maximum(count, 1)


def vertex_segment(mesh: TetMesh) -> np.ndarray:
    """A segment per vertex (V,): the largest segment id of the cells that hold it."""
    seg = np.zeros(mesh.n_vertices, np.int64)
    np.maximum.at(seg, mesh.cells.ravel(), np.repeat(mesh.segment, 4))
    return seg


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
        self.cell_size = QDoubleSpinBox()
        self.cell_size.setRange(0.0, 1000.0)
        self.cell_size.setSpecialValueText("auto")
        self.cell_size.setSuffix(" Å")
        self.cell_size.setToolTip("cell (cube) edge in Å; overrides cells across")
        self.cells = QSpinBox()
        self.cells.setRange(1, 200)
        self.cells.setValue(20)
        self.cells.setToolTip("cells across the box (cryoSPARC default 20)")
        self.dilate = QDoubleSpinBox()
        self.dilate.setRange(0.0, 100.0)
        self.dilate.setValue(6.0)
        self.dilate.setSuffix(" Å")
        self.dilate.setToolTip("dilation of the thresholded map covered by the mesh")
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

        layout.addWidget(heading("Segments"))
        hint = QLabel(f"paint the \"{SEGMENTS_LAYER}\" layer coarsely (brush, fill, erase; 0 is solvent), "
                      "or start from a proposal")
        hint.setWordWrap(True)
        layout.addWidget(hint)
        row = QHBoxLayout()
        self.n_segments = QSpinBox()
        self.n_segments.setRange(1, 50)
        self.n_segments.setValue(2)
        self.n_segments.setPrefix("parts: ")
        propose = QPushButton("Propose segments")
        propose.setToolTip("watershed of the thresholded map into this many parts")
        propose.clicked.connect(self.propose)
        row.addWidget(self.n_segments)
        row.addWidget(propose, 1)
        layout.addLayout(row)
        self.segment_table = QTableWidget(0, 4)
        self.segment_table.setHorizontalHeaderLabels(["segment", "voxels", "rigid", "pinned"])
        self.segment_table.verticalHeader().setVisible(False)
        self.segment_table.setMaximumHeight(140)
        self.segment_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.segment_table.itemChanged.connect(self._segment_item_changed)
        layout.addWidget(self.segment_table)

        layout.addWidget(heading("Fusion"))
        self.pair_table = QTableWidget(0, 2)
        self.pair_table.setHorizontalHeaderLabels(["fuse", "touching segments"])
        self.pair_table.verticalHeader().setVisible(False)
        self.pair_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.pair_table.setMaximumHeight(140)
        self.pair_table.itemChanged.connect(self._pair_item_changed)
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
        verts = _layers.physical_to_world(mesh.vertices, mesh.box, mesh.pixel_size)
        data = (verts, _layers.boundary_faces(mesh.cells), values)
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
