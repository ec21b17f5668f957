"""Image and map preprocessing: Fourier cropping, resampling of mixed optics groups to one grid,
maps at a chosen box, background normalisation, noise spectra.

Functions take NumPy arrays or torch tensors and return the same kind. Images are stacks
``[n, y, x]`` (square), maps ``[z, y, x]`` (cubic); the centre is the pixel with index ``N // 2``,
as everywhere in flexview. Large stacks should be passed in batches.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from flexview.errors import FlexviewInputError
from flexview.io.mrc import read_map
from flexview.model.grid import radial_index

ArrayLike = np.ndarray | Tensor


def _as_tensor(x: ArrayLike) -> tuple[Tensor, bool]:
    """(float tensor, whether the input was NumPy)."""
    if isinstance(x, Tensor):
        return (x if x.is_floating_point() else x.float()), False
    a = np.asarray(x)
    return torch.from_numpy(a if a.dtype in (np.float32, np.float64) else a.astype(np.float32)), True


def _back(t: Tensor, to_numpy: bool) -> ArrayLike:
    return t.detach().cpu().numpy() if to_numpy else t


def _check_square(x: Tensor, ndim: int, what: str) -> int:
    shape = tuple(x.shape[-ndim:])
    if x.ndim < ndim or len(set(shape)) != 1:
        raise FlexviewInputError(f"expected {'square images' if ndim == 2 else 'a cubic map'}, found shape "
                                 f"{tuple(x.shape)}", None, what)
    return shape[0]


# ----------------------------------------------------------------------------------------------
# Fourier cropping
# ----------------------------------------------------------------------------------------------

def _fourier_crop(x: Tensor, new_box: int, ndim: int) -> Tensor:
    """Keep the central ``new_box`` Fourier samples along the last ``ndim`` axes (sample-preserving)."""
    box = x.shape[-1]
    dims = tuple(range(-ndim, 0))
    spectrum = torch.fft.fftshift(torch.fft.fftn(torch.fft.ifftshift(x, dim=dims), dim=dims), dim=dims)
    start = box // 2 - new_box // 2
    index = (Ellipsis,) + (slice(start, start + new_box),) * ndim
    cropped = torch.fft.ifftshift(spectrum[index], dim=dims)
    out = torch.fft.fftshift(torch.fft.ifftn(cropped, dim=dims), dim=dims).real
    return out * (new_box / box) ** ndim


def _check_new_box(new_box: int, box: int) -> None:
    if not 1 <= new_box <= box:
        raise FlexviewInputError(f"new box {new_box} must be between 1 and the current box {box}", None,
                                 "new_box")


def fourier_crop(images: ArrayLike, new_box: int, pixel_size: float = 1.0) -> tuple[ArrayLike, float]:
    """Downsample images by cropping their centred Fourier transform.

    Parameters
    ----------
    images : array (n, N, N) or (N, N)
    new_box : int
        M ≤ N, the new edge length in pixels.
    pixel_size : float
        Å per pixel of ``images``.

    Returns
    -------
    cropped : array (n, M, M), same dtype and kind as ``images``
    new_pixel_size : float
        ``pixel_size · N / M`` in Å.

    Notes
    -----
    Values are *sample-preserving*: the result samples the same band-limited function on the
    coarser grid, so a constant image keeps its value and a projection (a line integral, in
    density units × Å) stays comparable pixel by pixel; the image sum shrinks by (M/N)². The phase
    origin is pixel N//2, which lands on pixel M//2. For even M the Nyquist row and column are
    taken as they are and the real part of the inverse transform is returned.
    """
    x, was_numpy = _as_tensor(images)
    box = _check_square(x, 2, "images")
    _check_new_box(new_box, box)
    return _back(_fourier_crop(x, new_box, 2), was_numpy), float(pixel_size) * box / new_box


def fourier_crop_volume(volume: ArrayLike, new_box: int, voxel_size: float = 1.0) -> tuple[ArrayLike, float]:
    """Downsample a map ``[z, y, x]`` (N³) to M³ by Fourier cropping; returns (map, voxel_size · N / M).

    Sample-preserving like :func:`fourier_crop`: density values keep their scale.
    """
    x, was_numpy = _as_tensor(volume)
    box = _check_square(x, 3, "volume")
    _check_new_box(new_box, box)
    return _back(_fourier_crop(x, new_box, 3), was_numpy), float(voxel_size) * box / new_box


# ----------------------------------------------------------------------------------------------
# optics groups of different pixel sizes or boxes, resampled to one grid
# ----------------------------------------------------------------------------------------------

def _fourier_pad(x: Tensor, new_box: int) -> Tensor:
    """Upsample ``[..., N, N]`` to ``[..., M, M]`` (M > N) by zero-padding the centred DFT
    (sample-preserving, phase origin N//2 → M//2)."""
    box, dims = x.shape[-1], (-2, -1)
    spectrum = torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=dims)), dim=dims)
    padded = spectrum.new_zeros(spectrum.shape[:-2] + (new_box, new_box))
    start = new_box // 2 - box // 2
    padded[..., start:start + box, start:start + box] = spectrum
    out = torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(padded, dim=dims)), dim=dims).real
    return out * (new_box / box) ** 2


