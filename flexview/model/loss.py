"""Data term of the 3DFlex objective: weighted L2 distance between model and particle spectra.

Spectra are the half-plane (rfft) DFTs of :func:`flexview.model.grid.fft2_centered`. Each rfft
column with ``0 < kx < N/2`` stands for itself and its Hermitian mirror, so it counts twice;
the ``kx = 0`` column (and the Nyquist column for even N) counts once. With that multiplicity
and a factor 1/N², the unweighted loss equals the real-space sum of squared residuals
(Parseval), so its scale does not change with the weighting layout.
"""
from __future__ import annotations

import torch
from jaxtyping import Complex, Float
from torch import Tensor

from flexview.model.grid import fft2_centered, image_frequencies, radial_index

__all__ = ["data_loss", "particle_spectra", "rfft_multiplicity", "radial_weight", "band_mask"]


def particle_spectra(images: Float[Tensor, "batch box box"]) -> Complex[Tensor, "batch box half"]:
    """Fourier transforms of particle images (``fft2_centered``), (B, box, box // 2 + 1)."""
    return fft2_centered(images)


def rfft_multiplicity(box: int, *, dtype=torch.float32, device=None) -> Float[Tensor, "box half"]:
    """How many full-plane Fourier samples each rfft sample stands for (1 or 2)."""
    m = torch.full((box, box // 2 + 1), 2.0, dtype=dtype, device=device)
    m[:, 0] = 1.0
    if box % 2 == 0:
        m[:, -1] = 1.0
    return m


def radial_weight(profile: Float[Tensor, "radii"], box: int) -> Float[Tensor, "box half"]:
    """Per-frequency weights from a radial profile indexed by integer Fourier radius (pixels).

    Radii beyond the profile take its last value.
    """
    r = radial_index(box, device=profile.device).clamp(max=profile.numel() - 1)
    return profile[r]


def band_mask(box: int, radius_px: float, *, device=None) -> Float[Tensor, "box half"]:
    """1.0 for rfft samples with Fourier radius ≤ ``radius_px`` (Fourier pixels), else 0.0."""
    ky, kx = image_frequencies(box, 1.0 / box, device=device)
    return (torch.sqrt(ky ** 2 + kx ** 2) <= radius_px).float()


def data_loss(model_spectra: Complex[Tensor, "batch box half"],
              particle_spectra: Complex[Tensor, "batch box half"], *,
              noise_weight: Tensor | None = None,
              band_limit: Tensor | float | None = None) -> Float[Tensor, "batch"]:
    """Weighted squared distance per particle, ``(1/N²) Σ_k m(k) w(k) |M(k) − X(k)|²``, (B,).

    Parameters
    ----------
    model_spectra, particle_spectra : complex (B, N, N // 2 + 1).
    noise_weight : per-frequency weights (N, N // 2 + 1) (e.g. 1/σ²(k) for coloured noise), or a
        radial profile (R,) indexed by integer Fourier radius; None for white noise (w = 1).
    band_limit : a radius in Fourier pixels, or a mask (N, N // 2 + 1); samples outside are ignored.
    """
    box = model_spectra.shape[-2]
    resid = model_spectra - particle_spectra
    sq = resid.real ** 2 + resid.imag ** 2
    w = rfft_multiplicity(box, dtype=sq.dtype, device=sq.device) / box ** 2
    if noise_weight is not None:
        noise_weight = noise_weight.to(sq.device, sq.dtype)
        w = w * (radial_weight(noise_weight, box) if noise_weight.ndim == 1 else noise_weight)
    if band_limit is not None:
        if not isinstance(band_limit, Tensor):
            band_limit = band_mask(box, float(band_limit), device=sq.device)
        w = w * band_limit.to(sq.device, sq.dtype)
    return (sq * w).sum(dim=(-2, -1))
