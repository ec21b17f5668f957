"""Pose, shift and handedness conventions, end to end: simulate → write STAR / .cs → read → reconstruct.

The classic silent bugs (mirror hand, transposed rotation, shift sign) must score clearly worse than
the correct pipeline, both on flexview's own asymmetric phantom and on the independently simulated
set in ``../shared/data/conventions``.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.ndimage import map_coordinates

from flexview.io.mrc import read_map
from flexview.io.formats import read_particles
from flexview.model.pose import random_rotations
from flexview.recon.fsc import fsc, fsc_at
from flexview.recon.rigid import reconstruct_rigid
from flexview.synth.dataset import make_dataset
from flexview.synth.phantom import make_phantom
from flexview.synth.simulate import project_atoms, render_map


def mirror_z(volume: np.ndarray) -> np.ndarray:
    """The map mirrored z → −z through voxel N // 2 (index i → N − i, modulo N)."""
    return np.roll(volume[::-1], 1, axis=0)


def fsc_at_res(volume, reference, pixel_size, resolution_A) -> float:
    freq, values = fsc(volume, reference, pixel_size=pixel_size)
    return fsc_at(freq, values, resolution_A)


@pytest.fixture(scope="module")
def rigid_dataset(tmp_path_factory):
    """400 noise-free particles of the asymmetric phantom (box 32, 5 Å/px) written as STAR + .cs."""
    return make_dataset(tmp_path_factory.mktemp("rigid"), kind="rigid", n_particles=400, box=32,
                        snr=None, seed=3)


@pytest.mark.parametrize("metadata", ["star", "cs"])
def test_written_poses_reconstruct_the_phantom_and_bugs_score_worse(rigid_dataset, metadata):
    truth, px = read_map(rigid_dataset.maps[0])
    particles = read_particles(getattr(rigid_dataset, metadata))
    correct = reconstruct_rigid(particles, pad=1)
    score = fsc_at_res(correct, truth, px, 15.0)
    transposed = reconstruct_rigid(replace(particles, rotations=particles.rotations.transpose(0, 2, 1).copy()),
                                   pad=1)
    shift_flipped = reconstruct_rigid(replace(particles, origins_A=-particles.origins_A), pad=1)
    assert score > 0.95
    assert fsc_at_res(mirror_z(correct), truth, px, 15.0) < 0.5
    assert fsc_at_res(transposed, truth, px, 15.0) < 0.5
    assert fsc_at_res(shift_flipped, truth, px, 15.0) < 0.5


def test_consensus_of_noise_free_rigid_data_matches_the_true_map(rigid_dataset):
    truth, px = read_map(rigid_dataset.maps[0])
    consensus, px_c = read_map(rigid_dataset.consensus)
    assert px_c == pytest.approx(px)
    assert fsc_at_res(consensus, truth, px, 15.0) > 0.95
    assert fsc_at_res(consensus, truth, px, 12.0) > 0.85


def test_analytic_projection_matches_numerical_projection_of_the_true_map():
    """Image = px · Σ_z V(Aᵀ p) with p = ((col − N/2)·px + origin_x, (row − N/2)·px + origin_y, z)."""
    box, px = 32, 5.0
    ph = make_phantom("hinge")
    coords = np.array([0.6, -0.4])
    vol = render_map(ph, coords, box, px)
    rng = np.random.default_rng(6)
    rotations = random_rotations(4, rng)
    origins = rng.uniform(-2, 2, (4, 2)) * px
    t = lambda x: torch.as_tensor(x, dtype=torch.float64)  # noqa: E731
    analytic = project_atoms(t(ph.deform(coords)), t(ph.amplitudes), t(ph.sigmas), t(rotations), t(origins),
                             box, px).numpy()
    axis = (np.arange(box) - box // 2) * px
    pz, py, px_ = np.meshgrid(axis, axis, axis, indexing="ij")          # particle frame, [z, row, col]
    for a, o, image in zip(rotations, origins, analytic):
        p = np.stack([px_ + o[0], py + o[1], pz], -1).reshape(-1, 3)    # x, y, z Å
        r = p @ a                                                       # rows: Aᵀ p
        index = (r[:, ::-1] / px + box // 2).T                          # z, y, x indices
        numeric = px * map_coordinates(vol, index, order=3, mode="constant").reshape(box, box, box).sum(0)
        assert np.corrcoef(numeric.ravel(), image.ravel())[0, 1] > 0.99
        assert numeric.sum() == pytest.approx(image.sum(), rel=0.02)


# ------------------------------------------------------------------ independent conventions set


@pytest.fixture(scope="module")
def conventions(shared_data):
    folder = shared_data / "conventions"
    if not (folder / "gt_map.mrc").is_file():
        pytest.skip("conventions test set not found")
    return folder


@pytest.mark.parametrize("name", ["particles.star", "particles_relion30.star", "particles.cs"])
def test_shared_conventions_set_reconstructs_its_ground_truth(conventions, name):
    truth, px = read_map(conventions / "gt_map.mrc")
    particles = read_particles(conventions / name)
    assert particles.pixel_size == pytest.approx(px)
    correct = reconstruct_rigid(particles, pad=1)           # the README's method: FSC 0.928 at 8 Å
    assert fsc_at_res(correct, truth, px, 8.0) >= 0.85
    if name == "particles.star":
        transposed = reconstruct_rigid(replace(particles, rotations=particles.rotations.transpose(0, 2, 1).copy()),
                                       pad=1)
        assert fsc_at_res(mirror_z(correct), truth, px, 8.0) < 0.4
        assert fsc_at_res(transposed, truth, px, 8.0) < 0.4
