"""`flexview reconstruct`, `flexview train --split-halves`, symmetrisation and the deformation error."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

import flexview
from flexview.cli import main
from flexview.errors import FlexviewInputError
from flexview.io.mrc import read_map, write_map
from flexview.recon.goldstandard import deformation_disagreement, detect_layout, sample_labels
from flexview.recon.symmetry import symmetrise, symmetry_matrices

OUTPUTS = ["half_A.mrc", "half_B.mrc", "map.mrc", "map_sharp.mrc", "noflex_half_A.mrc",
           "noflex_half_B.mrc", "fsc.csv", "fsc.png", "summary.json"]


# ------------------------------------------------------------------ symmetry
def _blobs(box: int, points: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """Sum of Gaussians at points (x, y, z) in voxels from the centre (box // 2)."""
    axis = np.arange(box) - box // 2
    z, y, x = np.meshgrid(axis, axis, axis, indexing="ij")
    vol = np.zeros((box,) * 3)
    for px, py, pz in points:
        vol += np.exp(-((x - px) ** 2 + (y - py) ** 2 + (z - pz) ** 2) / (2 * sigma ** 2))
    return vol


ASYMMETRIC = np.array([[5.0, 1.0, 2.0], [-2.0, 4.0, -3.0], [1.0, -6.0, 0.5]])


@pytest.mark.parametrize("sym", ["C3", "C4", "D2", "D3"])
def test_symmetrisation_matches_the_analytic_symmetric_map(sym):
    mats = symmetry_matrices(sym)
    assert np.allclose(mats @ mats.transpose(0, 2, 1), np.eye(3)) and np.allclose(np.linalg.det(mats), 1)
    expected = np.mean([_blobs(24, ASYMMETRIC @ r.T) for r in mats], axis=0)   # Gaussians at R p
    out = symmetrise(_blobs(24, ASYMMETRIC), sym)
    assert np.abs(out - expected).max() < 0.03 * expected.max()
    assert np.abs(_blobs(24, ASYMMETRIC) - expected).max() > 0.3 * expected.max()   # it did change


@pytest.mark.parametrize("sym", ["C4", "C5", "D2"])
def test_symmetrisation_leaves_a_symmetric_map_unchanged(sym):
    symmetric = np.mean([_blobs(24, ASYMMETRIC @ r.T) for r in symmetry_matrices(sym)], axis=0)
    symmetric[0], symmetric[:, 0], symmetric[:, :, 0] = 0, 0, 0     # index 0 (−N/2) has no mirror voxel
    out = symmetrise(symmetric, sym)
    tol = 1e-9 if sym in ("C4", "D2") else 0.02       # grid-preserving operators are exact
    assert np.abs(out - symmetric).max() <= tol * symmetric.max() + 1e-6


def test_c1_is_identity_and_bad_symmetry_is_refused():
    vol = _blobs(16, ASYMMETRIC[:1])
    np.testing.assert_allclose(symmetrise(vol, "C1"), vol, atol=1e-6)
    with pytest.raises(FlexviewInputError):
        symmetrise(vol, "I2")


# ------------------------------------------------------------------ the deformation error
def test_deformation_error_is_zero_between_a_model_and_itself_and_exact_for_a_doubled_flow(tiny_flex_run):
    run_a, run_b = flexview.load_run(tiny_flex_run), flexview.load_run(tiny_flex_run)
    with torch.no_grad():                     # displacements of ~0.1 Å, well above float32 rounding
        for run in (run_a, run_b):
            run.model.flow.net[-1].weight.mul_(1e3)
    rows = np.arange(12)
    points = run_a.model.canonical.masked_coords().numpy()
    labels = (points[:, 0] > 0).astype(np.int64) + 1                       # two regions: x ≤ 0, x > 0
    same = deformation_disagreement(run_a, run_b, rows, labels=labels)
    assert np.abs(same["regions"]["all"]["error"]).max() < 1e-6
    with torch.no_grad():
        run_b.model.flow.net[-1].weight.mul_(2.0)                           # u_B = 2 u_A
    doubled = deformation_disagreement(run_a, run_b, rows, labels=labels)
    for name in ("all", "region_1", "region_2"):
        r = doubled["regions"][name]
        np.testing.assert_allclose(r["error"], r["motion_A"], rtol=1e-4)
        np.testing.assert_allclose(r["motion_B"], 2 * r["motion_A"], rtol=1e-4)
    # independent reference for one particle: explicit per-voxel displacements of the model
    with torch.no_grad():
        z = torch.as_tensor(run_a.latents[rows[:1]])
        u = run_a.model.voxel_positions(z)[0] - run_a.model.canonical.masked_coords()
    np.testing.assert_allclose(doubled["regions"]["all"]["error"][0], float(u.pow(2).sum(-1).mean().sqrt()),
                               rtol=1e-4)


def test_sample_labels_reads_the_nearest_voxel():
    labels = np.zeros((8, 8, 8))
    labels[4, 5, 6] = 3                               # voxel (z=4, y=5, x=6) → (x, y, z) = (2, 1, 0) · 2 Å
    got = sample_labels(labels, 2.0, np.array([[4.0, 2.0, 0.0], [4.4, 1.8, 0.3], [-4.0, 2.0, 0.0], [99, 0, 0]]))
    np.testing.assert_array_equal(got, [3, 3, 0, 0])


# ------------------------------------------------------------------ command line
def test_reconstruct_cli_writes_every_output(tiny_flex_run, tiny_flex_dataset, tmp_path, capsys):
    mask = np.zeros((24, 24, 24), np.float32)
    mask[6:18, 6:18, 6:18] = 1.0
    write_map(tmp_path / "mask.mrc", mask, read_map(tiny_flex_dataset / "consensus.mrc")[1])
    out = tmp_path / "recon"
    code = main(["reconstruct", str(tiny_flex_run), str(tiny_flex_dataset / "particles.star"), "--out", str(out),
                 "--iters", "2", "--mask", str(tmp_path / "mask.mrc"), "--device", "cpu", "--symmetry", "C1"])
    assert code == 0
    for name in OUTPUTS:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["layout"] == "single" and summary["box"] == 24
    assert summary["training_nyquist_A"] == pytest.approx(2 * flexview.load_run(tiny_flex_run).pixel_size)
    for half in ("A", "B"):
        objective = summary["halves"][half]["flex"]["objective"]
        assert len(objective) == 3 and objective[-1] < objective[0]
    with open(out / "fsc.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 13 and {"flex_global", "flex_masked", "noflex_global", "noflex_masked"} <= set(rows[0])
    half_a, px = read_map(out / "half_A.mrc")
    assert half_a.shape == (24, 24, 24) and np.abs(half_a).max() > 0
    assert px == pytest.approx(read_map(tiny_flex_dataset / "consensus.mrc")[1])
    printed = capsys.readouterr().out
    assert "flexview resolution" in printed and "noflex resolution" in printed


def test_reconstruct_cli_refuses_particles_that_do_not_match_the_run(tiny_flex_run, tmp_path, capsys):
    from flexview.synth import make_dataset

    other = make_dataset(tmp_path / "other", kind="rigid", n_particles=10, box=24, snr=1.0, seed=0)
    code = main(["reconstruct", str(tiny_flex_run), str(other.star), "--out", str(tmp_path / "r"), "--iters", "1",
                 "--device", "cpu"])
    assert code == 2 and "latents" in capsys.readouterr().err
    assert main(["reconstruct", str(tmp_path), "--out", str(tmp_path / "r2")]) == 2     # not a run


def test_split_halves_train_and_reconstruct_end_to_end(tiny_flex_dataset, tmp_path):
    run = tmp_path / "gold"
    code = main(["train", str(tiny_flex_dataset / "particles.star"), "--map", str(tiny_flex_dataset / "consensus.mrc"),
                 "--out", str(run), "--split-halves", "--box", "16", "--epochs", "1", "--batch-size", "20",
                 "--cells-across", "6", "--device", "cpu", "--set", "hidden=16", "--set", "layers=3"])
    assert code == 0
    layout = detect_layout(run)
    assert layout.split and layout.runs["A"] != layout.runs["B"]
    run_a, run_b = flexview.load_run(layout.runs["A"]), flexview.load_run(layout.runs["B"])
    assert (run_a.config.halves, run_b.config.halves) == ("A", "B")
    assert len(run_a.latents) == len(run_b.latents) == 40                  # each embedded the other half
    assert not torch.equal(run_a.model.flow.net[-1].weight, run_b.model.flow.net[-1].weight)
    labels = tmp_path / "labels.mrc"
    vol, px = read_map(tiny_flex_dataset / "consensus.mrc")
    write_map(labels, np.where(np.arange(24)[None, None, :] < 12, 1, 2) * np.ones_like(vol), px)
    out = tmp_path / "recon"
    assert main(["reconstruct", str(run), str(tiny_flex_dataset / "particles.star"), "--out", str(out),
                 "--iters", "2", "--no-noflex", "--labels", str(labels), "--device", "cpu"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["layout"] == "split-halves"
    errors = summary["deformation_error_A"]["particles_of_half_B"]
    assert set(errors) == {"all", "region_1", "region_2"}
    assert errors["all"]["error"]["median"] > 0
    with open(out / "deformation_error.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 40 and {r["half"] for r in rows} == {"A", "B"}
    assert not (out / "noflex_half_A.mrc").exists() and (out / "half_B.mrc").is_file()


def test_reconstruction_solves_the_map_in_the_median_conformation(tiny_flex_run):
    from flexview.recon.pipeline import ReconOptions, _gauge

    run = flexview.load_run(tiny_flex_run)
    with torch.no_grad():
        run.model.flow.net[-1].weight.normal_(0.0, 3.0, generator=torch.Generator().manual_seed(0))
    mesh, flow, shift = _gauge(run, ReconOptions())
    each = np.stack([run.displacement(z) for z in run.latents])            # one particle at a time
    np.testing.assert_allclose(shift, np.median(each, axis=0), atol=1e-5)
    assert np.abs(shift).max() > 0.05
    with torch.no_grad():
        moved = mesh.vertices[None] + flow(torch.as_tensor(run.latents)).double().numpy()
    np.testing.assert_allclose(moved, run.mesh.vertices[None] + each, atol=1e-4)   # same deformed vertices
    kept_mesh, kept_flow, none = _gauge(run, ReconOptions(recentre=False))
    assert kept_mesh is run.mesh and kept_flow is run.model.flow and not none.any()
