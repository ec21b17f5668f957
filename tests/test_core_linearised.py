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
import scipy.linalg
import torch
from _tiny import make_trainer, particle_parameters, render, smooth_field, tiny_model, training_data

from flexview.model import FlowGenerator, Pose
from flexview.train.linearised import (deformation_gradients, deformation_modes, fit_count, generalised_modes,
                                       linearised_start)

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


def dense_modes(signal: np.ndarray, noise: np.ndarray, dim: int, ridge: float = 1e-3) -> np.ndarray:
    """Reference: ``scipy.linalg.eigh`` on the dense (D, D) covariances, (dim, D) unit vectors by
    decreasing eigenvalue."""
    noise_cov = np.cov(noise.T)
    noise_cov += ridge * np.trace(noise_cov) / len(noise_cov) * np.eye(len(noise_cov))
    d = len(noise_cov)
    _, v = scipy.linalg.eigh(np.cov(signal.T), noise_cov, subset_by_index=[d - dim, d - 1])
    v = v[:, ::-1].T
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def planted(n: int, d: int, seed: int, offset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Signal = three planted directions of decreasing strength + correlated noise; noise = an
    independent draw of the same correlated noise (so the whitening matters), float32 (n, d)."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / np.sqrt(d) + np.diag(rng.uniform(0.3, 3.0, d))
    directions = rng.normal(size=(3, d))
    signal = (rng.normal(size=(n, 3)) * [6.0, 4.0, 2.5]) @ directions + rng.normal(size=(n, d)) @ mix
    noise = rng.normal(size=(n, d)) @ mix
    return (signal + offset).astype(np.float32), (noise - offset).astype(np.float32)


@pytest.mark.parametrize("n, d", [(60, 150), (300, 40)])              # fewer samples than D, and more
def test_matrix_free_modes_equal_the_dense_generalised_eigenvectors(n, d):
    signal, noise = planted(n, d, seed=n, offset=5.0)                # a mean that centring must remove
    want = dense_modes(signal.astype(np.float64), noise.astype(np.float64), 3)
    got = generalised_modes(signal, noise, 3)
    assert got.shape == (3, d)
    for g, w in zip(got, want):
        assert abs(float(g @ w)) > 1 - 1e-8
        np.testing.assert_allclose(g, w * np.sign(g @ w), atol=1e-5)
        assert g[np.abs(g).argmax()] > 0                              # sign convention


def test_matrix_free_modes_are_not_the_unwhitened_ones():
    """Control: without the noise metric (plain PCA of the signal) the answer differs, so the
    comparison above can fail."""
    signal, noise = planted(60, 150, seed=60)
    pca = np.linalg.svd(signal - signal.mean(0), full_matrices=False)[2][0]
    assert abs(float(generalised_modes(signal, noise, 1)[0] @ pca)) < 0.99


def test_modes_of_the_trainer_equal_the_dense_solution(one_motion):
    """End to end on the tiny mesh: the gradients' dense generalised eigenvectors, reshaped and
    scaled to a 1 Å largest vertex move, are what :func:`deformation_modes` returns."""
    trainer, *_ = one_motion
    band = 2 * trainer.data.pixel_size
    n_fit = fit_count(trainer.model.mesh.n_vertices, len(trainer.train_rows))
    assert n_fit == min(len(trainer.train_rows), 4000)
    fit = trainer.train_rows
    if len(fit) > n_fit:
        fit = np.sort(np.random.default_rng(0).choice(fit, n_fit, replace=False))
    signal = deformation_gradients(trainer, fit, band).astype(np.float64)
    noise = deformation_gradients(trainer, fit, band, noise_seed=0).astype(np.float64)
    want = dense_modes(signal, noise, 2).reshape(2, -1, 3)
    want = want / np.linalg.norm(want, axis=-1).max(axis=1)[:, None, None]
    got = deformation_modes(trainer, 2, band_A=band)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w * np.sign((g * w).sum()), atol=1e-4)


def test_fit_count_is_bounded_by_memory():
    assert fit_count(9226, 10**6) * 2 * 4 * 3 * 9226 <= 512 * 2**20
    assert fit_count(9226, 10**6) > 2000
    assert fit_count(500, 10**6) == 4000 and fit_count(500, 800) == 800
    assert fit_count(10**7, 10**6) == 200                            # a floor for huge meshes
