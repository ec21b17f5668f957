"""Optics groups of different pixel sizes or boxes, resampled to one grid for training and
reconstruction (:mod:`flexview.train.optics`).

The reference is the simulator: the same particles (same poses, same phantom) rendered by
:func:`flexview.synth.simulate.clean_images` at each group's sampling, and at the reference
group's. A resampled group must match the simulator's images at the pixel size the resampling
reaches, and differ from those at the grid's own pixel size by no more than that residual
pixel-size error makes the simulator's images differ.
"""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pandas as pd
import pytest
import starfile

from flexview.cli import main
from flexview.errors import FlexviewInputError
from flexview.io.mrc import write_map, write_stack
from flexview.io.particles import ArrayImages, ParticleSet, StackImages
from flexview.model.pose import matrix_to_euler
from flexview.preprocess import fourier_crop, resample_images
from flexview.recon.rigid import reconstruct_rigid
from flexview.recon.stream import ParticleStream, reconstruction_grid
from flexview.synth.phantom import make_phantom
from flexview.synth.simulate import PoseDraw, add_noise, clean_images, draw_parameters
from flexview.train.optics import MAX_SHIFT_PX, OpticsGrid, resampling_plan

PHANTOM = make_phantom("hinge")          # atoms within 61 Å of the centre
REF_BOX, REF_PX, GRID = 128, 1.24, 32    # reference group: 158.72 Å; training grid 4.96 Å/px
TOL = 0.01                               # rms, relative: pixel-averaging differences of the simulator


def _draw(n: int, seed: int = 0) -> PoseDraw:
    return draw_parameters(n, PHANTOM.n_motions, 2.5, np.random.default_rng(seed), max_shift_px=1.0)


def _render(draw: PoseDraw, box: int, px: float, ctf: bool = False) -> np.ndarray:
    return clean_images(PHANTOM, draw, box, px, ctf=ctf)


def _rms(a, b) -> float:
    return float(np.sqrt(((np.asarray(a) - b) ** 2).mean() / (np.asarray(b) ** 2).mean()))


def _mixed_set(folder, draw: PoseDraw, groups: list[tuple[int, int, float]], ctf: bool = False):
    """The particles of ``draw`` once per ``(optics group, box, pixel size)``, each group in its own
    stack; returns the ParticleSet (stacks of different boxes: ``StackImages`` box 0) and the images."""
    n, images, stacks = len(draw.rotations), [], []
    for g, box, px in groups:
        images.append(_render(draw, box, px, ctf))
        stacks.append(folder / f"group{g}.mrcs")
        write_stack(stacks[-1], images[-1], px)
    k = len(groups)
    source = StackImages(stacks, np.repeat(np.arange(k), n), np.tile(np.arange(n), k), 0)
    particles = ParticleSet(
        images=source, pixel_size=0.0, box=0, rotations=np.tile(draw.rotations, (k, 1, 1)),
        origins_A=np.tile(draw.origins_A, (k, 1)), ctf=draw.ctf.subset(np.tile(np.arange(n), k)),
        optics_group=np.repeat([g for g, _, _ in groups], n), source=folder / "particles.star",
        pixel_sizes=np.repeat([px for _, _, px in groups], n), boxes=np.repeat([b for _, b, _ in groups], n))
    return particles, images


# ------------------------------------------------------------------ the particle set
def test_the_reference_group_sets_pixel_size_and_box_and_subsets_follow():
    n = 4
    particles = ParticleSet(images=None, pixel_size=0.0, box=0, optics_group=np.repeat([3, 2], n),
                            pixel_sizes=np.repeat([1.25, 1.24], n), boxes=np.repeat([200, 256], n),
                            rotations=np.tile(np.eye(3), (2 * n, 1, 1)))
    assert particles.mixed and (particles.pixel_size, particles.box) == (1.24, 256)   # group 2, not the first row
    assert particles.extent_A == pytest.approx(256 * 1.24)
    first, second = particles.samplings()
    assert (first.groups, first.pixel_size, first.box) == ((2,), 1.24, 256)
    assert (second.groups, second.box) == ((3,), 200) and list(second.rows) == list(range(n))
    only_3 = particles.subset(np.arange(n))
    assert not only_3.mixed and (only_3.pixel_size, only_3.box) == (1.25, 200)
    assert only_3.pixel_sizes is None and only_3.boxes is None
    uniform = ParticleSet(images=None, pixel_size=9.0, box=9, rotations=np.tile(np.eye(3), (3, 1, 1)),
                          pixel_sizes=[2.0, 2.0, 2.0], boxes=[16, 16, 16])
    assert not uniform.mixed and (uniform.pixel_size, uniform.box) == (2.0, 16)


