"""Synthetic phantoms, analytic images and the data-set writer, against brute-force references."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree
from scipy.spatial.distance import pdist

from flexview.cli import main
from flexview.errors import FlexviewInputError
from flexview.io.mrc import read_map
from flexview.model.ctf import CTFParams, electron_wavelength
from flexview.model.pose import euler_to_matrix
from flexview.synth import (KINDS, apply_ctf, load_phantom, make_dataset, make_phantom, project_atoms,
                            render_map, simulate_dataset)
from flexview.synth.simulate import pixel_profiles

# ------------------------------------------------------------------ phantoms


@pytest.mark.parametrize("kind", KINDS)
def test_phantom_size_fills_most_of_the_default_box(kind):
    ph = make_phantom(kind)
    assert 0.5 * 160 < pdist(ph.positions).max() < 0.75 * 160
    np.testing.assert_allclose(ph.positions.mean(0), 0.0, atol=1e-9)
    for c in (-1.0, 1.0):
        moved = ph.deform(np.full(ph.n_motions, c))
        largest_shift = 3 * 2.5                                   # 3 px at 2.5 Å/px
        assert np.linalg.norm(moved, axis=1).max() + 3 * ph.sigmas.max() + largest_shift < 80.0


def test_phantom_is_chiral():
    """A symmetry of the atoms maps principal axes onto principal axes, so if the mirror image
    (z → −z) were superposable on the object, a proper rotation built from the two sets of
    principal axes (8 sign choices) would do it."""
    for kind in ("hinge", "shear"):
        pos = make_phantom(kind).positions
        mirror = pos * [1, 1, -1]
        e = np.linalg.eigh(pos.T @ pos)[1]                   # columns: principal axes
        f = np.linalg.eigh(mirror.T @ mirror)[1]
        tree = cKDTree(pos)
        tried = 0
        for signs in itertools.product((1, -1), repeat=3):
            rot = f @ np.diag(signs) @ e.T
            if np.linalg.det(rot) < 0:
                continue
            tried += 1
            assert np.mean(tree.query(mirror @ rot)[0]) > 2.0
        assert tried == 4


def _distance_to_axis(points, pivot, axis):
    rel = points - pivot
    return np.linalg.norm(rel - np.outer(rel @ axis, axis), axis=1)


@pytest.mark.parametrize("c", [1.0, -0.5])
def test_hinge_moves_only_its_domain_by_the_specified_angle(c):
    ph = make_phantom("hinge")
    m = ph.moves
    for k, (domain, angle) in enumerate([(1, 20.0), (2, 40.0)]):
        coords = np.zeros(2)
        coords[k] = c
        disp = np.linalg.norm(ph.displacement(coords), axis=1)
        moved = ph.labels == domain
        assert np.all(disp[~moved] < 1e-12)                      # core and the other domain stay
        r_perp = _distance_to_axis(ph.positions[moved], m.pivot[k], m.vector[k])
        expected = 2 * r_perp * np.sin(np.deg2rad(abs(c) * angle) / 2)
        np.testing.assert_allclose(disp[moved], expected, atol=1e-9)
        assert disp[moved].max() > 5.0


def test_shear_slides_the_two_domains_in_opposite_directions():
    ph = make_phantom("shear")
    for c in (1.0, -0.3):
        d = ph.displacement([c])
        s = ph.moves.vector[0]
        np.testing.assert_allclose(d[ph.labels == 0], np.tile(7.0 * c * s, ((ph.labels == 0).sum(), 1)))
        np.testing.assert_allclose(d[ph.labels == 1], np.tile(-7.0 * c * s, ((ph.labels == 1).sum(), 1)))
    np.testing.assert_allclose(ph.displacement([0.0]), 0.0)


def test_rigid_is_the_hinge_object_without_motion_and_batches_match():
    rigid, hinge = make_phantom("rigid"), make_phantom("hinge")
    assert rigid.n_motions == 0
    np.testing.assert_array_equal(rigid.positions, hinge.positions)
    coords = np.array([[0.3, -0.8], [-1.0, 0.5]])
    batch = hinge.deform(coords)
    for i in range(2):
        np.testing.assert_allclose(batch[i], hinge.deform(coords[i]))
    with pytest.raises(FlexviewInputError):
        make_phantom("wobble")


def test_phantom_save_load_roundtrip(tmp_path):
    ph = make_phantom("hinge")
    ph.save(tmp_path / "ph.npz")
    back = load_phantom(tmp_path / "ph.npz")
    assert back.domain_names == ph.domain_names and back.moves.names == ph.moves.names
    np.testing.assert_array_equal(back.deform([0.4, -0.9]), ph.deform([0.4, -0.9]))


# ------------------------------------------------------------------ analytic images and maps


def test_pixel_profiles_match_numerical_integration():
    centres, sigma, box, px = torch.tensor([0.3, -4.1, 7.7], dtype=torch.float64), 1.3, 12, 1.5
    prof = pixel_profiles(centres, torch.full((3,), sigma, dtype=torch.float64), box, px).numpy()
    sub = (np.arange(box * 200) + 0.5) / 200 - box // 2 - 0.5          # sub-samples, pixel units
    gauss = np.exp(-((sub[None] * px - centres.numpy()[:, None]) ** 2) / (2 * sigma**2))
    brute = (gauss / (np.sqrt(2 * np.pi) * sigma)).reshape(3, box, 200).mean(-1)
    np.testing.assert_allclose(prof, brute, atol=1e-5)


def test_projection_matches_brute_force_sum_of_projected_gaussians():
    """Each atom projects to a 2-D Gaussian at ((A r)_x − origin_x, (A r)_y − origin_y); sample it."""
    rng = np.random.default_rng(4)
    box, px, n = 16, 2.0, 5
    pos = rng.uniform(-8, 8, (n, 3))
    amp, sig = rng.uniform(0.5, 2.0, n), rng.uniform(1.0, 2.0, n)
    a = euler_to_matrix(30.0, 60.0, -100.0)
    origin = np.array([1.7, -2.6])
    t = lambda x: torch.as_tensor(x, dtype=torch.float64)  # noqa: E731
    img = project_atoms(t(pos), t(amp), t(sig), t(a[None]), t(origin[None]), box, px)[0].numpy()
    sub = (np.arange(box * 20) + 0.5) / 20 - 0.5 - box // 2             # pixel units from centre
    yy, xx = np.meshgrid(sub * px, sub * px, indexing="ij")
    brute = np.zeros_like(yy)
    for r, w, s in zip(pos, amp, sig):
        cx, cy = (a @ r)[:2] - origin
        brute += w * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s**2)) / (2 * np.pi * s**2)
    brute = brute.reshape(box, 20, box, 20).mean((1, 3))
    np.testing.assert_allclose(img, brute, atol=5e-4 * brute.max())     # midpoint rule error ~1e-4


def test_render_map_is_voxel_average_and_projection_scale():
    ph = make_phantom("hinge")
    vol = render_map(ph, [0.0, 0.0], 32, 5.0)
    # mass is conserved: Σ voxels · voxel volume = Σ amplitudes (all atoms well inside)
    assert vol.sum() * 5.0**3 == pytest.approx(ph.amplitudes.sum(), rel=1e-4)
    t = lambda x: torch.as_tensor(x, dtype=torch.float64)  # noqa: E731
    img = project_atoms(t(ph.positions), t(ph.amplitudes), t(ph.sigmas), t(np.eye(3)[None]),
                        t(np.zeros((1, 2))), 32, 5.0)[0].numpy()
    np.testing.assert_allclose(img, 5.0 * vol.sum(0), atol=1e-5 * img.max())   # image = px · Σ_z map


def _reference_ctf(u, v, angle_deg, box2, px):
    """RELION CTF (README point 5) on a full fftfreq grid, written out independently."""
    k = np.fft.fftfreq(box2, d=px)
    ky, kx = np.meshgrid(k, k, indexing="ij")
    lam = electron_wavelength(300.0)
    theta = np.arctan2(ky, kx)
    dz = (u + v) / 2 + (u - v) / 2 * np.cos(2 * (theta - np.deg2rad(angle_deg)))
    k2 = kx**2 + ky**2
    return np.sin(np.pi * lam * dz * k2 - np.pi / 2 * 2.7e7 * lam**3 * k2**2 + np.arcsin(0.1))


def test_apply_ctf_matches_padded_numpy_reference():
    rng = np.random.default_rng(5)
    box, px = 16, 2.0
    img = rng.normal(size=(1, box, box))
    ctf = CTFParams(defocus_u_A=15000.0, defocus_v_A=14000.0, defocus_angle_deg=30.0, voltage_kv=300.0,
                    cs_mm=2.7, amplitude_contrast=0.1, phase_shift_deg=0.0, bfactor_A2=0.0, scale=1.0)
    out = apply_ctf(torch.as_tensor(img), ctf.batch(dtype=torch.float64), px).numpy()[0]
    padded = np.zeros((2 * box, 2 * box))
    padded[box // 2:box // 2 + box, box // 2:box // 2 + box] = img[0]
    weights = _reference_ctf(15000.0, 14000.0, 30.0, 2 * box, px)
    weights[box, :] = weights[:, box] = 0.0                   # Nyquist row and column left out
    spec = np.fft.fft2(np.fft.ifftshift(padded)) * weights
    assert np.abs(np.fft.ifft2(spec).imag).max() < 1e-12
    brute = np.fft.fftshift(np.fft.ifft2(spec).real)[box // 2:box // 2 + box, box // 2:box // 2 + box]
    np.testing.assert_allclose(out, brute, atol=1e-10)
    unit = CTFParams(defocus_u_A=0.0, defocus_v_A=0.0, defocus_angle_deg=0.0, voltage_kv=300.0, cs_mm=0.0,
                     amplitude_contrast=1.0, phase_shift_deg=0.0, bfactor_A2=0.0, scale=1.0)       # CTF ≡ 1
    rows, cols = np.mgrid[:32, :32]
    blob = np.exp(-((rows - 15.0) ** 2 + (cols - 17.0) ** 2) / (2 * 2.0**2))[None]  # nothing at Nyquist
    same = apply_ctf(torch.as_tensor(blob), unit.batch(dtype=torch.float64), px).numpy()
    np.testing.assert_allclose(same, blob, atol=1e-6)


# ------------------------------------------------------------------ simulated particle sets


def test_simulation_is_seeded_with_the_requested_snr_and_balanced_halves():
    a = simulate_dataset("hinge", 60, 24, snr=0.5, seed=3)
    b = simulate_dataset("hinge", 60, 24, snr=0.5, seed=3)
    c = simulate_dataset("hinge", 60, 24, snr=0.5, seed=4)
    clean = simulate_dataset("hinge", 60, 24, snr=None, seed=3)
    imgs = a.particles.images.read(slice(None))
    np.testing.assert_array_equal(imgs, b.particles.images.read(slice(None)))
    assert not np.allclose(imgs, c.particles.images.read(slice(None)))
    noise = imgs - clean.particles.images.read(slice(None))
    assert a.signal_var / a.noise_sigma**2 == pytest.approx(0.5)
    assert noise.std() == pytest.approx(a.noise_sigma, rel=0.02)
    assert abs(int(a.particles.half_set.sum()) - 30) == 0
    assert a.coords.shape == (60, 2) and np.abs(a.coords).max() <= 1.0
    np.testing.assert_array_equal(a.coords, b.coords)
    ctf = a.particles.ctf
    assert np.all(ctf.defocus_u_A >= ctf.defocus_v_A)
    assert np.all((ctf.defocus_u_A + ctf.defocus_v_A) / 2 >= 10000) and np.all((ctf.defocus_u_A + ctf.defocus_v_A) / 2 <= 25000)
    assert np.abs(a.particles.origins_A).max() <= 3.0 * a.particles.pixel_size


def test_particle_images_follow_their_motion_coordinates():
    """Noise-free, CTF-free image of a particle equals the projection of the map at its coordinates."""
    sim = simulate_dataset("shear", 3, 32, snr=None, seed=8, ctf=False, coords=np.array([[-1.0], [0.0], [1.0]]))
    p = sim.particles
    t = lambda x: torch.as_tensor(x, dtype=torch.float64)  # noqa: E731
    for i, c in enumerate([-1.0, 0.0, 1.0]):
        expected = project_atoms(t(sim.phantom.deform([c])), t(sim.phantom.amplitudes), t(sim.phantom.sigmas),
                                 t(p.rotations[i:i + 1]), t(p.origins_A[i:i + 1]), 32, p.pixel_size)[0]
        np.testing.assert_allclose(p.images.read(i), expected.numpy(), atol=1e-4 * float(expected.max()))


def test_make_dataset_writes_a_complete_reproducible_set(tmp_path):
    from flexview.io.formats import read_particles

    ds = make_dataset(tmp_path / "a", kind="hinge", n_particles=40, box=16, snr=0.1, seed=2)
    desc = json.loads(ds.description.read_text())
    assert desc["kind"] == "hinge" and desc["n_particles"] == 40 and desc["pixel_size"] == 10.0
    assert [m["name"] for m in desc["motions"]] == ["hinge", "twist"]
    star, cs = read_particles(ds.star), read_particles(ds.cs)
    np.testing.assert_array_equal(star.images.read(slice(None)), cs.images.read(slice(None)))
    np.testing.assert_allclose(star.rotations, cs.rotations, atol=1e-5)
    np.testing.assert_allclose(star.origins_A, cs.origins_A, atol=1e-4)
    np.testing.assert_array_equal(star.half_set, cs.half_set)
    coords = np.load(ds.motion_coords, allow_pickle=False)
    assert coords.shape == (40, 2)
    index = json.loads(ds.maps_index.read_text())
    assert [e["coords"] for e in index["maps"]] == [[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]]
    ph = load_phantom(ds.phantom)
    for entry in index["maps"][:2]:
        vol, px = read_map(ds.ground_truth / entry["file"])
        np.testing.assert_allclose(vol, render_map(ph, entry["coords"], 16, 10.0), atol=1e-6)
    labels, _ = read_map(ds.domain_labels)
    assert set(np.unique(labels)) == {0.0, 1.0, 2.0, 3.0}
    for d, mask_path in enumerate(ds.domain_masks):
        np.testing.assert_array_equal(read_map(mask_path)[0], (labels == d + 1).astype(np.float32))
    consensus, px = read_map(ds.consensus)
    assert consensus.shape == (16, 16, 16) and px == pytest.approx(10.0)
    again = make_dataset(tmp_path / "b", kind="hinge", n_particles=40, box=16, snr=0.1, seed=2)
    np.testing.assert_array_equal(read_particles(again.star).images.read(slice(None)),
                                  star.images.read(slice(None)))
    np.testing.assert_array_equal(read_map(again.consensus)[0], consensus)
    np.testing.assert_array_equal(read_particles(again.cs).extra["uid"], cs.extra["uid"])


def test_make_dataset_refuses_bad_parameters(tmp_path):
    with pytest.raises(FlexviewInputError):
        make_dataset(tmp_path / "x", box=15)
    with pytest.raises(FlexviewInputError):
        make_dataset(tmp_path / "x", snr=0.0)
    assert not (tmp_path / "x").exists()


def test_cli_synth_writes_and_summarises(tmp_path, capsys):
    assert main(["synth", "--kind", "shear", "--n", "20", "--box", "16", "--snr", "1", "--out",
                 str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "shear" in out and "particles.star" in out
    assert json.loads((tmp_path / "s" / "dataset.json").read_text())["n_motions"] == 1
    assert main(["synth", "--box", "15", "--out", str(tmp_path / "t")]) == 2
