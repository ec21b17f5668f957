"""Latent initialisation from the linearised model: PCA of per-particle deformation gradients.

At the consensus (no flow) the gradient of each particle's data term with respect to the mesh
vertex displacements points along the deformation that particle asks for, expressed in the
canonical frame whatever its orientation. The leading principal components of these gradients
over the particles are the dominant motions to first order, and each particle's scores on them
are a first estimate of its latent coordinates (the same idea as a first step of 3-D variability
analysis, but on the mesh).
"""
from __future__ import annotations

import numpy as np
import torch

from flexview.model.convect import convect_project
from flexview.model.flow import interpolate_displacement
from flexview.model.grid import fft2_centered
from flexview.model.loss import data_loss


def deformation_gradients(trainer, rows: np.ndarray, band_A: float, *, chunk: int = 250) -> np.ndarray:
    """∂(data term)/∂(vertex displacements) at zero flow for each particle, (len(rows), 3V)."""
    model, device = trainer.model, trainer.device
    values = model.canonical.masked_values().detach()
    coords = model.canonical.masked_coords()
    weight = trainer.noise_band(trainer.band_radius_px(band_A))
    out = np.empty((len(rows), 3 * model.mesh.n_vertices), dtype=np.float32)
    for start in range(0, len(rows), chunk):
        sel = rows[start:start + chunk]
        batch = trainer.data.batch(sel, device)
        disp = torch.zeros(len(sel), model.mesh.n_vertices, 3, device=device, requires_grad=True)
        positions = coords + interpolate_displacement(disp, model.voxel_vertices, model.voxel_bary)
        images = convect_project(values, positions, batch.rotations, batch.origins_A, model.box,
                                 model.pixel_size, model.kernel)
        loss = data_loss(fft2_centered(images) * batch.ctf, batch.spectra, noise_weight=weight)
        (grad,) = torch.autograd.grad(loss.sum(), disp)
        out[start:start + len(sel)] = grad.reshape(len(sel), -1).cpu().numpy()
    return out


def deformation_pca_latents(trainer, dim: int, *, band_A: float | None = None,
                            max_fit: int = 20000, seed: int = 0) -> np.ndarray:
    """Initial latents (M, dim), unit variance per axis, from the deformation-gradient PCA.

    Components are fitted on at most ``max_fit`` training particles; every particle of the data
    gets its scores. ``band_A`` defaults to the end of the first third of frequency marching.
    """
    band = band_A or trainer.schedule.band_limit_A(trainer.total_iters // 3)
    rng = np.random.default_rng(seed)
    fit = trainer.train_rows
    if len(fit) > max_fit:
        fit = np.sort(rng.choice(fit, max_fit, replace=False))
    all_rows = np.arange(len(trainer.data))
    grads = deformation_gradients(trainer, all_rows, band).astype(np.float64)
    mean = grads[fit].mean(axis=0)
    _, _, vt = np.linalg.svd(grads[fit] - mean, full_matrices=False)
    scores = (grads - mean) @ vt[:dim].T
    scores /= np.maximum(scores[fit].std(axis=0), 1e-30)
    return scores.astype(np.float32)