def test_a_uniform_set_is_read_exactly_as_before(particle_set):
    """One group: the grid is a plain Fourier crop (bit for bit), or the images themselves."""
    particles, images = particle_set
    rows = np.array([4, 0, 3])
    assert np.array_equal(OpticsGrid(particles, 8).read(rows), fourier_crop(images[rows], 8)[0])
    assert np.array_equal(OpticsGrid(particles, 16).read(rows), images[rows])
    assert len(resampling_plan(particles, 8)) == 1 and OpticsGrid(particles, 8).describe() is None


def test_one_read_of_stacks_with_different_boxes_is_refused(tmp_path):
    particles, _ = _mixed_set(tmp_path, _draw(2), [(1, 16, 2.0), (2, 20, 1.6)])
    assert particles.images.read([0, 1]).shape == (2, 16, 16)
    assert particles.images.read([2, 3]).shape == (2, 20, 20)
    with pytest.raises(FlexviewInputError, match="expected 16 x 16") as err:
        particles.images.read([0, 2])
    assert str(err.value.path).endswith("group2.mrcs")


# ------------------------------------------------------------------ resampling against the simulator
@pytest.mark.parametrize("box, px", [
    (128, 1.25),            # RELION 3.1 merge: same box, 1.25 against 1.24 Å
    (150, REF_BOX * REF_PX / 150),   # same extent in another box: exact
    (120, 1.25),            # smaller extent: zero-padded around the particle
    (144, 1.24),            # larger extent: cropped to the grid
])
def test_resampled_group_matches_the_simulator(tmp_path, box, px):
    draw = _draw(6)
    particles, (reference, other) = _mixed_set(tmp_path, draw, [(1, REF_BOX, REF_PX), (2, box, px)])
    grid = OpticsGrid(particles, GRID)
    n = len(draw.rotations)
    target = fourier_crop(reference, GRID)[0]
    assert np.array_equal(grid.read(np.arange(n)), target)           # the reference group: unchanged path
    resampled = grid.read(np.arange(n, 2 * n))
    step = grid.plan[1]
    assert step.target_pixel_size == pytest.approx(REF_BOX * REF_PX / GRID)
    assert abs(step.mismatch) <= 1 / (2 * step.fourier_box) and step.shift_px <= 0.25 < MAX_SHIFT_PX
    # the simulator at the pixel size reached, through the plain crop of a uniform set
    reached = fourier_crop(_render(draw, REF_BOX, step.achieved_pixel_size * GRID / REF_BOX), GRID)[0]
    assert _rms(resampled, reached) < TOL
    # against the grid's own pixel size: no further off than the residual error moves the simulator
    assert _rms(resampled, target) <= _rms(reached, target) + TOL
    if abs(box * px / (REF_BOX * REF_PX) - 1) > 0.01:   # taking the group's box as the reference extent
        assert _rms(fourier_crop(other, GRID)[0] if box >= GRID else other, target) > 5 * TOL


def test_the_ctf_needs_no_change_when_the_extent_is_the_same(tmp_path):
    """CTF-modulated images (CTF and origins in Å) resampled from 150 px to the grid of 128 px."""
    draw = _draw(6, seed=1)
    particles, (reference, _) = _mixed_set(tmp_path, draw, [(1, REF_BOX, REF_PX),
                                                            (2, 150, REF_BOX * REF_PX / 150)], ctf=True)
    resampled = OpticsGrid(particles, GRID).read(np.arange(6, 12))
    assert _rms(resampled, fourier_crop(reference, GRID)[0]) < TOL


