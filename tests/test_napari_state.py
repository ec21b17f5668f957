"""The plain-Python parts of the napari app (no display needed): latent views, the newest-only
renderer, layer geometry, the training generator's Stop, selection export."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytest.importorskip("qtpy")  # the package imports Qt widgets alongside the state objects

from flexview._napari._layers import boundary_faces, deformed_surface, flow_vectors, physical_to_world
from flexview._napari._render import LatestRenderer
from flexview._napari.latent_view import PCA, LatentView, view_names


def _inside_brute_force(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd ray casting, one point at a time."""
    out = np.zeros(len(points), dtype=bool)
    n = len(polygon)
    for p, (x, y) in enumerate(points):
        inside = False
        for i in range(n):
            (x1, y1), (x2, y2) = polygon[i], polygon[(i + 1) % n]
            if (y1 > y) != (y2 > y):
                xc = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
                if x < xc:
                    inside = not inside
        out[p] = inside
    return out


def test_view_names():
    assert view_names(1) == ["z1"]
    assert view_names(2) == ["z1 / z2"]
    assert view_names(3) == [PCA, "z1 / z2", "z1 / z3", "z2 / z3"]


def test_axis_view_is_identity_for_two_dimensions():
    z = np.random.default_rng(0).normal(size=(50, 2))
    view = LatentView(z)
    np.testing.assert_allclose(view.points, z)
    np.testing.assert_allclose(view.lift([0.3, -1.2], z[0]), [0.3, -1.2], rtol=1e-6)


def test_pca_view_round_trip_and_variance_order():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(400, 4)) * np.array([0.1, 3.0, 0.5, 1.5])
    view = LatentView(z, PCA)
    np.testing.assert_allclose(view.basis.T @ view.basis, np.eye(2), atol=1e-12)
    # the first component follows the widest axis (1), the second the next (3)
    assert np.argmax(np.abs(view.basis[:, 0])) == 1 and np.argmax(np.abs(view.basis[:, 1])) == 3
    assert view.points[:, 0].var() >= view.points[:, 1].var()
    base = z[7]
    lifted = view.lift([0.8, -0.4], base)
    np.testing.assert_allclose(view.project(lifted), [0.8, -0.4], atol=1e-5)
    # components outside the plane are those of base
    normal = np.eye(4) - view.basis @ view.basis.T
    np.testing.assert_allclose(normal @ lifted, normal @ base, atol=1e-5)


def test_pair_view_keeps_other_components():
    z = np.random.default_rng(2).normal(size=(30, 3))
    view = LatentView(z, "z1 / z3")
    np.testing.assert_allclose(view.points, z[:, [0, 2]])
    np.testing.assert_allclose(view.lift([1.0, 2.0], z[4]), [1.0, z[4, 1], 2.0], rtol=1e-6)


def test_density_matches_histogram2d():
    z = np.random.default_rng(3).normal(size=(5000, 2))
    view = LatentView(z)
    extent = view.extent()
    counts = view.density(40, extent=extent)
    reference, _, _ = np.histogram2d(z[:, 1], z[:, 0], bins=40, range=[extent[2:], extent[:2]])
    np.testing.assert_array_equal(counts, reference)
    mask = z[:, 0] > 0
    assert view.density(40, mask=mask, extent=extent).sum() == np.sum(
        mask & (z[:, 0] >= extent[0]) & (z[:, 0] < extent[1]) & (z[:, 1] >= extent[2]) & (z[:, 1] < extent[3]))


def test_inside_matches_ray_casting():
    rng = np.random.default_rng(4)
    z = rng.uniform(-2, 2, size=(600, 2))
    polygon = np.array([[-1.5, -1.0], [1.2, -1.7], [0.3, 0.1], [1.6, 1.4], [-1.0, 1.1]])  # not convex
    view = LatentView(z)
    np.testing.assert_array_equal(view.inside(polygon), _inside_brute_force(z, polygon))
    assert not view.inside(polygon[:2]).any()


