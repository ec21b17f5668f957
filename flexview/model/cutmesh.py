"""Custom meshes: a base mesh cut into one submesh per segment, fused only where the user says.

A label volume of coarse segments (0 = solvent) is first filled so that every voxel takes the
label of its nearest segment voxel; each cell of the base mesh then belongs to the segment at its
centroid. Every segment gets its own copy of each vertex it uses, so neighbouring segments are
free to slide or separate. A fuse list in 3DFlex's syntax ``"0>1, 1>2, 0>3"`` (join 1 to 0, then
2 to 1, then 3 to 0) names the pairs whose shared interface vertices become one again; it must
form a tree grown from its first segment. Segment ids are the label values of the volume.

Cells keep the order and geometry of the base mesh, so the cut mesh keeps the base's grid
metadata and :func:`flexview.model.mesh.locate` finds cells through the grid: a point gets the
cell that holds it, hence the vertices of that cell's segment (on an interface, where two cells
of different segments touch, the grid's fixed tie rule picks one of them).
"""
from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from flexview.errors import FlexviewInputError
from flexview.model.grid import centre_index
from flexview.model.mesh import TetMesh

__all__ = ["cut_mesh", "parse_fuse", "check_fuse_tree", "format_fuse", "fuse_from_edges", "fill_nearest_segment",
           "cell_segments", "touching_pairs", "propose_segments", "DEFAULT_RIGID_WEIGHT"]

DEFAULT_RIGID_WEIGHT = 20.0
_PAIR = re.compile(r"^\s*(-?\d+)\s*>\s*(-?\d+)\s*$")


def parse_fuse(text: str) -> list[tuple[int, int]]:
    """Parse a fuse list ``"0>1, 1>2"`` into ``[(0, 1), (1, 2)]`` (parent, child).

    Pairs are separated by commas (or semicolons); an empty string means no fusion. Only the
    syntax is checked here; :func:`check_fuse_tree` checks the tree against the segments.
    """
    text = (text or "").strip()
    if not text:
        return []
    pairs = []
    for item in re.split(r"[,;]", text):
        if not item.strip():
            continue
        match = _PAIR.match(item)
        if not match:
            raise FlexviewInputError(f"cannot read {item.strip()!r} in the fuse list; expected "
                                     "pairs like '0>1, 1>2' (join 1 to 0, then 2 to 1)", field="--fuse")
        pairs.append((int(match.group(1)), int(match.group(2))))
    return pairs


def check_fuse_tree(pairs: list[tuple[int, int]], segments) -> None:
    """Raise :class:`FlexviewInputError` (field ``--fuse``) unless ``pairs`` grow a tree.

    The first pair's parent is the root; every parent must already be reached from it, every child
    joined once and never to itself (that would close a cycle), and every id must be a segment.
    """
    known = {int(s) for s in segments}
    reached: set[int] = set()
    for parent, child in pairs:
        for s in (parent, child):
            if s not in known:
                raise FlexviewInputError(f"segment {s} in '{parent}>{child}' is not a segment of the mesh "
                                         f"(segments: {', '.join(map(str, sorted(known)))})", field="--fuse")
        if not reached:
            reached.add(parent)
        if parent not in reached:
            raise FlexviewInputError(f"'{parent}>{child}': segment {parent} is not reached from the root "
                                     f"{pairs[0][0]} by the pairs before it; join {parent} first",
                                     field="--fuse")
        if parent == child or child in reached:
            raise FlexviewInputError(f"'{parent}>{child}' closes a cycle: segment {child} is already "
                                     "joined; the fuse list must be a tree", field="--fuse")
        reached.add(child)


def format_fuse(pairs: list[tuple[int, int]]) -> str:
    """``[(0, 1), (1, 2)]`` → ``"0>1, 1>2"`` (the syntax :func:`parse_fuse` reads)."""
    return ", ".join(f"{a}>{b}" for a, b in pairs)


def fuse_from_edges(edges, root: int | None = None) -> list[tuple[int, int]]:
    """Order undirected segment pairs as a fuse list grown from ``root`` (default: the smallest id).

    Edges are visited breadth first from the root, then from the smallest id of every part not yet
    reached; an edge between two segments already joined is kept at the end, so that
    :func:`check_fuse_tree` reports a forest or a cycle instead of it being dropped silently.
    """
    edges = sorted({(min(a, b), max(a, b)) for a, b in edges})
    if not edges:
        return []
    ids = sorted({s for e in edges for s in e})
    roots = ([root] if root in ids else []) + ids
    pairs, reached, used = [], set(), set()
    for start in roots:
        if start in reached:
            continue
        reached.add(start)
        queue = [start]
        while queue:
            parent = queue.pop(0)
            for e in edges:
                if parent in e and e not in used:
                    child = e[1] if e[0] == parent else e[0]
                    if child in reached:
                        continue
                    used.add(e)
                    reached.add(child)
                    pairs.append((parent, child))
                    queue.append(child)
    return pairs + [e for e in edges if e not in used]