def _centre_window(x: Tensor, box: int) -> Tensor:
    """Crop or zero-pad ``[..., M, M]`` in real space to ``[..., box, box]``, pixel M//2 → box//2."""
    m = x.shape[-1]
    if m == box:
        return x
    if m > box:
        start = m // 2 - box // 2
        return x[..., start:start + box, start:start + box]
    out = x.new_zeros(x.shape[:-2] + (box, box))
    start = box // 2 - m // 2
    out[..., start:start + m, start:start + m] = x
    return out


def resample_images(images: ArrayLike, fourier_box: int, box: int) -> ArrayLike:
    """Images ``(n, B, B)`` brought to another pixel size and box: Fourier-cropped (or zero-padded)
    to ``fourier_box`` M, which scales the pixel size by B / M, then cropped (or zero-padded) in
    real space to ``box`` around pixel M//2. Sample-preserving like :func:`fourier_crop`; with
    M = box ≤ B it is :func:`fourier_crop` exactly."""
    x, was_numpy = _as_tensor(images)
    size = _check_square(x, 2, "images")
    if fourier_box < size:
        x = _fourier_crop(x, fourier_box, 2)
    elif fourier_box > size:
        x = _fourier_pad(x, fourier_box)
    return _back(_centre_window(x, box), was_numpy)


def map_at_box(volume: np.ndarray, voxel_size_A: float, box: int | None = None, *,
               extent_A: float | None = None, source: str | Path | None = None) -> tuple[np.ndarray, float]:
    """A cubic map Fourier-cropped to ``box``, after checking that it fits.

    Parameters
    ----------
    volume : array (N, N, N), [z, y, x]
    voxel_size_A : float
        Å per voxel of ``volume``.
    box : int, optional
        The box wanted, even, 8 ≤ box ≤ N; None keeps N.
    extent_A : float, optional
        The physical edge the map must span (e.g. particle box × pixel size), 1 % tolerance; the
        voxel size itself may differ from the images' pixel size.
    source : str or Path, optional
        The file the map came from, named in errors.

    Returns
    -------
    volume : float32 array (box, box, box), sample-preserving (see :func:`fourier_crop_volume`)
    voxel_size_A : float
        ``voxel_size_A · N / box``.

    Raises
    ------
    FlexviewInputError
        For a map that is not cubic (field ``data``), spans another extent (``voxel size``) or a
        box that is odd, below 8 or above N (``box``).
    """
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim != 3 or len(set(volume.shape)) != 1:
        raise FlexviewInputError(f"expected a cubic map, found shape {volume.shape}", source, "data")
    n = volume.shape[0]
    if extent_A is not None and abs(n * voxel_size_A - extent_A) > 0.01 * extent_A:
        raise FlexviewInputError(f"the map spans {n * voxel_size_A:.1f} Å ({n} × {voxel_size_A:.3f} Å) but "
                                 f"the particles span {extent_A:.1f} Å", source, "voxel size")
    if box is None:
        return volume, float(voxel_size_A)
    if not 8 <= box <= n or box % 2:
        raise FlexviewInputError(f"the box must be even, at least 8 and at most the map box {n}, not {box}",
                                 source, "box")
    if box == n:
        return volume, float(voxel_size_A)
    cropped, voxel = fourier_crop_volume(volume, box, voxel_size_A)
    return np.asarray(cropped, dtype=np.float32), voxel


def read_map_at_box(path: str | Path, box: int | None = None, *,
                    extent_A: float | None = None) -> tuple[np.ndarray, float]:
    """Read an MRC map and return :func:`map_at_box` of it; errors name ``path``."""
    volume, voxel = read_map(path, cubic=True)
    return map_at_box(volume, voxel, box, extent_A=extent_A, source=path)


# ----------------------------------------------------------------------------------------------
# normalisation and noise
# ----------------------------------------------------------------------------------------------