def test_along_spaces_frames_by_arc_length():
    z = np.random.default_rng(5).normal(size=(20, 2))
    view = LatentView(z)
    line = np.array([[0.0, 0.0], [3.0, 0.0], [3.0, 1.0]])   # length 4
    points = view.along(line, 9, z[0])
    np.testing.assert_allclose(points[0], line[0], atol=1e-6)
    np.testing.assert_allclose(points[-1], line[-1], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(np.diff(points, axis=0), axis=1), 0.5, atol=1e-6)
    np.testing.assert_allclose(points[6], [3.0, 0.0], atol=1e-6)


def test_renderer_drops_stale_requests_and_renders_the_newest():
    release = threading.Event()
    seen, delivered = [], []

    def render(request):
        seen.append(request)
        if request == 0:
            release.wait(5)
        return request * 10

    renderer = LatestRenderer(render, lambda req, res, s: delivered.append((req, res)))
    renderer.request(0)
    time.sleep(0.05)                 # request 0 is rendering
    for r in range(1, 6):
        renderer.request(r)          # 1..4 are replaced before they start
    release.set()
    assert renderer.wait(5)
    assert seen == [0, 5]
    assert delivered == [(0, 0), (5, 50)]
    assert renderer.dropped == 4 and renderer.rendered == 2


def test_renderer_reports_failures_and_keeps_going():
    errors, delivered = [], []

    def render(request):
        if request == "bad":
            raise ValueError("no")
        return request

    renderer = LatestRenderer(render, lambda req, res, s: delivered.append(res), lambda req, exc: errors.append(exc))
    renderer.request("bad")
    renderer.wait(5)
    renderer.request("good")
    renderer.wait(5)
    assert [str(e) for e in errors] == ["no"] and delivered == ["good"]
    renderer.close()
    renderer.request("late")
    renderer.wait(5)
    assert delivered == ["good"]


def _cube_mesh():
    from flexview.model.mesh import TetMesh

    corners = np.array([[x, y, z] for z in (0, 1) for y in (0, 1) for x in (0, 1)], dtype=float) * 10 - 5
    index = {tuple(c): i for i, c in enumerate(((corners + 5) / 10).astype(int))}
    cells = []
    for perm in ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)):
        p = np.zeros(3, dtype=int)
        chain = [tuple(p)]
        for axis in perm:
            p[axis] = 1
            chain.append(tuple(p))
        cells.append([index[c] for c in chain])
    n = len(cells)
    return TetMesh(corners, np.array(cells), np.ones(n), np.zeros(8, bool), np.zeros(n, int), box=16, pixel_size=2.0)


def test_boundary_faces_of_a_cube_are_its_twelve_triangles():
    mesh = _cube_mesh()
    faces = boundary_faces(mesh.cells)
    assert faces.shape == (12, 3)
    # every boundary triangle lies in a face of the cube: one coordinate constant at ±5
    tri = mesh.vertices[faces]
    assert all(np.any(np.ptp(t, axis=0) == 0) and np.all(np.abs(t[:, np.ptp(t, axis=0) == 0]) == 5) for t in tri)
    # the triangles cover each cube face (area 100 Å²) exactly
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    assert np.isclose(area.sum(), 600.0)


def test_world_coordinates_match_the_voxel_grid():
    import torch

    from flexview.model.grid import coords_to_index

    points = np.array([[1.0, -2.5, 7.0], [0.0, 0.0, 0.0]])
    index = coords_to_index(torch.as_tensor(points), 16, 2.0).numpy()       # (iz, iy, ix)
    np.testing.assert_allclose(physical_to_world(points, 16, 2.0), index * 2.0)


def test_flow_vectors_and_surface_follow_the_displacement():
    mesh = _cube_mesh()
    disp = np.zeros((8, 3))
    disp[3] = [1.0, 2.0, 3.0]                     # (x, y, z) Å on one vertex
    vectors = flow_vectors(mesh, disp, scale=2.0, min_length_A=1e-6)
    assert vectors.shape == (1, 2, 3)
    np.testing.assert_allclose(vectors[0, 1], [6.0, 4.0, 2.0])               # (z, y, x) × 2
    np.testing.assert_allclose(vectors[0, 0], physical_to_world(mesh.vertices[3], 16, 2.0))
    verts, faces = deformed_surface(mesh, disp)
    np.testing.assert_allclose(verts[3], physical_to_world(mesh.vertices[3] + disp[3], 16, 2.0))
    assert faces.shape == (12, 3)


