"""The Qt-free state of the napari app (``flexview.app``, no Qt and no display needed): latent
views, the newest-only renderer, layer geometry, the training generator's Stop, selection export,
movie paths, the Mesh, Data, Explore and Train states; and that no ``flexview.app`` module
imports Qt."""
from __future__ import annotations

import itertools
import pkgutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import flexview.app
from flexview.app.mesh import MeshState, vertex_average, vertex_segment
from flexview.app.geometry import boundary_faces, deformed_surface, flow_vectors, physical_to_world
from flexview.app.latent_view import PCA, LatentView, view_names
from flexview.app.render import LatestRenderer
from flexview.model.mesh import TetMesh

QT_MODULES = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari._qt", "superqt")

_LOADED_QT = """
import importlib, sys
for name in sys.argv[2:]:
    importlib.import_module(name)
found = sorted(m for m in sys.modules if m.split(".")[0] in {qt} or any(m == q or m.startswith(q + ".") for q in {qt}))
print(",".join(found))
"""


def _qt_modules_after_importing(*modules: str) -> list[str]:
    """The Qt modules in ``sys.modules`` of a fresh interpreter after importing ``modules``."""
    code = _LOADED_QT.format(qt=repr(QT_MODULES))
    out = subprocess.run([sys.executable, "-c", code, "-", *modules], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return [m for m in out.stdout.strip().split(",") if m]


def test_no_app_module_imports_qt():
    modules = [f"flexview.app.{m.name}" for m in pkgutil.iter_modules(flexview.app.__path__)]
    assert {"flexview.app.data", "flexview.app.mesh", "flexview.app.train", "flexview.app.explore",
            "flexview.app.movie", "flexview.app.select", "flexview.app.latent_view"} <= set(modules)
    assert _qt_modules_after_importing("flexview.app", *modules) == []


def test_the_qt_check_sees_a_widget_module():
    """The check above can fail: importing a dock widget module loads Qt."""
    pytest.importorskip("qtpy")
    assert "qtpy" in _qt_modules_after_importing("flexview._napari.data")


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
    from flexview.app.train import STOP, training_updates
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
    from flexview.app.select import SelectState
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
    from flexview.app.movie import DRAWN, MovieState
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


# ------------------------------------------------------------------------------------ mesh state
def _touching_bruteforce(filled: np.ndarray) -> set[tuple[int, int]]:
    """Pairs of different labels on 6-neighbour voxels, by a loop over every voxel."""
    found = set()
    n = filled.shape[0]
    for z, y, x in itertools.product(range(n), repeat=3):
        for dz, dy, dx in ((1, 0, 0), (0, 1, 0), (0, 0, 1)):
            if z + dz < n and y + dy < n and x + dx < n:
                a, b = filled[z, y, x], filled[z + dz, y + dy, x + dx]
                if a != b:
                    found.add((min(a, b), max(a, b)))
    return found


def test_mesh_state_finds_the_segments_and_the_touching_pairs():
    rng = np.random.default_rng(0)
    labels = rng.choice([1, 2, 3, 5], size=(7, 7, 7), p=[0.7, 0.1, 0.1, 0.1])
    labels[:, :, :3] = 1
    labels[:, :, 3:] = np.where(labels[:, :, 3:] == 1, 2, labels[:, :, 3:])
    state = MeshState()
    state.set_labels(labels)
    assert state.segments == sorted(set(np.unique(labels).tolist()))
    assert state.pairs == sorted(_touching_bruteforce(labels))


def test_mesh_state_fills_the_solvent_before_looking_for_contacts():
    """Three blocks along x with gaps of solvent: after filling, 1 touches 2 and 2 touches 3 only."""
    labels = np.zeros((9, 9, 9), np.int64)
    labels[:, :, 0:2], labels[:, :, 4:5], labels[:, :, 7:9] = 1, 2, 3
    state = MeshState()
    state.set_labels(labels)
    assert state.segments == [1, 2, 3] and state.pairs == [(1, 2), (2, 3)]


@pytest.fixture
def chain_state():
    """Segments 1, 2, 3 in a row along x (1–2 and 2–3 touch, 1–3 do not)."""
    labels = np.zeros((9, 9, 9), np.int64)
    labels[:, :, 0:3], labels[:, :, 3:6], labels[:, :, 6:9] = 1, 2, 3
    state = MeshState()
    state.set_labels(labels)
    return state


def test_fuse_text_and_checked_pairs_round_trip(chain_state):
    s = chain_state
    assert s.segments == [1, 2, 3] and s.pairs == [(1, 2), (2, 3)]
    s.set_fuse_text("1>2, 2>3")
    assert s.checked_pairs() == {(1, 2), (2, 3)}
    assert s.fuse_problem() == ""
    s.set_pair_checked((1, 2), False)
    assert s.fuse_text == "2>3"
    s.set_pair_checked((1, 2), True)        # the root stays 2
    assert s.fuse_text == "2>1, 2>3" and s.checked_pairs() == {(1, 2), (2, 3)}
    s.set_fuse_text(s.fuse_text)
    assert s.checked_pairs() == {(1, 2), (2, 3)} and s.fuse_problem() == ""
    assert s.tree_text().splitlines() == ["2", "└ 1", "└ 3"]


@pytest.mark.parametrize("text, words", [("1>3", "do not touch"), ("1>2, 2>1", "cycle"),
                                         ("1>2, 3>2", "not reached"), ("1>7", "not a segment"),
                                         ("1-2", "cannot read")])
def test_invalid_fuse_lists_give_the_reason(chain_state, text, words):
    chain_state.set_fuse_text(text)
    assert words in chain_state.fuse_problem()


def test_relabelling_drops_choices_that_no_longer_apply(chain_state):
    s = chain_state
    s.set_fuse_text("1>2, 2>3")
    s.set_flag(3, "rigid", True)
    s.set_flag(1, "pinned", True)
    labels = np.zeros((9, 9, 9), np.int64)
    labels[:, :, 0:5], labels[:, :, 5:9] = 1, 2              # segment 3 is gone
    s.set_labels(labels)
    assert s.pairs == [(1, 2)] and s.fuse_text == "1>2" and s.rigid == set() and s.pinned == {1}


def test_vertex_colours_match_loops_over_the_cells():
    mesh = _cube_mesh()
    mesh = TetMesh(mesh.vertices, mesh.cells, np.arange(1.0, 7.0), mesh.pinned, np.array([1, 1, 2, 2, 3, 3]),
                   box=mesh.box, pixel_size=mesh.pixel_size)
    for v in range(mesh.n_vertices):
        holding = [c for c in range(mesh.n_cells) if v in mesh.cells[c]]
        assert vertex_average(mesh, mesh.rigidity_weight)[v] == pytest.approx(
            np.mean([mesh.rigidity_weight[c] for c in holding]))
        assert vertex_segment(mesh)[v] == max(mesh.segment[c] for c in holding)


def test_mesh_state_builds_cuts_and_saves(tiny_flex_dataset, tmp_path):
    from flexview.io.meshfile import read_mesh
    from flexview.io.mrc import read_map

    state = MeshState()
    density = state.load_map(tiny_flex_dataset / "consensus.mrc", 16)
    _, voxel = read_map(tiny_flex_dataset / "consensus.mrc")
    assert density.shape == (16, 16, 16) and state.pixel_size == pytest.approx(voxel * 24 / 16)
    base = state.build(cells_across=6)
    assert state.mesh() is base and base.box == 16
    labels = np.zeros(density.shape, np.int32)
    labels[:, :, :8], labels[:, :, 8:] = 1, 2
    state.set_labels(labels)
    state.set_fuse_text("1>1")
    with pytest.raises(ValueError, match="^field '--fuse': [^:]*cycle"):     # named once
        state.cut_with(labels)
    state.set_fuse_text("")
    cut = state.cut_with(labels)
    assert state.mesh() is cut and cut.n_cells == base.n_cells and cut.n_vertices > base.n_vertices
    path = state.save(tmp_path / "m")
    assert path == tmp_path / "m.npz"
    np.testing.assert_array_equal(read_mesh(path).cells, cut.cells)


# ------------------------------------------------------------------------------------ data, explore, train
def test_data_state_box_pixel_size_and_map_check(tiny_flex_dataset, tmp_path):
    from flexview.app.data import DataState
    from flexview.io.mrc import read_map, write_map

    state = DataState()
    particles = state.load_particles(tiny_flex_dataset / "particles.star")
    assert state.box == 24 and state.box_range() == (8, 24)
    with pytest.raises(ValueError, match="even"):
        state.set_box(15)
    state.set_box(16)
    assert state.training_pixel_size() == pytest.approx(particles.pixel_size * 24 / 16)
    state.load_map(tiny_flex_dataset / "consensus.mrc")
    assert state.check_map() == ""
    assert state.inputs().box == 16 and state.inputs().consensus_map == str(tiny_flex_dataset / "consensus.mrc")
    assert any(line.startswith("consensus map: 24³") for line in state.summary())
    volume, voxel = read_map(tiny_flex_dataset / "consensus.mrc")
    write_map(tmp_path / "wide.mrc", volume, 1.5 * voxel)      # spans 1.5 × the particle box
    state.load_map(tmp_path / "wide.mrc")
    assert "span" in state.check_map()


def test_explore_state_renders_the_engine_at_z(tiny_flex_run):
    from flexview.app.explore import ExploreState
    from flexview.model.mesh import auto_threshold
    from flexview.run import load_run

    run = load_run(tiny_flex_run)
    state = ExploreState()
    seen = []
    state.z_changed.connect(seen.append)
    state.open(run)
    np.testing.assert_allclose(state.z, np.median(run.latents, axis=0), rtol=1e-6)
    with pytest.raises(ValueError, match="latent dimensions"):
        state.set_z([0.0, 0.0, 0.0])
    state.pick([0.5, -0.25])                                  # K = 2: the view is the latent plane
    np.testing.assert_allclose(state.z, [0.5, -0.25], rtol=1e-6)
    assert len(seen) == 2
    lo, hi = state.slider_range(0)
    assert lo <= min(-3.0, run.latents[:, 0].min()) and hi >= max(3.0, run.latents[:, 0].max())
    shown = state.render(state.z, arrows=True, mesh=True)
    np.testing.assert_array_equal(shown.volume, run.generate(state.z))
    assert shown.surface[1].shape[1] == 3 and shown.vectors.shape[1:] == (2, 3)
    canonical = run.model.canonical.volume.detach().cpu().numpy()
    assert state.iso_threshold() == pytest.approx(auto_threshold(canonical))


def test_train_state_keeps_one_record_per_iteration(tmp_path):
    from flexview.app.train import TrainState, TrainUpdate, read_history
    from flexview.runfolder import write_log
    from flexview.train import Progress

    def progress(i, data):
        return Progress(iteration=i, total=4, epoch=0, block="map", band_A=10.0, data=data, rigidity=0.1,
                        prior=0.0, seconds=0.01)

    state = TrainState()
    state.begin(tmp_path / "run", resume=False)
    for i, data in ((0, 5.0), (1, 4.0), (2, 3.0), (1, 3.5), (2, 2.5)):   # a resume repeats iterations 1, 2
        state.record(TrainUpdate(progress(i, data), i + 1, 4, 1.0))
    np.testing.assert_array_equal(state.curves()["iteration"], [0, 1, 2])
    np.testing.assert_array_equal(state.curves()["data"], [5.0, 3.5, 2.5])
    assert state.active
    state.fail(ValueError("no"))
    assert state.status == "failed" and state.error == "ValueError: no" and not state.active
    write_log(tmp_path / "log.csv", [progress(0, 1.0).row(), progress(1, 0.5).row()])
    assert [p.data for p in read_history(tmp_path / "log.csv")] == [1.0, 0.5]
    write_log(tmp_path / "other.csv", [{"iteration": 0, "loss": 1.0}])
    assert read_history(tmp_path / "other.csv") == []
