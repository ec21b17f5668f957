"""State of the Mesh widget: the consensus map at the training box, the regular mesh over it,
the painted segments, which interfaces to fuse, the cut mesh and its file.

:class:`MeshState` holds the bookkeeping (segments present, touching pairs, the fuse list and
its validation) and calls the same engine as ``flexview mesh``. The fuse list is written in
3DFlex's syntax (``"1>2, 2>3"``, see :mod:`flexview.model.cutmesh`): a tree of ``parent>child``
pairs grown from its first segment.

References
----------
Punjani, A. & Fleet, D. J. (2023). 3DFlex: determining structure and motion of flexible
proteins from cryo-EM. Nature Methods 20, 860–870.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from psygnal import Signal

from flexview.errors import FlexviewInputError
from flexview.io.meshfile import write_mesh
from flexview.model.cutmesh import (check_fuse_tree, cut_mesh, format_fuse, fuse_from_edges, parse_fuse,
                                    propose_segments, touching_pairs)
from flexview.model.mesh import TetMesh, auto_threshold, build_regular_mesh
from flexview.preprocess import read_map_at_box


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
        error = self._fuse_error()
        return "" if error is None else str(error)

    def _fuse_error(self) -> FlexviewInputError | None:
        try:
            pairs = parse_fuse(self.fuse_text)
            check_fuse_tree(pairs, self.segments)
        except FlexviewInputError as exc:
            return exc
        for a, b in pairs:
            if tuple(sorted((a, b))) not in self.pairs:
                return FlexviewInputError(f"'{a}>{b}': segments {a} and {b} do not touch, so they cannot be fused",
                                          field="--fuse")
        return None

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
        error = self._fuse_error()
        if error is not None:
            raise error
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
        write_mesh(path, mesh)
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
