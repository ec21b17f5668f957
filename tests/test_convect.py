"""Convection + projection by forward push: brute force, analytic projections, mass, gradients."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from flexview.model import convect_project, convect_volume, random_rotations, voxel_coords

KERNELS = ["linear", "cubic"]


def kernel_ref(t: np.ndarray, kernel: str) -> np.ndarray:
    """Hat function / Keys cubic (a = -0.5), written out independently of the library."""
    a = np.abs(t)
    if kernel == "linear":
        return np.maximum(0.0, 1.0 - a)
    return np.where(a <= 1, 1.5 * a**3 - 2.5 * a**2 + 1,
                    np.where(a < 2, -0.5 * a**3 + 2.5 * a**2 - 4 * a + 2, 0.0))


def brute_project(values, positions, rotations, origins, box, px, kernel):
    """Plain loop over particles and voxels: rotate, shift, spread with the 2-D kernel."""
    c = box // 2
    grid = np.arange(box)
    out = np.zeros((len(rotations), box, box))
    for b in range(len(rotations)):
        for p in range(len(values)):
            r = rotations[b] @ positions[b, p]
            col = (r[0] - origins[b, 0]) / px + c
            row = (r[1] - origins[b, 1]) / px + c
            out[b] += values[p] * px * np.outer(kernel_ref(row - grid, kernel), kernel_ref(col - grid, kernel))
    return out


def brute_volume(values, positions, box, px, kernel):
    c = box // 2
    grid = np.arange(box)
    out = np.zeros((box, box, box))
    for p in range(len(values)):
        ix, iy, iz = positions[p] / px + c
        kz, ky, kx = (kernel_ref(v - grid, kernel) for v in (iz, iy, ix))
        out += values[p] * kz[:, None, None] * ky[None, :, None] * kx[None, None, :]
    return out


def random_problem(rng, box=12, px=1.7, n_points=40, batch=3, spread=1.3):
    """Points near the centre (some pushed past the edge), poses, origins (float64 numpy)."""
    values = rng.uniform(0.2, 1.0, n_points)
    positions = rng.normal(scale=box * px / 5, size=(batch, n_points, 3))
    positions[:, :3] *= spread * 3            # a few land outside the image
    return values, positions, random_rotations(batch, rng), rng.uniform(-4, 4, (batch, 2))


@pytest.mark.parametrize("kernel", KERNELS)
def test_project_matches_brute_force(kernel):
    rng = np.random.default_rng(0)
    box, px = 12, 1.7
    values, positions, rot, origins = random_problem(rng, box, px)
    got = convect_project(*(torch.tensor(a) for a in (values, positions, rot, origins)), box, px, kernel)
    want = brute_project(values, positions, rot, origins, box, px, kernel)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("kernel", KERNELS)
def test_volume_matches_brute_force(kernel):
    rng = np.random.default_rng(1)
    box, px = 9, 1.3
    values = rng.uniform(0.2, 1.0, 30)
    positions = rng.normal(scale=box * px / 4, size=(30, 3))
    got = convect_volume(torch.tensor(values), torch.tensor(positions), box, px, kernel)
    assert got.shape == (box, box, box)
    np.testing.assert_allclose(got.numpy(), brute_volume(values, positions, box, px, kernel), atol=1e-12)


@pytest.mark.parametrize("kernel,min_corr,max_rel_err", [("linear", 0.995, 0.06), ("cubic", 0.999, 0.015)])
def test_projection_of_gaussians_matches_analytic(kernel, min_corr, max_rel_err):
    """Rigid projection of a few wide Gaussians vs their closed-form line integrals."""
    rng = np.random.default_rng(2)
    box, px, sigma = 24, 2.0, 4.0
    centres, amps = rng.uniform(-6, 6, (3, 3)), rng.uniform(0.5, 1.5, 3)
    r = voxel_coords(box, px, dtype=torch.float64).numpy()
    vol = sum(a * np.exp(-((r - m) ** 2).sum(-1) / (2 * sigma**2)) for a, m in zip(amps, centres))
    rot, origins = random_rotations(4, rng), rng.uniform(-3, 3, (4, 2))
    img = convect_project(torch.tensor(vol.reshape(-1)), torch.tensor(r.reshape(-1, 3)), torch.tensor(rot),
                          torch.tensor(origins), box, px, kernel).numpy()
    axis = (np.arange(box) - box // 2) * px
    for b in range(4):
        x, y = axis[None, :] + origins[b, 0], axis[:, None] + origins[b, 1]
        ref = sum(a * np.sqrt(2 * np.pi) * sigma
                  * np.exp(-((x - (rot[b] @ m)[0]) ** 2 + (y - (rot[b] @ m)[1]) ** 2) / (2 * sigma**2))
                  for a, m in zip(amps, centres))
        assert np.corrcoef(ref.ravel(), img[b].ravel())[0, 1] > min_corr
        assert np.linalg.norm(img[b] - ref) / np.linalg.norm(ref) < max_rel_err


@pytest.mark.parametrize("kernel", KERNELS)
def test_mass_is_conserved(kernel):
    rng = np.random.default_rng(3)
    box, px = 16, 1.5
    values = torch.tensor(rng.uniform(-0.5, 1.0, 200))
    pos = rng.normal(size=(2, 200, 3))
    pos = torch.tensor(pos * rng.uniform(0, 6, (2, 200, 1)) / np.linalg.norm(pos, axis=-1, keepdims=True))
    # |pos| ≤ 6 Å: with |origin| ≤ 2√2 Å every tap stays inside the 16-px image
    rot, origins = torch.tensor(random_rotations(2, rng)), torch.tensor(rng.uniform(-2, 2, (2, 2)))
    img = convect_project(values, pos, rot, origins, box, px, kernel)
    np.testing.assert_allclose(img.sum(dim=(1, 2)).numpy(), px * float(values.sum()), rtol=1e-12)
    vol = convect_volume(values, pos, box, px, kernel)
    np.testing.assert_allclose(vol.sum(dim=(1, 2, 3)).numpy(), float(values.sum()), rtol=1e-12)


def away_from_knots(rng, n, box, px, margin=0.15):
    """Positions (Å) on the identity pose whose pixel coordinates are ≥ margin from integers."""
    idx = rng.integers(2, box - 3, (n, 3)) + rng.uniform(margin, 1 - margin, (n, 3))
    return (idx - box // 2) * px


@pytest.mark.parametrize("kernel", KERNELS)
def test_gradients_match_finite_differences(kernel):
    rng = np.random.default_rng(4)
    box, px = 10, 1.2
    values = torch.tensor(rng.uniform(0.2, 1.0, 12), requires_grad=True)
    pos = torch.tensor(np.stack([away_from_knots(rng, 12, box, px) for _ in range(2)]), requires_grad=True)
    rot = torch.eye(3, dtype=torch.float64).repeat(2, 1, 1)
    origins = torch.tensor(rng.uniform(-2, 2, (2, 2)).round() * px, requires_grad=True)

    def project(v, p, o):
        return convect_project(v, p, rot, o, box, px, kernel)

    assert torch.autograd.gradcheck(project, (values, pos, origins), fast_mode=True)
    assert torch.autograd.gradcheck(lambda v, p: convect_volume(v, p, box, px, kernel), (values, pos), fast_mode=True)


def test_rotation_gradient_matches_finite_differences():
    rng = np.random.default_rng(5)
    box, px = 10, 1.2
    values = torch.tensor(rng.uniform(0.2, 1.0, 8))
    pos = torch.tensor(away_from_knots(rng, 8, box, px))
    rot = torch.tensor(random_rotations(2, rng), requires_grad=True)
    origins = torch.zeros(2, 2, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda r: convect_project(values, pos, r, origins, box, px, "cubic"), (rot,))


@pytest.mark.parametrize("kernel", KERNELS)
def test_chunking_does_not_change_results(kernel, monkeypatch):
    from flexview.model import _kernels

    rng = np.random.default_rng(7)
    values, positions, rot, origins = (torch.tensor(a) for a in random_problem(rng, 12, 1.5, 30, 4))
    values.requires_grad_(True)

    def run():
        img = convect_project(values, positions, rot, origins, 12, 1.5, kernel)
        vol = convect_volume(values, positions[:2], 12, 1.5, kernel)
        grad, = torch.autograd.grad((img**2).sum() + (vol**3).sum(), values)
        return img.detach(), vol.detach(), grad

    whole = run()
    monkeypatch.setitem(_kernels._CHUNK_ELEMENTS, "cpu", 50)      # blocks of 1 particle × few points
    for a, b in zip(run(), whole):
        torch.testing.assert_close(a, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kernel", KERNELS)
def test_cuda_matches_cpu(kernel):
    rng = np.random.default_rng(6)
    values, positions, rot, origins = (torch.tensor(a, dtype=torch.float32)
                                       for a in random_problem(rng, 16, 1.5, 500, 5))
    values.requires_grad_(True)
    cpu = convect_project(values, positions, rot, origins, 16, 1.5, kernel)
    gpu = convect_project(values.cuda(), positions.cuda(), rot.cuda(), origins.cuda(), 16, 1.5, kernel)
    np.testing.assert_allclose(gpu.detach().cpu().numpy(), cpu.detach().numpy(), atol=1e-4)
    g_cpu, = torch.autograd.grad(cpu.square().sum(), values)
    g_gpu, = torch.autograd.grad(gpu.square().sum(), values)
    np.testing.assert_allclose(g_gpu.cpu().numpy(), g_cpu.numpy(), rtol=1e-3, atol=1e-3)
    vol = convect_volume(values.detach().cuda(), positions[0].cuda(), 16, 1.5, kernel).cpu()
    np.testing.assert_allclose(vol.numpy(), convect_volume(values.detach(), positions[0], 16, 1.5, kernel).numpy(),
                               atol=1e-5)
