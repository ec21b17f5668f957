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
"""
from __future__ import annotations

import numpy as np
import scipy.linalg
import torch

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


def deformation_modes(trainer: Trainer, dim: int, *, band_A: float, max_fit: int = 20000, seed: int = 0,
                      ridge: float = 1e-3) -> np.ndarray:
    """The ``dim`` vertex-displacement directions whose gradient variance over the particles most
    exceeds that of noise (generalised eigenvectors), (dim, V, 3), each scaled to a largest vertex
    displacement of 1 Å."""
    fit = trainer.train_rows
    if len(fit) > max_fit:
        fit = np.sort(np.random.default_rng(seed).choice(fit, max_fit, replace=False))
    signal = deformation_gradients(trainer, fit, band_A).astype(np.float64)
    noise = deformation_gradients(trainer, fit, band_A, noise_seed=seed).astype(np.float64)
    noise_cov = np.cov(noise.T)
    noise_cov += ridge * np.trace(noise_cov) / len(noise_cov) * np.eye(len(noise_cov))
    n = len(noise_cov)
    _, vectors = scipy.linalg.eigh(np.cov(signal.T), noise_cov, subset_by_index=[n - dim, n - 1])
    modes = vectors[:, ::-1].T.reshape(dim, -1, 3)
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
