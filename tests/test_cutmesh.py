"""Cut meshes: segments → submeshes with their own interface vertices, fused only where listed."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from flexview.cli import main
from flexview.errors import FlexviewInputError
from flexview.io.meshfile import read_mesh, write_mesh
from flexview.io.mrc import write_map
from flexview.model import (CanonicalMap, FlexForwardModel, FlowGenerator, Pose, TetMesh, build_regular_mesh,
                            cut_mesh, locate, parse_fuse, rigidity_loss, voxel_coords)

BOX, PX = 20, 3.0


@pytest.fixture(scope="module")
def slabs():
    """A block of density made of three slabs stacked along z, and their labels 1, 2, 3 (z, y, x).

    The labels cover only a core of each slab (coarse), so nearest-segment filling is exercised.
    """
    xyz = voxel_coords(BOX, PX, dtype=torch.float64).numpy()
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    inside = (np.abs(x) < 16) & (np.abs(y) < 13) & (np.abs(z) < 21)
    density = np.where(inside, 1.0 + 0.1 * np.cos(x / 7.0), 0.0)
    labels = np.zeros((BOX,) * 3, np.int64)
    core = (np.abs(x) < 10) & (np.abs(y) < 8)
    labels[core & (z < -10)] = 1
    labels[core & (np.abs(z) < 3)] = 2
    labels[core & (z > 10)] = 3
    return density, labels


@pytest.fixture(scope="module")
def base(slabs):
    return build_regular_mesh(slabs[0], PX, threshold=0.5, cells_across=8, dilate_A=2.0)


def nearest_label_bruteforce(labels: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label of the labelled voxel nearest the voxel centre nearest each point (x, y, z Å), by a
    k-d tree per label; also whether that nearest label is unique (no tie with another label)."""
    xyz = voxel_coords(BOX, PX, dtype=torch.float64).numpy()
    snapped = np.clip(np.rint(points / PX), -(BOX // 2), BOX - 1 - BOX // 2) * PX
    ids = np.unique(labels[labels > 0])
    dist = np.stack([cKDTree(xyz[labels == s]).query(snapped)[0] for s in ids], axis=1)
    order = np.sort(dist, axis=1)
    return ids[np.argmin(dist, axis=1)], order[:, 1] - order[:, 0] > 1e-9


def segment_vertices(mesh: TetMesh, s: int) -> set[int]:
    return set(np.unique(mesh.cells[mesh.segment == s]).tolist())


def shared_positions(mesh: TetMesh, a: int, b: int) -> set[tuple]:
    pa = {tuple(np.round(mesh.vertices[v], 6)) for v in segment_vertices(mesh, a)}
    pb = {tuple(np.round(mesh.vertices[v], 6)) for v in segment_vertices(mesh, b)}
    return pa & pb


def interface_face_centres(mesh: TetMesh, a: int, b: int) -> np.ndarray:
    """Centres (F, 3) Å of the triangles that a cell of segment ``a`` and one of ``b`` share."""
    def faces(s):
        out = {}
        for cell in mesh.cells[mesh.segment == s]:
            x = mesh.vertices[cell]
            for drop in range(4):
                tri = np.delete(x, drop, axis=0)
                out[tuple(sorted(tuple(np.round(p, 6)) for p in tri))] = tri.mean(axis=0)
        return out
    fa, fb = faces(a), faces(b)
    return np.array([fa[k] for k in sorted(set(fa) & set(fb))])


def test_parse_fuse():
    assert parse_fuse("0>1, 1>2,0>3") == [(0, 1), (1, 2), (0, 3)]
    assert parse_fuse("  ") == []
    for bad in ("0-1", "0>1>2", "a>b", "0>"):
        with pytest.raises(FlexviewInputError) as err:
            parse_fuse(bad)
        assert err.value.field == "--fuse"


def test_every_cell_takes_the_nearest_segment_of_its_centroid(base, slabs):
    cut = cut_mesh(base, slabs[1], "")
    assert cut.n_cells == base.n_cells and len(cut.segment) == cut.n_cells
    np.testing.assert_array_equal(cut.cells.shape, base.cells.shape)
    centroid = base.vertices[base.cells].mean(axis=1)
    expected, unique = nearest_label_bruteforce(slabs[1], centroid)
    np.testing.assert_array_equal(cut.segment[unique], expected[unique])
    assert unique.mean() > 0.8
    assert set(np.unique(cut.segment)) == {1, 2, 3}


def test_unfused_interfaces_have_their_own_vertices(base, slabs):
    cut = cut_mesh(base, slabs[1], "")
    for a, b in ((1, 2), (2, 3), (1, 3)):
        assert not segment_vertices(cut, a) & segment_vertices(cut, b)
    n_shared = len(shared_positions(cut, 1, 2)) + len(shared_positions(cut, 2, 3))
    assert n_shared > 0
    assert cut.n_vertices == base.n_vertices + n_shared          # one extra copy per interface vertex
    # same geometry: every cell keeps its corners' positions
    np.testing.assert_allclose(cut.vertices[cut.cells], base.vertices[base.cells])


def test_fused_interface_shares_its_vertices(base, slabs):
    cut = cut_mesh(base, slabs[1], "1>2")
    shared12 = segment_vertices(cut, 1) & segment_vertices(cut, 2)
    assert len(shared12) == len(shared_positions(cut, 1, 2)) > 0
    assert not segment_vertices(cut, 2) & segment_vertices(cut, 3)
    assert cut.n_vertices == base.n_vertices + len(shared_positions(cut, 2, 3))
    full = cut_mesh(base, slabs[1], [(2, 1), (2, 3)])
    assert full.n_vertices == base.n_vertices
    np.testing.assert_array_equal(full.cells, base.cells)


def test_single_segment_equals_the_base_mesh(base, slabs):
    cut = cut_mesh(base, (slabs[0] > 0.5).astype(np.int64) * 7, "")
    np.testing.assert_array_equal(cut.vertices, base.vertices)
    np.testing.assert_array_equal(cut.cells, base.cells)
    np.testing.assert_array_equal(cut.rigidity_weight, base.rigidity_weight)
    np.testing.assert_array_equal(cut.pinned, base.pinned)
    assert (cut.segment == 7).all()
    np.testing.assert_array_equal(cut.grid_shape, base.grid_shape)


@pytest.mark.parametrize("fuse, words", [
    ("1>4", "not a segment"),
    ("0>1", "not a segment"),
    ("1>2, 2>1", "cycle"),
    ("2>2", "cycle"),
    ("1>2, 3>2", "not reached"),
    ("2>3, 1>2", "not reached"),
    ("1>3", "do not touch"),
])
def test_invalid_fuse_lists(base, slabs, fuse, words):
    with pytest.raises(FlexviewInputError) as err:
        cut_mesh(base, slabs[1], fuse)
    assert err.value.field == "--fuse" and words in str(err.value)


def test_invalid_rigid_pinned_and_labels(base, slabs):
    with pytest.raises(FlexviewInputError) as err:
        cut_mesh(base, slabs[1], "", rigid=[5])
    assert err.value.field == "--rigid"
    with pytest.raises(FlexviewInputError) as err:
        cut_mesh(base, slabs[1], "", pinned=[0])
    assert err.value.field == "--pinned"
    with pytest.raises(FlexviewInputError) as err:
        cut_mesh(base, np.zeros((BOX,) * 3), "")
    assert err.value.field == "--segments"
    with pytest.raises(FlexviewInputError):
        cut_mesh(base, slabs[1] + 0.5, "")


def test_rigid_segments_get_their_weight(base, slabs):
    cut = cut_mesh(base, slabs[1], "1>2", rigid=[3], rigid_weight=35.0)
    np.testing.assert_array_equal(cut.rigidity_weight[cut.segment == 3], 35.0)
    other = cut.segment != 3
    np.testing.assert_array_equal(cut.rigidity_weight[other], base.rigidity_weight[other])
    assert cut_mesh(base, slabs[1], "", rigid=[1]).rigidity_weight[cut.segment == 1].max() == 20.0


def test_sliding_segments_cost_no_rigidity(base, slabs):
    """A shear (segments 1 and 3 translate in opposite directions, 2 stays) is rigid per segment:
    the cut mesh represents it at zero penalty and the voxels of each segment move with it."""
    cut = cut_mesh(base, slabs[1], "")
    shift = {1: np.array([4.0, 0, 0]), 2: np.zeros(3), 3: np.array([-4.0, 0, 0])}
    disp = np.zeros((cut.n_vertices, 3))
    for s, d in shift.items():
        disp[sorted(segment_vertices(cut, s))] = d
    u = torch.as_tensor(disp)[None]
    assert float(rigidity_loss(cut, u)) == pytest.approx(0.0, abs=1e-18)
    fused = cut_mesh(base, slabs[1], "1>2")
    disp_f = np.zeros((fused.n_vertices, 3))
    for s in (3, 1):                    # the fused interface cannot follow segment 1 alone
        disp_f[sorted(segment_vertices(fused, s))] = shift[s]
    assert float(rigidity_loss(fused, torch.as_tensor(disp_f)[None])) > 1.0
    rng = np.random.default_rng(0)
    cells = rng.integers(0, cut.n_cells, 200)
    w = rng.dirichlet(np.ones(4), 200)
    points = (w[:, :, None] * cut.vertices[cut.cells[cells]]).sum(1)
    cell, bary = locate(cut, points)
    moved = (bary[:, :, None] * disp[cut.cells[cell]]).sum(1)
    np.testing.assert_allclose(moved, np.stack([shift[s] for s in cut.segment[cells]]), atol=1e-12)


def test_locate_on_a_cut_mesh_with_and_without_grid(base, slabs):
    cut = cut_mesh(base, slabs[1], "1>2")
    rng = np.random.default_rng(1)
    cells = rng.integers(0, cut.n_cells, 300)
    w = rng.dirichlet(np.ones(4), 300) * 0.96 + 0.01          # strictly inside the cell
    points = (w[:, :, None] * cut.vertices[cut.cells[cells]]).sum(1)
    bare = TetMesh(cut.vertices, cut.cells, cut.rigidity_weight, cut.pinned, cut.segment, cut.box,
                   cut.pixel_size)
    for mesh in (cut, bare):
        cell, bary = locate(mesh, points)
        np.testing.assert_array_equal(cell, cells)
        np.testing.assert_allclose(bary, w, atol=1e-9)
    # points on an unfused interface face: each path picks one cell holding the point, the same
    # one every time, and the interpolated vertex positions give the point back
    iface = interface_face_centres(cut, 2, 3)
    assert len(iface) > 4
    for mesh in (cut, bare):
        first, bary = locate(mesh, iface)
        again, _ = locate(mesh, iface)
        np.testing.assert_array_equal(first, again)
        assert (first >= 0).all() and np.isin(mesh.segment[first], [2, 3]).all()
        np.testing.assert_allclose((bary[:, :, None] * mesh.vertices[mesh.cells[first]]).sum(1), iface,
                                   atol=1e-9)


def test_save_load_round_trip(base, slabs, tmp_path):
    cut = cut_mesh(base, slabs[1], "2>1", rigid=[3], pinned=[1])
    write_mesh(tmp_path / "m.npz", cut)
    back = read_mesh(tmp_path / "m.npz")
    for name in ("vertices", "cells", "rigidity_weight", "pinned", "segment", "grid_origin", "grid_shape"):
        np.testing.assert_array_equal(getattr(back, name), getattr(cut, name))
    assert (back.box, back.pixel_size, back.grid_spacing) == (cut.box, cut.pixel_size, cut.grid_spacing)


def _model(mesh, density, seed=0, scale=3.0):
    torch.manual_seed(seed)
    canonical = CanonicalMap(density, PX, density > 0.5)
    canonical = canonical.double()
    flow = FlowGenerator.for_mesh(mesh, 2, hidden=16, layers=2).double()
    with torch.no_grad():
        flow.reset_parameters(output_std_A=0.1 * scale)
    return FlexForwardModel(canonical, mesh, flow).double()


def test_mass_is_conserved_with_a_cut_mesh(base, slabs):
    cut = cut_mesh(base, slabs[1], "1>2")
    model = _model(cut, slabs[0])
    z = torch.randn(4, 2, dtype=torch.float64)
    disp = model.displacements(z)
    assert disp.abs().max() > 0.5                               # the flow really moves things
    rot = torch.as_tensor(np.stack([np.eye(3)] * 4))
    with torch.no_grad():
        proj = model.project(z, Pose(rot, torch.zeros(4, 2, dtype=torch.float64)))
    total = PX * model.canonical.masked_values().detach().sum()
    np.testing.assert_allclose(proj.sum(dim=(1, 2)).numpy(), float(total), rtol=1e-9)
    # the interface of 2 and 3 is torn: the two copies of a vertex move differently
    pos = {tuple(np.round(cut.vertices[v], 6)): v for v in segment_vertices(cut, 2)}
    pairs = [(pos[tuple(np.round(cut.vertices[v], 6))], v) for v in segment_vertices(cut, 3)
             if tuple(np.round(cut.vertices[v], 6)) in pos]
    a, b = np.array(pairs).T
    assert float((disp[:, a] - disp[:, b]).abs().max()) > 1e-3


def test_pinned_segment_never_moves(base, slabs):
    cut = cut_mesh(base, slabs[1], "1>2, 2>3", pinned=[3])
    pinned_vertices = sorted(segment_vertices(cut, 3))
    assert cut.pinned[pinned_vertices].all() and cut.pinned.sum() == len(pinned_vertices)
    model = _model(cut, slabs[0], scale=5.0)
    z = torch.randn(6, 2, dtype=torch.float64)
    with torch.no_grad():
        disp = model.displacements(z)
        moved = model.voxel_positions(z) - model.canonical.masked_coords()
    assert float(disp[:, pinned_vertices].abs().max()) == 0.0
    assert float(disp.abs().max()) > 0.5
    cells = torch.as_tensor(cut.cells)
    voxel_cell_pinned = torch.as_tensor(cut.pinned)[model.voxel_vertices.clamp(min=0)].all(dim=1)
    assert voxel_cell_pinned.any()
    assert float(moved[:, voxel_cell_pinned].abs().max()) == 0.0
    assert cells.shape[0] == cut.n_cells


# ---------------------------------------------------------------- command line and training


def test_cli_writes_a_mesh_that_loads(slabs, tmp_path, capsys):
    density, labels = slabs
    big = np.repeat(np.repeat(np.repeat(labels, 2, 0), 2, 1), 2, 2)     # labels at box 40, 1.5 Å
    write_map(tmp_path / "map.mrc", density.astype(np.float32), PX)
    write_map(tmp_path / "seg.mrc", big.astype(np.float32), PX / 2)
    out = tmp_path / "mesh.npz"
    rc = main(["mesh", str(tmp_path / "map.mrc"), "--out", str(out), "--cells", "8", "--threshold", "0.5",
               "--dilate", "2", "--segments", str(tmp_path / "seg.mrc"), "--fuse", "2>1", "--rigid", "3",
               "--pinned", "1"])
    assert rc == 0
    mesh = read_mesh(out)
    assert set(np.unique(mesh.segment)) == {1, 2, 3}
    assert (mesh.rigidity_weight[mesh.segment == 3] == 20.0).all()
    assert mesh.pinned[np.unique(mesh.cells[mesh.segment == 1])].all()
    base = build_regular_mesh(density, PX, threshold=0.5, cells_across=8, dilate_A=2.0)
    ref = cut_mesh(base, labels, "2>1", rigid=[3], pinned=[1])
    assert np.mean(mesh.segment == ref.segment) > 0.97
    rc = main(["mesh", str(tmp_path / "map.mrc"), "--out", str(tmp_path / "bad.npz"), "--threshold", "0.5",
               "--segments", str(tmp_path / "seg.mrc"), "--fuse", "1>3"])
    assert rc == 2 and "--fuse" in capsys.readouterr().err
    assert not (tmp_path / "bad.npz").exists()


def test_cli_mesh_is_accepted_by_training(tiny_flex_dataset, make_tiny_config, tmp_path):
    from flexview.train import TrainingSession

    data = tiny_flex_dataset
    out = tmp_path / "mesh.npz"
    rc = main(["mesh", str(data / "consensus.mrc"), "--out", str(out), "--box", "16", "--cells", "6",
               "--segments", str(data / "ground_truth" / "domains.mrc")])
    assert rc == 0
    mesh = read_mesh(out)
    assert mesh.box == 16 and len(np.unique(mesh.segment)) >= 2
    session = TrainingSession.start(make_tiny_config(data, mesh=str(out)), tmp_path / "run")
    model = session.trainer.model
    assert model.mesh.n_vertices == mesh.n_vertices
    np.testing.assert_array_equal(model.mesh.segment, mesh.segment)
    assert model.flow.n_vertices == mesh.n_vertices
    np.testing.assert_array_equal(read_mesh(tmp_path / "run" / session.folder.mesh.name).cells, mesh.cells)
