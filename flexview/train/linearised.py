"""Latent initialisation from the linearised model: deformation gradients against their noise.

At the consensus (no flow) the gradient of each particle's data term with respect to the mesh
vertex displacements points along the deformation that particle asks for, expressed in the
canonical frame whatever its orientation. Over the particles these gradients vary because the
particles differ (signal) and because of noise. The noise part is measured by the same gradient
with the particle replaced by the model plus simulated noise of the estimated spectrum; the
directions whose gradient variance most exceeds that of noise (a generalised eigenproblem
``S v = λ N v``) are the dominant motions to first order, and each particle's scores on them are
a first estimate of its latent coordinates (in the spirit of a first step of 3-D variability
analysis, done on the mesh and whitened by the noise).

The eigenproblem has size 3V (27,678 at V = 9,226: 6 GB per dense covariance), so it is never
formed: :func:`generalised_modes` solves it exactly through n × n Gram matrices of a bounded
number n of particles (:func:`fit_count`), with memory O(n · 3V + n²).
"""
from __future__ import annotations

import numpy as np
import scipy.linalg
import torch
from torch import Tensor

from flexview.model.loss import data_loss, radial_weight
from flexview.train.latents import gauss_newton
from flexview.train.trainer import Trainer


def deformation_gradients(trainer: Trainer, rows: np.ndarray, band_A: float, *,
                          noise_seed: int | None = None, chunk: int = 250) -> np.ndarray:
    """∂(data term)/∂(vertex displacements) at zero flow for each particle, (len(rows), 3V).

    With ``noise_seed`` the particles are replaced by the rigid model images plus Gaussian noise
    drawn from the estimated noise spectrum, which gives the gradients noise alone produces.
    """
    model, device = trainer.model, trainer.device
    weight = trainer.noise_band(trainer.band_radius_px(band_A))
    box = trainer.data.box
    # noise power per sample (DFT units) from the weights N² / (2σ²) of the data term
    power = radial_weight(box**2 / (2.0 * trainer.noise_weight.clamp_min(1e-30)), box)
    gen = None if noise_seed is None else torch.Generator(device=device).manual_seed(noise_seed)
    out = np.empty((len(rows), 3 * model.mesh.n_vertices), dtype=np.float32)
    for start in range(0, len(rows), chunk):
        sel = rows[start:start + chunk]
        batch = trainer.batch(sel)
        disp = torch.zeros(len(sel), model.mesh.n_vertices, 3, device=device, requires_grad=True)
        spectra = model.render_spectra(None, batch.pose, batch.ctf, displacements=disp)
        target = batch.spectra if gen is None else spectra.detach() + _noise(spectra.shape, power, gen)
        loss = data_loss(spectra, target, noise_weight=weight)
        (grad,) = torch.autograd.grad(loss.sum(), disp)
        out[start:start + len(sel)] = grad.reshape(len(sel), -1).cpu().numpy()
    return out


