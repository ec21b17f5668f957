"""Post-processing of two half maps: FSC weighting, Guinier B-factor, sharpening.

Amplitudes follow ``|F(k)| ∝ exp(−B k² / 4)`` (k in Å⁻¹, B in Å²). A B-factor *applied* to a map
multiplies its transform by ``exp(−B k² / 4)``, so sharpening uses a negative B (RELION's
convention for ``--adhoc_bfac``). The combined map of two half maps is weighted per shell by
``sqrt(2 FSC / (1 + FSC))`` (Rosenthal & Henderson 2003), the expected correlation of the
full-data map with the truth.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flexview.errors import FlexviewInputError
from flexview.recon.fsc import fsc, resolution_at

__all__ = ["PostProcessed", "apply_radial", "combined_weight", "guinier_bfactor", "postprocess",
           "radial_amplitude"]


def _radius(box: int) -> np.ndarray:
    """Fourier radius (Fourier pixels, continuous) of every rfft sample of a box³ map."""
    k = np.fft.fftfreq(box) * box
    kx = np.fft.rfftfreq(box) * box
    return np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + kx[None, None, :] ** 2)


def apply_radial(volume: np.ndarray, profile: np.ndarray) -> np.ndarray:
    """Multiply a map's transform by a radial profile given per integer shell (0 … len − 1),
    interpolated linearly in radius; radii beyond the profile take its last value."""
    vol = np.asarray(volume, dtype=np.float64)
    box = vol.shape[0]
    prof = np.asarray(profile, dtype=np.float64)
    filt = np.interp(_radius(box), np.arange(len(prof)), prof)
    return np.fft.irfftn(np.fft.rfftn(vol) * filt, s=vol.shape, axes=(0, 1, 2)).astype(np.float32)


def combined_weight(fsc_values: np.ndarray) -> np.ndarray:
    """Per-shell weight ``sqrt(2 FSC / (1 + FSC))`` of the average of two half maps (0 where the
    FSC is ≤ 0 or NaN)."""
    f = np.clip(np.nan_to_num(np.asarray(fsc_values, float), nan=0.0), 0.0, 1.0)
    return np.sqrt(2.0 * f / (1.0 + f))


def radial_amplitude(volume: np.ndarray) -> np.ndarray:
    """Root-mean-square Fourier amplitude per integer shell 0 … N//2, (N//2 + 1,)."""
    vol = np.asarray(volume, dtype=np.float64)
    box = vol.shape[0]
    shells = np.rint(_radius(box)).astype(np.int64).ravel()
    power = np.abs(np.fft.rfftn(vol)).ravel() ** 2
    keep = shells <= box // 2
    n = box // 2 + 1
    total = np.bincount(shells[keep], power[keep], n)
    count = np.bincount(shells[keep], minlength=n)
    return np.sqrt(total / np.maximum(count, 1))


def guinier_bfactor(volume: np.ndarray, pixel_size: float, *, low_A: float = 10.0,
                    high_A: float) -> float | None:
    """B-factor (Å²) of a map from a straight-line fit of ln |F| against k² between ``low_A`` and
    ``high_A`` (Å): ``ln |F| = c − (B / 4) k²``. None when fewer than 3 shells lie in the range."""
    amp = radial_amplitude(volume)
    freq = np.arange(len(amp)) / (volume.shape[0] * pixel_size)
    use = (freq >= 1.0 / low_A) & (freq <= 1.0 / high_A) & (amp > 0)
    if use.sum() < 3:
        return None
    slope = np.polyfit(freq[use] ** 2, np.log(amp[use]), 1)[0]
    return float(-4.0 * slope)


def _lowpass(n: int, box: int, pixel_size: float, resolution_A: float, edge_px: float = 2.0) -> np.ndarray:
    """Raised-cosine low-pass per shell: 1 up to the resolution's radius − edge, 0 from the radius."""
    r = box * pixel_size / resolution_A if np.isfinite(resolution_A) and resolution_A > 0 else n
    s = np.arange(n, dtype=float)
    t = np.clip((s - (r - edge_px)) / edge_px, 0.0, 1.0)
    return 0.5 * (1.0 + np.cos(np.pi * t))


@dataclass
class PostProcessed:
    """Result of :func:`postprocess`.

    ``freq`` (N//2+1,) Å⁻¹; ``fsc_global`` and ``fsc_masked`` (None without a mask) the half-map
    FSC curves; ``fsc_used`` the one behind the weighting and ``resolution_A`` its 0.143 crossing;
    ``combined`` the FSC-weighted average; ``sharpened`` that map with ``bfactor_applied`` (Å²)
    and low-passed at the resolution; ``bfactor_source`` "given", "guinier" or "none".
    """

    freq: np.ndarray
    fsc_global: np.ndarray
    fsc_masked: np.ndarray | None
    fsc_used: np.ndarray
    resolution_A: float
    resolution_global_A: float
    resolution_masked_A: float | None
    combined: np.ndarray
    sharpened: np.ndarray
    bfactor_applied: float
    bfactor_source: str


def postprocess(half_a: np.ndarray, half_b: np.ndarray, pixel_size: float, *,
                mask: np.ndarray | None = None, bfactor: float | None = None,
                guinier_low_A: float = 10.0) -> PostProcessed:
    """FSC between two half maps, their FSC-weighted average and a sharpened map.

    Parameters
    ----------
    half_a, half_b : (N, N, N) half maps ``[z, y, x]``.
    pixel_size : Å/voxel.
    mask : optional soft mask (values in [0, 1]); the masked FSC then drives the weighting and
        the B-factor fit uses the masked map.
    bfactor : B-factor to apply (Å², negative sharpens); None: ``−B`` of a Guinier fit of the
        combined map between ``guinier_low_A`` and the resolution.
    """
    a, b = np.asarray(half_a, np.float64), np.asarray(half_b, np.float64)
    if a.shape != b.shape:
        raise FlexviewInputError(f"half maps differ in shape: {a.shape} and {b.shape}", field="half map")
    box = a.shape[0]
    freq, f_global = fsc(a, b, pixel_size=pixel_size)
    f_masked = None if mask is None else fsc(a, b, mask=mask, pixel_size=pixel_size)[1]
    used = f_global if f_masked is None else f_masked
    res_global = resolution_at(freq, f_global)
    res_masked = None if f_masked is None else resolution_at(freq, f_masked)
    resolution = res_global if res_masked is None else res_masked
    average = 0.5 * (a + b)
    combined = apply_radial(average, combined_weight(used))
    source = "given"
    if bfactor is None:
        fitted = guinier_bfactor(average * (1.0 if mask is None else mask), pixel_size,
                                 low_A=guinier_low_A, high_A=resolution)
        bfactor, source = (0.0, "none") if fitted is None else (-fitted, "guinier")
    n = len(freq)
    profile = (combined_weight(used) * np.exp(-bfactor * freq ** 2 / 4.0)
               * _lowpass(n, box, pixel_size, resolution))
    sharpened = apply_radial(average, profile)
    return PostProcessed(freq, f_global, f_masked, used, resolution, res_global, res_masked,
                         combined, sharpened, float(bfactor), source)
