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
    centres = torch.tensor([[1.0, -2.0, 0.5, 0.0]]).repeat(10, 1)
    objective = quadratic(centres, torch.ones(10, 4))
    z0 = torch.zeros(10, 4)
    z = gradient_descent(objective, z0, steps=4, step=0.5)
    assert (objective(z) < objective(z0)).all()


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
