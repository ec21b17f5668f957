"""Fourier shell correlation between two maps, and the resolution where it crosses a threshold.

Shells are 1 Fourier pixel wide: shell ``s`` holds the frequencies whose radius, in Fourier pixels,
rounds to ``s`` (s = 0 … N // 2; the corners beyond Nyquist are left out). Its spatial frequency is
``s / (N · pixel_size)`` Å⁻¹.
"""
from __future__ import annotations

import numpy as np

from flexview.errors import FlexviewInputError


def shell_index(box: int) -> np.ndarray:
    """Shell of every sample of a full ``box``³ DFT (FFT order), shape (box, box, box) int."""
    k = np.fft.fftfreq(box) * box
    kz, ky, kx = np.meshgrid(k, k, k, indexing="ij")
    return np.rint(np.sqrt(kz**2 + ky**2 + kx**2)).astype(np.int64)


def fsc(map_a: np.ndarray, map_b: np.ndarray, *, mask: np.ndarray | None = None,
        pixel_size: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """FSC of two cubic maps ``[z, y, x]``.

    ``mask`` (same shape, values in [0, 1], soft edges allowed) multiplies both maps first.

    Returns
    -------
    freq : ndarray (N // 2 + 1,)   spatial frequency of each shell, Å⁻¹ (shell index / (N · px)).
    values : ndarray (N // 2 + 1,) FSC per shell; NaN where a shell has no power in either map.
    """
    a, b = np.asarray(map_a, np.float64), np.asarray(map_b, np.float64)
    if a.shape != b.shape or a.ndim != 3 or len(set(a.shape)) != 1:
        raise FlexviewInputError(f"FSC needs two cubic maps of one shape, got {a.shape} and {b.shape}",
                                 field="map")
    if mask is not None:
        if np.shape(mask) != a.shape:
            raise FlexviewInputError(f"mask shape {np.shape(mask)} differs from the maps' {a.shape}",
                                     field="mask")
        a, b = a * mask, b * mask
    box = a.shape[0]
    fa, fb = np.fft.fftn(a), np.fft.fftn(b)
    shells = shell_index(box).ravel()
    keep = shells <= box // 2
    s = shells[keep]
    n = box // 2 + 1
    cross = np.bincount(s, (fa * fb.conj()).real.ravel()[keep], n)
    pa = np.bincount(s, (np.abs(fa) ** 2).ravel()[keep], n)
    pb = np.bincount(s, (np.abs(fb) ** 2).ravel()[keep], n)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = cross / np.sqrt(pa * pb)
    values[(pa == 0) | (pb == 0)] = np.nan
    return np.arange(n) / (box * pixel_size), values


def resolution_at(freq: np.ndarray, values: np.ndarray, threshold: float = 0.143) -> float:
    """Resolution (Å) where the FSC first falls below ``threshold``, interpolated linearly in frequency.

    Shell 0 is skipped. Returns ``inf`` when the FSC is already below ``threshold`` at shell 1 (nothing
    resolved), ``1 / freq[-1]`` (the Nyquist resolution, a bound) when it never falls below it, and
    NaN when every shell beyond 0 is NaN. NaN shells are skipped.
    """
    f, v = np.asarray(freq, float)[1:], np.asarray(values, float)[1:]
    ok = np.isfinite(v)
    f, v = f[ok], v[ok]
    if len(v) == 0:
        return float("nan")
    below = np.nonzero(v < threshold)[0]
    if len(below) == 0:
        return float(1.0 / f[-1])
    i = below[0]
    if i == 0:
        return float("inf")
    t = (v[i - 1] - threshold) / (v[i - 1] - v[i])
    return float(1.0 / (f[i - 1] + t * (f[i] - f[i - 1])))


def fsc_at(freq: np.ndarray, values: np.ndarray, resolution_A: float) -> float:
    """FSC at ``resolution_A`` (Å), interpolated linearly between shells (NaN shells skipped)."""
    f, v = np.asarray(freq, float), np.asarray(values, float)
    ok = np.isfinite(v)
    target = 1.0 / resolution_A
    if target > f[ok][-1]:
        raise FlexviewInputError(f"{resolution_A} Å is beyond the Nyquist resolution {1 / f[-1]:.2f} Å",
                                 field="resolution")
    return float(np.interp(target, f[ok], v[ok]))
