"""The linearised start on particles with one known motion.

Particles are rendered by the model itself at vertex displacements ``a_i × u`` (one fixed affine
field u, amplitudes a_i drawn per particle) plus white noise. The first deformation mode must
move the density the way u does, as seen in the images: the cosine between the image changes
``J_i v`` and ``J_i u`` (central differences of the renderer over all particles) is the alignment
measure, since a vertex field's components that no image sees are not determined by the data.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from _tiny import make_trainer, particle_parameters, render, smooth_field, tiny_model, training_data

from flexview.model import FlowGenerator, Pose
from flexview.train.linearised import deformation_modes, linearised_start

N_PARTICLES, AMPLITUDE_A, NOISE, SEED = 1200, 3.0, 0.3, 7


@pytest.fixture(scope="module")
def one_motion():
    """(trainer, field (V, 3), amplitudes (M,), draw); noise σ = 0.3 × the images' std."""
    model = tiny_model(cells_across=2, flow=lambda mesh: FlowGenerator.for_mesh(mesh, 1, hidden=8, layers=2))
    field = smooth_field(model.mesh, 1)
    draw = particle_parameters(N_PARTICLES, SEED)
    rng = np.random.default_rng(SEED)
    a = rng.normal(scale=AMPLITUDE_A, size=N_PARTICLES)
    clean = render(model, draw, displacements=torch.as_tensor(a[:, None, None] * field, dtype=torch.float32))
    sigma = NOISE * float(clean.std())
    images = clean + rng.normal(scale=sigma, size=clean.shape)
    weight = torch.full((model.box,), 1.0 / (2 * sigma**2))            # N²/(2 · N²σ²) per shell
    weight[0] = 0.0
    return make_trainer(model, training_data(images, draw), weight), field, a, draw


def image_change(model, draw, field: np.ndarray, eps_A: float = 0.05, count: int = 300) -> np.ndarray:
    """d(images)/d(amplitude of ``field``) at zero deformation for the first ``count`` particles,
    flattened."""
    pose = Pose.from_arrays(draw.rotations[:count], draw.origins_A[:count])
    ctf = draw.ctf.batch(slice(0, count))
    d = torch.as_tensor(field, dtype=torch.float32).expand(count, -1, -1)
    with torch.no_grad():
        plus = model.render_images(None, pose, ctf, displacements=eps_A * d)
        minus = model.render_images(None, pose, ctf, displacements=-eps_A * d)
    return ((plus - minus) / (2 * eps_A)).numpy().ravel()


def cosine(u: np.ndarray, v: np.ndarray) -> float:
    return abs(float(u @ v)) / float(np.linalg.norm(u) * np.linalg.norm(v))


def test_first_deformation_mode_moves_the_density_like_the_true_field(one_motion):
    trainer, field, _, draw = one_motion
    modes = deformation_modes(trainer, 1, band_A=2 * trainer.data.pixel_size)
    assert modes.shape == (1, trainer.model.mesh.n_vertices, 3)
    assert np.linalg.norm(modes[0], axis=-1).max() == pytest.approx(1.0)
    model = trainer.model
    found = image_change(model, draw, modes[0])
    assert cosine(found, image_change(model, draw, field)) > 0.9
    controls = [cosine(found, image_change(model, draw, smooth_field(model.mesh, seed))) for seed in range(2, 6)]
    assert max(controls) < 0.8                                       # random smooth fields fail


def test_linearised_latents_follow_the_amplitudes(one_motion):
    trainer, _, a, _ = one_motion
    z = linearised_start(trainer, 1, band_A=2 * trainer.data.pixel_size)
    assert z.shape == (N_PARTICLES, 1) and z.dtype == np.float32
    assert abs(np.corrcoef(z[:, 0], a)[0, 1]) > 0.9
    np.testing.assert_allclose([z.mean(), z.std()], [0.0, 1.0], atol=1e-4)
