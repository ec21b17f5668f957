"""Latent initialisation and inference against closed-form minima."""
import numpy as np
import pytest
import torch

from flexview.errors import FlexviewInputError
from flexview.train.latents import (coordinate_descent, gradient_descent, grid_search, init_latents, pca_latents,
                                    search_points)


def quadratic(centres, curvature):
    def objective(z):
        return ((z - centres) ** 2 * curvature).sum(dim=1)
    return objective


def test_coordinate_descent_finds_separable_quadratic_minimum():
    g = torch.Generator().manual_seed(0)
    centres = torch.rand(50, 2, generator=g) - 0.5         # within reach of one parabolic step
    curvature = torch.rand(50, 2, generator=g) * 5 + 0.1
    z = coordinate_descent(quadratic(centres, curvature), torch.zeros(50, 2), step=0.25, sweeps=1)
    assert torch.allclose(z, centres, atol=1e-5)


def test_coordinate_descent_never_increases_cost_on_rough_function():
    g = torch.Generator().manual_seed(1)
    phase = torch.rand(200, 3, generator=g) * 6

    def rough(z):
        return (torch.sin(3 * z + phase) + 0.1 * z ** 2).sum(dim=1)

    z0 = torch.randn(200, 3, generator=g)
    z = coordinate_descent(rough, z0, step=0.3, sweeps=3)
    assert (rough(z) <= rough(z0) + 1e-6).all()
    assert (rough(z) < rough(z0) - 1e-3).float().mean() > 0.8


def test_gradient_descent_moves_towards_minimum_and_never_up():
    """An isotropic quadratic: every step moves along the line to the known minimiser, by
    ``step · 2⁻ⁱ`` when that brings z closer to it, and not at all when it would overshoot
    further than the start (the reference is that one-dimensional rule, played out per particle)."""
    g = torch.Generator().manual_seed(4)
    n, steps, step = 40, 4, 0.5
    z0 = torch.randn(n, 4, generator=g, dtype=torch.float64)
    direction = torch.randn(n, 4, generator=g, dtype=torch.float64)
    direction /= direction.norm(dim=1, keepdim=True)
    distance = torch.linspace(0.05, 2.5, n, dtype=torch.float64)       # some within one step
    centres = z0 + distance[:, None] * direction
    objective = quadratic(centres, torch.ones(n, 4, dtype=torch.float64))
    position = torch.zeros(n, dtype=torch.float64)                      # along the line, from z0
    trajectory = []
    for i in range(steps):
        z = gradient_descent(objective, z0, steps=i + 1, step=step)
        try_at = position + step * 0.5**i * torch.sign(distance - position)
        position = torch.where((distance - try_at).abs() < (distance - position).abs(), try_at, position)
        torch.testing.assert_close(z, z0 + position[:, None] * direction)
        trajectory.append((z - centres).norm(dim=1))
    remaining = torch.stack(trajectory)
    assert (remaining[1:] <= remaining[:-1] + 1e-12).all()            # never further away
    assert (remaining[-1] < distance).all()                             # every particle got closer
    far = distance > step * (2 - 0.5 ** (steps - 1))
    torch.testing.assert_close(remaining[-1][far], distance[far] - step * (2 - 0.5 ** (steps - 1)))


def test_pca_latents_recover_a_planted_factor():
    rng = np.random.default_rng(0)
    factor = rng.normal(size=300)
    pattern = rng.normal(size=(8, 8))
    images = factor[:, None, None] * pattern + 0.05 * rng.normal(size=(300, 8, 8))
    z = pca_latents(lambda rows: images[rows], 300, 1)
    assert abs(np.corrcoef(z[:, 0], factor)[0, 1]) > 0.99
    assert z.std() == pytest.approx(1.0, rel=1e-3)


def test_latents_from_npy_and_cs(tmp_path):
    table = np.random.default_rng(0).normal(size=(20, 2)).astype(np.float32) * 3 + 1
    np.save(tmp_path / "z.npy", table)
    z = init_latents(str(tmp_path / "z.npy"), 20, 2)
    assert np.allclose(z.std(axis=0), 1, atol=1e-5) and np.allclose(z.mean(axis=0), 0, atol=1e-5)
    assert np.corrcoef(z[:, 0], table[:, 0])[0, 1] > 0.9999
    cs = np.zeros(20, dtype=[("uid", "<u8"), ("components_mode_0/value", "<f4"), ("components_mode_1/value", "<f4")])
    cs["components_mode_0/value"], cs["components_mode_1/value"] = table[:, 0], table[:, 1]
    with open(tmp_path / "va.cs", "wb") as fh:
        np.save(fh, cs)
    assert np.allclose(init_latents(str(tmp_path / "va.cs"), 20, 2), z, atol=1e-5)
    with pytest.raises(FlexviewInputError, match="shape"):
        init_latents(str(tmp_path / "z.npy"), 21, 2)
    with pytest.raises(FlexviewInputError, match="components_mode_2"):
        init_latents(str(tmp_path / "va.cs"), 20, 3)


