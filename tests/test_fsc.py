"""FSC against closed forms and a brute-force DFT loop."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from flexview.errors import FlexviewInputError
from flexview.recon.fsc import fsc, fsc_at, resolution_at, shell_index


def _brute_force_fsc(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """FSC by explicit sums over every voxel and every frequency (k in −N/2 … N/2−1)."""
    n = a.shape[0]
    ks = [k - n if k >= n // 2 else k for k in range(n)]
    cross, pa, pb = np.zeros(n // 2 + 1), np.zeros(n // 2 + 1), np.zeros(n // 2 + 1)
    r = np.arange(n)
    for kz, ky, kx in itertools.product(ks, ks, ks):
        shell = int(round(np.sqrt(kz * kz + ky * ky + kx * kx)))
        if shell > n // 2:
            continue
        fa = fb = 0j
        for z, y, x in itertools.product(r, r, r):
            phase = np.exp(-2j * np.pi * (kz * z + ky * y + kx * x) / n)
            fa += a[z, y, x] * phase
            fb += b[z, y, x] * phase
        cross[shell] += (fa * np.conj(fb)).real
        pa[shell] += abs(fa) ** 2
        pb[shell] += abs(fb) ** 2
    return cross / np.sqrt(pa * pb)


def test_fsc_matches_brute_force_loop_with_mask():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 6, 6))
    b = a + 0.7 * rng.normal(size=a.shape)
    mask = rng.uniform(0.2, 1.0, size=a.shape)
    freq, values = fsc(a, b, mask=mask, pixel_size=2.0)
    np.testing.assert_allclose(values, _brute_force_fsc(a * mask, b * mask), atol=1e-10)
    np.testing.assert_allclose(freq, np.arange(4) / (6 * 2.0))


def test_fsc_of_a_map_with_itself_is_one():
    vol = gaussian_filter(np.random.default_rng(1).normal(size=(16, 16, 16)), 1.0)
    _, values = fsc(vol, vol)
    np.testing.assert_allclose(values, 1.0, atol=1e-12)


def test_fsc_of_independent_noise_is_near_zero():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(2, 32, 32, 32))
    _, values = fsc(a, b)
    counts = np.bincount(shell_index(32).ravel())[:17]
    # Friedel pairs make only half of a real map's Fourier samples independent: σ ≈ sqrt(2 / n)
    limit = 3.0 * np.sqrt(2.0 / counts[1:])
    assert np.all(np.abs(values[1:]) < limit)
    assert np.abs(values[1:]).max() > 0.0


def test_fsc_scaling_and_sign():
    vol = gaussian_filter(np.random.default_rng(3).normal(size=(16, 16, 16)), 1.0)
    _, same = fsc(vol, 3.0 * vol + 0.0)
    _, flipped = fsc(vol, -vol)
    np.testing.assert_allclose(same, 1.0, atol=1e-12)
    np.testing.assert_allclose(flipped, -1.0, atol=1e-12)


def test_resolution_at_interpolates_the_crossing():
    freq = np.arange(6) / (10 * 2.0)                  # shells 0..5 of a box-10 map at 2 Å/px
    values = np.array([1.0, 0.9, 0.7, 0.3, 0.1, 0.0])
    # 0.5 lies halfway between shells 2 and 3 → frequency 2.5 / 20 Å⁻¹ → 8 Å
    assert resolution_at(freq, values, 0.5) == pytest.approx(8.0)
    t = (0.3 - 0.143) / (0.3 - 0.1)
    assert resolution_at(freq, values, 0.143) == pytest.approx(20.0 / (3 + t))
    assert fsc_at(freq, values, 8.0) == pytest.approx(0.5)


def test_resolution_at_edge_cases():
    freq = np.arange(5) / 8.0
    assert resolution_at(freq, np.array([1.0, 0.1, 0.0, 0.0, 0.0]), 0.143) == np.inf
    assert resolution_at(freq, np.array([1.0, 0.9, 0.9, 0.8, 0.7]), 0.143) == pytest.approx(2.0)
    assert np.isnan(resolution_at(freq, np.array([1.0, np.nan, np.nan, np.nan, np.nan])))
    with pytest.raises(FlexviewInputError):
        fsc_at(freq, np.ones(5), 1.0)


def test_fsc_rejects_mismatched_maps():
    with pytest.raises(FlexviewInputError):
        fsc(np.zeros((8, 8, 8)), np.zeros((8, 8, 6)))
    with pytest.raises(FlexviewInputError):
        fsc(np.zeros((8, 8, 8)), np.zeros((8, 8, 8)), mask=np.ones((4, 4, 4)))