def test_training_generator_stop_leaves_a_resumable_run(tiny_flex_dataset, make_tiny_config, tmp_path):
    from flexview._napari.training import STOP, training_updates
    from flexview.run import load_run
    from flexview.train import TrainingSession

    cfg = make_tiny_config(tiny_flex_dataset, epochs=3)
    gen = training_updates(cfg, tmp_path / "run", refresh_every=1)
    first = next(gen)
    assert first.progress is None and first.volume.shape == (16, 16, 16) and first.latents.shape == (40, 2)
    update = gen.send(None)
    assert update.progress.iteration == 0 and update.iteration == 1 and update.total == 6
    with pytest.raises(StopIteration) as end:
        gen.send(STOP)
    result = end.value.value
    assert (result.iteration, result.total, result.finished) == (1, 6, False)
    run = load_run(tmp_path / "run")
    assert run.latents.shape == (40, 2)
    resumed = TrainingSession.resume(tmp_path / "run")
    assert resumed.trainer.iteration == 1
    assert len(resumed.run()) == 5 and resumed.finished


def test_selection_export_writes_exactly_the_selected_particles(tiny_flex_run, tmp_path):
    from flexview._napari.selection import SelectState
    from flexview.io import read_particles
    from flexview.run import load_run

    run = load_run(tiny_flex_run)
    state = SelectState()
    state.set_run(run)
    z = run.latents.astype(np.float64)
    cut = np.median(z[:, 0])
    polygon = np.array([[z[:, 0].min() - 1, z[:, 1].min() - 1], [cut, z[:, 1].min() - 1],
                        [cut, z[:, 1].max() + 1], [z[:, 0].min() - 1, z[:, 1].max() + 1]])
    expected = _inside_brute_force(z, polygon)
    assert 0 < expected.sum() < len(z)
    assert state.select_polygon(polygon) == expected.sum()
    state.export(tmp_path / "sel.star", tmp_path / "sel.cs")
    original = read_particles(run.config.particles)
    for suffix in ("star", "cs"):
        back = read_particles(tmp_path / f"sel.{suffix}")
        assert len(back) == expected.sum()
        np.testing.assert_allclose(back.rotations, original.rotations[expected], atol=1e-5)
        latents = np.stack([back.extra[f"flexviewLatent{k + 1}"].to_numpy(float) for k in range(2)], axis=1)
        np.testing.assert_allclose(latents, run.latents[expected], rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(back.images.read(slice(None)), original.images.read(np.nonzero(expected)[0]))


def test_movie_paths_and_outputs(tiny_flex_run, tmp_path):
    from flexview._napari.movie import DRAWN, MovieState
    from flexview.run import load_run

    run = load_run(tiny_flex_run)
    state = MovieState()
    state.set_run(run)
    s = state.settings
    s.axis, s.frames, s.extent = 1, 5, 2.0
    np.testing.assert_array_equal(state.points(), run.axis_values(1, 5, 2.0))
    s.bounce = True
    points = state.points()
    assert len(points) == 8
    np.testing.assert_array_equal(points[:5], run.axis_values(1, 5, 2.0))
    np.testing.assert_array_equal(points[5:], points[3:0:-1])
    s.bounce, s.source = False, DRAWN
    with pytest.raises(ValueError, match="draw a path"):
        state.points()
    s.polyline = np.array([[0.0, 0.0], [2.0, 0.0]])
    np.testing.assert_allclose(state.points(), [[0, 0], [0.5, 0], [1, 0], [1.5, 0], [2, 0]], atol=1e-6)
    s.gif, s.mp4, s.mrc = True, True, True
    assert state.outputs(tmp_path / "m.gif") == {"gif": tmp_path / "m.gif", "mp4": tmp_path / "m.mp4",
                                                 "mrc": tmp_path / "m_frames"}
    s.rotate_deg = 90.0
    assert state.camera_angles((0.0, 10.0, 20.0), 2, 4) == (0.0, 55.0, 20.0)