@pytest.mark.parametrize("size, new", [(24, 31), (24, 40), (23, 32), (40, 23), (31, 24)])
def test_fourier_resizing_samples_a_band_limited_periodic_image_exactly(size, new):
    """A product of cosines with whole periods on the box, sampled analytically on both grids."""
    def sampled(n):
        x = (np.arange(n) - n // 2) / n              # fraction of the box, origin at pixel n // 2
        return np.outer(np.cos(2 * np.pi * -5 * x + 1.1), np.cos(2 * np.pi * 3 * x + 0.3))[None]

    out = resample_images(sampled(size), new, new)
    assert out.shape == (1, new, new)
    assert np.abs(out - sampled(new)).max() < 1e-12


# ------------------------------------------------------------------ refusals
def test_a_grid_finer_than_a_group_is_refused_with_a_box_that_fits(tmp_path):
    particles, _ = _mixed_set(tmp_path, _draw(2), [(1, 32, 2.0), (2, 32, 2.5)])
    with pytest.raises(FlexviewInputError) as err:
        OpticsGrid(particles, 32)                    # 2.0 Å/px: 25 % finer than group 2
    message = str(err.value)
    assert err.value.field == "--box" and str(err.value.path) == str(tmp_path / "particles.star")
    assert "optics group 2" in message and "2.5000 Å/px" in message and "--box 24 would fit" in message
    OpticsGrid(particles, 24)                        # 2.667 Å/px
    with pytest.raises(FlexviewInputError, match="--box") as err:
        reconstruction_grid(particles, 32)
    with pytest.raises(FlexviewInputError, match="rigid reconstruction needs one"):
        reconstruct_rigid(particles)


# ------------------------------------------------------------------ reconstruction input
def test_reconstruction_stream_reads_every_group_on_its_grid(tmp_path):
    draw = _draw(6)
    particles, (reference, _) = _mixed_set(tmp_path, draw, [(1, 64, 2.5), (2, 80, 2.0)])
    stream = ParticleStream(particles, np.arange(12), 32)
    assert stream.pixel_size == pytest.approx(5.0) and stream.grid.mixed
    images = stream.images(np.array([7, 1]))
    assert images.shape == (2, 32, 32)
    assert _rms(images[0], images[1]) < TOL                      # particle 1 seen by both groups
    on_grid = stream.subset(4, seed=1).on_grid()
    assert not on_grid.mixed and (on_grid.box, on_grid.pixel_size) == (32, pytest.approx(5.0))
    assert reconstruct_rigid(on_grid).shape == (32, 32, 32)


# ------------------------------------------------------------------ training end to end
GROUPS = [(1, 24, 160 / 24), (2, 24, 6.8), (3, 28, 160 / 28)]


@pytest.fixture(scope="module")
def mixed_dataset(tmp_path_factory):
    """A RELION 3.1 STAR file of three optics groups (6.667 and 6.8 Å/px at box 24, 5.714 Å/px at
    box 28), 16 noisy particles each, and a consensus map on the first group's grid."""
    folder = tmp_path_factory.mktemp("mixed")
    n = 16
    draws = [_draw(n, seed=10 + g) for g, _, _ in GROUPS]
    optics, rows = [], []
    for (g, box, px), draw in zip(GROUPS, draws):
        images = _render(draw, box, px, ctf=True)
        add_noise(images, 2.0, seed=g)
        write_stack(folder / f"g{g}.mrcs", images, px)
        optics.append({"rlnOpticsGroup": g, "rlnOpticsGroupName": f"opticsGroup{g}", "rlnAmplitudeContrast": 0.1,
                       "rlnSphericalAberration": 2.7, "rlnVoltage": 300.0, "rlnImagePixelSize": px,
                       "rlnImageSize": box, "rlnImageDimensionality": 2})
        angles = matrix_to_euler(draw.rotations)
        for i in range(n):
            rows.append({"rlnImageName": f"{i + 1:06d}@g{g}.mrcs", "rlnAngleRot": angles[i, 0],
                         "rlnAngleTilt": angles[i, 1], "rlnAnglePsi": angles[i, 2],
                         "rlnOriginXAngst": draw.origins_A[i, 0], "rlnOriginYAngst": draw.origins_A[i, 1],
                         "rlnDefocusU": draw.ctf.defocus_u_A[i], "rlnDefocusV": draw.ctf.defocus_v_A[i],
                         "rlnDefocusAngle": draw.ctf.defocus_angle_deg[i], "rlnOpticsGroup": g,
                         "rlnRandomSubset": i % 2 + 1})
    starfile.write({"optics": pd.DataFrame(optics), "particles": pd.DataFrame(rows)}, folder / "particles.star")
    first = draws[0]
    clean = ParticleSet(images=ArrayImages(_render(first, 24, GROUPS[0][2], ctf=True)), pixel_size=GROUPS[0][2],
                        box=24, rotations=first.rotations, origins_A=first.origins_A, ctf=first.ctf)
    write_map(folder / "consensus.mrc", reconstruct_rigid(clean), GROUPS[0][2])
    return folder


def _train(dataset, out, box="16"):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["train", str(dataset / "particles.star"), "--map", str(dataset / "consensus.mrc"),
                     "--out", str(out), "--box", box, "--epochs", "1", "--batch-size", "24", "--cells-across", "6",
                     "--device", "cpu", "--set", "hidden=16", "--set", "layers=3", "--latent-init", "zeros"])
    return code, printed.getvalue()


