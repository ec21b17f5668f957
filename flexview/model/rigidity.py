"""Rigidity prior on the mesh deformation and the latent prior.

Within cell j the flow is affine, ``x ↦ F_j x + b``, with deformation gradient
``F_j = I + ∇u``. The penalty ``Σ_j w_j Σ_ℓ (σ_ℓ(F_j) − 1)²`` vanishes for rigid motions.

It is evaluated as ``Σ_j w_j ‖F_j − R_j‖²_F`` with ``R_j`` the orthogonal polar factor of
``F_j`` (``F = R S``, S symmetric positive semi-definite with eigenvalues σ_ℓ): the two are equal,
and since ``Σ σ_ℓ = max_Q tr(Qᵀ F)`` over orthogonal Q is attained at ``Q = R``, the gradient
``2 (F − R)`` is exact when R is treated as a constant (Danskin's theorem). This needs no SVD
backward, so repeated singular values (e.g. every rigid cell) are harmless. R comes from scaled
Newton iterations ``R ← (γR + (γR)^{-T}) / 2``, with an SVD for the few cells that do not converge.
"""
from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["cell_affine", "rigidity_loss", "latent_prior", "polar_rotation"]


def _tensor(a, like: Tensor, dtype=None) -> Tensor:
    return torch.as_tensor(np.asarray(a), dtype=dtype or like.dtype, device=like.device)


def cell_affine(mesh, vertex_disp: Float[Tensor, "batch vertices 3"], *,
                rest_inv: Tensor | None = None) -> Float[Tensor, "batch cells 3 3"]:
    """Deformation gradient ``F = I + ∇u`` of every cell, (B, C, 3, 3).

    Parameters
    ----------
    mesh : TetMesh (its ``vertices`` (V, 3) Å and ``cells`` (C, 4)).
    vertex_disp : (B, V, 3) displacements in Å.
    rest_inv : (C, 3, 3) precomputed :func:`flexview.model.mesh.rest_inverse` (optional).
    """
    from flexview.model.mesh import rest_inverse

    cells = _tensor(mesh.cells, vertex_disp, torch.long)
    inv = _tensor(rest_inverse(mesh), vertex_disp) if rest_inv is None else rest_inv
    return deformation_gradient(vertex_disp, cells, inv)


def deformation_gradient(vertex_disp: Float[Tensor, "batch vertices 3"], cells: Tensor,
                         rest_inv: Float[Tensor, "cells 3 3"]) -> Float[Tensor, "batch cells 3 3"]:
    """``I + [u1−u0, u2−u0, u3−u0] · rest_inv`` per cell; ``cells`` (C, 4) int64."""
    u = vertex_disp[:, cells]                                         # (B, C, 4, 3)
    du = (u[:, :, 1:] - u[:, :, :1]).transpose(-1, -2)                # columns u_i − u_0
    eye = torch.eye(3, dtype=vertex_disp.dtype, device=vertex_disp.device)
    return eye + du @ rest_inv


def _inverse_transpose(m: Tensor) -> tuple[Tensor, Tensor]:
    """``m^{-T}`` (via cofactors) and ``det m`` for a batch of 3×3 matrices."""
    a, b, c = m[..., 0, :], m[..., 1, :], m[..., 2, :]
    cof = torch.stack([torch.linalg.cross(b, c), torch.linalg.cross(c, a),
                       torch.linalg.cross(a, b)], dim=-2)
    det = (a * cof[..., 0, :]).sum(-1)
    return cof / det[..., None, None], det


@torch.no_grad()
def polar_rotation(f: Float[Tensor, "*batch 3 3"], max_iter: int = 30) -> Float[Tensor, "*batch 3 3"]:
    """Orthogonal polar factor R of each 3×3 matrix (``F = R S``); no gradient."""
    tol = 100 * torch.finfo(f.dtype).eps
    r = f.clone()
    delta = torch.full(f.shape[:-2], float("inf"), dtype=f.dtype, device=f.device)
    for _ in range(max_iter):
        inv_t, det = _inverse_transpose(r)
        gamma = det.abs().pow(-1.0 / 3.0)[..., None, None]
        new = 0.5 * (gamma * r + inv_t / gamma)
        delta = (new - r).abs().amax(dim=(-2, -1))
        r = torch.where(torch.isfinite(new), new, r)
        if not bool((delta > tol).any()):
            break
    bad = ~(delta <= tol)       # NaN-safe: not converged or not finite
    if bool(bad.any()):
        u, _, vh = torch.linalg.svd(f[bad])
        r[bad] = u @ vh
    return r


def rigidity_from_gradient(f: Float[Tensor, "batch cells 3 3"],
                           weight: Float[Tensor, "cells"]) -> Float[Tensor, "batch"]:
    """``Σ_j w_j Σ_ℓ (σ_ℓ(F_j) − 1)²`` from deformation gradients, (B,)."""
    r = polar_rotation(f.detach())
    return (((f - r) ** 2).sum(dim=(-2, -1)) * weight).sum(-1)


def rigidity_loss(mesh, vertex_disp: Float[Tensor, "batch vertices 3"], *,
                  rest_inv: Tensor | None = None) -> Float[Tensor, "batch"]:
    """Weighted rigidity penalty of a mesh deformation, (B,).

    ``Σ_j w_j Σ_ℓ (σ_ℓ(F_j) − 1)²`` with ``w_j = mesh.rigidity_weight`` and ``F_j`` from
    :func:`cell_affine`; zero for any rigid motion of the whole mesh.
    """
    f = cell_affine(mesh, vertex_disp, rest_inv=rest_inv)
    return rigidity_from_gradient(f, _tensor(mesh.rigidity_weight, vertex_disp))


def latent_prior(z: Float[Tensor, "batch latent"]) -> Float[Tensor, "batch"]:
    """Negative log of the unit Gaussian prior (up to a constant): ``0.5 |z|²``, (B,)."""
    return 0.5 * (z ** 2).sum(-1)
