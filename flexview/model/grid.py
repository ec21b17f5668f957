"""Index ↔ physical-coordinate conventions and Fourier frequency grids.

The single place where array index order ``[z, y, x]`` meets coordinate order ``(x, y, z)``.
The origin is the voxel (pixel) with index ``N // 2`` on every axis; physical units are Å.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def centre_index(box: int) -> int:
    """Index of the origin voxel along an axis of length ``box``."""
    return box // 2


def voxel_coords(box: int, pixel_size: float, *, dtype=torch.float32, device=None) -> Tensor:
    """Physical coordinates of every voxel of a ``box``³ grid.

    Returns
    -------
    Tensor, shape (box, box, box, 3)
        ``out[iz, iy, ix] = ((ix - c), (iy - c), (iz - c)) * pixel_size`` in Å, ``c = box // 2``.
    """
    axis = (torch.arange(box, dtype=dtype, device=device) - centre_index(box)) * pixel_size
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    return torch.stack([x, y, z], dim=-1)


def coords_to_index(coords: Tensor, box: int, pixel_size: float) -> Tensor:
    """Physical ``(x, y, z)`` (Å) → fractional indices ``(iz, iy, ix)`` (or ``(x, y)`` → ``(iy, ix)``)."""
    return coords.flip(-1) / pixel_size + centre_index(box)


def index_to_coords(index: Tensor, box: int, pixel_size: float) -> Tensor:
    """Fractional indices ``(iz, iy, ix)`` → physical ``(x, y, z)`` in Å (also 2-D)."""
    return (index - centre_index(box)).flip(-1) * pixel_size


def image_frequencies(box: int, pixel_size: float, *, rfft: bool = True, dtype=torch.float32,
                      device=None) -> tuple[Tensor, Tensor]:
    """Spatial frequencies (Å⁻¹) of the 2-D DFT of a ``box``² image, origin at index ``box // 2``.

    Use with :func:`fft2_centered` / :func:`ifft2_centered`.

    Returns
    -------
    (ky, kx) : Tensors of shape (box, box // 2 + 1) (``rfft``) or (box, box).
    """
    ky = torch.fft.fftfreq(box, d=pixel_size, dtype=dtype, device=device)
    kx = torch.fft.rfftfreq(box, d=pixel_size, dtype=dtype, device=device) if rfft else ky
    return torch.meshgrid(ky, kx, indexing="ij")


def volume_frequencies(box: int, pixel_size: float, *, rfft: bool = True, dtype=torch.float32,
                       device=None) -> tuple[Tensor, Tensor, Tensor]:
    """Spatial frequencies (kz, ky, kx) in Å⁻¹ of the 3-D DFT of a ``box``³ volume."""
    k = torch.fft.fftfreq(box, d=pixel_size, dtype=dtype, device=device)
    kx = torch.fft.rfftfreq(box, d=pixel_size, dtype=dtype, device=device) if rfft else k
    return torch.meshgrid(k, k, kx, indexing="ij")


def fft2_centered(images: Tensor) -> Tensor:
    """Real 2-D DFT with phases relative to pixel ``N // 2``: shape (..., N, N) → (..., N, N//2+1)."""
    return torch.fft.rfft2(torch.fft.ifftshift(images, dim=(-2, -1)))


def ifft2_centered(spectra: Tensor, box: int) -> Tensor:
    """Inverse of :func:`fft2_centered`."""
    return torch.fft.fftshift(torch.fft.irfft2(spectra, s=(box, box)), dim=(-2, -1))


def fftn_centered(volume: Tensor) -> Tensor:
    """Real 3-D DFT with phases relative to voxel ``N // 2``."""
    return torch.fft.rfftn(torch.fft.ifftshift(volume, dim=(-3, -2, -1)), dim=(-3, -2, -1))


def ifftn_centered(spectrum: Tensor, box: int) -> Tensor:
    """Inverse of :func:`fftn_centered`."""
    vol = torch.fft.irfftn(spectrum, s=(box, box, box), dim=(-3, -2, -1))
    return torch.fft.fftshift(vol, dim=(-3, -2, -1))


def shift_phase(ky: Tensor, kx: Tensor, shift_A: Tensor) -> Tensor:
    """Fourier factor that translates image content by ``shift_A`` (x, y in Å).

    ``f(r - t) ↔ F(k) exp(-2πi k·t)``. ``shift_A`` shape (B, 2) → result (B, *ky.shape).
    """
    t = shift_A[..., None, None, :]
    return torch.exp(-2j * torch.pi * (kx * t[..., 0] + ky * t[..., 1]))


def radial_index(box: int, *, rfft: bool = True, ndim: int = 2, device=None) -> Tensor:
    """Integer radius (in Fourier pixels, rounded) of every Fourier sample of a ``box`` grid."""
    if ndim == 2:
        ky, kx = image_frequencies(box, 1.0 / box, rfft=rfft, device=device)
        r = torch.sqrt(ky**2 + kx**2)
    else:
        kz, ky, kx = volume_frequencies(box, 1.0 / box, rfft=rfft, device=device)
        r = torch.sqrt(kz**2 + ky**2 + kx**2)
    return torch.round(r).long()


def to_numpy(t) -> np.ndarray:
    """Detach a tensor (any device) into a numpy array; pass numpy through."""
    if isinstance(t, Tensor):
        return t.detach().cpu().numpy()
    return np.asarray(t)
