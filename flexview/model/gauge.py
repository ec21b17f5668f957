"""Gauge freedoms of the 3DFlex model: changes that leave every particle's deformed map unchanged.

Two kinds of re-parametrisation leave the particle images exactly as they were:

* an affine change of the latent coordinates, ``z = z' B + μ``, absorbed into the first layer of
  the flow generator (:func:`standardise_latents`, :func:`principal_axes`);
* a change of the canonical conformation (:func:`recentre`).

Affine change of the latents
----------------------------
The flow generator's first layer computes ``W z + b``; with ``z = B ᵀ z' + μ`` it becomes
``(W Bᵀ) z' + (W μ + b)``, so replacing ``W ← W Bᵀ`` and ``b ← b + W μ`` gives every particle
the same displacements at its new coordinates ``z'``. :func:`standardise_latents` centres the
latents and gives each axis unit variance; :func:`principal_axes` also whitens and rotates them
so that axis 1 carries the largest deformation (the axes of a principal component analysis of the
deformation, as in 3-D variability analysis: Punjani & Fleet (2021), J. Struct. Biol. 213:107702).

Canonical conformation
----------------------
The images fix the canonical map and the flow only up to a deformation φ: pushing V by φ and
re-referencing the flow to the pushed map gives exactly the same particle images. Training
leaves V wherever it settled — near the consensus map, whose moving parts sit at their *mean
position*, which for a rotating domain is a conformation no particle has. :func:`recentre` moves
V to the *median* conformation of the particles: φ is the per-vertex median displacement ``u₀``
over the particles' latents, the mesh vertices move by ``u₀`` and ``u₀`` is subtracted from the
flow. Inside every cell both the old flow and ``u₀`` are linear, so a point with barycentric
coordinates β in an old cell has the same β in the moved cell, and every particle's deformed
map is unchanged.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor, nn

from flexview.model.flow import FlowGenerator
from flexview.model.mesh import TetMesh

__all__ = ["median_deformation", "principal_axes", "recentre", "standardise_latents"]


def _absorb_affine(flow: FlowGenerator, mean: Tensor, back: Tensor) -> None:
    """Re-express the flow's input in coordinates ``z'`` with ``z = z' @ back + mean``: the first
    layer's ``W ← W backᵀ``, ``b ← b + W mean`` (in place, so an optimiser keeps its parameters)."""
    first = flow.net[0]
    if not isinstance(first, nn.Linear):
        raise TypeError(f"the flow's first layer is {type(first).__name__}, not Linear")
    w = first.weight.detach().double().cpu()
    first.bias.add_((w @ mean.double().cpu()).to(first.bias))
    first.weight.copy_((w @ back.double().cpu().T).to(first.weight))


@torch.no_grad()
def standardise_latents(latents: Float[Tensor, "particles latent"], flow: FlowGenerator, *,
                        fit: np.ndarray | None = None) -> Float[Tensor, "particles latent"]:
    """Centre the latents and give each axis unit standard deviation, absorbing the change into
    ``flow`` (modified in place) so that every particle keeps its vertex displacements.

    Parameters
    ----------
    latents : (M, K), any device.
    flow : the generator the latents feed.
    fit : rows whose mean and (unbiased) standard deviation are used (default all).

    Returns
    -------
    (M, K) standardised latents, same dtype and device; an axis of zero spread is only centred.
    """
    z = latents if fit is None else latents[torch.as_tensor(fit, device=latents.device)]
    mean, std = z.mean(dim=0), z.std(dim=0).clamp_min(1e-6)
    _absorb_affine(flow, mean, torch.diag(std))
    return (latents - mean) / std


@torch.no_grad()
def principal_axes(latents: Float[Tensor, "particles latent"], flow: FlowGenerator, *,
                   features: Callable[[Tensor], Tensor] | None = None, fit: np.ndarray | None = None,
                   n_sample: int = 500, seed: int = 0, chunk_bytes: int = 64 * 2**20) -> tuple[Tensor, Tensor]:
    """Whiten the latents and rotate them so that axis 1 carries the largest deformation, axis 2
    the next, and so on; the change is absorbed into ``flow`` (in place), so every particle keeps
    its vertex displacements.

    The deformation ``features(z)`` (B, F) of up to ``n_sample`` particles of ``fit`` (drawn with
    ``seed``) is regressed linearly on their whitened latents; the right singular vectors of that
    (K, F) map are the new axes. Each axis's sign makes the largest entry of its deformation
    direction positive, so the result does not depend on the sign of the input axes.

    Parameters
    ----------
    latents : (M, K).
    flow : the generator the latents feed.
    features : ``features(z) -> (B, F)``, a deformation measure that is linear in the vertex
        displacements, e.g. density-weighted voxel displacements in Å; default the vertex
        displacements ``flow(z)`` themselves.
    fit : rows that set the mean, the whitening and the regression (default all).
    chunk_bytes : the features are evaluated on as many particles at a time as fit in this many
        bytes of float64, so memory grows with F but not with ``n_sample`` × F.

    Returns
    -------
    latents : (M, K) in the new axes (covariance I over ``fit``), dtype and device of the input.
    singular_values : (K,) float64, decreasing: the deformation per unit of each new axis, in the
        units of ``features`` (the norm over F).
    """
    fit = np.arange(len(latents)) if fit is None else np.asarray(fit)
    rows = fit if len(fit) <= n_sample else np.sort(
        np.random.default_rng(seed).choice(fit, n_sample, replace=False))
    z_fit = latents[torch.as_tensor(fit, device=latents.device)].double().cpu()
    mean = z_fit.mean(dim=0)
    evals, evecs = torch.linalg.eigh(torch.cov(z_fit.T).reshape(len(mean), len(mean)))
    whiten = evecs * evals.clamp_min(1e-12).rsqrt()                 # z_w = (z − μ) @ whiten
    sample = latents[torch.as_tensor(rows, device=latents.device)]
    zw = (sample.double().cpu() - mean) @ whiten
    if features is None:
        device = flow.free.device
        features = lambda z: flow(z.to(device, flow.free.dtype)).reshape(len(z), -1)   # noqa: E731
    coef = _regression(zw - zw.mean(0), sample, features, chunk_bytes)              # (K, F)
    u, sv, vt = torch.linalg.svd(coef.T, full_matrices=False)
    peak = u.abs().argmax(dim=0)                  # fix each axis's sign: its largest move is +
    vt = vt * torch.sign(u[peak, torch.arange(u.shape[1])])[:, None]
    transform = whiten @ vt.T                                         # z_new = (z − μ) @ transform
    _absorb_affine(flow, mean, torch.linalg.inv(transform))           # z = z_new @ back + μ
    out = (latents.double().cpu() - mean) @ transform
    return out.to(latents.dtype).to(latents.device), sv


