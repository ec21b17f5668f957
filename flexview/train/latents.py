"""Per-particle latent coordinates (auto-decoder): initialisation and inference.

Inference treats the model as a black box ``objective(z) -> (B,)``: the negative log posterior
of each particle (data term + prior), so the same code serves training, reconstruction and tests.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from flexview.errors import FlexviewInputError

Objective = Callable[[Tensor], Tensor]


def init_latents(how: str, n: int, dim: int, *, images: Callable[[np.ndarray], np.ndarray] | None = None,
                 seed: int = 0) -> np.ndarray:
    """Initial latent table, shape (n, dim) float32.

    Parameters
    ----------
    how : str
        ``"zeros"``; ``"pca"`` (first ``dim`` principal components of the low-passed particle
        images, scaled to unit variance); or the path of a ``.npy`` (n × dim) or ``.cs`` file
        (fields ``components_mode_k/value`` as written by cryoSPARC 3DVA).
    images : callable, optional
        ``images(rows) -> (len(rows), H, W)`` array, required for ``"pca"``.
    """
    if how == "zeros":
        return np.zeros((n, dim), dtype=np.float32)
    if how == "pca":
        if images is None:
            raise ValueError("PCA initialisation needs the particle images")
        return pca_latents(images, n, dim, seed=seed)
    return load_latents_file(Path(how), n, dim)


def load_latents_file(path: Path, n: int, dim: int) -> np.ndarray:
    """Latents from a ``.npy`` table or a cryoSPARC ``.cs`` with 3DVA components."""
    if not path.is_file():
        raise FlexviewInputError("latent file not found", path)
    try:
        table = np.load(path, allow_pickle=False)
    except (OSError, ValueError):       # pickled objects, a damaged or foreign file
        raise FlexviewInputError("not a NumPy .npy table of numbers (it is damaged, or holds pickled "
                                 "Python objects, which flexview never loads)", path, "--latent-init") from None
    if table.dtype.names:
        names = [f"components_mode_{k}/value" for k in range(dim)]
        missing = [f for f in names if f not in table.dtype.names]
        if missing:
            raise FlexviewInputError("no 3DVA components for the requested latent dimension", path, missing[0])
        table = np.stack([table[f] for f in names], axis=1)
    table = np.asarray(table, dtype=np.float32).reshape(len(table), -1)
    if table.shape != (n, dim):
        raise FlexviewInputError(f"expected {n} × {dim} latents, found {table.shape[0]} × {table.shape[1]}",
                                 path, "shape")
    if not np.isfinite(table).all():
        raise FlexviewInputError("latents contain NaN or infinite values", path, "values")
    std = table.std(axis=0)
    return (table - table.mean(axis=0)) / np.where(std > 0, std, 1.0)


def pca_latents(images: Callable[[np.ndarray], np.ndarray], n: int, dim: int, *, seed: int = 0,
                max_fit: int = 5000) -> np.ndarray:
    """Project every particle on the top ``dim`` principal components of the images.

    The components are fitted on at most ``max_fit`` particles; each output axis has unit variance.
    """
    rng = np.random.default_rng(seed)
    fit_rows = np.sort(rng.choice(n, size=min(n, max_fit), replace=False))
    sample = images(fit_rows).reshape(len(fit_rows), -1).astype(np.float64)
    mean = sample.mean(axis=0)
    _, _, vt = np.linalg.svd(sample - mean, full_matrices=False)
    basis = vt[:dim].T
    out = np.empty((n, dim), dtype=np.float64)
    for start in range(0, n, 2048):
        rows = np.arange(start, min(n, start + 2048))
        out[rows] = (images(rows).reshape(len(rows), -1) - mean) @ basis
    out = (out - out.mean(axis=0)) / np.maximum(out.std(axis=0), 1e-12)
    return out.astype(np.float32)


@torch.no_grad()
def coordinate_descent(objective: Objective, z: Tensor, *, step: float = 0.25, sweeps: int = 2,
                       max_move: float = 2.0) -> Tensor:
    """Minimise ``objective`` over each latent axis in turn by parabolic line search.

    For every axis the objective is probed at ``z ± step``; the vertex of the parabola through the
    three values is taken (clipped to ``± max_move · step``) when it lowers the objective, otherwise
    the best probe is kept. Scale-free: needs no learning rate.

    Parameters
    ----------
    objective : callable
        ``objective(z) -> (B,)`` per-particle cost for ``z`` of shape (B, K).
    z : Tensor (B, K)
        Starting points (current latents).

    Returns
    -------
    Tensor (B, K): improved latents; no particle's cost increases.
    """
    z = z.clone()
    best = objective(z)
    for _ in range(sweeps):
        for k in range(z.shape[1]):
            e = torch.zeros_like(z)
            e[:, k] = step
            f_minus, f_plus = objective(z - e), objective(z + e)
            curvature = f_plus + f_minus - 2.0 * best
            t = torch.where(curvature > 0, 0.5 * (f_minus - f_plus) / curvature.clamp_min(1e-30),
                            torch.where(f_plus < f_minus, max_move, -max_move))
            t = t.clamp(-max_move, max_move)
            candidates = torch.stack([z[:, k] - step, z[:, k] + step, z[:, k] + t * step])
            z_try = z.clone()
            z_try[:, k] = candidates[2]
            values = torch.stack([f_minus, f_plus, objective(z_try)])
            values = torch.cat([values, best[None]])
            choice = values.argmin(dim=0)
            keep = choice == 3
            new_k = candidates.gather(0, choice.clamp_max(2)[None]).squeeze(0)
            z[:, k] = torch.where(keep, z[:, k], new_k)
            best = values.min(dim=0).values
    return z


def gradient_descent(objective: Objective, z: Tensor, *, steps: int = 3, step: float = 0.25) -> Tensor:
    """A few normalised gradient steps per particle (for K > 3), never increasing the cost.

    Each step moves ``z`` by ``step`` (prior σ units, halved on every step) along the negative
    gradient direction of that particle's cost; a move that raises the cost is rejected.
    """
    z = z.detach().clone()
    with torch.no_grad():
        best = objective(z)
    for i in range(steps):
        zg = z.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(objective(zg).sum(), zg)
        direction = grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-30)
        with torch.no_grad():
            z_try = z - step * 0.5**i * direction
            value = objective(z_try)
            better = value < best
            z = torch.where(better[:, None], z_try, z)
            best = torch.where(better, value, best)
    return z


@torch.no_grad()
def gauss_newton(render: Callable[[Tensor], Tensor], target: Tensor, weight: Tensor, z: Tensor, *,
                 prior_weight: float = 1.0, h: float = 0.05, max_move: float = 1.0,
                 damping: float = 1e-3) -> Tensor:
    """One damped Gauss–Newton step per particle on ``Σ w |render(z) − target|² + ½ p |z|²``.

    The Jacobian of the model images with respect to each latent axis is taken by forward
    differences of step ``h``; the K × K normal equations are solved per particle, the step is
    clipped to length ``max_move``, and a particle keeps its old ``z`` unless the cost falls.
    Costs K + 2 renders whatever the curvature, so it suits any K.

    Parameters
    ----------
    render : callable
        ``render(z) -> (B, F)`` model spectra (complex) or images for latents ``z`` (B, K).
    target : Tensor (B, F)
        The particles, in the same representation.
    weight : Tensor (F,) or (B, F)
        Non-negative weight of each sample (noise weighting, band limit, rfft multiplicity).
    z : Tensor (B, K)

    Returns
    -------
    Tensor (B, K)
    """
    def cost(model, zz):
        r = model - target
        return (weight * (r.real**2 + r.imag**2 if r.is_complex() else r**2)).sum(-1) \
            + 0.5 * prior_weight * (zz**2).sum(-1)

    f0, jac, a = _linearise(render, weight, z, h)
    c0 = cost(f0, z)
    k = z.shape[1]
    resid = (target - f0)[:, None]
    wk = _per_axis(weight)
    b = (wk * jac.conj() * resid).sum(-1).real if jac.is_complex() else (wk * jac * resid).sum(-1)
    eye = torch.eye(k, dtype=z.dtype, device=z.device)
    lhs = 2 * a + prior_weight * eye + damping * eye * (1 + a.diagonal(dim1=1, dim2=2).mean(-1))[:, None, None]
    step = torch.linalg.solve(lhs, (2 * b - prior_weight * z)[..., None])[..., 0]
    length = step.norm(dim=1, keepdim=True)
    step = step * (max_move / length.clamp_min(max_move))
    z_new = z + step
    better = cost(render(z_new), z_new) < c0
    return torch.where(better[:, None], z_new, z)


def _linearise(render: Callable[[Tensor], Tensor], weight: Tensor, z: Tensor, h: float):
    """Model at ``z``, its Jacobian by forward differences (B, K, F) and ``Jᴴ W J`` (B, K, K)."""
    f0 = render(z)
    eye = torch.eye(z.shape[1], dtype=z.dtype, device=z.device)
    jac = torch.stack([(render(z + h * e) - f0) / h for e in eye], dim=1)
    a = torch.einsum("bkf,blf->bkl", _per_axis(weight) * jac.conj(), jac)
    return f0, jac, a.real if a.is_complex() else a


def _per_axis(weight: Tensor) -> Tensor:
    """Sample weights (F,) or (B, F) shaped to multiply a Jacobian (B, K, F)."""
    return weight if weight.ndim == 1 else weight[:, None, :]


@torch.no_grad()
def laplace_factor(render: Callable[[Tensor], Tensor], weight: Tensor, z: Tensor, *,
                   prior_weight: float = 1.0, h: float = 0.05) -> Tensor:
    """Cholesky factor ``L`` (B, K, K) of the Laplace covariance of each particle's latent at ``z``:
    ``L Lᵀ = (2 Jᴴ W J + p I)⁻¹``, the inverse Gauss–Newton Hessian of the cost that
    :func:`gauss_newton` minimises (``render``, ``weight`` and ``h`` as there)."""
    _, _, a = _linearise(render, weight, z, h)
    eye = torch.eye(z.shape[1], dtype=a.dtype, device=a.device)
    return torch.linalg.cholesky(torch.linalg.inv(2 * a + prior_weight * eye))


@torch.no_grad()
def posterior_mean(objective: Objective, z: Tensor, factor: Tensor, *, points: int = 7,
                   extent: float = 2.5, seed: int = 0) -> Tensor:
    """Posterior mean of each particle's latent, by quadrature around ``z``.

    The posterior ``∝ exp(−objective)`` is evaluated at ``z + L u`` (``L`` = ``factor``, e.g. from
    :func:`laplace_factor`): for K ≤ 3 on a regular grid of ``points`` values per axis over
    ``[−extent, extent]``; for more dimensions at ``points²`` draws u ~ N(0, I), importance-weighted
    by the proposal. Where the posterior is wide or skewed, its mean predicts the particle's
    conformation better (lower squared error) than its mode does.

    Parameters
    ----------
    objective : ``objective(z) -> (B,)``, negative log posterior in nats.
    z : (B, K), e.g. the modes found by a search.
    factor : (B, K, K).

    Returns
    -------
    (B, K)
    """
    k = z.shape[1]
    if k <= 3:
        u = torch.cartesian_prod(*([torch.linspace(-extent, extent, points)] * k)).reshape(-1, k)
        log_q = torch.zeros(len(u))
    else:
        u = torch.randn(points**2, k, generator=torch.Generator().manual_seed(seed))
        log_q = -0.5 * (u ** 2).sum(-1)
    u, log_q = u.to(z), log_q.to(z)
    samples = torch.stack([z + factor @ ui for ui in u], dim=1)                      # (B, P, K)
    log_w = torch.stack([-objective(samples[:, j]) for j in range(len(u))], dim=1) - log_q
    return (torch.softmax(log_w, dim=1)[..., None] * samples).sum(dim=1)


def search_points(dim: int, points: int, *, extent: float = 2.5, seed: int = 0) -> Tensor:
    """Candidate latents for a global search, (P, dim).

    A regular grid of ``points`` values per axis over ``[-extent, extent]`` (prior σ units) for
    ``dim ≤ 3``; for more dimensions, ``points²`` draws from the unit Gaussian prior (a grid would
    grow too fast).
    """
    if dim <= 3:
        axis = torch.linspace(-extent, extent, points)
        return torch.cartesian_prod(*([axis] * dim)).reshape(-1, dim)
    return torch.randn(points**2, dim, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def grid_search(objective: Objective, candidates: Tensor, batch_size: int) -> tuple[Tensor, Tensor]:
    """The candidate of lowest ``objective`` for every particle, and that value.

    Parameters
    ----------
    objective : callable ``objective(z) -> (B,)`` for ``z`` of shape (B, K).
    candidates : Tensor (P, K), shared by all particles.
    batch_size : B.

    Returns
    -------
    best : Tensor (B, K); value : Tensor (B,)
    """
    best_value = torch.full((batch_size,), float("inf"), device=candidates.device)
    best = torch.zeros(batch_size, candidates.shape[1], device=candidates.device)
    for point in candidates:
        value = objective(point.expand(batch_size, -1))
        better = value < best_value
        best = torch.where(better[:, None], point, best)
        best_value = torch.where(better, value, best_value)
    return best, best_value
