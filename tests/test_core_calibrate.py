"""Calibration of the map scale and the noise spectrum, against closed forms.

Particles are ``s ×`` (the rigid model's own images) ``+`` white Gaussian noise of real-space
standard deviation σ. The DFT (``numpy.fft.rfft2``, unnormalised) of such noise has
``E|n(k)|² = N² σ²`` at every frequency; the least-squares scale has standard deviation
``N σ / √(Σ m |M|²)`` (m the half-plane multiplicity, M the model spectra); the mean of ``n``
independent exponential variables has relative standard deviation ``1/√n``.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from _tiny import particle_parameters, render, tiny_model, training_data

from flexview.model.loss import data_loss
from flexview.train.calibrate import calibrate, noise_weight

N_PARTICLES, SCALE, SEED = 300, 0.37, 5


def shell_radius(box: int) -> np.ndarray:
    """Integer Fourier radius of every rfft2 sample (numpy layout), (N, N//2 + 1)."""
    ky = np.fft.fftfreq(box) * box
    kx = np.fft.rfftfreq(box) * box
    return np.rint(np.hypot(ky[:, None], kx[None, :])).astype(int)


def multiplicity(box: int) -> np.ndarray:
    m = np.full((box, box // 2 + 1), 2.0)
    m[:, 0] = 1.0
    m[:, -1] = 1.0                                   # even box: the Nyquist column is its own mirror
    return m


@pytest.fixture(scope="module")
def noisy_particles():
    """(model, data, clean images, σ): SCALE × model images + white noise of σ = ½ signal std."""
    model = tiny_model()
    draw = particle_parameters(N_PARTICLES, SEED)
    clean = render(model, draw).astype(np.float64)
    sigma = 0.5 * SCALE * float(clean.std())
    noise = np.random.default_rng(SEED).normal(scale=sigma, size=clean.shape)
    return model, training_data(SCALE * clean + noise, draw), clean, sigma


def test_scale_is_the_factor_between_particles_and_model_images(noisy_particles):
    model, data, clean, sigma = noisy_particles
    box = data.box
    spectra = np.fft.rfft2(np.fft.ifftshift(clean, axes=(-2, -1)))
    not_dc = shell_radius(box) > 0
    energy = float((multiplicity(box) * np.abs(spectra) ** 2 * not_dc).sum())
    std = box * sigma / np.sqrt(energy)
    scale, _ = calibrate(model, data, np.arange(len(data)), "cpu")
    assert abs(scale - SCALE) < 5 * std + 1e-4 * SCALE
    assert std < 0.01 * SCALE                                        # the bound is tight


def test_noise_power_per_shell_is_n_squared_sigma_squared(noisy_particles):
    model, data, _, sigma = noisy_particles
    box = data.box
    _, power = calibrate(model, data, np.arange(len(data)), "cpu")
    radius = shell_radius(box)
    expected = box**2 * sigma**2
    for r in range(1, int(radius.max()) + 1):
        independent = 0.5 * (multiplicity(box) * (radius == r)).sum() * len(data)   # complex samples
        tolerance = 5.0 / np.sqrt(independent)
        assert float(power[r]) == pytest.approx(expected, rel=tolerance), r
    assert len(power) == radius.max() + 1


def test_noise_weight_is_the_gaussian_likelihood_weight(noisy_particles):
    """``N² / (2σ²(r))`` with DC 0; with it the data term of pure noise has the mean of a
    Gaussian negative log-likelihood, half the number of real degrees of freedom (N² − 1)."""
    model, data, _, sigma = noisy_particles
    box = data.box
    _, power = calibrate(model, data, np.arange(len(data)), "cpu")
    weight = noise_weight(power.clone(), box)
    assert weight[0] == 0.0
    np.testing.assert_allclose(weight[1:].numpy(), box**2 / (2 * power[1:].numpy()), rtol=1e-6)
    np.testing.assert_allclose(weight[1:].numpy(), 1.0 / (2 * sigma**2), rtol=0.15)

    exact = noise_weight(torch.full((len(power),), box**2 * sigma**2, dtype=torch.float64), box)
    noise = np.random.default_rng(1).normal(scale=sigma, size=(2000, box, box))
    spectra = torch.as_tensor(np.fft.rfft2(np.fft.ifftshift(noise, axes=(-2, -1))))
    nll = data_loss(torch.zeros_like(spectra), spectra, noise_weight=exact)
    dof = box**2 - 1
    assert float(nll.mean()) == pytest.approx(dof / 2, abs=5 * np.sqrt(dof / 2 / len(nll)))
