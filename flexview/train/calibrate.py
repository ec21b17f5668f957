"""Match the canonical map to the particles: global scale and coloured-noise spectrum."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from flexview.model.forward import FlexForwardModel
from flexview.model.grid import radial_index
from flexview.model.loss import rfft_multiplicity
from flexview.train.data import TrainingData


@torch.no_grad()
def calibrate(model: FlexForwardModel, data: TrainingData, rows: np.ndarray, device, *,
              chunk: int = 256) -> tuple[float, Tensor]:
    """Scale of the map relative to the images, and the noise power per Fourier shell.

    The rigid model (no deformation) is rendered with each particle's pose and CTF
    (:meth:`FlexForwardModel.render_spectra`, the renderer training uses). The scale is the
    least-squares factor ``s = Σ Re(M* X) / Σ |M|²`` (DC excluded), and the noise power of shell
    ``r`` is the mean of ``|X − s M|²`` over the particles and samples in that shell (DFT units,
    i.e. ``N² σ²`` for white noise of real-space variance σ²).

    Returns
    -------
    scale : float
    noise_power : Tensor (R,) indexed by integer Fourier radius (R = N // 2 + 1 + corners)
    """
    box = data.box
    radius = radial_index(box, device=device)
    mult = rfft_multiplicity(box, device=device)
    not_dc = (radius > 0).float() * mult
    num = den = 0.0
    batches = [rows[i:i + chunk] for i in range(0, len(rows), chunk)]
    cache = []
    for sel in batches:
        b = data.batch(sel, device, model=model)
        m = model.render_spectra(None, b.pose, b.ctf)
        num += float(((m.conj() * b.spectra).real * not_dc).sum())
        den += float(((m.real**2 + m.imag**2) * not_dc).sum())
        cache.append((b.spectra, m))
    scale = num / den if den > 0 else 1.0
    if not np.isfinite(scale) or scale <= 0:
        scale = 1.0
    n_shells = int(radius.max()) + 1
    power = torch.zeros(n_shells, dtype=torch.float64, device=device)
    count = torch.zeros(n_shells, dtype=torch.float64, device=device)
    for x, m in cache:
        r = x - scale * m
        sq = (r.real**2 + r.imag**2) * mult
        power.index_add_(0, radius.reshape(-1), sq.sum(0).reshape(-1).double())
        count.index_add_(0, radius.reshape(-1), (mult * len(x)).reshape(-1).double())
    power = power / count.clamp_min(1)
    floor = power[1:].max() * 1e-6 if n_shells > 1 else 1.0
    return scale, power.clamp_min(float(floor)).float()


def noise_weight(noise_power: Tensor, box: int) -> Tensor:
    """Per-shell weights ``N² / (2 σ²(r))`` that make :func:`data_loss` the Gaussian negative
    log-likelihood (up to a constant); the DC shell gets weight 0."""
    w = box**2 / (2.0 * noise_power)
    w[0] = 0.0
    return w