def touching_pairs(labels: np.ndarray) -> list[tuple[int, int]]:
    """Pairs ``(a, b)``, ``a < b``, of segments whose filled regions share a face.

    ``labels`` (L, L, L) [z, y, x] is filled first (:func:`fill_nearest_segment`), as :func:`cut_mesh`
    does, so two segments touch when some voxel of one is a 6-neighbour of a voxel of the other.
    """
    filled = fill_nearest_segment(labels)
    found = set()
    for axis in range(3):
        a = np.moveaxis(filled, axis, 0)
        lo, hi = a[:-1].ravel(), a[1:].ravel()
        differ = lo != hi
        pairs = np.stack([np.minimum(lo[differ], hi[differ]), np.maximum(lo[differ], hi[differ])], 1)
        found.update(map(tuple, np.unique(pairs, axis=0).tolist()))
    return sorted((int(a), int(b)) for a, b in found)


def propose_segments(density: np.ndarray, threshold: float, n_segments: int = 2,
                     min_distance_px: int = 3) -> np.ndarray:
    """A first segmentation of ``density`` (z, y, x): watershed of the thresholded map.

    The map above ``threshold`` is split by a watershed of its distance transform, seeded at its
    ``n_segments`` deepest interior maxima at least ``min_distance_px`` voxels apart; specks of
    density not reached from a seed stay 0 (solvent). Returns int64 labels 1..n, 0 for solvent.
    """
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    mask = np.asarray(density) > float(threshold)
    if not mask.any():
        raise FlexviewInputError(f"no voxel above the threshold {threshold:g}", field="threshold")
    distance = ndimage.distance_transform_edt(mask)
    peaks = peak_local_max(distance, min_distance=max(1, int(min_distance_px)), labels=mask.astype(np.int64),
                           num_peaks=max(1, int(n_segments)), exclude_border=False)
    markers = np.zeros(mask.shape, np.int64)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-distance, markers, mask=mask).astype(np.int64)


def fill_nearest_segment(labels: np.ndarray) -> np.ndarray:
    """Every voxel takes the label of its nearest labelled (non-zero) voxel; (z, y, x) int64."""
    labels = _as_labels(labels)
    solvent = labels == 0
    if solvent.all():
        raise FlexviewInputError("the segmentation holds no segment (every voxel is 0)", field="--segments")
    if not solvent.any():
        return labels
    idx = ndimage.distance_transform_edt(solvent, return_distances=False, return_indices=True)
    return labels[tuple(idx)]


def cell_segments(mesh: TetMesh, filled: np.ndarray, pixel_size: float) -> np.ndarray:
    """Label of the (filled) segmentation voxel nearest each cell centroid, (C,) int64.

    ``filled`` is (L, L, L) [z, y, x] with voxel size ``pixel_size`` Å, centred like the mesh's map.
    """
    box = filled.shape[0]
    centroid = mesh.vertices[mesh.cells].mean(axis=1)                       # (C, 3) x, y, z Å
    idx = np.rint(centroid[:, ::-1] / pixel_size + centre_index(box)).astype(np.int64)
    iz, iy, ix = np.clip(idx, 0, box - 1).T
    return filled[iz, iy, ix]


