"""Engine geometry in napari world coordinates (Å), for the density, flow and mesh layers.

A map voxel ``[iz, iy, ix]`` of pixel size ``px`` sits at world ``(iz, iy, ix) · px`` (layer scale
``px``, no translation); a physical point ``(x, y, z)`` Å of the engine (origin at voxel
``box // 2``) therefore sits at world ``(z, y, x) + (box // 2) · px``.
"""
from __future__ import annotations

import numpy as np

from flexview.model.grid import centre_index
from flexview.model.mesh import TetMesh


def physical_to_world(points_xyz: np.ndarray, box: int, pixel_size: float) -> np.ndarray:
    """Engine points (..., 3) ``(x, y, z)`` Å → napari world (..., 3) ``(z, y, x)`` Å."""
    return np.asarray(points_xyz, dtype=np.float64)[..., ::-1] + centre_index(box) * pixel_size


def flow_vectors(mesh: TetMesh, displacement: np.ndarray, scale: float = 1.0,
                 min_length_A: float = 0.0) -> np.ndarray:
    """napari Vectors data (V, 2, 3): each mesh vertex (world Å) and its displacement (Å, × ``scale``).

    Vertices that move less than ``min_length_A`` are left out (pinned, empty corners).
    """
    start = physical_to_world(mesh.vertices, mesh.box, mesh.pixel_size)
    move = np.asarray(displacement, dtype=np.float64)[:, ::-1]
    keep = np.linalg.norm(move, axis=1) >= min_length_A
    return np.stack([start[keep], move[keep] * scale], axis=1)


def boundary_faces(cells: np.ndarray) -> np.ndarray:
    """Triangles (F, 3) that belong to exactly one tetrahedron of ``cells`` (C, 4): the mesh surface."""
    cells = np.asarray(cells, dtype=np.int64)
    faces = np.concatenate([cells[:, [1, 2, 3]], cells[:, [0, 3, 2]], cells[:, [0, 1, 3]],
                            cells[:, [0, 2, 1]]])
    key = np.sort(faces, axis=1)
    _, index, counts = np.unique(key, axis=0, return_index=True, return_counts=True)
    return faces[index[counts == 1]]


def deformed_surface(mesh: TetMesh, displacement: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """napari Surface data ``(vertices (V, 3) world Å, faces (F, 3))`` of the mesh moved by ``displacement``."""
    moved = mesh.vertices + np.asarray(displacement, dtype=np.float64)
    return physical_to_world(moved, mesh.box, mesh.pixel_size), boundary_faces(mesh.cells)