def _regression(zc: Tensor, sample: Tensor, features: Callable[[Tensor], Tensor], chunk_bytes: int) -> Tensor:
    """Least-squares coefficients (K, F) float64 of the centred features of ``sample`` (B, K) on
    the centred regressors ``zc`` (B, K) float64, without holding all (B, F) features.

    With ``zc = Q R`` (thin QR) the solution of ``min ‖zc C − (D − 1 d̄ᵀ)‖`` is
    ``C = R⁻¹ Qᵀ (D − 1 d̄ᵀ) = R⁻¹ Qᵀ D``, since the columns of ``Q`` sum to zero with those of
    ``zc``; ``Qᵀ D`` is accumulated over chunks of particles (the same solution as
    ``torch.linalg.lstsq`` on the full matrices, to rounding).
    """
    q, r = torch.linalg.qr(zc)
    first = features(sample[:1]).reshape(1, -1)
    step = max(1, chunk_bytes // (8 * first.shape[1]))
    qtd = q[:1].T @ first.double().cpu()
    for start in range(1, len(sample), step):
        block = features(sample[start:start + step]).reshape(-1, first.shape[1]).double().cpu()
        qtd += q[start:start + step].T @ block
    return torch.linalg.solve_triangular(r, qtd, upper=True)


@torch.no_grad()
def median_deformation(flow: FlowGenerator, latents: np.ndarray, *, n_sample: int = 2000,
                       seed: int = 0, chunk: int = 500) -> np.ndarray:
    """Per-vertex, per-axis median of the flow over the particles' latents.

    Parameters
    ----------
    flow : the trained generator (any device).
    latents : (M, K) latent coordinates; rows with non-finite values are ignored.
    n_sample : at most this many particles, drawn without replacement with ``seed``.

    Returns
    -------
    (V, 3) float64 displacement in Å (zero at pinned vertices).
    """
    z = np.asarray(latents, dtype=np.float32)
    z = z[np.isfinite(z).all(axis=1)]
    if len(z) == 0:
        raise ValueError("no particle has finite latents")
    if len(z) > n_sample:
        z = z[np.sort(np.random.default_rng(seed).choice(len(z), n_sample, replace=False))]
    device = flow.free.device
    parts = [flow(torch.as_tensor(z[i:i + chunk], device=device)).cpu() for i in range(0, len(z), chunk)]
    return np.median(torch.cat(parts).double().numpy(), axis=0)


def recentre(mesh: TetMesh, flow: FlowGenerator, shift: np.ndarray) -> tuple[TetMesh, FlowGenerator]:
    """The same deformation model with the canonical conformation moved by ``shift``.

    Parameters
    ----------
    mesh : the run's mesh (Å).
    flow : its generator; not modified.
    shift : (V, 3) Å vertex displacement that takes the old canonical conformation to the new one
        (e.g. :func:`median_deformation`); zero is used at pinned vertices.

    Returns
    -------
    (mesh, flow): vertices moved by ``shift`` (no longer a regular grid), and a copy of the flow
    whose output is reduced by ``shift``, so ``old vertex + old flow = new vertex + new flow`` for
    every latent. The canonical map must be pushed by ``shift`` (or re-solved) to match.

    Raises
    ------
    ValueError if the shift would invert a cell.
    """
    shift = np.asarray(shift, dtype=np.float64).reshape(mesh.n_vertices, 3) * ~mesh.pinned[:, None]
    moved = replace(mesh, vertices=mesh.vertices + shift, grid_origin=None, grid_spacing=None,
                    grid_shape=None)
    if mesh.n_cells and (moved.cell_volumes() <= 0).any():
        raise ValueError(f"moving the canonical conformation by up to {np.abs(shift).max():.1f} Å "
                         "would invert mesh cells")
    new = copy.deepcopy(flow)
    with torch.no_grad():
        new.offset -= torch.as_tensor(shift, dtype=new.offset.dtype, device=new.offset.device)
    return moved, new