def cut_mesh(base: TetMesh, labels, fuse: str | list[tuple[int, int]] | None = "", rigid=(), pinned=(),
             rigid_weight: float = DEFAULT_RIGID_WEIGHT, *,
             labels_pixel_size: float | None = None) -> TetMesh:
    """Split ``base`` into one submesh per segment and fuse the listed interfaces.

    Parameters
    ----------
    base : the regular mesh to cut (coordinates in Å).
    labels : (L, L, L) [z, y, x] integer label volume, 0 = solvent, spanning the same physical
        box as the mesh's map (``base.box · base.pixel_size`` Å); L may differ from ``base.box``.
    fuse : fuse list, ``"0>1, 1>2"`` or ``[(0, 1), (1, 2)]`` (parent, child): a tree.
    rigid : segment ids whose cells get the rigidity weight ``rigid_weight``.
    pinned : segment ids whose vertices never move (zero displacement).
    rigid_weight : rigidity weight of the rigid segments' cells (default 20).
    labels_pixel_size : voxel size of ``labels`` in Å (default: same physical box as the mesh).

    Returns
    -------
    TetMesh with the base's cells (same order and geometry), ``segment`` set to each cell's label,
    vertices duplicated on unfused interfaces (ordered by base vertex, then segment), and the
    base's grid metadata.
    """
    filled = fill_nearest_segment(labels)
    px = labels_pixel_size or base.box * base.pixel_size / filled.shape[0]
    seg = cell_segments(base, filled, px)
    ids = np.unique(seg)
    if fuse is None or isinstance(fuse, str):
        pairs = parse_fuse(fuse or "")
    else:
        pairs = [(int(a), int(b)) for a, b in fuse]
    check_fuse_tree(pairs, ids)
    rigid, pinned = _segment_list(rigid, ids, "--rigid"), _segment_list(pinned, ids, "--pinned")
    nodes, cell_nodes = _vertex_copies(base, seg, ids)
    comp = _fused_copies(nodes, ids, pairs)
    base_vertex = np.zeros(comp.max() + 1, np.int64)
    base_vertex[comp] = nodes[:, 0]
    cells = comp[cell_nodes]
    weight = base.rigidity_weight.copy()
    weight[np.isin(seg, rigid)] = float(rigid_weight)
    pin = base.pinned[base_vertex].copy()
    pin[np.unique(cells[np.isin(seg, pinned)])] = True
    return replace(base, vertices=base.vertices[base_vertex], cells=cells, rigidity_weight=weight,
                   pinned=pin, segment=seg)


def _as_labels(labels) -> np.ndarray:
    a = np.asarray(labels)
    if a.ndim != 3 or len(set(a.shape)) != 1:
        raise FlexviewInputError(f"the segmentation must be a cubic volume, got shape {a.shape}",
                                 field="--segments")
    if not np.isfinite(a).all() or (a < 0).any() or np.abs(a - np.rint(a)).max() > 1e-3:
        raise FlexviewInputError("segment labels must be non-negative integers (0 = solvent)",
                                 field="--segments")
    return np.rint(a).astype(np.int64)


def _segment_list(values, ids: np.ndarray, field: str) -> np.ndarray:
    values = np.atleast_1d(np.asarray(list(values) if not np.isscalar(values) else [values], dtype=np.int64))
    unknown = sorted(set(values.tolist()) - set(ids.tolist()))
    if unknown:
        raise FlexviewInputError(f"segment {unknown[0]} is not a segment of the mesh "
                                 f"(segments: {', '.join(map(str, ids.tolist()))})", field=field)
    return values


def _vertex_copies(base: TetMesh, seg: np.ndarray, ids: np.ndarray):
    """One node per (base vertex, segment) pair in use, sorted by vertex then segment.

    Returns nodes (M, 2) [base vertex, segment index] and each cell corner's node (C, 4).
    """
    s = np.searchsorted(ids, seg)
    key = base.cells * len(ids) + s[:, None]
    unique, inverse = np.unique(key, return_inverse=True)
    nodes = np.stack([unique // len(ids), unique % len(ids)], axis=1)
    return nodes, inverse.reshape(base.cells.shape)


def _fused_copies(nodes: np.ndarray, ids: np.ndarray, pairs: list[tuple[int, int]]) -> np.ndarray:
    """Merge the copies of each vertex shared by a fused pair; new vertex index per node (M,).

    Components are numbered in node order, so new vertices stay ordered by base vertex.
    """
    n, k = len(nodes), len(ids)
    key = nodes[:, 0] * k + nodes[:, 1]
    rows, cols = [], []
    for parent, child in pairs:
        a, b = np.searchsorted(ids, parent), np.searchsorted(ids, child)
        va, vb = nodes[nodes[:, 1] == a, 0], nodes[nodes[:, 1] == b, 0]
        shared = np.intersect1d(va, vb)
        if not len(shared):
            raise FlexviewInputError(f"'{parent}>{child}': segments {parent} and {child} do not touch "
                                     "(no shared mesh vertex), so they cannot be fused", field="--fuse")
        rows.append(np.searchsorted(key, shared * k + a))
        cols.append(np.searchsorted(key, shared * k + b))
    if not rows:
        return np.arange(n)
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r)), (r, c)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    _, first = np.unique(comp, return_index=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[comp]
