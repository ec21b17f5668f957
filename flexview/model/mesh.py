"""Tetrahedral mesh over the consensus density, on which the flow generator moves vertices.

Coordinates are (x, y, z) in Å in the frame of :func:`flexview.model.grid.voxel_coords` (origin
at voxel ``box // 2``). A regular mesh is a grid of cubes of edge ``grid_spacing`` whose corner
(0, 0, 0) is at ``grid_origin``; each cube is split into the six Kuhn (Freudenthal) tetrahedra
that share its main diagonal, so faces match between neighbours. The grid structure is kept with
the mesh so that :func:`locate` finds the cell of a point in O(1). Meshes are read and written
by :mod:`flexview.io.meshfile`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import cKDTree

from flexview.errors import FlexviewInputError
from flexview.model.grid import centre_index, voxel_coords

__all__ = ["TetMesh", "build_regular_mesh", "density_mask", "auto_threshold", "locate",
           "rest_inverse"]

# Kuhn tetrahedra of the unit cube: permutation π of axes (x=0, y=1, z=2); the tetrahedron
# (0, e_π0, e_π0 + e_π1, 1) holds the points with f_π0 ≥ f_π1 ≥ f_π2.
_PERMUTATIONS = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))
_SLOT_OF_CODE = np.array([-1, 0, 1, 2, -1, 3, 4, 5, -1])     # 3·π0 + π1 → index in _PERMUTATIONS


@dataclass
class TetMesh:
    """A tetrahedral mesh in Å.

    Attributes
    ----------
    vertices : (V, 3) float64, (x, y, z) in Å.
    cells : (C, 4) int64 vertex indices, positively oriented.
    rigidity_weight : (C,) float64, per-cell weight of the rigidity penalty.
    pinned : (V,) bool, vertices whose displacement is forced to zero.
    segment : (C,) int64, segment label per cell (all 0 for a regular mesh).
    box, pixel_size : the map the mesh was built for (pixels, Å/px).
    grid_origin : (3,) Å or None, corner of cube (0, 0, 0) of a regular mesh.
    grid_spacing : cube edge in Å or None.
    grid_shape : (3,) cubes along (x, y, z) or None.
    """

    vertices: np.ndarray
    cells: np.ndarray
    rigidity_weight: np.ndarray
    pinned: np.ndarray
    segment: np.ndarray
    box: int
    pixel_size: float
    grid_origin: np.ndarray | None = None
    grid_spacing: float | None = None
    grid_shape: np.ndarray | None = None

    def __post_init__(self):
        self.vertices = np.asarray(self.vertices, dtype=np.float64).reshape(-1, 3)
        self.cells = np.asarray(self.cells, dtype=np.int64).reshape(-1, 4)
        n_v, n_c = len(self.vertices), len(self.cells)
        self.rigidity_weight = _vector(self.rigidity_weight, n_c, np.float64, "rigidity_weight")
        self.pinned = _vector(self.pinned, n_v, bool, "pinned")
        self.segment = _vector(self.segment, n_c, np.int64, "segment")
        self.box, self.pixel_size = int(self.box), float(self.pixel_size)
        if n_c and (self.cells.min() < 0 or self.cells.max() >= n_v):
            raise FlexviewInputError("cell vertex index out of range", field="cells")
        if self.grid_origin is not None:
            self.grid_origin = np.asarray(self.grid_origin, dtype=np.float64).reshape(3)
            self.grid_spacing = float(self.grid_spacing)
            self.grid_shape = np.asarray(self.grid_shape, dtype=np.int64).reshape(3)

    @property
    def n_vertices(self) -> int:
        return len(self.vertices)

    @property
    def n_cells(self) -> int:
        return len(self.cells)

    def edge_matrices(self) -> np.ndarray:
        """Per cell, the columns ``x1 − x0, x2 − x0, x3 − x0`` (Å), shape (C, 3, 3)."""
        x = self.vertices[self.cells]
        return (x[:, 1:] - x[:, :1]).transpose(0, 2, 1)

    def cell_volumes(self) -> np.ndarray:
        """Signed volume of every cell in Å³, shape (C,) (positive for a valid mesh)."""
        return np.linalg.det(self.edge_matrices()) / 6.0

    def scaled(self, *, box: int | None = None, pixel_size: float | None = None) -> "TetMesh":
        """The same mesh for another box or pixel size (coordinates are in Å, so only metadata)."""
        return replace(self, box=self.box if box is None else box,
                       pixel_size=self.pixel_size if pixel_size is None else pixel_size)


def _vector(a, n: int, dtype, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=dtype)
    a = np.full(n, a, dtype=dtype) if a.ndim == 0 else a.reshape(-1)
    if len(a) != n:
        raise FlexviewInputError(f"expected {n} entries, got {len(a)}", field=name)
    return a


def auto_threshold(density: np.ndarray) -> float:
    """Default density threshold: Otsu's threshold of the positive part of the map.

    Otsu's method splits the histogram of ``max(density, 0)`` into two classes (solvent and
    protein) with maximal between-class variance; it needs no tuning for a map whose solvent
    is near zero, which is the case for consensus maps and simulated maps alike.
    """
    from skimage.filters import threshold_otsu

    d = np.clip(np.asarray(density, dtype=np.float64), 0.0, None)
    if not np.isfinite(d).all() or d.max() <= d.min():
        raise FlexviewInputError("the map is empty or not finite; cannot pick a threshold",
                                 field="density")
    return float(threshold_otsu(d))


def density_mask(density: np.ndarray, pixel_size: float, *, threshold: float | None = None,
                 dilate_A: float = 0.0) -> np.ndarray:
    """Voxels (z, y, x) with density above ``threshold``, dilated by ``dilate_A`` Å (bool)."""
    density = np.asarray(density)
    t = auto_threshold(density) if threshold is None else float(threshold)
    mask = density > t
    if not mask.any():
        raise FlexviewInputError(f"no voxel above the threshold {t:g}", field="threshold")
    if dilate_A > 0:
        mask = ndimage.distance_transform_edt(~mask) * pixel_size <= dilate_A
    return mask


def build_regular_mesh(density: np.ndarray, pixel_size: float, *, threshold: float | None = None,
                       cell_size_A: float | None = None, cells_across: int = 20,
                       dilate_A: float = 6.0, pin_mask: np.ndarray | None = None,
                       rigidity_range: tuple[float, float] = (0.5, 1.0)) -> TetMesh:
    """Regular tetrahedral mesh covering the thresholded, dilated density.

    Parameters
    ----------
    density : (box, box, box) map, [z, y, x].
    pixel_size : Å/voxel.
    threshold : density threshold; default :func:`auto_threshold` (Otsu).
    cell_size_A : cube edge in Å; default ``box · pixel_size / cells_across``.
    cells_across : cubes across the box when ``cell_size_A`` is not given (cryoSPARC: 20).
    dilate_A : dilation of the thresholded density in Å.
    pin_mask : (box, box, box) bool [z, y, x]; vertices whose nearest voxel is in it are pinned.
    rigidity_range : (w_empty, w_dense): cell weight in the emptiest and the densest cube,
        linear in the cube's mean (positive) density in between.

    Returns
    -------
    TetMesh holding every cube (all six tetrahedra) that contains a voxel of the dilated mask,
    so every such voxel lies in a cell.
    """
    density = np.asarray(density, dtype=np.float64)
    if density.ndim != 3 or len(set(density.shape)) != 1:
        raise FlexviewInputError(f"expected a cubic map, got shape {density.shape}", field="density")
    box = density.shape[0]
    mask = density_mask(density, pixel_size, threshold=threshold, dilate_A=dilate_A)
    spacing = float(cell_size_A) if cell_size_A else box * pixel_size / cells_across
    n = int(np.ceil(box * pixel_size / spacing - 1e-9))
    lo = (-centre_index(box) - 0.5) * pixel_size
    origin = np.full(3, lo + 0.5 * box * pixel_size - 0.5 * n * spacing)
    shape = np.array([n, n, n])
    coords = voxel_coords(box, pixel_size, dtype=torch.float64).numpy().reshape(-1, 3)
    cube, inside = cube_index(coords, origin, spacing, shape)
    kept = np.unique(cube[mask.reshape(-1) & inside])
    total = np.bincount(cube[inside], weights=np.clip(density.reshape(-1), 0, None)[inside],
                        minlength=int(np.prod(shape)))
    mean = (total / np.maximum(np.bincount(cube[inside], minlength=len(total)), 1))[kept]
    vertices, cells = _kuhn_cells(kept, origin, spacing, shape)
    w_lo, w_hi = rigidity_range
    weight = w_lo + (w_hi - w_lo) * np.clip(mean / max(mean.max(), 1e-30), 0.0, 1.0)
    mesh = TetMesh(vertices, cells, np.repeat(weight, 6), np.zeros(len(vertices), bool),
                   np.zeros(len(cells), np.int64), box, pixel_size, origin, spacing, shape)
    if pin_mask is not None:
        mesh.pinned = _pinned(vertices, np.asarray(pin_mask, bool), box, pixel_size)
    return mesh


def _kuhn_cells(cubes: np.ndarray, origin: np.ndarray, spacing: float, shape: np.ndarray):
    """Vertices (V, 3) Å and positively oriented cells (6 per cube, cube-major) of ``cubes``."""
    nx, ny, _ = shape
    corner = np.stack([cubes % nx, (cubes // nx) % ny, cubes // (nx * ny)], axis=1)
    tets = []
    for perm in _PERMUTATIONS:
        steps = [np.zeros(3, np.int64)]
        for axis in perm:
            steps.append(steps[-1] + np.eye(3, dtype=np.int64)[axis])
        tets.append(np.stack([corner + s for s in steps], axis=1))       # (K, 4, 3)
    grid_vertex = np.stack(tets, axis=1).reshape(-1, 4, 3)                 # cube-major
    flat = grid_vertex[..., 0] + (nx + 1) * (grid_vertex[..., 1] + (ny + 1) * grid_vertex[..., 2])
    used, cells = np.unique(flat, return_inverse=True)
    cells = cells.reshape(-1, 4)
    ijk = np.stack([used % (nx + 1), (used // (nx + 1)) % (ny + 1), used // ((nx + 1) * (ny + 1))], 1)
    vertices = origin + ijk * spacing
    x = vertices[cells]
    flipped = np.linalg.det((x[:, 1:] - x[:, :1]).transpose(0, 2, 1)) < 0     # odd permutations
    cells[flipped] = cells[flipped][:, [0, 2, 1, 3]]
    return vertices, cells


def _pinned(vertices: np.ndarray, pin_mask: np.ndarray, box: int, pixel_size: float) -> np.ndarray:
    if pin_mask.shape != (box,) * 3:
        raise FlexviewInputError(f"pin mask shape {pin_mask.shape} != map shape {(box,) * 3}",
                                 field="pin_mask")
    idx = np.rint(vertices[:, ::-1] / pixel_size + centre_index(box)).astype(np.int64)
    inside = ((idx >= 0) & (idx < box)).all(axis=1)
    pinned = np.zeros(len(vertices), bool)
    iz, iy, ix = idx[inside].T
    pinned[inside] = pin_mask[iz, iy, ix]
    return pinned


def rest_inverse(mesh: TetMesh) -> np.ndarray:
    """Inverse of every cell's edge matrix (:meth:`TetMesh.edge_matrices`), (C, 3, 3) Å⁻¹."""
    return np.linalg.inv(mesh.edge_matrices())