@pytest.fixture(scope="module")
def mixed_run(mixed_dataset, tmp_path_factory):
    """``flexview train`` on :func:`mixed_dataset` at box 16: (run folder, exit code, stdout)."""
    out = tmp_path_factory.mktemp("mixed_run") / "run"
    return (out, *_train(mixed_dataset, out))


def test_training_on_mixed_groups_completes_and_says_so(mixed_run):
    out, code, printed = mixed_run
    assert code == 0, printed
    lines = dict(line.split(": ", 1) for line in printed.splitlines() if ": " in line)
    assert lines["particles"] == "48  training box: 16  pixel size: 10.000 Å"
    assert lines["optics groups"] == ("2 of 3 resampled to the grid of group 1 (6.6667 Å/px, box 24): "
                                      "group 2 from 6.8000 Å/px, box 24 (residual +2.00 %); "
                                      "group 3 from 5.7143 Å/px, box 28 (residual +0.00 %)")
    record = json.loads((out / "calibration.json").read_text())["optics_resampling"]
    assert [r["optics_groups"] for r in record] == [[1], [2], [3]]
    assert [r["fourier_box"] for r in record] == [16, 16, 16]
    assert (out / "latents.npy").is_file()


def test_a_box_no_group_fits_is_refused_before_anything_is_written(mixed_dataset, tmp_path, capsys):
    """At box 24 the grid is 2 % finer than group 2's pixels: refused, the folder not created."""
    code, _ = _train(mixed_dataset, tmp_path / "run", box="24")
    message = capsys.readouterr().err
    assert code == 2 and "Traceback" not in message
    assert "particles.star" in message and "optics group 2" in message and "--box 22 would fit" in message
    assert not (tmp_path / "run").exists()


def test_reconstruction_of_mixed_groups(mixed_dataset, mixed_run, tmp_path, capsys):
    """Every group resampled to the reconstruction grid; a full box finer than group 2 refused."""
    run = mixed_run[0]
    assert main(["reconstruct", str(run), "--out", str(tmp_path / "full"), "--iters", "1", "--device", "cpu"]) == 2
    assert "--box 22 would fit" in capsys.readouterr().err and not (tmp_path / "full").exists()
    code = main(["reconstruct", str(run), "--out", str(tmp_path / "rec"), "--iters", "2", "--device", "cpu",
                 "--box", "22"])
    assert code == 0
    assert "optics groups: 2 of 3 resampled" in capsys.readouterr().out
    summary = json.loads((tmp_path / "rec" / "summary.json").read_text())
    assert summary["box"] == 22 and summary["pixel_size"] == pytest.approx(160 / 22, rel=1e-5)
    assert [r["fourier_box"] for r in summary["optics_resampling"]] == [22, 22, 22]
    assert np.isfinite(summary["resolution_A"]["flex"])
