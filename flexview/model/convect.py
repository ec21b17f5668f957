"""Convection D(u, V) by forward push, fused with the projection P(φ) (GUIDE §4).

Every canonical voxel y (a mask voxel with density V(y)) moves to y + u(y) and spreads its
density with a finite kernel (see :mod:`flexview.model._kernels`): the kernels are partitions of
unity, so mass is conserved by construction. For a projection the voxel is rotated by the pose
``A`` and pushed straight onto the 2-D image; the kernel along the projection axis integrates to
1, so only the 2-D kernel is needed.

Scale: an image pixel is ``pixel_size × Σ`` (pushed voxel values), a line integral in Å, so a
noise-free particle image is ``IFT(CTF · FT(convect_project(...)))``.
"""
from __future__ import annotations

from jaxtyping import Float
from torch import Tensor

from flexview.model._kernels import KERNELS, kernel_value, splat
from flexview.model.grid import centre_index, coords_to_index

__all__ = ["convect_project", "convect_volume", "image_coords", "projection_affine", "KERNELS",
           "kernel_value"]


def projection_affine(rotations: Float[Tensor, "batch 3 3"], origins_A: Float[Tensor, "batch 2"],
                      box: int, pixel_size: float
                      ) -> tuple[Float[Tensor, "batch 3 2"], Float[Tensor, "batch 2"]]:
    """Affine map from (x, y, z) Å to fractional (row, col) image indices: ``p @ M + t``.

    ``col = ((A p)_x − origin_x) / pixel_size + box // 2`` and likewise ``row`` with y.
    Returns ``M`` (B, 3, 2) in px/Å and ``t`` (B, 2) in pixels.
    """
    m = rotations[:, [1, 0], :].transpose(1, 2) / pixel_size
    t = centre_index(box) - origins_A[:, [1, 0]] / pixel_size
    return m, t


def image_coords(positions: Float[Tensor, "*batch points 3"], rotations: Float[Tensor, "batch 3 3"],
                 origins_A: Float[Tensor, "batch 2"], box: int,
                 pixel_size: float) -> Float[Tensor, "batch points 2"]:
    """Fractional (row, col) image index of points after rotation and shift, (B, P, 2).

    See :func:`projection_affine`.

    Parameters
    ----------
    positions : (B, P, 3) or (P, 3), (x, y, z) in Å.
    rotations : (B, 3, 3) RELION matrices ``A``.
    origins_A : (B, 2) RELION origins (x, y) in Å.
    """
    m, t = projection_affine(rotations, origins_A, box, pixel_size)
    return positions @ m + t[:, None, :]


def convect_project(values: Float[Tensor, "points"], positions: Float[Tensor, "*batch points 3"],
                    rotations: Float[Tensor, "batch 3 3"], origins_A: Float[Tensor, "batch 2"],
                    box: int, pixel_size: float, kernel: str = "linear"
                    ) -> Float[Tensor, "batch box box"]:
    """Push canonical voxels to their deformed, rotated, shifted positions on the image.

    Parameters
    ----------
    values : (P,) density of each mask voxel.
    positions : (B, P, 3) or (P, 3), deformed positions y + u(y), (x, y, z) in Å.
    rotations : (B, 3, 3) pose matrices ``A``.
    origins_A : (B, 2) particle origins (x, y) in Å (the particle sits at centre − origin).
    box : image side in pixels.
    pixel_size : Å/pixel.
    kernel : "linear" (bilinear) or "cubic" (Keys, a = −0.5).

    Returns
    -------
    (B, box, box) projections [y, x] in density × Å; differentiable w.r.t. ``values``,
    ``positions``, ``rotations`` and ``origins_A``.
    """
    coords = image_coords(positions.to(values.dtype), rotations.to(values.dtype),
                          origins_A.to(values.dtype), box, pixel_size)
    return splat(values, coords, (box, box), kernel, scale=pixel_size)


def convect_volume(values: Float[Tensor, "points"], positions: Float[Tensor, "*batch points 3"],
                   box: int, pixel_size: float, kernel: str = "linear"
                   ) -> Float[Tensor, "*batch box box box"]:
    """Deformed density W = D(u, V) on the voxel grid.

    Parameters
    ----------
    values : (P,) canonical density of each mask voxel.
    positions : (B, P, 3) or (P, 3), deformed positions (x, y, z) in Å.

    Returns
    -------
    (B, box, box, box) [z, y, x], or (box, box, box) for unbatched positions; ``Σ W = Σ V`` while
    the density stays inside the box.
    """
    batched = positions.ndim == 3
    pos = positions if batched else positions[None]
    coords = coords_to_index(pos.to(values.dtype), box, pixel_size)      # (iz, iy, ix)
    out = splat(values, coords, (box, box, box), kernel)
    return out if batched else out[0]
