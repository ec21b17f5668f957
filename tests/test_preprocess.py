"""Preprocessing against closed forms: Gaussians under Fourier cropping, normalisation, noise spectra."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from flexview.errors import FlexviewInputError
from flexview.io.mrc import write_map
from flexview.preprocess import (fourier_crop, fourier_crop_volume, map_at_box, noise_power_spectrum, normalise,
                                 read_map_at_box, shell_frequencies)


def gaussian(box: int, pixel_size: float, sigma_A: float, centre_A=(0.0, 0.0, 0.0), ndim: int = 2) -> np.ndarray:
    """exp(−|r − c|² / 2σ²) sampled on a box grid with the origin at index box//2 (axes z, y, x)."""
    axis = (np.arange(box) - box // 2) * pixel_size
    grids = np.meshgrid(*([axis] * ndim), indexing="ij")  # (.., y, x)
    r2 = sum((g - c) ** 2 for g, c in zip(grids[::-1], centre_A))  # x pairs with centre[0]
    return np.exp(-r2 / (2 * sigma_A**2))


@pytest.mark.parametrize("new_box", [24, 18, 21])
def test_crop_of_band_limited_gaussian_equals_gaussian_on_coarse_grid(new_box):
    # σ = 4 Å: the spectrum is below 2e-5 at the coarsest Nyquist and the image edge is 5σ away
    box, px, sigma = 48, 1.0, 4.0
    centre = (1.3, -2.1)  # off-centre: checks the phase origin and the x/y order
    image = gaussian(box, px, sigma, centre)[None].astype(np.float64)
    cropped, new_px = fourier_crop(image, new_box, px)
    assert new_px == pytest.approx(px * box / new_box)
    assert cropped.shape == (1, new_box, new_box)
    expected = gaussian(new_box, new_px, sigma, centre)
    np.testing.assert_allclose(cropped[0], expected, atol=5e-5)


def test_crop_keeps_mean_and_type():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(3, 24, 24)).astype(np.float32) + 5.0
    cropped, _ = fourier_crop(images, 8, 1.5)
    assert cropped.dtype == np.float32
    np.testing.assert_allclose(cropped.mean(axis=(1, 2)), images.mean(axis=(1, 2)), rtol=1e-5)
    as_tensor, _ = fourier_crop(torch.from_numpy(images), 8, 1.5)
    assert isinstance(as_tensor, torch.Tensor)
    np.testing.assert_allclose(as_tensor.numpy(), cropped, atol=1e-6)
    same, px = fourier_crop(images, 24, 1.5)
    np.testing.assert_allclose(same, images, atol=1e-5)
    assert px == 1.5


def test_crop_volume_of_gaussian():
    box, new_box, sigma = 24, 12, 2.5
    volume = gaussian(box, 1.0, sigma, (1.0, -0.5, 2.0), ndim=3)
    cropped, voxel = fourier_crop_volume(volume, new_box, 1.0)
    assert voxel == 2.0
    np.testing.assert_allclose(cropped, gaussian(new_box, 2.0, sigma, (1.0, -0.5, 2.0), ndim=3), atol=5e-4)


def test_crop_rejects_bad_sizes():
    with pytest.raises(FlexviewInputError) as err:
        fourier_crop(np.zeros((1, 16, 16)), 20)
    assert err.value.field == "new_box"
    with pytest.raises(FlexviewInputError) as err:
        fourier_crop(np.zeros((1, 16, 12)), 8)
    assert err.value.field == "images"


def test_map_at_box_crops_a_gaussian_map_read_from_file(tmp_path):
    box, new_box, sigma, centre = 24, 12, 2.5, (1.0, -0.5, 2.0)
    path = tmp_path / "map.mrc"
    write_map(path, gaussian(box, 1.0, sigma, centre, ndim=3), 1.0)
    volume, voxel = read_map_at_box(path, new_box, extent_A=box * 1.004)    # within 1 %
    assert volume.dtype == np.float32 and volume.shape == (new_box,) * 3 and voxel == 2.0
    np.testing.assert_allclose(volume, gaussian(new_box, 2.0, sigma, centre, ndim=3), atol=5e-4)
    same, voxel = read_map_at_box(path)                       # no box: the map as it is
    assert voxel == 1.0
    np.testing.assert_allclose(same, gaussian(box, 1.0, sigma, centre, ndim=3), atol=1e-6)