def double_well(centres):
    """Per-particle cost with a shallow local minimum at 0 and the global one at ``centres``."""
    def objective(z):
        near = (z ** 2).sum(dim=1)
        far = ((z - centres) ** 2).sum(dim=1)
        return torch.minimum(near + 1.0, far)
    return objective


def test_grid_search_matches_a_loop_over_candidates():
    g = torch.Generator().manual_seed(3)
    centres = (torch.rand(40, 2, generator=g) - 0.5) * 4
    objective = double_well(centres)
    candidates = search_points(2, 7)
    best, value = grid_search(objective, candidates, 40)
    for i in range(40):                                 # brute force, one particle at a time
        costs = [float(objective(c.expand(40, 2))[i]) for c in candidates]
        j = int(np.argmin(costs))
        assert torch.equal(best[i], candidates[j]) and value[i] == pytest.approx(costs[j])


def test_search_points_grid_and_high_dimensional_draws():
    grid = search_points(2, 5, extent=2.0)
    assert grid.shape == (25, 2) and grid.min() == -2.0 and grid.max() == 2.0
    assert len(torch.unique(grid[:, 0])) == 5
    assert search_points(3, 4).shape == (64, 3)
    draws = search_points(5, 6, seed=1)
    assert draws.shape == (36, 5) and torch.equal(draws, search_points(5, 6, seed=1))


def test_local_descent_stays_in_the_wrong_basin_but_grid_start_escapes():
    centres = torch.tensor([[2.0, -1.5], [-1.8, 1.8], [1.5, 1.5]])
    objective = double_well(centres)
    local = coordinate_descent(objective, torch.zeros(3, 2), step=0.25, sweeps=3)
    assert (local.norm(dim=1) < 0.5).all()              # stuck at the local minimum
    start, _ = grid_search(objective, search_points(2, 7), 3)
    refined = coordinate_descent(objective, start, step=0.25, sweeps=3)
    assert torch.allclose(refined, centres, atol=1e-4)


def test_laplace_factor_is_the_exact_covariance_of_a_linear_model():
    """For render(z) = A z the cost Σ w|Az − t|² + ½p|z|² is quadratic: covariance (2AᵀWA + pI)⁻¹."""
    from flexview.train.latents import laplace_factor

    gen = torch.Generator().manual_seed(0)
    b, k, f = 3, 2, 11
    a = torch.randn(b, f, k, generator=gen, dtype=torch.float64)
    w = torch.rand(f, generator=gen, dtype=torch.float64)
    z = torch.randn(b, k, generator=gen, dtype=torch.float64)
    factor = laplace_factor(lambda zz: torch.einsum("bfk,bk->bf", a, zz), w, z, prior_weight=0.7)
    expected = torch.linalg.inv(2 * torch.einsum("bfk,f,bfl->bkl", a, w, a) + 0.7 * torch.eye(k, dtype=a.dtype))
    torch.testing.assert_close(factor @ factor.transpose(1, 2), expected, rtol=1e-6, atol=1e-9)


def test_posterior_mean_matches_brute_force_integration_of_a_skewed_posterior():
    """A two-component posterior, started at its mode: the quadrature mean agrees with a dense
    grid integral (an independent reference) and differs from the mode."""
    from flexview.train.latents import posterior_mean

    def nlp(z):                                   # −log(0.7 N(0, 0.3²) + 0.3 N(0.6, 0.3²)) per axis 0
        x, y = z[:, 0], z[:, 1]
        mix = 0.7 * torch.exp(-x ** 2 / 0.18) + 0.3 * torch.exp(-(x - 0.6) ** 2 / 0.18)
        return -torch.log(mix) + (y - 0.2) ** 2 / (2 * 0.25 ** 2)

    x = torch.linspace(-3, 3, 6001, dtype=torch.float64)
    px = torch.exp(-nlp(torch.stack([x, torch.full_like(x, 0.2)], 1)))
    true_mean_x = float((x * px).sum() / px.sum())
    mode = torch.tensor([[0.05, 0.2]], dtype=torch.float64)
    factor = torch.diag(torch.tensor([0.35, 0.25], dtype=torch.float64))[None]
    got = posterior_mean(nlp, mode, factor, points=15, extent=3.0)
    assert abs(float(got[0, 0]) - true_mean_x) < 0.01 and abs(float(got[0, 1]) - 0.2) < 1e-6
    assert true_mean_x - 0.05 > 0.1                               # the mean is not the mode


def test_posterior_mean_of_a_gaussian_in_many_dimensions():
    from flexview.train.latents import posterior_mean

    k = 5
    centre = torch.linspace(-0.3, 0.3, k, dtype=torch.float64)

    def nlp(z):
        return ((z - centre) ** 2).sum(-1) / (2 * 0.5 ** 2)

    start = torch.zeros(2, k, dtype=torch.float64)
    factor = 0.5 * torch.eye(k, dtype=torch.float64).expand(2, k, k)
    got = posterior_mean(nlp, start, factor, points=40)          # 1,600 importance draws
    assert (got - centre).abs().max() < 0.05
