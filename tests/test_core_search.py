"""The trainer's global latent search on an objective with two basins, against a dense grid.

The flow moves the whole map by ``(A (z² + 0.3 z), B z, 0)`` Å. An x shift is reached at two
latents (the roots of the parabola), but only one of them has the right y shift: each particle's
cost has the global minimum at its true latent and a local one, with a worse fit, at the other
root. Started there, local Gauss–Newton steps stay; the search must return the global minimiser,
found here independently by evaluating the same objective on a dense grid.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from _tiny import FieldFlow, make_trainer, particle_parameters, render, tiny_model, training_data

A_A, B_A = 3.0, 0.5
Z_TRUE = np.array([0.85, -0.8, 1.6, -1.7, 0.9, -0.9])      # each within reach of a coarse-grid point
Z_OTHER = -0.3 - Z_TRUE                                     # the other root: same x shift


def path(z: torch.Tensor) -> torch.Tensor:
    """Amplitudes (B, 2) of the x and y translation fields for latents z (B, 1)."""
    return torch.cat([A_A * (z**2 + 0.3 * z), B_A * z], dim=1)


@pytest.fixture(scope="module")
def periodic():
    def flow(mesh):
        fields = np.zeros((2, mesh.n_vertices, 3), np.float32)
        fields[0, :, 0] = fields[1, :, 1] = 1.0                       # uniform x and y shifts
        return FieldFlow(fields, path)

    model = tiny_model(cells_across=2, flow=flow)
    draw = particle_parameters(len(Z_TRUE), 3)
    clean = render(model, draw, z=torch.as_tensor(Z_TRUE[:, None], dtype=torch.float32))
    sigma = 0.2 * float(clean.std())
    images = clean + np.random.default_rng(3).normal(scale=sigma, size=clean.shape)
    weight = torch.full((model.box,), 1.0 / (2 * sigma**2))
    weight[0] = 0.0
    trainer = make_trainer(model, training_data(images, draw), weight, latent_search=7, latent_steps=2)
    return trainer


@torch.no_grad()
def dense_minimiser(objective, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """argmin and min over z of ``objective`` per particle: a grid of step 0.01 on [−3, 3], then
    one of step 0.0005 around each particle's best point."""
    def best_on(grid):                                                 # grid (G, B)
        values = torch.stack([objective(g[:, None].float()) for g in grid])
        k = values.argmin(dim=0)
        return grid[k, torch.arange(batch_size)], values[k, torch.arange(batch_size)]

    coarse, _ = best_on(torch.arange(-3.0, 3.0001, 0.01, dtype=torch.float64)[:, None].expand(-1, batch_size))
    fine = coarse[None] + torch.arange(-0.01, 0.01001, 0.0005, dtype=torch.float64)[:, None]
    z, value = best_on(fine)
    return z.numpy(), value.numpy()


def test_search_escapes_the_wrong_basin_and_finds_the_global_minimum(periodic):
    trainer = periodic
    rows = np.arange(len(Z_TRUE))
    batch = trainer.batch(rows)
    radius = trainer.band_radius_px(2 * trainer.data.pixel_size)
    objective = trainer.objective(batch, radius)
    best_z, best_value = dense_minimiser(objective, len(rows))
    assert np.abs(best_z - Z_TRUE).max() < 0.05                       # the global one: nearest 0

    wrong = torch.as_tensor(Z_OTHER[:, None], dtype=torch.float32)
    local = wrong
    for _ in range(2):
        local = trainer.infer_latents(batch, local, radius)
    assert np.abs(local[:, 0].numpy() - best_z).min() > 0.5          # local steps stay there
    with torch.no_grad():
        assert (objective(local).numpy() > best_value + 10).all()    # a worse fit: a local minimum

    found = trainer.search_latents(batch, wrong, radius, sweeps=2)
    np.testing.assert_allclose(found[:, 0].numpy(), best_z, atol=0.01)
    with torch.no_grad():
        assert (objective(found).numpy() <= best_value + 1e-3 * np.abs(best_value) + 1e-3).all()
