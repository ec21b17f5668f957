"""Particle orientations: RELION Euler angles, cryoSPARC rotation vectors, matrices.

Every rotation matrix in flexview is RELION's ``A`` (``Euler_angles2matrix``): it maps the
reference (map) frame to the particle frame, so a map point ``r`` (x, y, z in Å) appears in the
particle image at ``((A r)_x, (A r)_y)`` before the shift. cryoSPARC's ``alignments3D/pose`` is a
rotation vector whose matrix ``expm([r]x)`` is ``A.T``.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation


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
