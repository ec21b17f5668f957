"""Re-referencing a trained flow to the particles' median conformation (flexview.model.gauge)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from torch import nn

from flexview.model import FlowGenerator, build_regular_mesh, locate, voxel_coords
from flexview.model.gauge import median_deformation, principal_axes, recentre, standardise_latents


@pytest.fixture(scope="module")
def mesh():
    r = voxel_coords(16, 2.0, dtype=torch.float64).numpy()
    density = np.exp(-(r**2).sum(-1) / (2 * 6.0**2))
    return build_regular_mesh(density, 2.0, cells_across=5, dilate_A=2.0)


def visible_flow(mesh, seed=0, scale=0.5) -> FlowGenerator:
    torch.manual_seed(seed)
    flow = FlowGenerator.for_mesh(mesh, 2, hidden=16, layers=3)
    flow.reset_parameters(output_std_A=scale)
    return flow


def deformed(mesh, flow, points, z):
    """Where the model sends ``points`` (canonical positions, Å) at each latent of ``z``: a loop."""
    cell, bary = locate(mesh, points)
    assert (cell >= 0).all()
    with torch.no_grad():
        disp = flow(torch.as_tensor(z, dtype=torch.float32)).double().numpy()     # (B, V, 3)
    out = np.empty((len(z),) + points.shape)
    for b in range(len(z)):
        for p in range(len(points)):
            out[b, p] = points[p] + bary[p] @ disp[b, mesh.cells[cell[p]]]
    return out


def test_median_deformation_matches_a_loop(mesh):
    flow = visible_flow(mesh)
    z = np.random.default_rng(1).normal(size=(40, 2)).astype(np.float32)   # even: mid-point median
    with torch.no_grad():
        each = np.stack([flow(torch.as_tensor(z[i:i + 1]))[0].double().numpy() for i in range(len(z))])
    expected = np.median(each, axis=0)
    got = median_deformation(flow, z, chunk=7)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_median_of_a_translation_is_the_translation_at_the_median_latent(mesh):
    """Closed form: a flow u(z) = t·z₁ has median t·median(z₁) at every free vertex."""
    flow = FlowGenerator.for_mesh(mesh, 1, hidden=4, layers=1)
    with torch.no_grad():
        flow.net[0].weight.fill_(1.0)
        flow.net[0].bias.fill_(0.0)
        t = torch.tensor([0.5, -1.0, 2.0])
        flow.net[-1].weight.copy_(t.repeat(mesh.n_vertices)[:, None].repeat(1, 4) / 4)
    z = np.abs(np.random.default_rng(2).normal(size=(101, 1))).astype(np.float32)   # ReLU passes z ≥ 0
    got = median_deformation(flow, z)
    np.testing.assert_allclose(got, np.outer(np.ones(mesh.n_vertices), t.numpy()) * np.median(z), rtol=1e-5)


def test_recentred_model_deforms_every_point_to_the_same_place(mesh):
    flow = visible_flow(mesh, scale=0.3)
    z = np.random.default_rng(3).normal(size=(200, 2)).astype(np.float32)
    shift = median_deformation(flow, z)
    assert np.sqrt((shift ** 2).sum(1)).max() > 0.1                # a real move, not a no-op
    moved, new_flow = recentre(mesh, flow, shift)
    rng = np.random.default_rng(4)
    centroids = mesh.vertices[mesh.cells].mean(axis=1)
    points = centroids[rng.choice(mesh.n_cells, 30, replace=False)] + rng.normal(0, 0.3, (30, 3))
    cell, bary = locate(mesh, points)
    points = points[cell >= 0]
    cell, bary = cell[cell >= 0], bary[cell >= 0]
    images = np.stack([bary[p] @ shift[mesh.cells[cell[p]]] for p in range(len(points))]) + points
    zt = z[:5]
    np.testing.assert_allclose(deformed(moved, new_flow, images, zt), deformed(mesh, flow, points, zt),
                               atol=1e-4)
    # the median particle is now (close to) undeformed, and the input flow is untouched
    assert np.abs(median_deformation(new_flow, z)).max() < 1e-4
    assert np.abs(flow.offset.numpy()).max() == 0.0
    assert moved.grid_origin is None and mesh.grid_origin is not None


def test_pinned_vertices_stay_and_folding_shifts_are_refused(mesh):
    pinned = np.zeros(mesh.n_vertices, bool)
    pinned[:5] = True
    from dataclasses import replace
    pinned_mesh = replace(mesh, pinned=pinned)
    flow = FlowGenerator.for_mesh(pinned_mesh, 2, hidden=8, layers=2)
    shift = np.ones((mesh.n_vertices, 3))
    moved, new_flow = recentre(pinned_mesh, flow, shift)
    np.testing.assert_array_equal(moved.vertices[:5], mesh.vertices[:5])
    np.testing.assert_allclose(moved.vertices[5:], mesh.vertices[5:] + 1.0)
    with torch.no_grad():
        assert new_flow(torch.zeros(1, 2))[0, :5].abs().max() == 0
    fold = np.zeros((mesh.n_vertices, 3))
    a, b = mesh.cells[0, :2]
    fold[a] = mesh.vertices[b] - mesh.vertices[a]          # vertex a onto vertex b: zero volume
    with pytest.raises(ValueError, match="invert"):
        recentre(mesh, flow, fold)


def test_flow_files_without_an_offset_still_load(mesh):
    flow = visible_flow(mesh)
    state = {k: v for k, v in flow.state_dict().items() if k != "offset"}
    fresh = FlowGenerator.for_mesh(mesh, 2, hidden=16, layers=3)
    fresh.offset += 1.0
    fresh.load_state_dict(state)
    assert fresh.offset.abs().max() == 0
    z = torch.randn(3, 2)
    with torch.no_grad():
        torch.testing.assert_close(fresh(z), flow(z))


# ---------------------------------------------------------------- affine changes of the latents

def displacements(flow, z) -> np.ndarray:
    with torch.no_grad():
        return flow(torch.as_tensor(z, dtype=torch.float32)).double().numpy()


def correlated_latents(n=400, seed=5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = np.array([[1.5, 0.0], [0.9, 0.4]])
    return (rng.normal(size=(n, 2)) @ mix + [0.7, -1.2]).astype(np.float32)


def linear_flow(mesh, seed=0) -> FlowGenerator:
    """A generator whose output is affine in z: its ReLU replaced by the identity."""
    flow = visible_flow(mesh, seed, scale=0.5)
    flow.net = nn.Sequential(flow.net[0], nn.Identity(), flow.net[-1])
    return flow


def test_standardised_latents_keep_every_deformation(mesh):
    flow = visible_flow(mesh)
    z = correlated_latents()
    before = displacements(flow, z)
    fit = np.arange(0, len(z), 2)
    new = standardise_latents(torch.as_tensor(z), flow, fit=fit)
    np.testing.assert_allclose(displacements(flow, new), before, atol=1e-4 * np.abs(before).max())
    np.testing.assert_allclose(new[fit].mean(0).numpy(), 0.0, atol=1e-5)
    np.testing.assert_allclose(new[fit].numpy().std(0, ddof=1), 1.0, rtol=1e-5)
    assert abs(float(new.mean(0).abs().max())) > 1e-3          # only the fit rows are centred exactly


def test_principal_axes_keep_every_deformation_and_whiten(mesh):
    flow = visible_flow(mesh)
    z = correlated_latents()
    before = displacements(flow, z)
    new, sv = principal_axes(torch.as_tensor(z), flow, n_sample=150, seed=3)
    np.testing.assert_allclose(displacements(flow, new), before, atol=1e-4 * np.abs(before).max())
    np.testing.assert_allclose(np.cov(new.numpy().T), np.eye(2), atol=1e-5)
    np.testing.assert_allclose(new.numpy().mean(0), 0.0, atol=1e-5)
    assert sv[0] > sv[1] > 0


def numpy_principal_axes(z: np.ndarray, d: np.ndarray):
    """Reference: regress the deformation on the latents, whiten by a Cholesky factor of their
    covariance, and take the SVD; the largest entry of each direction is made positive."""
    b, *_ = np.linalg.lstsq(z - z.mean(0), d - d.mean(0), rcond=None)       # (K, F)
    chol = np.linalg.cholesky(np.cov(z.T))                                  # C = L Lᵀ
    u, s, _ = np.linalg.svd(b.T @ chol, full_matrices=False)                # map of whitened z
    peak = np.abs(u).argmax(axis=0)
    u = u * np.sign(u[peak, np.arange(u.shape[1])])
    return s, u


@pytest.mark.parametrize("chunk_bytes", [64 * 2**20, 1000])         # one block, and a few particles per block
def test_principal_axes_of_a_linear_flow_match_numpy(mesh, chunk_bytes):
    flow = linear_flow(mesh)
    z = correlated_latents()
    d = displacements(flow, z).reshape(len(z), -1)
    want_s, want_u = numpy_principal_axes(z.astype(np.float64), d)
    calls = []

    def features(zz):
        calls.append(len(zz))
        return flow(zz).reshape(len(zz), -1)

    new, sv = principal_axes(torch.as_tensor(z), flow, n_sample=len(z), features=features,
                             chunk_bytes=chunk_bytes)
    assert sum(calls) == len(z) and (max(calls) < 10 if chunk_bytes == 1000 else len(calls) <= 2)
    np.testing.assert_allclose(sv.numpy(), want_s, rtol=1e-4)
    # one unit along new axis k moves the vertices by s_k u_k: the same directions and signs
    zero = displacements(flow, np.zeros((1, 2))).reshape(-1)
    for k in range(2):
        step = displacements(flow, np.eye(2)[k:k + 1]).reshape(-1) - zero
        np.testing.assert_allclose(step, want_s[k] * want_u[:, k], atol=1e-4 * want_s[0])


def test_principal_axes_order_and_sign_do_not_depend_on_the_input_axes(mesh):
    flow = linear_flow(mesh, seed=1)
    rng = np.random.default_rng(6)
    z = rng.normal(size=(300, 2)).astype(np.float32) * [0.3, 2.0]     # axis 2 moves far more
    twin = copy.deepcopy(flow)
    perm = np.array([1, 0])
    with torch.no_grad():                      # same model, input axes swapped and one flipped
        twin.net[0].weight.copy_(flow.net[0].weight[:, perm] * torch.tensor([-1.0, 1.0]))
    z_twin = z[:, perm] * [-1.0, 1.0]
    np.testing.assert_allclose(displacements(twin, z_twin), displacements(flow, z), atol=1e-5)
    a, sa = principal_axes(torch.as_tensor(z), flow)
    b, sb = principal_axes(torch.as_tensor(z_twin.astype(np.float32)), twin)
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-4)
    np.testing.assert_allclose(sa.numpy(), sb.numpy(), rtol=1e-5)
    assert sa[0] > 3 * sa[1]
    assert abs(np.corrcoef(a[:, 0].numpy(), z[:, 1])[0, 1]) > 0.99   # the big motion comes first
