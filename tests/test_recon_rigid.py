"""Rigid Fourier-inversion reconstruction against ground truth and a single-ray back-projection."""
from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.ndimage import map_coordinates

from flexview.errors import FlexviewInputError
from flexview.io.particles import ArrayImages, ParticleSet
from flexview.model.ctf import CTFParams, evaluate_ctf
from flexview.model.pose import euler_to_matrix, random_rotations
from flexview.recon.fsc import fsc, fsc_at
from flexview.recon.rigid import output_pixel_size, reconstruct_half_maps, reconstruct_rigid
from flexview.synth.dataset import simulate_dataset
from flexview.synth.simulate import render_map

BOX, PX = 32, 5.0


@pytest.fixture(scope="module")
def noise_free():
    """300 noise-free, CTF-modulated particles of the rigid phantom (box 32, 5 Å/px) and the true map."""
    sim = simulate_dataset("rigid", 300, BOX, snr=None, seed=11)
    return sim, render_map(sim.phantom, np.zeros(0), BOX, PX)


def _brute_force_inversion(images, rotations, origins, ctf, px, pad, wiener):
    """Direct Fourier inversion written out plainly: every Fourier sample of every padded image
    (Nyquist row and column left out) goes to q = k_x A[0] + k_y A[1] on a full periodic grid with
    8 trilinear weights; then Σ CTF·F / (Σ CTF² + wiener · mean weight in the Nyquist sphere),
    inverse FFT, crop, divide by sinc² per axis."""
    n = images.shape[-1]
    g = pad * n
    num, wsum = np.zeros((g, g, g), complex), np.zeros((g, g, g))
    k = np.fft.fftfreq(g, d=px)
    ky, kx = np.meshgrid(k, k, indexing="ij")
    iy, ix = np.rint(ky * g * px).astype(int), np.rint(kx * g * px).astype(int)
    used = (ix**2 + iy**2 <= (g / 2) ** 2) & (iy != -g // 2) & (ix != -g // 2)
    c = evaluate_ctf(ctf.batch(dtype=torch.float64), torch.tensor(ky), torch.tensor(kx)).numpy()
    lo = g // 2 - n // 2
    for img, a, o, cc in zip(images, rotations, origins, c):
        padded = np.zeros((g, g))
        padded[lo:lo + n, lo:lo + n] = img
        f = np.fft.fft2(np.fft.ifftshift(padded)) * np.exp(-2j * np.pi * (kx * o[0] + ky * o[1]))
        for r, col in zip(*np.nonzero(used)):
            q = ix[r, col] * a[0] + iy[r, col] * a[1]
            b = np.floor(q).astype(int)
            t = q - b
            for ox, oy, oz in itertools.product((0, 1), repeat=3):
                w = (t[0] if ox else 1 - t[0]) * (t[1] if oy else 1 - t[1]) * (t[2] if oz else 1 - t[2])
                idx = ((b[2] + oz) % g, (b[1] + oy) % g, (b[0] + ox) % g)
                num[idx] += w * cc[r, col] * f[r, col]
                wsum[idx] += w * cc[r, col] ** 2
    kk = np.fft.fftfreq(g) * g
    kz3, ky3, kx3 = np.meshgrid(kk, kk, kk, indexing="ij")
    eps = wiener * wsum[kz3**2 + ky3**2 + kx3**2 <= (g / 2) ** 2].mean()
    vol = np.fft.fftshift(np.fft.ifftn(num / (wsum + eps)).real)[lo:lo + n, lo:lo + n, lo:lo + n] / px
    s2 = np.sinc((np.arange(n) - n // 2) / g) ** 2
    return vol / (s2[:, None, None] * s2[None, :, None] * s2[None, None, :])


@pytest.mark.parametrize("pad", [1, 2])
def test_matches_brute_force_inversion_on_inconsistent_data(pad):
    """Random images (no common object) expose any misplaced sample, weight or mirror."""
    rng = np.random.default_rng(21)
    n, count, px = 8, 5, 2.0
    images = rng.normal(size=(count, n, n)).astype(np.float32)
    rotations, origins = random_rotations(count, rng), rng.uniform(-3, 3, (count, 2))
    ctf = CTFParams(defocus_u_A=rng.uniform(5000, 8000, count), defocus_v_A=5000.0,
                    defocus_angle_deg=rng.uniform(0, 180, count), voltage_kv=300.0, cs_mm=2.7,
                    amplitude_contrast=0.1, phase_shift_deg=0.0, bfactor_A2=0.0, scale=1.0)
    particles = ParticleSet(images=ArrayImages(images), pixel_size=px, box=n, rotations=rotations,
                            origins_A=origins, ctf=ctf)
    vol = reconstruct_rigid(particles, pad=pad, wiener=0.01)
    ref = _brute_force_inversion(images, rotations, origins, ctf, px, pad, 0.01)
    np.testing.assert_allclose(vol, ref, atol=2e-5 * np.abs(ref).max())


def _fsc_at(vol, ref, px, res):
    freq, values = fsc(vol, ref, pixel_size=px)
    return fsc_at(freq, values, res)


def test_reconstruction_matches_true_map_in_shape_and_scale(noise_free):
    sim, truth = noise_free
    vol = reconstruct_rigid(sim.particles)
    assert vol.shape == (BOX,) * 3 and vol.dtype == np.float32
    assert _fsc_at(vol, truth, PX, 15.0) > 0.95
    # the map is in the units of the true map (image = pixel size · Σ_z map)
    slope = float((vol * truth).sum() / (truth * truth).sum())
    assert 0.8 < slope < 1.1


def test_without_ctf_in_images_and_reconstruction():
    sim = simulate_dataset("rigid", 200, BOX, snr=None, seed=12, ctf=False)
    truth = render_map(sim.phantom, np.zeros(0), BOX, PX)
    vol = reconstruct_rigid(sim.particles, use_ctf=False)
    assert _fsc_at(vol, truth, PX, 15.0) > 0.97
    slope = float((vol * truth).sum() / (truth * truth).sum())
    assert 0.9 < slope < 1.1


def test_deterministic_and_independent_of_chunking(noise_free):
    sim, _ = noise_free
    a = reconstruct_rigid(sim.particles, chunk=64, pad=1)
    b = reconstruct_rigid(sim.particles, chunk=64, pad=1)
    c = reconstruct_rigid(sim.particles, chunk=37, pad=1)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(c, a, atol=1e-5 * np.abs(a).max())


def test_padding_and_fourier_cropped_output_box(noise_free):
    sim, truth = noise_free
    plain = reconstruct_rigid(sim.particles, pad=1)
    assert _fsc_at(plain, truth, PX, 15.0) > 0.95
    small = reconstruct_rigid(sim.particles, box=16, pad=1)
    assert output_pixel_size(sim.particles, 16) == pytest.approx(2 * PX)
    truth16 = render_map(sim.phantom, np.zeros(0), 16, 2 * PX)
    assert _fsc_at(small, truth16, 2 * PX, 30.0) > 0.95


def test_half_maps_use_their_own_particles(noise_free):
    sim, truth = noise_free
    h0, h1 = reconstruct_half_maps(sim.particles, pad=1)
    np.testing.assert_array_equal(h0, reconstruct_rigid(sim.particles, indices=sim.particles.half_set == 0, pad=1))
    np.testing.assert_array_equal(h1, reconstruct_rigid(sim.particles, indices=np.nonzero(sim.particles.half_set)[0],
                                                        pad=1))
    assert not np.array_equal(h0, h1)
    assert _fsc_at(h0, h1, PX, 20.0) > 0.9


def _ray_profile(vol, direction, through_A, box, px):
    """Mean of ``vol`` sampled along the line ``through_A + t · direction`` (|t| < box·px/3)."""
    t = np.linspace(-box * px / 3, box * px / 3, 41)
    points = through_A[None] + t[:, None] * direction[None]          # x, y, z Å
    index = points[:, ::-1] / px + box // 2                            # z, y, x indices
    return map_coordinates(vol, index.T, order=1).mean()


@pytest.mark.parametrize("angles", [(0.0, 0.0, 0.0), (40.0, 70.0, -25.0), (-120.0, 35.0, 80.0)])
def test_single_image_backprojects_along_its_viewing_ray(angles):
    """One image with one blob: the map is a streak through the points r with
    (A r)_x = (col − N/2)·px + origin_x and (A r)_y = (row − N/2)·px + origin_y, along A[2]."""
    box, px = 24, 2.0
    rows, cols = np.mgrid[:box, :box]
    row, col = 9, 15
    image = np.exp(-((rows - row) ** 2 + (cols - col) ** 2) / (2 * 1.2**2)).astype(np.float32)
    a = euler_to_matrix(*angles)
    origin = np.array([2.0 * px, -1.0 * px])
    particles = ParticleSet(images=ArrayImages(image[None]), pixel_size=px, box=box, rotations=a[None],
                            origins_A=origin[None])
    vol = reconstruct_rigid(particles)
    p_img = np.array([(col - box // 2) * px + origin[0], (row - box // 2) * px + origin[1], 0.0])
    on_ray = _ray_profile(vol, a[2], a.T @ p_img, box, px)
    wrong_shift = np.array([(col - box // 2) * px - origin[0], (row - box // 2) * px - origin[1], 0.0])
    off = [_ray_profile(vol, a[2], a.T @ wrong_shift, box, px)]                # shift sign flipped
    if not np.allclose(a, a.T):
        off.append(_ray_profile(vol, a.T[2], a @ p_img, box, px))              # transposed rotation
    assert on_ray > 0.0
    assert max(off) < 0.3 * on_ray


def test_bad_box_and_empty_selection(noise_free):
    sim, _ = noise_free
    with pytest.raises(FlexviewInputError):
        reconstruct_rigid(sim.particles, box=BOX * 2)
    with pytest.raises(FlexviewInputError):
        reconstruct_rigid(sim.particles, indices=np.zeros(len(sim.particles), bool))
    with pytest.raises(FlexviewInputError):
        reconstruct_rigid(replace(sim.particles, rotations=None))
