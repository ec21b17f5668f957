"""Particle orientations: RELION Euler angles, cryoSPARC rotation vectors, matrices.

Every rotation matrix in flexview is RELION's ``A`` (``Euler_angles2matrix``): it maps the
reference (map) frame to the particle frame, so a map point ``r`` (x, y, z in Å) appears in the
particle image at ``((A r)_x, (A r)_y)`` before the shift. cryoSPARC's ``alignments3D/pose`` is a
rotation vector whose matrix ``expm([r]x)`` is ``A.T``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float
from scipy.spatial.transform import Rotation
from torch import Tensor

__all__ = ["Pose", "euler_to_matrix", "matrix_to_euler", "matrix_to_rotvec", "random_rotations",
           "rotvec_to_matrix"]


@dataclass
class Pose:
    """Poses of a batch of B particles on the compute device.

    ``rotations`` (B, 3, 3): RELION matrices ``A`` (reference frame → particle frame).
    ``origins_A`` (B, 2): RELION origins (x, y) in Å; the particle sits at the image centre minus
    its origin (``rlnOriginXAngst``, ``rlnOriginYAngst``).
    """

    rotations: Float[Tensor, "batch 3 3"]
    origins_A: Float[Tensor, "batch 2"]

    def __post_init__(self):
        if self.rotations.shape[-2:] != (3, 3) or self.origins_A.shape[-1:] != (2,) \
                or self.rotations.shape[0] != self.origins_A.shape[0]:
            raise ValueError(f"rotations {tuple(self.rotations.shape)} and origins "
                             f"{tuple(self.origins_A.shape)} are not (B, 3, 3) and (B, 2)")

    @classmethod
    def from_arrays(cls, rotations, origins_A, *, dtype=torch.float32, device=None) -> "Pose":
        """A Pose from array-likes of shapes (B, 3, 3) and (B, 2)."""
        return cls(torch.as_tensor(np.asarray(rotations), dtype=dtype, device=device),
                   torch.as_tensor(np.asarray(origins_A), dtype=dtype, device=device))

    def __len__(self) -> int:
        return self.rotations.shape[0]

    def __getitem__(self, index) -> "Pose":
        """The particles selected by ``index`` (int tensor/array, slice or bool mask)."""
        if isinstance(index, int):                  # keep the batch axis
            index = slice(index, index + 1 or None)
        return Pose(self.rotations[index], self.origins_A[index])

    def to(self, device=None, dtype=None) -> "Pose":
        """The same poses on ``device`` in ``dtype`` (None: unchanged)."""
        return Pose(self.rotations.to(device=device, dtype=dtype),
                    self.origins_A.to(device=device, dtype=dtype))


def euler_to_matrix(rot_deg, tilt_deg, psi_deg) -> np.ndarray:
    """RELION ZYZ Euler angles (degrees) → rotation matrices ``A``.

    Parameters
    ----------
    rot_deg, tilt_deg, psi_deg : array_like, shape (N,) or scalars
        ``rlnAngleRot``, ``rlnAngleTilt``, ``rlnAnglePsi`` in degrees.

    Returns
    -------
    ndarray, shape (N, 3, 3) (or (3, 3) for scalars), float64
    """
    a, b, g = (np.deg2rad(np.asarray(v, dtype=np.float64)) for v in (rot_deg, tilt_deg, psi_deg))
    ca, sa, cb, sb, cg, sg = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(g), np.sin(g)
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    m = np.empty(np.broadcast(a, b, g).shape + (3, 3))
    m[..., 0, 0] = cg * cc - sg * sa
    m[..., 0, 1] = cg * cs + sg * ca
    m[..., 0, 2] = -cg * sb
    m[..., 1, 0] = -sg * cc - cg * sa
    m[..., 1, 1] = -sg * cs + cg * ca
    m[..., 1, 2] = sg * sb
    m[..., 2, 0] = sc
    m[..., 2, 1] = ss
    m[..., 2, 2] = cb
    return m


def matrix_to_euler(matrices) -> np.ndarray:
    """Rotation matrices ``A`` → RELION Euler angles (degrees), tilt in [0, 180].

    Parameters
    ----------
    matrices : array_like, shape (N, 3, 3)

    Returns
    -------
    ndarray, shape (N, 3): columns rot, tilt, psi in degrees.
    """
    m = np.asarray(matrices, dtype=np.float64).reshape(-1, 3, 3)
    sb = np.hypot(m[:, 0, 2], m[:, 1, 2])
    tilt = np.arctan2(sb, m[:, 2, 2])
    regular = sb > 1e-6
    rot = np.where(regular, np.arctan2(m[:, 2, 1], m[:, 2, 0]), 0.0)
    psi = np.where(
        regular,
        np.arctan2(m[:, 1, 2], -m[:, 0, 2]),
        # gimbal lock: tilt is 0 or 180 and only rot ± psi is defined; put it all in psi
        np.where(m[:, 2, 2] > 0, np.arctan2(-m[:, 1, 0], m[:, 0, 0]), np.arctan2(m[:, 1, 0], -m[:, 0, 0])),
    )
    return np.rad2deg(np.stack([rot, tilt, psi], axis=1))


def rotvec_to_matrix(rotvec_rad) -> np.ndarray:
    """cryoSPARC ``alignments3D/pose`` (rotation vectors, radians) → matrices ``A``, shape (N, 3, 3)."""
    r = np.asarray(rotvec_rad, dtype=np.float64).reshape(-1, 3)
    return np.ascontiguousarray(Rotation.from_rotvec(r).as_matrix().transpose(0, 2, 1))


def matrix_to_rotvec(matrices) -> np.ndarray:
    """Matrices ``A`` → cryoSPARC rotation vectors (radians), shape (N, 3)."""
    m = np.asarray(matrices, dtype=np.float64).reshape(-1, 3, 3)
    return Rotation.from_matrix(m.transpose(0, 2, 1)).as_rotvec()


def random_rotations(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` rotation matrices drawn uniformly from SO(3), shape (n, 3, 3)."""
    return Rotation.random(n, random_state=rng).as_matrix()
