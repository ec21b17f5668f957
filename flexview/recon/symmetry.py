"""Post-hoc point-group symmetrisation of maps (Cn, Dn), for symmetric particles trained in C1.

Conventions as in RELION: the n-fold axis of Cn and Dn is z, and the two-fold axes of Dn are
perpendicular to it, one along x. Rotations are about the map origin (voxel N//2 on each axis).
A symmetrised map is the average of the map over every operator of the group.
"""
from __future__ import annotations

import re

import numpy as np
import torch
from scipy import ndimage

from flexview.errors import FlexviewInputError
from flexview.model.grid import centre_index, voxel_coords

__all__ = ["parse_symmetry", "symmetrise", "symmetry_matrices"]


def parse_symmetry(symmetry: str) -> tuple[str, int]:
    """``"C4"`` → ("C", 4), ``"d7"`` → ("D", 7); other groups raise FlexviewInputError."""
    m = re.fullmatch(r"\s*([CcDd])\s*(\d+)\s*", str(symmetry))
    if not m or int(m.group(2)) < 1:
        raise FlexviewInputError(f"unsupported symmetry {symmetry!r}: expected Cn or Dn (n ≥ 1)",
                                 field="--symmetry")
    return m.group(1).upper(), int(m.group(2))


def _rot_z(angle_rad: float) -> np.ndarray:
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def symmetry_matrices(symmetry: str) -> np.ndarray:
    """Rotation matrices of the group acting on (x, y, z), (G, 3, 3): G = n (Cn) or 2n (Dn)."""
    kind, n = parse_symmetry(symmetry)
    cyclic = [_rot_z(2.0 * np.pi * k / n) for k in range(n)]
    if kind == "C":
        return np.array(cyclic)
    flip_x = np.diag([1.0, -1.0, -1.0])          # two-fold about x
    return np.array(cyclic + [r @ flip_x for r in cyclic])


def symmetrise(volume: np.ndarray, symmetry: str, *, order: int = 3) -> np.ndarray:
    """The average of ``volume`` ``[z, y, x]`` over the operators of ``symmetry``.

    Each operator R is applied by resampling ``V(Rᵀ r)`` with a spline of ``order`` (exact for
    operators that map voxels onto voxels, e.g. the 90° rotations of C4 and the two-folds of Dn).
    Returns float32, same shape.
    """
    vol = np.asarray(volume, dtype=np.float64)
    if vol.ndim != 3 or len(set(vol.shape)) != 1:
        raise FlexviewInputError(f"symmetrisation needs a cubic map, got {vol.shape}", field="volume")
    mats = symmetry_matrices(symmetry)
    if len(mats) == 1:
        return vol.astype(np.float32)
    box = vol.shape[0]
    coeffs = ndimage.spline_filter(vol, order=order, mode="constant") if order > 1 else vol
    grid = voxel_coords(box, 1.0, dtype=torch.float64).numpy()        # (z, y, x, 3) in voxels
    out = np.zeros_like(vol)
    c = centre_index(box)
    for r in mats:
        for z in range(box):                                           # slab-wise: memory O(box²)
            src = grid[z].reshape(-1, 3) @ r                           # rows: Rᵀ p
            idx = src[:, ::-1].T + c                                   # (iz, iy, ix)
            out[z] += ndimage.map_coordinates(coeffs, idx, order=order, mode="constant", cval=0.0,
                                              prefilter=False).reshape(box, box)
    return (out / len(mats)).astype(np.float32)
