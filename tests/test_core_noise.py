"""The reconstruction's noise weighting on particles with noise of a known coloured spectrum.

Noise is white Gaussian noise of real-space σ filtered in Fourier space by ``√g(r)`` (r the
integer Fourier radius), so its DFT (``numpy.fft.rfft2``, unnormalised) has power ``N² σ² g(r)``
per sample and the likelihood weight of shell r is ``N² / (2 N² σ² g(r)) = 1 / (2 σ² g(r))``.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from flexview.io import ArrayImages
from flexview.model import build_regular_mesh, density_mask
from flexview.recon.highres import estimate_noise_weight, full_box_model
from flexview.recon.stream import ParticleStream
from flexview.synth import render_map, simulate_dataset

N_PARTICLES, BOX, SNR = 400, 24, 0.5


def shell_radius(box: int) -> np.ndarray:
    """Integer Fourier radius of every rfft2 sample (numpy layout), (N, N//2 + 1)."""
    ky = np.fft.fftfreq(box) * box
    kx = np.fft.rfftfreq(box) * box
    return np.rint(np.hypot(ky[:, None], kx[None, :])).astype(int)


def noise_shape(radius):
    """g(r): four times the power at low frequency as at high frequency."""
    return 1.0 + 3.0 * np.exp(-(radius / (BOX / 4)) ** 2)


@pytest.fixture(scope="module")
def coloured():
    """(model, stream, σ): rigid phantom particles (CTF, no noise) plus coloured noise."""
    sim = simulate_dataset("rigid", N_PARTICLES, BOX, snr=None, seed=2)
    p = sim.particles
    clean = p.images.read(np.arange(N_PARTICLES)).astype(np.float64)
    sigma = float(np.sqrt(clean.var() / SNR))
    white = np.random.default_rng(2).normal(scale=sigma, size=clean.shape)
    noise = np.fft.irfft2(np.fft.rfft2(white) * np.sqrt(noise_shape(shell_radius(BOX))), s=(BOX, BOX))
    noisy = dataclasses.replace(p, images=ArrayImages((clean + noise).astype(np.float32)))
    truth = render_map(sim.phantom, np.zeros(0), BOX, p.pixel_size)
    mask = density_mask(truth, p.pixel_size, dilate_A=8.0)
    model = full_box_model(build_regular_mesh(truth, p.pixel_size, cells_across=4), None, mask, p.pixel_size)
    return model, ParticleStream(noisy, np.arange(N_PARTICLES)), sigma


def test_noise_weights_follow_the_coloured_spectrum(coloured):
    model, stream, sigma = coloured
    weight, power = estimate_noise_weight(model, stream, count=N_PARTICLES)
    radius = shell_radius(BOX)
    shells = np.arange(radius.max() + 1)
    expected = 1.0 / (2 * sigma**2 * noise_shape(shells))
    assert len(weight) == len(power) == len(shells)
    assert expected[-1] > 3 * expected[1]                              # clearly coloured
    mult = np.full(radius.shape, 2.0)
    mult[:, 0] = mult[:, -1] = 1.0
    for r in shells[1:]:
        independent = 0.5 * mult[radius == r].sum() * N_PARTICLES     # complex samples in the shell
        # sampling error, plus a few per cent of signal the rigid reference does not reproduce
        tolerance = 4.0 / np.sqrt(independent) + 0.05
        assert float(weight[r]) == pytest.approx(expected[r], rel=tolerance), r
        assert float(power[r]) == pytest.approx(BOX**2 * sigma**2 * noise_shape(r), rel=tolerance), r
    assert float(weight[0]) == float(weight[1])                        # DC: the weight of shell 1
    assert not model.canonical.volume.detach().any() and model.flow_enabled
