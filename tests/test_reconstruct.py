"""High-resolution reconstruction: the L-BFGS solver, the least-squares problem, the rigid limit,
FSC post-processing and the resampling of masks, against closed forms and independent references."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from flexview.model import build_regular_mesh, density_mask
from flexview.recon import fsc, reconstruct_rigid
from flexview.recon.highres import (
    ReconProblem,
    fourier_preconditioner,
    full_box_model,
    hessian_profile,
    resample_mask,
    resample_volume,
    solve_map,
)
from flexview.recon.lbfgs import lbfgs_quadratic
from flexview.recon.postprocess import apply_radial, combined_weight, guinier_bfactor, postprocess, radial_amplitude
from flexview.recon.stream import ParticleStream
from flexview.synth import render_map, simulate_dataset


# ------------------------------------------------------------------ L-BFGS on an explicit quadratic
def _spd(n: int, cond: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return (q * np.geomspace(1.0, cond, n)) @ q.T


def test_lbfgs_solves_an_explicit_quadratic_and_tracks_its_value_exactly():
    h = _spd(40, 1e3, 0)
    b = np.random.default_rng(1).normal(size=40)
    ht = torch.as_tensor(h)
    f0 = 3.0
    values = []

    def exact(x):
        x = x.numpy()
        return f0 - b @ x + 0.5 * x @ h @ x

    res = lbfgs_quadratic(torch.as_tensor(-b), f0, lambda d: ht @ d, iters=60, memory=60,
                          callback=lambda k, r: values.append(exact(r.x)))
    np.testing.assert_allclose(res.x.numpy(), np.linalg.solve(h, b), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(res.objective[1:len(values) + 1], values, rtol=1e-9)
    assert all(np.diff(res.objective) <= 1e-12)


def test_lbfgs_with_an_exact_preconditioner_converges_in_one_step():
    h = _spd(30, 1e4, 2)
    b = np.random.default_rng(3).normal(size=30)
    inv = torch.as_tensor(np.linalg.inv(h))
    res = lbfgs_quadratic(torch.as_tensor(-b), 0.0, lambda d: torch.as_tensor(h) @ d, iters=1,
                          precondition=lambda v: inv @ v)
    np.testing.assert_allclose(res.x.numpy(), np.linalg.solve(h, b), rtol=1e-8)


# ------------------------------------------------------------------ the least-squares problem
@pytest.fixture(scope="module")
def rigid_problem():
    """Noise-free rigid phantom (box 24): particles, true map, mask, mesh."""
    sim = simulate_dataset("rigid", 160, 24, snr=None, seed=1)
    p = sim.particles
    truth = render_map(sim.phantom, np.zeros(0), 24, p.pixel_size)
    mask = density_mask(truth, p.pixel_size, dilate_A=8.0)
    mesh = build_regular_mesh(truth, p.pixel_size, cells_across=6)
    return p, truth, mask, mesh


def _problem(rigid_problem, rows=None, **kwargs) -> ReconProblem:
    p, _, mask, mesh = rigid_problem
    model = full_box_model(mesh, None, mask, p.pixel_size)
    stream = ParticleStream(p, np.arange(len(p)) if rows is None else rows)
    return ReconProblem(model, stream, torch.ones(40), use_flow=False, chunk=50, **kwargs)


def test_objective_gradient_and_hessian_agree_with_finite_differences(rigid_problem):
    prob = _problem(rigid_problem, rows=np.arange(30), tikhonov=0.3)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(prob.n_values, generator=gen, dtype=torch.float64)
    d = torch.randn(prob.n_values, generator=gen, dtype=torch.float64)
    f, g = prob.objective(x)
    fp, gp = prob.objective(x + d)
    fm, _ = prob.objective(x - d)
    # a quadratic: central differences are exact for any step
    np.testing.assert_allclose((fp - fm) / 2.0, float(g @ d), rtol=1e-4)
    hd = prob.hessian_vector(d)
    np.testing.assert_allclose(fp + fm - 2.0 * f, float(d @ hd), rtol=1e-4)
    np.testing.assert_allclose((gp - g).numpy(), hd.numpy(), rtol=1e-3, atol=1e-4 * float(hd.abs().max()))


def test_lbfgs_decreases_the_objective_of_the_forward_model(rigid_problem):
    prob = _problem(rigid_problem, rows=np.arange(60))
    iterates = []
    res = solve_map(prob, iters=6, callback=lambda k, r: iterates.append(r.x.clone()))
    exact = [prob.objective(x)[0] for x in iterates]
    np.testing.assert_allclose(res.objective[1:], exact, rtol=1e-4)
    assert np.all(np.diff([res.objective[0]] + exact) < 0)
    assert exact[-1] < 0.1 * res.objective[0]


def test_preconditioner_is_symmetric_and_positive(rigid_problem):
    prob = _problem(rigid_problem, rows=np.arange(20))
    m = fourier_preconditioner(prob, hessian_profile(prob))
    gen = torch.Generator().manual_seed(1)
    u, v = (torch.randn(prob.n_values, generator=gen, dtype=torch.float64) for _ in range(2))
    np.testing.assert_allclose(float(u @ m(v)), float(m(u) @ v), rtol=1e-8)
    assert float(u @ m(u)) > 0


def test_zero_flow_reproduces_the_rigid_reference_reconstruction(rigid_problem):
    p, truth, mask, _ = rigid_problem
    prob = _problem(rigid_problem)
    res = solve_map(prob, iters=15, preconditioner=fourier_preconditioner(prob, hessian_profile(prob)))
    ours = prob.volume(res.x)
    reference = reconstruct_rigid(p)                      # direct Fourier inversion (Foundation)
    assert np.corrcoef(ours[mask], reference[mask])[0, 1] > 0.85
    _, shells = fsc(ours * mask, reference * mask)
    assert np.all(shells[1:9] > 0.95)
    _, to_truth = fsc(ours * mask, truth * mask)
    assert np.all(to_truth[1:] > 0.85)


def test_transposed_poses_do_not_reproduce_the_map(rigid_problem):
    """Negative control: the same solve with the rotations transposed scores far lower."""
    from dataclasses import replace

    p, truth, mask, mesh = rigid_problem
    wrong = replace(p, rotations=p.rotations.transpose(0, 2, 1).copy())
    model = full_box_model(mesh, None, mask, p.pixel_size)
    prob = ReconProblem(model, ParticleStream(wrong, np.arange(len(p))), torch.ones(40), use_flow=False,
                        chunk=50)
    ours = prob.volume(solve_map(prob, iters=8).x)
    assert np.corrcoef(ours[mask], truth[mask])[0, 1] < 0.6


# ------------------------------------------------------------------ resampling of masks
def _ball(box: int, pixel_size: float, radius_A: float, centre_A=(6.0, -4.0, 2.0)) -> np.ndarray:
    axis = (np.arange(box) - box // 2) * pixel_size
    z, y, x = np.meshgrid(axis, axis, axis, indexing="ij")
    cx, cy, cz = centre_A
    return (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= radius_A ** 2


def test_resampled_mask_covers_the_same_region():
    small = _ball(16, 4.0, 20.0)
    big = resample_mask(small, 4.0, 32, 2.0)
    truth = _ball(32, 2.0, 20.0)
    assert (big == truth).mean() > 0.97
    off = _ball(32, 2.0, 20.0, centre_A=(-6.0, -4.0, 2.0))     # mirrored centre: clearly worse
    assert (big == off).mean() < (big == truth).mean() - 0.01


def test_resample_volume_preserves_a_linear_ramp():
    axis = (np.arange(16) - 8) * 3.0
    z, y, x = np.meshgrid(axis, axis, axis, indexing="ij")
    ramp = (0.5 * x - 0.2 * y + 0.1 * z).astype(np.float32)
    out = resample_volume(ramp, 3.0, 24, 1.5)
    axis2 = (np.arange(24) - 12) * 1.5
    z2, y2, x2 = np.meshgrid(axis2, axis2, axis2, indexing="ij")
    inner = (slice(2, 22),) * 3
    np.testing.assert_allclose(out[inner], (0.5 * x2 - 0.2 * y2 + 0.1 * z2)[inner], atol=1e-4)


# ------------------------------------------------------------------ FSC and post-processing
def _smooth_map(box: int, seed: int) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(np.random.default_rng(seed).normal(size=(box,) * 3), 1.0)


def test_fsc_of_a_map_with_itself_is_one_and_with_noise_near_zero():
    vol = _smooth_map(24, 0)
    same = postprocess(vol, vol, 2.0, bfactor=0.0)
    np.testing.assert_allclose(same.fsc_global[1:], 1.0, atol=1e-9)
    assert same.resolution_A == pytest.approx(4.0)       # never below 0.143: the Nyquist bound
    np.testing.assert_allclose(same.combined, vol, atol=1e-5 * np.abs(vol).max())
    noise = np.random.default_rng(5).normal(size=vol.shape)
    other = postprocess(noise, np.random.default_rng(6).normal(size=vol.shape), 2.0, bfactor=0.0)
    assert np.abs(other.fsc_global[2:]).max() < 0.15
    assert np.abs(np.mean(other.fsc_global[2:])) < 0.03


def test_combined_weight_closed_form():
    f = np.array([1.0, 0.5, 0.143, 0.0, -0.2, np.nan])
    np.testing.assert_allclose(combined_weight(f), [1.0, np.sqrt(2 / 3), np.sqrt(0.286 / 1.143), 0, 0, 0])


def test_guinier_fit_recovers_a_known_bfactor():
    box, px, b_true = 48, 1.0, 120.0
    freq = np.arange(box) / (box * px)
    noise = np.random.default_rng(2).normal(size=(box,) * 3)
    vol = apply_radial(noise, np.exp(-b_true * freq ** 2 / 4.0))
    assert guinier_bfactor(vol, px, low_A=10.0, high_A=2.5) == pytest.approx(b_true, rel=0.05)
    sharp = apply_radial(vol, np.exp(b_true * freq ** 2 / 4.0))      # undo it: flat amplitudes
    amp = radial_amplitude(sharp)[5:20]
    assert amp.std() / amp.mean() < 0.1
    assert guinier_bfactor(vol, px, low_A=10.0, high_A=9.0) is None  # too few shells


def test_postprocess_estimates_sharpening_from_the_halves():
    box, px, b_true = 40, 1.0, 80.0
    freq = np.arange(box) / (box * px)
    signal = apply_radial(np.random.default_rng(0).normal(size=(box,) * 3), np.exp(-b_true * freq ** 2 / 4))
    rng = np.random.default_rng(1)
    sigma = 0.02 * signal.std()
    out = postprocess(signal + sigma * rng.normal(size=signal.shape),
                      signal + sigma * rng.normal(size=signal.shape), px)
    assert out.bfactor_source == "guinier"
    assert out.bfactor_applied == pytest.approx(-b_true, rel=0.15)
    assert out.fsc_masked is None and out.resolution_A < 4.0
