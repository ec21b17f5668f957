"""Flow generator architecture and barycentric interpolation of vertex displacements."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from flexview.model import (FlowGenerator, build_regular_mesh, interpolate_displacement, locate,
                            voxel_coords)
from flexview.model.flow import VertexInterpolator


@pytest.fixture(scope="module")
def mesh():
    r = voxel_coords(16, 2.0, dtype=torch.float64).numpy()
    density = np.exp(-(r**2).sum(-1) / (2 * 5.0**2))
    return build_regular_mesh(density, 2.0, cells_across=5, dilate_A=2.0)


def test_architecture():
    flow = FlowGenerator(3, 10, hidden=16, layers=4)
    linears = [m for m in flow.net if isinstance(m, nn.Linear)]
    assert [l.in_features for l in linears] == [3, 16, 16, 16, 16]
    assert linears[-1].out_features == 30 and linears[-1].bias is None
    assert all(l.bias is not None for l in linears[:-1])
    assert sum(isinstance(m, nn.ReLU) for m in flow.net) == 4
    assert not isinstance(flow.net[-1], nn.ReLU)
    z = torch.randn(7, 3)
    out = flow(z)
    assert out.shape == (7, 10, 3)
    # by hand: ReLU MLP then the bias-free linear layer
    h = z
    for l in linears[:-1]:
        h = torch.relu(h @ l.weight.T + l.bias)
    torch.testing.assert_close(out, (h @ linears[-1].weight.T).reshape(7, 10, 3))


def test_defaults_and_pinning():
    pinned = np.zeros(6, bool)
    pinned[[1, 4]] = True
    flow = FlowGenerator(pinned=pinned)
    assert flow.latent_dim == 2 and flow.n_vertices == 6
    assert sum(isinstance(m, nn.Linear) for m in flow.net) == 7       # 6 hidden + output
    out = flow(torch.randn(4, 2))
    assert (out[:, [1, 4]] == 0).all() and (out[:, [0, 2, 3, 5]] != 0).all()
    with pytest.raises(ValueError):
        FlowGenerator(2)


def points_in_mesh(mesh, rng, n):
    """Random points inside random cells, plus 3 far outside the mesh (first rows)."""
    cells = rng.integers(0, mesh.n_cells, n)
    b = rng.dirichlet(np.ones(4), n)
    inside = (b[:, :, None] * mesh.vertices[mesh.cells[cells]]).sum(1)
    return np.vstack([np.full((3, 3), 500.0), inside])


def brute_interpolate(disp, cells, bary):
    out = np.zeros((disp.shape[0], len(cells), 3))
    for p, (c, b) in enumerate(zip(cells, bary)):
        if c[0] < 0:
            continue
        for k in range(4):
            out[:, p] += b[k] * disp[:, c[k]]
    return out


def test_interpolation_matches_loop_and_is_exact_for_affine_fields(mesh):
    rng = np.random.default_rng(0)
    points = points_in_mesh(mesh, rng, 50)
    cell, bary = locate(mesh, points)
    assert (cell[:3] == -1).all() and (cell[3:] >= 0).all()
    vertex_ids = np.where(cell[:, None] >= 0, mesh.cells[np.maximum(cell, 0)], -1)
    disp = rng.normal(size=(2, mesh.n_vertices, 3))
    got = interpolate_displacement(torch.tensor(disp), torch.tensor(vertex_ids), torch.tensor(bary))
    np.testing.assert_allclose(got.numpy(), brute_interpolate(disp, vertex_ids, bary), atol=1e-12)
    assert (got[:, :3] == 0).all()
    # an affine displacement field is reproduced exactly inside the mesh
    m, t = rng.normal(size=(3, 3)), rng.normal(size=3)
    affine = torch.tensor((mesh.vertices @ m.T + t)[None])
    got = interpolate_displacement(affine, torch.tensor(vertex_ids), torch.tensor(bary))[0, 3:]
    np.testing.assert_allclose(got.numpy(), points[3:] @ m.T + t, atol=1e-9)


def test_sparse_interpolator_matches_and_differentiates(mesh):
    rng = np.random.default_rng(1)
    points = points_in_mesh(mesh, rng, 30)
    cell, bary = locate(mesh, points)
    ids = torch.tensor(np.where(cell[:, None] >= 0, mesh.cells[np.maximum(cell, 0)], -1))
    bary = torch.tensor(bary)
    interp = VertexInterpolator(ids, bary, mesh.n_vertices)
    disp = torch.tensor(rng.normal(size=(3, mesh.n_vertices, 2)), requires_grad=True)
    torch.testing.assert_close(interp(disp), interpolate_displacement(disp, ids, bary))
    assert torch.autograd.gradcheck(interp, (disp,), fast_mode=True)


def test_initialisation_keeps_every_latent_axis_alive():
    """After six ReLU layers the features must still vary along both latent axes: the smallest
    singular value of their linear dependence on z stays within a factor 10 of the first layer's.
    (PyTorch's default initialisation loses a factor ~200 here.)"""
    torch.manual_seed(0)
    flow = FlowGenerator(2, 50)
    z = torch.randn(2000, 2)
    sv = []
    with torch.no_grad():
        h = z
        for layer in flow.net[:-1]:
            h = layer(h)
            if isinstance(layer, torch.nn.ReLU):
                fit = torch.linalg.lstsq(z - z.mean(0), h - h.mean(0)).solution
                sv.append(torch.linalg.svdvals(fit).min())
    assert sv[-1] > 0.1 * sv[0]
    out = flow(z)
    assert out.abs().max() < 0.1                        # the initial flow is almost zero (Å)