def _noise(shape, power: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Complex Gaussian noise with E|n|² = ``power`` per sample."""
    scale = torch.sqrt(power / 2.0)
    re = torch.randn(shape, generator=gen, device=power.device)
    im = torch.randn(shape, generator=gen, device=power.device)
    return torch.complex(re, im) * scale


GRADIENT_BYTES = 512 * 2**20
"""Memory for the signal and noise gradient samples together (float32), which bounds ``n_fit``."""


def fit_count(n_vertices: int, n_particles: int, *, max_fit: int = 4000,
              budget_bytes: int = GRADIENT_BYTES, min_fit: int = 200) -> int:
    """How many particles the deformation modes are fitted on.

    The signal and noise gradients take ``2 × n × 3V × 4`` bytes (float32) and the solver's
    float64 n × n matrices up to ~10 n² × 8 bytes at once, so ``n`` is the largest count that
    keeps the gradients within ``budget_bytes`` (512 MiB: 2,424 particles at V = 9,226, 2,236 at
    V = 10⁴, all ``max_fit`` = 4,000 up to V ≈ 5,600), at most ``max_fit`` (each n × n matrix
    then stays below 128 MB) and at least ``min_fit``, and never more than there are particles.
    Measured at V = 9,226 (n = 2,424, bench/memory.py --solver): peak RSS 1.46 GB, 31 s on one
    CPU thread.
    """
    by_memory = budget_bytes // (2 * 4 * 3 * max(int(n_vertices), 1))
    return int(min(n_particles, max_fit, max(min_fit, by_memory)))


def _column_chunk(n_rows: int, chunk_bytes: int = 32 * 2**20) -> int:
    """Columns of an (n_rows, ·) float64 block that fit in ``chunk_bytes``."""
    return max(1, chunk_bytes // (8 * max(n_rows, 1)))


def _centred(gram: Tensor) -> Tensor:
    """``H K H`` with ``H = I − 11ᵀ/n`` on both sides: the Gram matrix of row-centred data
    (in place)."""
    rows, cols, total = gram.mean(dim=1, keepdim=True), gram.mean(dim=0, keepdim=True), gram.mean()
    return gram.sub_(rows).sub_(cols).add_(total)


def _grams(signal: Tensor, noise: Tensor, device) -> tuple[Tensor, Tensor, Tensor]:
    """Centred ``Xs Xsᵀ``, ``Xn Xsᵀ``, ``Xn Xnᵀ`` (n, n) float64 on ``device``, accumulated over
    blocks of columns so that no float64 copy of the (n, D) samples is made."""
    n, d = signal.shape
    kss, kns, knn = (torch.zeros(n, n, dtype=torch.float64, device=device) for _ in range(3))
    step = _column_chunk(n)
    for j in range(0, d, step):
        xs = signal[:, j:j + step].to(device, torch.float64)
        xn = noise[:, j:j + step].to(device, torch.float64)
        kss += xs @ xs.T
        kns += xn @ xs.T
        knn += xn @ xn.T
    return _centred(kss), _centred(kns), _centred(knn)


def _transpose_times(x: Tensor, w: Tensor) -> Tensor:
    """``X_cᵀ w`` (D, m) float64 for the row-centred ``X_c = H X`` (X (n, D) float32, any device),
    by blocks of columns: ``X_cᵀ w = Xᵀ (H w)``."""
    hw = w - w.mean(dim=0, keepdim=True)
    step = _column_chunk(len(x))
    return torch.cat([x[:, j:j + step].to(hw.device, torch.float64).T @ hw
                      for j in range(0, x.shape[1], step)])


def generalised_modes(signal: Tensor | np.ndarray, noise: Tensor | np.ndarray, dim: int, *,
                      ridge: float = 1e-3, device=None) -> np.ndarray:
    """Top ``dim`` generalised eigenvectors of ``S v = λ (N + r I) v``, matrix-free in D.

    ``S`` and ``N`` are the sample covariances (as ``np.cov``: row-centred, divided by n − 1) of
    the rows of ``signal`` and ``noise`` (n, D), and ``r = ridge · tr(N) / D``. No (D, D) matrix
    is formed: with ``X_s``, ``X_n`` the centred samples, ``a = 1/(n − 1)`` and
    ``C = r I_n + a X_n X_nᵀ`` (Woodbury),

        (N + r I)⁻¹ = (I − a X_nᵀ C⁻¹ X_n) / r.

    Every eigenvector of non-zero λ satisfies ``v = (N + r I)⁻¹ S v / λ``, so it lies in the
    range of ``(N + r I)⁻¹ X_sᵀ``: writing ``v = (N + r I)⁻¹ X_sᵀ w`` turns the problem into the
    symmetric positive semi-definite n × n problem

        M w = λ w,   M = a X_s (N + r I)⁻¹ X_sᵀ = (a / r) (K_ss − a K_nsᵀ C⁻¹ K_ns)

    (``K_ab = X_a X_bᵀ``, centred Gram matrices), with the same non-zero eigenvalues; its
    eigenvectors mapped back are the dense solution's, up to scale. So the result equals ``scipy.linalg.eigh``
    on the dense (D, D) matrices, at a cost of O(n² D) operations and O(n D + n²) memory instead
    of O(D² n + D³) and O(D²). The Gram matrices are accumulated in float64 (the subtraction in
    ``M`` cancels where the signal lies in the span of the noise samples).

    Parameters
    ----------
    signal, noise : (n, D) samples (float32 is enough), numpy or torch on any device; n ≥ 2.
    dim : number of eigenvectors, at most n − 1.
    device : where the float64 algebra runs (default: that of ``signal``, the CPU for numpy).

    Returns
    -------
    (dim, D) float64, by decreasing eigenvalue, each of unit norm with its entry of largest
    magnitude positive (the sign of an eigenvector is otherwise arbitrary).
    """
    signal, noise = torch.as_tensor(signal), torch.as_tensor(noise)
    device = signal.device if device is None else torch.device(device)
    n, d = signal.shape
    if not 1 <= dim < n:
        raise ValueError(f"need 1 ≤ dim < n samples, got dim {dim}, n {n}")
    kss, kns, knn = _grams(signal, noise, device)
    a = 1.0 / (n - 1)
    r = ridge * a * float(knn.trace()) / d
    chol = torch.linalg.cholesky(r * torch.eye(n, dtype=torch.float64, device=device) + a * knn)
    del knn
    b = torch.linalg.solve_triangular(chol, kns, upper=False)
    m = kss.sub_(a * (b.T @ b)).mul_(a / r)
    del b
    m = m.add_(m.T.clone()).mul_(0.5).cpu().numpy()
    _, w = scipy.linalg.eigh(m, subset_by_index=[n - dim, n - 1], overwrite_a=True)
    del m, kss
    w = torch.as_tensor(w[:, ::-1].copy(), device=device)
    inner = torch.cholesky_solve(kns @ w, chol)                        # C⁻¹ X_n X_sᵀ w
    v = (_transpose_times(signal, w) - a * _transpose_times(noise, inner)) / r    # (D, dim)
    v = v / torch.linalg.vector_norm(v, dim=0)
    peak = v.abs().argmax(dim=0)
    v = v * torch.sign(v[peak, torch.arange(dim, device=device)])
    return v.T.cpu().numpy()


def deformation_modes(trainer: Trainer, dim: int, *, band_A: float, max_fit: int = 4000, seed: int = 0,
                      ridge: float = 1e-3) -> np.ndarray:
    """The ``dim`` vertex-displacement directions whose gradient variance over the particles most
    exceeds that of noise (generalised eigenvectors, :func:`generalised_modes`), (dim, V, 3), each
    scaled to a largest vertex displacement of 1 Å with its largest entry positive.

    Fitted on :func:`fit_count` training particles (drawn with ``seed``): memory stays bounded
    (float32 gradients of at most 512 MiB, n × n float64 matrices) whatever the mesh size and the
    particle count, and no 3V × 3V matrix is formed."""
    fit = trainer.train_rows
    n_fit = fit_count(trainer.model.mesh.n_vertices, len(fit), max_fit=max_fit)
    if len(fit) > n_fit:
        fit = np.sort(np.random.default_rng(seed).choice(fit, n_fit, replace=False))
    signal = torch.from_numpy(deformation_gradients(trainer, fit, band_A))
    noise = torch.from_numpy(deformation_gradients(trainer, fit, band_A, noise_seed=seed))
    modes = generalised_modes(signal, noise, dim, ridge=ridge, device=trainer.device).reshape(dim, -1, 3)
    return modes / np.linalg.norm(modes, axis=-1).max(axis=1)[:, None, None]


@torch.no_grad()
def mode_scores(trainer: Trainer, modes: np.ndarray, band_A: float, *, steps: int = 2,
                chunk: int = 250) -> np.ndarray:
    """Each particle's amplitudes (Å) along ``modes`` (K, V, 3) by Gauss–Newton on the data term of
    the linear flow ``u = Σ c_k mode_k`` starting from the consensus, (M, K)."""
    model, device = trainer.model, trainer.device
    basis = torch.as_tensor(modes, dtype=torch.float32, device=device)
    weight = trainer.sample_weight(trainer.band_radius_px(band_A)).reshape(-1)
    rows = np.arange(len(trainer.data))
    out = np.empty((len(rows), len(modes)), dtype=np.float32)
    for start in range(0, len(rows), chunk):
        sel = rows[start:start + chunk]
        batch = trainer.batch(sel)

        def render(c, batch=batch):
            disp = torch.einsum("bk,kvd->bvd", c, basis)
            return model.render_spectra(None, batch.pose, batch.ctf, displacements=disp).reshape(len(c), -1)

        c = torch.zeros(len(sel), len(modes), device=device)
        for _ in range(steps):
            c = gauss_newton(render, batch.spectra.reshape(len(sel), -1), weight, c, prior_weight=1e-3,
                             h=0.5, max_move=20.0)
        out[start:start + len(sel)] = c.cpu().numpy()
    return out


def linearised_start(trainer: Trainer, dim: int, *, band_A: float | None = None, seed: int = 0) -> np.ndarray:
    """Initial latents (M, dim) from the linearised model: the deformation modes are estimated at
    the consensus and each particle's amplitudes along them, standardised, are its latents."""
    band = band_A or trainer.schedule.band_limit_A(trainer.total_iters // 3)
    modes = deformation_modes(trainer, dim, band_A=band, seed=seed)
    scores = mode_scores(trainer, modes, band)
    fit = trainer.train_rows
    mean, std = scores[fit].mean(axis=0), np.maximum(scores[fit].std(axis=0), 1e-6)
    return ((scores - mean) / std).astype(np.float32)
