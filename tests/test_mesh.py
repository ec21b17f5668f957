"""Regular tetrahedral mesh: coverage, geometry, conformity, weights, pinning."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from flexview.errors import FlexviewInputError
from flexview.model import (FlowGenerator, TetMesh, build_regular_mesh, density_mask, locate,
                            voxel_coords)

BOX, PX = 20, 2.0


def blobs(box=BOX, px=PX, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r = voxel_coords(box, px, dtype=torch.float64).numpy()
    return sum(a * np.exp(-((r - m) ** 2).sum(-1) / (2 * 3.0**2))
               for a, m in zip(rng.uniform(0.5, 1.5, 4), rng.uniform(-7, 7, (4, 3))))


@pytest.fixture(scope="module")
def density():
    return blobs()


@pytest.fixture(scope="module")
def mesh(density):
    return build_regular_mesh(density, PX, cells_across=6, dilate_A=3.0)


def check_barycentric(mesh, points, cell, bary):
    assert (cell >= 0).all()
    assert bary.min() >= -1e-9
    np.testing.assert_allclose(bary.sum(1), 1.0, atol=1e-12)
    np.testing.assert_allclose((bary[:, :, None] * mesh.vertices[mesh.cells[cell]]).sum(1), points, atol=1e-9)


def test_every_masked_voxel_is_located(mesh, density):
    mask = density_mask(density, PX, dilate_A=3.0)
    points = voxel_coords(BOX, PX, dtype=torch.float64).numpy()[mask]
    cell, bary = locate(mesh, points)
    check_barycentric(mesh, points, cell, bary)
    # the same answer from the generic search on a mesh stripped of its grid (a cut mesh)
    bare = TetMesh(mesh.vertices, mesh.cells, mesh.rigidity_weight, mesh.pinned, mesh.segment, BOX, PX)
    cell2, bary2 = locate(bare, points)
    check_barycentric(bare, points, cell2, bary2)


def test_points_outside_get_minus_one(mesh):
    far = np.array([[1e3, 0, 0], [0, -1e3, 0], [0, 0, 5e2]])
    cell, bary = locate(mesh, far)
    assert (cell == -1).all() and (bary == 0).all()


def test_cells_are_positive_and_fill_their_cubes(mesh):
    vol = mesh.cell_volumes()
    assert (vol > 0).all()
    np.testing.assert_allclose(vol, mesh.grid_spacing**3 / 6, rtol=1e-9)
    assert mesh.grid_spacing == pytest.approx(BOX * PX / 6)


def test_faces_match_between_neighbours(mesh):
    """Conforming mesh: every face is shared by at most two cells, and by two inside the mesh."""
    faces = Counter()
    for c in mesh.cells:
        for drop in range(4):
            faces[tuple(sorted(np.delete(c, drop)))] += 1
    assert max(faces.values()) == 2
    # total boundary area = area of the union's surface: count boundary faces vs. an estimate
    # from the cube structure (each exposed cube face carries 2 triangles)
    n_boundary = sum(1 for v in faces.values() if v == 1)
    centroid = mesh.vertices[mesh.cells].mean(1)
    cubes = {tuple(x) for x in np.floor((centroid - mesh.grid_origin) / mesh.grid_spacing).astype(int)}
    exposed = sum(1 for q in cubes for d in np.vstack([np.eye(3, dtype=int), -np.eye(3, dtype=int)])
                  if tuple(np.add(q, d)) not in cubes)
    assert n_boundary == 2 * exposed


def test_rigidity_weights(mesh, density):
    w = mesh.rigidity_weight
    assert w.min() >= 0.5 - 1e-12 and w.max() == pytest.approx(1.0)
    # brute force: mean positive density per cube over the voxels whose centre falls in it
    r = voxel_coords(BOX, PX, dtype=torch.float64).numpy().reshape(-1, 3)
    cube_of_voxel = np.floor((r - mesh.grid_origin) / mesh.grid_spacing).astype(int)
    centroid = mesh.vertices[mesh.cells].mean(1)
    cube_of_cell = np.floor((centroid - mesh.grid_origin) / mesh.grid_spacing).astype(int)
    d = np.clip(density.reshape(-1), 0, None)
    means = np.array([d[(cube_of_voxel == q).all(1)].mean() for q in cube_of_cell[::6]])
    np.testing.assert_allclose(w[::6], 0.5 + 0.5 * means / means.max(), rtol=1e-9)
    assert w[6 * int(np.argmax(means))] == pytest.approx(1.0)


def test_cell_size_option(density):
    m = build_regular_mesh(density, PX, cell_size_A=5.0, dilate_A=0.0)
    assert m.grid_spacing == 5.0
    assert (m.cell_volumes() > 0).all()


def test_pinned_vertices_do_not_move(density):
    pin = np.zeros((BOX,) * 3, bool)
    pin[:, :, : BOX // 2] = True                 # x < 0 half
    m = build_regular_mesh(density, PX, cells_across=6, pin_mask=pin)
    x_index = np.rint(m.vertices[:, 0] / PX + BOX // 2)
    expect = (x_index >= 0) & (x_index < BOX // 2)
    inside = (np.abs(np.rint(m.vertices / PX)) <= BOX // 2 - 1).all(1)
    np.testing.assert_array_equal(m.pinned[inside], expect[inside])
    assert m.pinned.any() and not m.pinned.all()
    flow = FlowGenerator.for_mesh(m)
    disp = flow(torch.randn(5, 2))
    assert disp[:, torch.as_tensor(m.pinned)].abs().max() == 0
    assert disp[:, ~torch.as_tensor(m.pinned)].abs().max() > 0


def test_scaled_changes_only_the_metadata(mesh):
    moved = mesh.scaled(box=2 * BOX, pixel_size=PX / 2)
    assert (moved.box, moved.pixel_size) == (2 * BOX, PX / 2)
    np.testing.assert_array_equal(moved.vertices, mesh.vertices)
    np.testing.assert_array_equal(moved.cells, mesh.cells)


def test_empty_or_flat_maps_are_refused():
    with pytest.raises(FlexviewInputError):
        build_regular_mesh(np.zeros((8, 8, 8)), 1.0)
    with pytest.raises(FlexviewInputError):
        build_regular_mesh(np.ones((8, 8, 8)), 1.0, threshold=2.0)