def cube_index(points: np.ndarray, origin: np.ndarray, spacing: float, shape: np.ndarray):
    """Flat cube index (x fastest) of points (P, 3) Å, and whether each is inside the grid."""
    ijk = np.floor((points - origin) / spacing).astype(np.int64)
    inside = ((ijk >= 0) & (ijk < shape)).all(axis=1)
    ijk = np.clip(ijk, 0, shape - 1)
    return ijk[:, 0] + shape[0] * (ijk[:, 1] + shape[1] * ijk[:, 2]), inside


def _kuhn_slot(points: np.ndarray, origin: np.ndarray, spacing: float) -> np.ndarray:
    """Which of the six Kuhn tetrahedra of its cube holds each point, (P,) in 0..5."""
    frac = (points - origin) / spacing
    frac -= np.floor(frac)
    order = np.argsort(-frac, axis=1, kind="stable")
    return _SLOT_OF_CODE[3 * order[:, 0] + order[:, 1]]


def locate(mesh: TetMesh, points) -> tuple[np.ndarray, np.ndarray]:
    """Cell and barycentric coordinates of each point.

    Parameters
    ----------
    mesh : TetMesh
    points : (P, 3) (x, y, z) in Å (numpy or tensor).

    Returns
    -------
    cell : (P,) int64, -1 for points outside the mesh.
    bary : (P, 4) float64 with ``Σ_i bary_i · vertices[cell_i] = point`` (zeros outside).
    """
    points = np.asarray(points.detach().cpu() if isinstance(points, torch.Tensor) else points,
                        dtype=np.float64).reshape(-1, 3)
    cell = _grid_cells(mesh, points) if mesh.grid_origin is not None else _searched_cells(mesh, points)
    bary = np.zeros((len(points), 4))
    hit = cell >= 0
    if hit.any():
        bary[hit] = _barycentric(mesh, rest_inverse(mesh), cell[hit], points[hit])
    return cell, bary


