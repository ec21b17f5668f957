"""The full forward model: consistency with its parts, shifts, CTF, gradients, real conventions."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from flexview.model import (CTF_PAD, CanonicalMap, CTFParams, FlexForwardModel, FlowGenerator, Pose,
                            build_regular_mesh, convect_project, convect_volume, data_loss,
                            density_mask, euler_to_matrix, evaluate_ctf, fft2_centered,
                            ifft2_centered, image_frequencies, interpolate_displacement,
                            random_rotations, shift_phase, voxel_coords)
from flexview.model.convect import image_coords

BOX, PX = 16, 2.0
KERNELS = ["linear", "cubic"]


def blobs(box=BOX, px=PX, seed=0):
    rng = np.random.default_rng(seed)
    r = voxel_coords(box, px, dtype=torch.float64).numpy()
    return sum(a * np.exp(-((r - m) ** 2).sum(-1) / (2 * 3.0**2))
               for a, m in zip(rng.uniform(0.5, 1.5, 4), rng.uniform(-5, 5, (4, 3))))


class ConstantFlow(nn.Module):
    """Moves every vertex by the same vector ``d`` (Å), whatever z."""

    def __init__(self, n_vertices: int, d: torch.Tensor):
        super().__init__()
        self.n_vertices, self.d = n_vertices, d

    def forward(self, z):
        return self.d.expand(z.shape[0], self.n_vertices, 3)


def make_model(flow=None, kernel="linear", box=BOX, hidden=8, layers=2, seed=0, **kw):
    vol = blobs(box, PX, seed)
    mask = density_mask(vol, PX, threshold=0.05, dilate_A=2.0)
    mesh = build_regular_mesh(vol, PX, threshold=0.05, dilate_A=4.0, cells_across=5)
    torch.manual_seed(seed)
    if flow is None:
        flow = FlowGenerator.for_mesh(mesh, 2, hidden=hidden, layers=layers)
        flow.reset_parameters(output_std_A=0.05)         # displacements of a fraction of a pixel
    else:
        flow = flow(mesh)
    model = FlexForwardModel(CanonicalMap(vol, PX, mask), mesh, flow, kernel=kernel, **kw).double()
    assert model.outside_fraction == 0.0
    return model


def poses(n, seed=0, identity=False):
    rng = np.random.default_rng(seed)
    rot = np.broadcast_to(np.eye(3), (n, 3, 3)) if identity else random_rotations(n, rng)
    return Pose(torch.tensor(rot), torch.tensor(rng.uniform(-3, 3, (n, 2))))


def ctf_params(n, seed=0, **kw):
    rng = np.random.default_rng(seed)
    base = dict(defocus_u_A=rng.uniform(8000, 15000, n), defocus_v_A=rng.uniform(6000, 8000, n),
                defocus_angle_deg=rng.uniform(0, 180, n), voltage_kv=300.0, cs_mm=2.7, amplitude_contrast=0.1,
                phase_shift_deg=0.0, bfactor_A2=0.0, scale=1.0)
    base.update(kw)
    return CTFParams(**base).batch(dtype=torch.float64)


@pytest.mark.parametrize("kernel", KERNELS)
def test_model_matches_its_parts(kernel):
    model = make_model(kernel=kernel)
    pose = poses(3)
    rot, orig = pose.rotations, pose.origins_A
    values, coords = model.canonical.masked_values(), model.canonical.masked_coords()
    rigid = convect_project(values, coords, rot, orig, BOX, PX, kernel)
    torch.testing.assert_close(model.project(None, pose), rigid)
    z = torch.randn(3, 2, dtype=torch.float64)
    disp = interpolate_displacement(model.flow(z), model.voxel_vertices, model.voxel_bary)
    assert disp.abs().max() > 0.05
    flexed = convect_project(values, coords + disp, rot, orig, BOX, PX, kernel)
    torch.testing.assert_close(model.project(z, pose), flexed)
    model.flow_enabled = False
    torch.testing.assert_close(model.project(z, pose), rigid)


def test_render_is_ctf_times_projection():
    model = make_model(ctf_pad=1)
    pose = poses(2)
    z = torch.randn(2, 2, dtype=torch.float64)
    ctf = ctf_params(2)
    ky, kx = image_frequencies(BOX, PX, dtype=torch.float64)
    want = ifft2_centered(fft2_centered(model.project(z, pose)) * evaluate_ctf(ctf, ky, kx), BOX)
    torch.testing.assert_close(model.render_images(z, pose, ctf), want)
    torch.testing.assert_close(model(z, pose, ctf), want)
    assert model.render_spectra(z, pose, ctf).shape == (2, BOX, BOX // 2 + 1)


def test_padded_ctf_is_aligned_and_cropped():
    model = make_model(ctf_pad=2)
    pose = poses(2)
    flat = ctf_params(2, defocus_u_A=0.0, defocus_v_A=0.0, cs_mm=0.0, amplitude_contrast=1.0)   # CTF ≡ 1
    torch.testing.assert_close(model.render_images(None, pose, flat), model.project(None, pose))
    ctf = ctf_params(2)
    proj = model.project(None, pose)
    big = torch.zeros(2, 2 * BOX, 2 * BOX, dtype=torch.float64)
    big[:, BOX // 2: BOX // 2 + BOX, BOX // 2: BOX // 2 + BOX] = proj
    ky, kx = image_frequencies(2 * BOX, PX, dtype=torch.float64)
    want = ifft2_centered(fft2_centered(big) * evaluate_ctf(ctf, ky, kx), 2 * BOX)
    torch.testing.assert_close(model.render_images(None, pose, ctf),
                               want[:, BOX // 2: BOX // 2 + BOX, BOX // 2: BOX // 2 + BOX])


def test_default_model_applies_the_ctf_on_the_chosen_grid():
    model = make_model()
    assert model.ctf_pad == CTF_PAD and model.ctf_box == CTF_PAD * BOX
    assert model.ctf_image(ctf_params(3)).shape == (3, CTF_PAD * BOX, CTF_PAD * BOX // 2 + 1)


@pytest.mark.parametrize("pad", [1, 2])
def test_precomputed_ctf_renders_the_same_as_its_parameters(pad):
    model = make_model(ctf_pad=pad)
    pose, ctf = poses(3), ctf_params(3)
    z = torch.randn(3, 2, dtype=torch.float64)
    ky, kx = image_frequencies(pad * BOX, PX, dtype=torch.float64)
    image = evaluate_ctf(ctf, ky, kx)                      # evaluated outside the model
    torch.testing.assert_close(model.ctf_image(ctf), image)
    torch.testing.assert_close(model.render_spectra(z, pose, image), model.render_spectra(z, pose, ctf))
    torch.testing.assert_close(model.render_images(z[1:], pose[1:], image[1:]),
                               model.render_images(z[1:], pose[1:], ctf[1:]))
    with pytest.raises(ValueError, match="CTF grid"):
        model.render_spectra(z, pose, evaluate_ctf(ctf, *image_frequencies(3 * BOX, PX, dtype=torch.float64)))


@pytest.mark.parametrize("kernel", KERNELS)
def test_explicit_displacements_render_like_the_flow(kernel):
    model = make_model(kernel=kernel)
    pose, ctf = poses(3), ctf_params(3)
    z = torch.randn(3, 2, dtype=torch.float64)
    with torch.no_grad():
        disp = model.flow(z)
        assert disp.abs().max() > 0.05
        torch.testing.assert_close(model.render_spectra(None, pose, ctf, displacements=disp),
                                   model.render_spectra(z, pose, ctf))
        # explicit displacements win over z, and zero displacements are the rigid model
        torch.testing.assert_close(model.render_spectra(-z, pose, ctf, displacements=disp),
                                   model.render_spectra(z, pose, ctf))
        torch.testing.assert_close(model.render_images(z, pose, ctf, displacements=torch.zeros_like(disp)),
                                   model.render_images(None, pose, ctf))
    # gradients w.r.t. the displacements: the linearised model at the consensus
    d = torch.zeros_like(disp).requires_grad_(True)
    target = fft2_centered(torch.randn(3, BOX, BOX, dtype=torch.float64))
    (grad,) = torch.autograd.grad(data_loss(model.render_spectra(None, pose, ctf, displacements=d),
                                            target).sum(), d)
    h, v = 1e-5, (0, 7, 1)
    bump = torch.zeros_like(disp)
    bump[v] = h
    with torch.no_grad():
        fd = (data_loss(model.render_spectra(None, pose, ctf, displacements=bump), target)
              - data_loss(model.render_spectra(None, pose, ctf, displacements=-bump), target))[0] / (2 * h)
    assert float(grad[v]) == pytest.approx(float(fd), rel=1e-4, abs=1e-8)


@pytest.mark.parametrize("kernel", KERNELS)
def test_uniform_vertex_shift_is_a_rigid_shift(kernel):
    d = torch.tensor([0.37, -0.81, 0.55], dtype=torch.float64) * PX
    model = make_model(lambda m: ConstantFlow(m.n_vertices, d), kernel)
    z = torch.zeros(3, 2, dtype=torch.float64)
    pose = poses(3)
    rot, orig = pose.rotations, pose.origins_A
    shifted_origin = orig - (rot @ d)[:, :2]            # the map moved by d = the particle moved by A d
    torch.testing.assert_close(model.project(z, pose), model.project(None, Pose(rot, shifted_origin)))
    # identity pose: a fractional shift ≈ the Fourier-shifted rigid image
    pose = poses(3, identity=True)
    ky, kx = image_frequencies(BOX, PX, dtype=torch.float64)
    ref = ifft2_centered(fft2_centered(model.project(None, pose)) * shift_phase(ky, kx, d[:2].expand(3, 2)), BOX)
    rel = (model.project(z, pose) - ref).norm() / ref.norm()
    assert rel < (0.05 if kernel == "linear" else 0.02)


def test_integer_vertex_shift_equals_rolled_image():
    d = torch.tensor([2.0, -1.0, 3.0], dtype=torch.float64) * PX
    model = make_model(lambda m: ConstantFlow(m.n_vertices, d), "cubic")
    pose = poses(2, identity=True)
    moved = model.project(torch.zeros(2, 2, dtype=torch.float64), pose)
    rolled = torch.roll(model.project(None, pose), shifts=(-1, 2), dims=(1, 2))   # rows +y, cols +x
    assert moved.abs().max() > 0.1
    torch.testing.assert_close(moved[:, :-1, 2:], rolled[:, :-1, 2:])     # away from wrapped edges


@pytest.mark.parametrize("kernel", KERNELS)
def test_volume_at(kernel):
    model = make_model(kernel=kernel)
    dens = model.canonical.density().detach() * model.canonical.mask
    torch.testing.assert_close(model.volume_at(None), dens)       # both kernels interpolate
    z = torch.tensor([0.8, -1.2], dtype=torch.float64)
    with torch.no_grad():
        w = model.volume_at(z)
    pos = model.voxel_positions(z[None])[0]
    torch.testing.assert_close(w, convect_volume(model.canonical.masked_values(), pos, BOX, PX, kernel))
    assert float(w.sum()) == pytest.approx(float(dens.sum()), rel=1e-5)     # faint tails cross the box edge
    assert (w - dens).abs().max() > 1e-3


def knot_distance(model, z, rot, orig):
    coords = image_coords(model.voxel_positions(z).detach(), rot, orig, BOX, PX)
    return float((coords - coords.round()).abs().min())


@pytest.mark.parametrize("kernel", KERNELS)
def test_gradients_for_map_flow_and_latents(kernel):
    model = make_model(kernel=kernel, hidden=4, layers=1)
    pose = poses(2, seed=3)
    ctf = ctf_params(2)
    z = torch.tensor([[0.6, -0.4], [-1.1, 0.3]], dtype=torch.float64, requires_grad=True)
    assert knot_distance(model, z, pose.rotations, pose.origins_A) > 1e-5    # ≫ the finite-difference steps (1e-6)
    target = fft2_centered(torch.randn(2, BOX, BOX, dtype=torch.float64))

    def loss(latents=z, **params):
        out = torch.func.functional_call(model, params, (latents, pose, ctf))
        return data_loss(fft2_centered(out), target)

    vol = model.canonical.volume.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: loss(**{"canonical.volume": v}), (vol,), fast_mode=True)
    for name in ("flow.net.0.weight", "flow.net.0.bias", "flow.net.2.weight"):
        p = dict(model.named_parameters())[name].detach().clone().requires_grad_(True)
        assert torch.autograd.gradcheck(lambda w, name=name: loss(**{name: w}), (p,), fast_mode=True)
    assert torch.autograd.gradcheck(lambda zz: loss(latents=zz), (z,))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kernel", KERNELS)
def test_cuda_model_matches_cpu(kernel):
    model = make_model(kernel=kernel).float()
    pose = poses(4).to(dtype=torch.float32)
    ctf = ctf_params(4).to(dtype=torch.float32)
    z = torch.randn(4, 2)
    cpu = model.render_images(z, pose, ctf)
    gpu = model.cuda().render_images(z.cuda(), pose.to("cuda"), ctf)
    np.testing.assert_allclose(gpu.detach().cpu().numpy(), cpu.detach().numpy(), atol=1e-3 * float(cpu.abs().max()))


def test_conventions_against_simulated_particles(shared_data):
    """Rigid rendering of the ground-truth map explains the simulated particles at low resolution."""
    mrcfile = pytest.importorskip("mrcfile")
    starfile = pytest.importorskip("starfile")
    folder = shared_data / "conventions"
    vol = mrcfile.read(folder / "gt_map.mrc").astype(np.float32)
    mask = density_mask(vol, 1.5, threshold=0.01 * float(vol.max()), dilate_A=3.0)
    parts = starfile.read(folder / "particles.star")["particles"].iloc[:24]
    images = torch.tensor(np.array(mrcfile.mmap(folder / "particles.mrcs", mode="r").data[:24]))
    rot = torch.tensor(euler_to_matrix(parts.rlnAngleRot, parts.rlnAngleTilt, parts.rlnAnglePsi), dtype=torch.float32)
    orig = torch.tensor(parts[["rlnOriginXAngst", "rlnOriginYAngst"]].to_numpy(), dtype=torch.float32)
    ctf = CTFParams(parts.rlnDefocusU.to_numpy(), parts.rlnDefocusV.to_numpy(), parts.rlnDefocusAngle.to_numpy(),
                    300.0, 2.7, 0.1, 0.0, 0.0, 1.0).batch()
    mesh = build_regular_mesh(vol, 1.5, cells_across=8)
    model = FlexForwardModel(CanonicalMap(vol, 1.5, mask), mesh, None, kernel="cubic")
    low = torch.zeros(64, 33)
    low[torch.sqrt(sum(k**2 for k in image_frequencies(64, 1 / 64))) <= 8] = 1.0     # ≥ 12 Å

    def fit(r):
        with torch.no_grad():
            m = model.render_spectra(None, Pose(r, orig), ctf) * low
        x = fft2_centered(images) * low
        slope = float((m.conj() * x).real.sum() / (m.abs() ** 2).sum())
        corr = float((m.conj() * x).real.sum() / (m.abs().square().sum() * x.abs().square().sum()).sqrt())
        return slope, corr

    slope, corr = fit(rot)
    assert 0.95 < slope < 1.05 and corr > 0.8
    assert fit(rot.transpose(1, 2))[1] < 0.5 * corr            # the transposed rotation is wrong


def test_canonical_map_mask_order_and_band_limit():
    vol = torch.tensor(np.random.default_rng(7).normal(size=(BOX,) * 3))
    mask = torch.tensor(blobs() > 0.2)
    cm = CanonicalMap(vol, PX, mask).double()
    vol = cm.volume.detach().clone()                                   # stored as float32
    idx = torch.round(cm.masked_coords().flip(-1) / PX + BOX // 2).long()     # (z, y, x) indices
    torch.testing.assert_close(cm.masked_values(), vol[idx[:, 0], idx[:, 1], idx[:, 2]])
    assert cm.n_masked == int(mask.sum())
    cm.set_band_limit(resolution_A=BOX * PX / 5.0)
    assert float(cm.band_limit_px) == pytest.approx(5.0) and cm.band_limit_A == pytest.approx(BOX * PX / 5)
    spec = torch.fft.fftn(cm.density().detach())
    k = torch.fft.fftfreq(BOX, 1 / BOX, dtype=torch.float64)
    radius = torch.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2)
    assert spec[radius >= 5.0].abs().max() < 1e-9
    torch.testing.assert_close(spec[radius <= 3.0], torch.fft.fftn(vol)[radius <= 3.0])
    cm.set_band_limit(None)
    torch.testing.assert_close(cm.density(), cm.volume)
    back = CanonicalMap(BOX, PX, mask)
    back.load_state_dict(cm.state_dict())
    torch.testing.assert_close(back.volume.double(), vol)


def test_data_loss_is_parseval_and_weighted():
    rng = np.random.default_rng(8)
    for box in (12, 13):
        a, b = (torch.tensor(rng.normal(size=(3, box, box))) for _ in range(2))
        loss = data_loss(fft2_centered(a), fft2_centered(b))
        torch.testing.assert_close(loss, ((a - b) ** 2).sum(dim=(1, 2)))
    # radial profile = the same weights spelled out on the grid; band limit as radius or mask
    a, b = (fft2_centered(torch.tensor(rng.normal(size=(2, 12, 12)))) for _ in range(2))
    profile = torch.tensor(rng.uniform(0.5, 2.0, 12))
    ky, kx = image_frequencies(12, 1 / 12, dtype=torch.float64)
    r = torch.sqrt(ky**2 + kx**2)
    grid = profile[torch.round(r).long().clamp(max=11)]
    torch.testing.assert_close(data_loss(a, b, noise_weight=profile), data_loss(a, b, noise_weight=grid))
    torch.testing.assert_close(data_loss(a, b, band_limit=4.0), data_loss(a, b, band_limit=(r <= 4.0).double()))
    mult = torch.ones(12, 7, dtype=torch.float64)
    mult[:, 1:-1] = 2.0
    want = ((a - b).abs() ** 2 * mult * (r <= 4.0)).sum(dim=(1, 2)) / 144
    torch.testing.assert_close(data_loss(a, b, band_limit=4.0), want)
