"""Every model image comes from one renderer, with one CTF grid.

Training batches, the training data term, calibration, the linearised start and reconstruction
all go through :meth:`FlexForwardModel.render_spectra`, with the CTF on the grid of
:data:`CTF_PAD`. At box 16 and 2 Å/px a defocus of 1–2.5 µm delocalises the signal by more than
the box, so the padded and the unpadded CTF grids give clearly different images: each test
below would fail if its path still applied the CTF on the unpadded grid.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from _tiny import PX, particle_parameters, render, smooth_field, tiny_model, training_data

from flexview.model import CTF_PAD, FlowGenerator, Pose, data_loss, fft2_centered
from flexview.recon.highres import full_box_model
from flexview.train import TrainConfig
from flexview.train.calibrate import calibrate
from flexview.train.linearised import deformation_gradients
from flexview.train.trainer import Trainer

N = 24


@pytest.fixture(scope="module")
def setup():
    """A flexible tiny model, particles it rendered plus noise, and a Trainer around them."""
    model = tiny_model(flow=lambda mesh: FlowGenerator.for_mesh(mesh, 2, hidden=8, layers=2))
    with torch.no_grad():
        model.flow.reset_parameters(output_std_A=0.3)
    draw = particle_parameters(N, seed=2)
    clean = render(model, draw, z=torch.randn(N, 2, generator=torch.Generator().manual_seed(0)))
    noisy = clean + np.random.default_rng(1).normal(scale=0.3 * clean.std(), size=clean.shape)
    data = training_data(noisy.astype(np.float32), draw)
    cfg = TrainConfig(box=data.box, latent_dim=2, epochs=1, batch_size=N, device="cpu")
    weight = torch.linspace(0.5, 2.0, data.box)
    trainer = Trainer(cfg, data, model, np.zeros((N, 2), np.float32), weight, "cpu")
    return model, draw, data, trainer


def unpadded_spectra(model, pose, ctf, z=None):
    """The same model with the CTF applied on the box itself."""
    other = type(model)(model.canonical, model.mesh, model.flow, model.kernel, ctf_pad=1)
    with torch.no_grad():
        return other.render_spectra(z, pose, ctf)


def test_one_ctf_grid_for_training_and_reconstruction(setup):
    model, *_ = setup
    assert model.ctf_pad == CTF_PAD == 2
    mask = model.canonical.mask.cpu().numpy()
    recon = full_box_model(model.mesh, None, mask, PX)
    assert recon.ctf_pad == CTF_PAD


def test_training_batches_carry_the_ctf_on_the_model_grid(setup):
    model, draw, data, trainer = setup
    rows = np.array([3, 0, 7])
    batch = trainer.batch(rows)
    want = model.ctf_image(draw.ctf.batch(rows))
    assert batch.ctf.shape == (3, CTF_PAD * data.box, CTF_PAD * data.box // 2 + 1)
    torch.testing.assert_close(batch.ctf, want)
    torch.testing.assert_close(batch.pose.rotations, torch.as_tensor(draw.rotations[rows], dtype=torch.float32))
    torch.testing.assert_close(batch.spectra, fft2_centered(torch.as_tensor(data.images[rows])))


def test_trainer_data_term_is_the_renderer_likelihood(setup):
    model, draw, data, trainer = setup
    rows = np.arange(N)
    batch = trainer.batch(rows)
    z = torch.randn(N, 2, generator=torch.Generator().manual_seed(3))
    radius = 5.0
    pose = Pose.from_arrays(draw.rotations, draw.origins_A)
    with torch.no_grad():
        got = trainer.data_term(z, batch, radius)
        want = data_loss(model.render_spectra(z, pose, draw.ctf.batch()), batch.spectra,
                         noise_weight=trainer.noise_band(radius))
        unpadded = data_loss(unpadded_spectra(model, pose, draw.ctf.batch(), z), batch.spectra,
                             noise_weight=trainer.noise_band(radius))
    torch.testing.assert_close(got, want)
    assert float((got - unpadded).abs().mean()) > 0.05 * float(got.abs().mean())


def test_calibration_scale_is_the_least_squares_fit_of_the_renderer(setup):
    model, draw, data, _ = setup
    pose = Pose.from_arrays(draw.rotations, draw.origins_A)
    with torch.no_grad():
        model.flow_enabled = False
        scale, _ = calibrate(model, data, np.arange(N), "cpu")
        model.flow_enabled = True
        padded = model.render_spectra(None, pose, draw.ctf.batch()).numpy()
    unpadded = unpadded_spectra(model, pose, draw.ctf.batch()).numpy()
    x = fft2_centered(torch.as_tensor(data.images)).numpy()
    mult = np.full(x.shape[1:], 2.0)
    mult[:, 0] = mult[:, -1] = 1.0
    mult[0, 0] = 0.0                                    # DC is left out

    def fit(m):
        return float((mult * (m.conj() * x).real).sum() / (mult * np.abs(m) ** 2).sum())

    assert scale == pytest.approx(fit(padded), rel=1e-4)
    assert abs(fit(unpadded) - fit(padded)) > 0.02 * fit(padded)


def test_deformation_gradients_are_finite_differences_of_the_rendered_data_term(setup):
    model, draw, data, trainer = setup
    band_A = 8.0
    rows = np.array([1, 4])
    grads = deformation_gradients(trainer, rows, band_A).reshape(len(rows), -1, 3)
    field = smooth_field(model, seed=4).astype(np.float64)
    weight = trainer.noise_band(trainer.band_radius_px(band_A)).double()
    exact = tiny_model().double()                            # the same map and mesh, float64
    pose = Pose.from_arrays(draw.rotations[rows], draw.origins_A[rows], dtype=torch.float64)
    ctf = exact.ctf_image(draw.ctf.batch(rows, dtype=torch.float64))
    target = fft2_centered(torch.as_tensor(data.images[rows], dtype=torch.float64))
    h = 1e-4

    def loss(t):
        disp = torch.as_tensor(t * field).expand(len(rows), -1, -1)
        with torch.no_grad():
            return data_loss(exact.render_spectra(None, pose, ctf, displacements=disp), target,
                             noise_weight=weight)

    fd = ((loss(h) - loss(-h)) / (2 * h)).numpy()
    along = (grads * field).sum(axis=(1, 2))
    assert np.abs(fd).min() > 0
    np.testing.assert_allclose(along, fd, rtol=2e-3)