def _barycentric(mesh: TetMesh, inv: np.ndarray, cell: np.ndarray, points: np.ndarray):
    b = np.einsum("pij,pj->pi", inv[cell], points - mesh.vertices[mesh.cells[cell, 0]])
    return np.concatenate([1.0 - b.sum(axis=1, keepdims=True), b], axis=1)


def _grid_cells(mesh: TetMesh, points: np.ndarray) -> np.ndarray:
    """Cell lookup through the cube grid: cube of the point, then its Kuhn tetrahedron."""
    origin, spacing, shape = mesh.grid_origin, mesh.grid_spacing, mesh.grid_shape
    centroid = mesh.vertices[mesh.cells].mean(axis=1)
    cube, inside = cube_index(centroid, origin, spacing, shape)
    table = np.full(int(np.prod(shape)) * 6, -1, dtype=np.int64)
    table[(cube * 6 + _kuhn_slot(centroid, origin, spacing))[inside]] = np.flatnonzero(inside)
    cube, inside = cube_index(points, origin, spacing, shape)
    return np.where(inside, table[cube * 6 + _kuhn_slot(points, origin, spacing)], -1)


def _searched_cells(mesh: TetMesh, points: np.ndarray, candidates: int = 16) -> np.ndarray:
    """Cell lookup for meshes without a grid: test the cells with the nearest centroids."""
    inv = rest_inverse(mesh)
    k = min(candidates, mesh.n_cells)
    _, near = cKDTree(mesh.vertices[mesh.cells].mean(axis=1)).query(points, k=k)
    near = near.reshape(len(points), k)
    cell = np.full(len(points), -1, dtype=np.int64)
    best = np.full(len(points), -np.inf)
    for j in range(k):
        worst = _barycentric(mesh, inv, near[:, j], points).min(axis=1)
        better = worst > best
        cell[better], best[better] = near[better, j], worst[better]
    cell[best < -1e-9] = -1
    return cell
