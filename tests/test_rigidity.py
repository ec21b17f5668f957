"""Rigidity penalty: rigid motions, known stretches, an SVD reference, gradients; latent prior."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from flexview.model import (build_regular_mesh, cell_affine, latent_prior, polar_rotation,
                            rigidity_loss, voxel_coords)


@pytest.fixture(scope="module")
def mesh():
    r = voxel_coords(14, 2.0, dtype=torch.float64).numpy()
    density = np.exp(-((r - [3.0, 0, 0]) ** 2).sum(-1) / 30.0) + 0.5 * np.exp(-((r + 4.0) ** 2).sum(-1) / 20.0)
    return build_regular_mesh(density, 2.0, cells_across=4, dilate_A=2.0)


def affine_disp(mesh, m: np.ndarray, t: np.ndarray) -> torch.Tensor:
    """Vertex displacements of x ↦ M x + t, i.e. u = (M − I) x + t, shape (1, V, 3)."""
    x = mesh.vertices
    return torch.tensor((x @ (m - np.eye(3)).T + t)[None])


def test_rigid_motion_costs_nothing(mesh):
    rot = Rotation.from_rotvec([0.4, -1.1, 0.7]).as_matrix()
    disp = affine_disp(mesh, rot, np.array([3.0, -2.0, 1.0]))
    assert float(rigidity_loss(mesh, disp)) < 1e-6
    f = cell_affine(mesh, disp)
    np.testing.assert_allclose(f[0].numpy(), np.broadcast_to(rot, f[0].shape), atol=1e-10)


def test_uniform_stretch_by_hand(mesh):
    s = np.array([1.3, 0.8, 1.05])
    want = mesh.rigidity_weight.sum() * ((s - 1) ** 2).sum()
    rot = Rotation.from_rotvec([0.2, 0.3, -0.5]).as_matrix()
    for m in (np.diag(s), rot @ np.diag(s)):           # a rotation on top changes nothing
        got = float(rigidity_loss(mesh, affine_disp(mesh, m, np.zeros(3))))
        assert got == pytest.approx(want, rel=1e-10)


def test_random_deformation_matches_singular_values(mesh):
    rng = np.random.default_rng(0)
    disp = torch.tensor(rng.normal(scale=1.5, size=(3, mesh.n_vertices, 3)))
    f = cell_affine(mesh, disp)
    # F from the cell geometry, brute force: solve F [x_i - x_0] = [y_i - y_0] per cell
    y = mesh.vertices + disp[1].numpy()
    for j in range(0, mesh.n_cells, 37):
        c = mesh.cells[j]
        e_x = (mesh.vertices[c[1:]] - mesh.vertices[c[0]]).T
        e_y = (y[c[1:]] - y[c[0]]).T
        np.testing.assert_allclose(f[1, j].numpy(), e_y @ np.linalg.inv(e_x), atol=1e-10)
    sv = np.linalg.svd(f.numpy(), compute_uv=False)
    want = (((sv - 1) ** 2).sum(-1) * mesh.rigidity_weight).sum(-1)
    np.testing.assert_allclose(rigidity_loss(mesh, disp).numpy(), want, rtol=1e-9)


def test_gradient_matches_finite_differences(mesh):
    rng = np.random.default_rng(1)
    disp = torch.tensor(rng.normal(scale=0.8, size=(2, mesh.n_vertices, 3)), requires_grad=True)
    assert torch.autograd.gradcheck(lambda d: rigidity_loss(mesh, d), (disp,), fast_mode=True)


def test_gradient_at_repeated_singular_values(mesh):
    """Rigid, isotropic and axially symmetric stretches: repeated σ; the gradient stays exact."""
    rot = Rotation.from_rotvec([0.3, 0.1, -0.2]).as_matrix()
    base = [affine_disp(mesh, rot, np.zeros(3)), affine_disp(mesh, 1.2 * np.eye(3), np.zeros(3)),
            affine_disp(mesh, np.diag([1.2, 1.2, 0.9]), np.zeros(3))]
    for d in base:
        d = d.clone().requires_grad_(True)
        assert torch.autograd.gradcheck(lambda x: rigidity_loss(mesh, x), (d,), fast_mode=True)
    g, = torch.autograd.grad(rigidity_loss(mesh, base[0].requires_grad_(True)).sum(), base[0])
    assert g.abs().max() < 1e-8                            # a minimum


def test_polar_factor_handles_degenerate_matrices():
    rng = np.random.default_rng(2)
    f = torch.tensor(rng.normal(size=(50, 3, 3)))
    f[0] = torch.diag(torch.tensor([1.0, 2.0, 0.0]))       # singular
    f[1] = torch.diag(torch.tensor([1.0, -2.0, 0.5]))      # reflection
    f[2] = 0.0
    r = polar_rotation(f)
    eye = torch.eye(3, dtype=f.dtype)
    np.testing.assert_allclose((r.mT @ r).numpy(), np.broadcast_to(eye, r.shape), atol=1e-9)
    s = r.mT @ f                                           # symmetric PSD for a polar factor
    np.testing.assert_allclose(s.numpy(), s.mT.numpy(), atol=1e-8)
    assert torch.linalg.eigvalsh((s + s.mT) / 2).min() > -1e-8


def test_latent_prior():
    z = torch.tensor([[0.0, 0.0], [3.0, 4.0], [-1.0, 2.0]])
    np.testing.assert_allclose(latent_prior(z).numpy(), [0.0, 12.5, 2.5])