@pytest.mark.parametrize("shape, box, extent_A, field", [
    ((16, 16, 12), None, None, "data"),          # not cubic
    ((16, 16, 16), 10, 16.0 * 1.05, "voxel size"),  # spans 5 % more than the particles
    ((16, 16, 16), 18, None, "box"),             # larger than the map
    ((16, 16, 16), 9, None, "box"),              # odd
    ((16, 16, 16), 6, None, "box"),              # below 8
])
def test_map_at_box_refuses_what_does_not_fit(shape, box, extent_A, field):
    with pytest.raises(FlexviewInputError) as err:
        map_at_box(np.ones(shape), 1.0, box, extent_A=extent_A, source="m.mrc")
    assert err.value.field == field and err.value.path == "m.mrc"


def brute_force_normalise(images: np.ndarray, radius: float) -> np.ndarray:
    """Per-image loop over pixels: mean and population std of pixels farther than radius from N//2."""
    out = np.empty_like(images, dtype=np.float64)
    n, box, _ = images.shape
    for i in range(n):
        values = [images[i, y, x] for y in range(box) for x in range(box)
                  if (y - box // 2) ** 2 + (x - box // 2) ** 2 > radius**2]
        mean = sum(values) / len(values)
        std = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
        out[i] = (images[i] - mean) / std
    return out


def test_normalise_matches_brute_force_and_ignores_the_particle():
    rng = np.random.default_rng(1)
    box, radius = 20, 6.0
    images = rng.normal(3.0, 2.0, (3, box, box))
    images += 50 * gaussian(box, 1.0, 2.0)  # bright particle inside the mask
    result = normalise(images, radius)
    np.testing.assert_allclose(result, brute_force_normalise(images, radius), atol=1e-10)
    axis = np.arange(box) - box // 2
    background = (axis[:, None] ** 2 + axis[None, :] ** 2) > radius**2
    np.testing.assert_allclose(result[:, background].mean(axis=1), 0.0, atol=1e-10)
    np.testing.assert_allclose(result[:, background].std(axis=1), 1.0, atol=1e-10)


def test_normalise_rejects_mask_without_background():
    with pytest.raises(FlexviewInputError) as err:
        normalise(np.zeros((1, 8, 8)), 20.0)
    assert err.value.field == "mask_radius_px"


@pytest.mark.parametrize("radius", [None, 9.0])
def test_white_noise_gives_flat_spectrum_at_its_variance(radius):
    rng = np.random.default_rng(2)
    sigma = 1.7
    noise = rng.normal(0.4, sigma, (300, 32, 32))
    power = noise_power_spectrum(noise, radius)
    assert power.shape == (17,)
    np.testing.assert_allclose(power[1:], sigma**2, rtol=0.06)
    assert abs(power[1:].mean() / sigma**2 - 1) < 0.015


def test_coloured_noise_spectrum_follows_the_filter():
    """Noise filtered by H(k) has power σ²|H(k)|²; compare shell by shell with the averaged filter."""
    rng = np.random.default_rng(3)
    box, sigma, width = 32, 1.0, 6.0
    k = np.fft.fftfreq(box) * box  # Fourier pixels
    kk = np.hypot(k[:, None], k[None, :])
    h = np.exp(-kk**2 / (2 * width**2)) + 0.1
    noise = np.fft.ifft2(np.fft.fft2(rng.normal(0, sigma, (400, box, box))) * h).real
    power = noise_power_spectrum(noise)
    shell = np.rint(kk).astype(int)
    expected = np.array([np.mean(sigma**2 * h[shell == s] ** 2) for s in range(box // 2 + 1)])
    np.testing.assert_allclose(power[1:], expected[1:], rtol=0.1)
    assert power[2] > 5 * power[15]  # clearly coloured


def test_shell_frequencies():
    np.testing.assert_allclose(shell_frequencies(8, 2.0), [0, 1 / 16, 2 / 16, 3 / 16, 4 / 16])