def background_mask(box: int, mask_radius_px: float | None) -> Tensor:
    """Boolean ``[box, box]``: True outside the circle of ``mask_radius_px`` around pixel (N//2, N//2).

    ``None`` selects every pixel (images of pure noise).
    """
    if mask_radius_px is None:
        return torch.ones(box, box, dtype=torch.bool)
    axis = torch.arange(box, dtype=torch.float64) - box // 2
    r2 = axis[:, None] ** 2 + axis[None, :] ** 2
    mask = r2 > float(mask_radius_px) ** 2
    if mask.sum() < 2:
        raise FlexviewInputError(f"a mask radius of {mask_radius_px} px leaves no background in a {box} px box",
                                 None, "mask_radius_px")
    return mask


def normalise(images: ArrayLike, mask_radius_px: float | None) -> ArrayLike:
    """Scale each image so that its background has mean 0 and standard deviation 1.

    Parameters
    ----------
    images : array (n, N, N)
    mask_radius_px : float or None
        Pixels farther than this from the centre (N//2, N//2) are background; None uses every pixel.

    Returns
    -------
    array (n, N, N): ``(image − mean_bg) / std_bg`` per image (population std).
    """
    x, was_numpy = _as_tensor(images)
    box = _check_square(x, 2, "images")
    background = x[..., background_mask(box, mask_radius_px).to(x.device)]
    mean = background.mean(dim=-1)
    std = background.std(dim=-1, correction=0)
    if not bool((std > 0).all()):
        raise FlexviewInputError("an image has a constant background and cannot be normalised", None, "images")
    return _back((x - mean[..., None, None]) / std[..., None, None], was_numpy)


def noise_power_spectrum(images: ArrayLike, mask_radius_px: float | None = None) -> ArrayLike:
    """Radially averaged noise power of a stack, per Fourier shell, from its background pixels.

    Parameters
    ----------
    images : array (n, N, N)
    mask_radius_px : float or None
        Background = pixels farther than this from the centre; None uses whole images (noise-only
        images, e.g. from empty areas).

    Returns
    -------
    array (N//2 + 1,), float64
        ``power[s]`` for the shell of radius ``s`` Fourier pixels, i.e. ``|k| ≈ s / (N · pixel_size)``
        (see :func:`shell_frequencies`). Units: image value², normalised as a per-pixel variance:
        white noise of variance σ² gives σ² in every shell (equivalently, the variance of a
        coefficient of the orthonormal DFT). The background mean of each image is removed first,
        so the DC shell cannot be estimated and is set equal to shell 1.

    Notes
    -----
    With a mask ``w`` of ``n_bg`` pixels, ``|FT((x − mean)·w)|²`` has expectation
    ``σ² (n_bg − |W(k)|² / n_bg)`` for white noise (``W`` = FT of ``w``); that is the divisor
    used, so white noise is estimated without bias at every k ≠ 0 whatever the mask.
    """
    x, was_numpy = _as_tensor(images)
    box = _check_square(x, 2, "images")
    x = x.reshape(-1, box, box).to(torch.float64)
    w = background_mask(box, mask_radius_px).to(torch.float64)
    n_bg = w.sum()
    mean = (x * w).sum(dim=(-2, -1)) / n_bg
    power = torch.fft.fft2((x - mean[:, None, None]) * w).abs().square().mean(dim=0)
    expected = n_bg - torch.fft.fft2(w).abs().square() / n_bg
    per_frequency = torch.where(expected > 1e-9 * n_bg, power / expected.clamp_min(1e-30), torch.nan)
    shells = _shell_average(per_frequency, radial_index(box, rfft=False), box // 2 + 1)
    shells[0] = shells[1]
    return _back(shells, was_numpy)


def _shell_average(values: Tensor, shell: Tensor, n_shells: int) -> Tensor:
    """Mean of ``values`` over each integer shell 0 .. n_shells-1 (NaN entries skipped)."""
    keep = (shell < n_shells) & ~torch.isnan(values)
    s, v = shell[keep], values[keep]
    total = torch.zeros(n_shells, dtype=values.dtype).index_add_(0, s, v)
    count = torch.zeros(n_shells, dtype=values.dtype).index_add_(0, s, torch.ones_like(v))
    return total / count


def shell_frequencies(box: int, pixel_size: float) -> np.ndarray:
    """Spatial frequency (Å⁻¹) of each shell of :func:`noise_power_spectrum`, shape (box//2 + 1,)."""
    return np.arange(box // 2 + 1) / (box * pixel_size)
