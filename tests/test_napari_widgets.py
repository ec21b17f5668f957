"""The napari app in a real viewer (under a virtual X server): widgets dock through the manifest,
training runs through the Train widget, Explore shows exactly ``run.generate(z)``, Movie writes a
GIF, Select exports the lassoed particles, the reader and the sample data work.

Skipped when Qt, napari or a display is missing.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("qtpy")
pytest.importorskip("napari")
pytest.importorskip("pytestqt")

pytestmark = [
    pytest.mark.gui,
    pytest.mark.skipif(not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                            or os.environ.get("QT_QPA_PLATFORM") == "offscreen"),
                       reason="no display (install Xvfb for pytest-xvfb)"),
]

WIDGETS = {"Data": "DataWidget", "Train": "TrainWidget", "Explore": "ExploreWidget", "Movie": "MovieWidget",
           "Select": "SelectWidget"}


@pytest.fixture
def viewer(make_napari_viewer):
    v = make_napari_viewer(show=True)
    v.window.resize(1000, 700)  # a small canvas: 3-D rendering is software-only on CI
    return v


def dock(viewer, name: str):
    _, widget = viewer.window.add_plugin_dock_widget("flexview", name)
    return widget


def wait_shown(qtbot, widget, z, timeout=20000):
    qtbot.waitUntil(lambda: widget.shown is not None and np.array_equal(widget.shown.z, z), timeout=timeout)


@pytest.mark.parametrize("name", list(WIDGETS))
def test_each_widget_docks_from_the_manifest(viewer, qtbot, name):
    widget = dock(viewer, name)
    assert type(widget).__name__ == WIDGETS[name]
    assert viewer.window.dock_widgets[f"{name} (flexview)"] is widget
    qtbot.waitUntil(widget.isVisible, timeout=5000)


def test_data_widget_shows_the_inputs_and_shares_them_with_train(viewer, qtbot, tiny_flex_dataset):
    from flexview.io import read_particles

    data = dock(viewer, "Data")
    data.particles.set_text(tiny_flex_dataset / "particles.star")
    data.map.set_text(tiny_flex_dataset / "consensus.mrc")
    assert data.load(), data.status.text()
    particles = read_particles(tiny_flex_dataset / "particles.star")
    assert f"particles: {len(particles)}" in data.summary.toPlainText()
    assert "optics groups: 1" in data.summary.toPlainText()
    layer = viewer.layers["consensus"]
    np.testing.assert_allclose(layer.scale, [particles.pixel_size] * 3)
    stack = viewer.layers["particles"]
    np.testing.assert_array_equal(stack.data, particles.images.read(slice(0, 16)))
    np.testing.assert_allclose(stack.scale[1:], [particles.pixel_size] * 2)
    data.box.setValue(16)
    train = dock(viewer, "Train")
    values = train.form.values()
    assert values["particles"] == str(tiny_flex_dataset / "particles.star")
    assert values["consensus_map"] == str(tiny_flex_dataset / "consensus.mrc")
    assert values["box"] == 16


def test_data_widget_reads_cryosparc_files(viewer, tiny_flex_dataset):
    data = dock(viewer, "Data")
    data.particles.set_text(tiny_flex_dataset / "particles.cs")
    data.map.set_text(tiny_flex_dataset / "consensus.mrc")
    assert data.load(), data.status.text()
    assert "format: cryoSPARC .cs" in data.summary.toPlainText()
    assert "particles: 40" in data.summary.toPlainText()


def test_data_widget_names_the_bad_file(viewer, tmp_path):
    bad = tmp_path / "broken.star"
    bad.write_text("data_particles\nloop_\n_rlnImageName #1\n")
    data = dock(viewer, "Data")
    data.particles.set_text(bad)
    assert not data.load()
    assert str(bad) in data.status.text()


def _configure(train, cfg, out):
    from dataclasses import asdict

    values = asdict(cfg)
    values.pop("versions")
    train.form.set_values(values)
    train.out.set_text(out)


def test_training_runs_to_the_end_in_the_train_widget(viewer, qtbot, tiny_flex_dataset, make_tiny_config,
                                                      tmp_path):
    from flexview.io import read_map
    from flexview.run import load_run
    from flexview.runfolder import read_log

    train = dock(viewer, "Train")
    _configure(train, make_tiny_config(tiny_flex_dataset, epochs=2), tmp_path / "run")
    assert train.start()
    qtbot.waitUntil(lambda: train.state.status in ("finished", "failed"), timeout=120000)
    assert train.state.status == "finished", train.state.error
    assert train.progress.value() == train.progress.maximum() == 4
    assert [p.iteration for p in train.state.history] == [0, 1, 2, 3]
    assert len(read_log(tmp_path / "run" / "log.csv")) == 4
    canonical, _ = read_map(tmp_path / "run" / "canonical.mrc")
    np.testing.assert_array_equal(viewer.layers["flexview canonical"].data, canonical)
    assert load_run(tmp_path / "run").latents.shape == (40, 2)
    assert train.explore_button.isEnabled()


def test_stop_leaves_a_run_that_resume_finishes(viewer, qtbot, tiny_flex_dataset, make_tiny_config, tmp_path):
    from flexview.run import load_run

    train = dock(viewer, "Train")
    _configure(train, make_tiny_config(tiny_flex_dataset, epochs=200), tmp_path / "run")
    train.refresh.setValue(1)
    assert train.start()
    qtbot.waitUntil(lambda: len(train.state.history) >= 1 or train.state.status == "failed", timeout=60000)
    train.stop()
    qtbot.waitUntil(lambda: train.state.status in ("stopped", "finished", "failed"), timeout=60000)
    assert train.state.status == "stopped", train.state.error
    stopped_at = train.state.result.iteration
    assert 1 <= stopped_at < 400
    assert load_run(tmp_path / "run").latents.shape == (40, 2)   # a complete run folder
    train.form.set_values({"epochs": 1 + stopped_at // 2})
    train.state.history = []               # as in a new session: the curves come from log.csv
    stopped_worker = train.worker
    assert train.start(resume=True)
    stopped_worker.finished.emit()         # queued from its thread, it may come after the resume began
    assert train.state.active and train.state.result is None
    qtbot.waitUntil(lambda: train.state.status in ("finished", "failed"), timeout=60000)
    assert train.state.status == "finished", train.state.error
    assert train.state.result.iteration == 2 * (1 + stopped_at // 2)
    iterations = [p.iteration for p in train.state.history]
    assert iterations == list(range(train.state.result.iteration))


def test_worker_quit_as_on_window_close_still_writes_the_run_folder(viewer, qtbot, tiny_flex_dataset,
                                                                   make_tiny_config, tmp_path):
    from flexview.run import load_run
    from flexview.train import TrainingSession

    train = dock(viewer, "Train")
    _configure(train, make_tiny_config(tiny_flex_dataset, epochs=200, checkpoint_every=1000), tmp_path / "run")
    assert train.start()
    qtbot.waitUntil(lambda: len(train.state.history) >= 2 or train.state.status == "failed", timeout=60000)
    train.worker.quit()                    # what napari does to running workers when its window closes
    qtbot.waitUntil(lambda: not train.state.active, timeout=60000)
    assert train.state.status == "stopped"
    assert load_run(tmp_path / "run").latents.shape == (40, 2)
    resumed = TrainingSession.resume(tmp_path / "run")
    assert 2 <= resumed.trainer.iteration < 400
    assert resumed.trainer.iteration >= train.state.result.iteration


def test_a_training_error_shows_a_message_and_the_viewer_lives_on(viewer, qtbot, tiny_flex_dataset,
                                                                  make_tiny_config, tmp_path):
    train = dock(viewer, "Train")
    _configure(train, make_tiny_config(tiny_flex_dataset), tmp_path / "run")
    missing = tmp_path / "missing.star"
    train.form.set_values({"particles": str(missing)})
    assert train.start()
    qtbot.waitUntil(lambda: train.state.status == "failed", timeout=30000)
    assert str(missing) in train.status.text() and "not found" in train.status.text()
    assert train.start_button.isEnabled()
    viewer.add_image(np.zeros((4, 4)), name="still alive")
    assert "still alive" in viewer.layers


def test_explore_shows_exactly_the_density_at_z(viewer, qtbot, tiny_flex_run):
    from flexview._napari.explore import open_run_in_viewer

    explore = open_run_in_viewer(viewer, tiny_flex_run)
    run = explore.state.run
    z = np.array([0.7, -0.4], dtype=np.float32)
    explore.state.set_z(z)
    wait_shown(qtbot, explore, z)
    layer = viewer.layers["flexview density"]
    assert np.array_equal(layer.data, run.generate(z))
    np.testing.assert_allclose(layer.scale, [run.pixel_size] * 3)
    assert viewer.dims.ndisplay == 3
    # a click on the scatter (view coordinates = latent coordinates for K = 2) and the sliders agree
    explore.scatter.picked.emit(np.array([-0.25, 0.5]))
    z2 = np.array([-0.25, 0.5], dtype=np.float32)
    wait_shown(qtbot, explore, z2)
    assert np.array_equal(viewer.layers["flexview density"].data, run.generate(z2))
    assert [round(s.value(), 2) for s in explore.sliders] == [-0.25, 0.5]


@pytest.fixture(scope="module")
def three_latent_run(tiny_flex_dataset, tmp_path_factory):
    """A one-epoch run with K = 3 latent dimensions."""
    from conftest import tiny_train_config

    from flexview.train import TrainingSession

    out = tmp_path_factory.mktemp("k3") / "run"
    TrainingSession.start(tiny_train_config(tiny_flex_dataset, latent_dim=3, latent_init="pca"), out).run()
    return out


def test_explore_with_three_latent_dimensions_uses_pca_and_sliders(viewer, qtbot, three_latent_run):
    from flexview._napari.explore import open_run_in_viewer

    explore = open_run_in_viewer(viewer, three_latent_run)
    run = explore.state.run
    assert explore.view_choice.currentText() == "PCA" and len(explore.sliders) == 3
    assert [explore.view_choice.itemText(i) for i in range(4)] == ["PCA", "z1 / z2", "z1 / z3", "z2 / z3"]
    base = explore.state.z.copy()
    explore.scatter.picked.emit(np.array([0.4, -0.3]))             # a click in the PCA plane
    view = explore.state.view
    np.testing.assert_allclose(view.project(explore.state.z), [0.4, -0.3], atol=1e-5)
    normal = np.eye(3) - view.basis @ view.basis.T                  # the rest of z is kept
    np.testing.assert_allclose(normal @ explore.state.z, normal @ base, atol=1e-5)
    explore.sliders[2].setValue(1.25)                               # one slider moves one coordinate
    z = explore.state.z
    assert z[2] == pytest.approx(1.25, abs=1e-6)
    wait_shown(qtbot, explore, z)
    assert np.array_equal(viewer.layers["flexview density"].data, run.generate(z))
    explore.view_choice.setCurrentText("z2 / z3")
    np.testing.assert_allclose(explore.state.view.points, run.latents[:, 1:], rtol=1e-6)


def test_explore_flow_arrows_and_mesh_follow_the_engine(viewer, qtbot, tiny_flex_run):
    import torch

    from flexview.app.geometry import physical_to_world
    from flexview._napari.explore import open_run_in_viewer

    explore = open_run_in_viewer(viewer, tiny_flex_run)
    run = explore.state.run
    with torch.no_grad():                 # a one-epoch run hardly moves: make the flow visible
        run.model.flow.net[-1].weight.mul_(1000.0)
    explore.arrow_scale.setValue(4.0)
    explore.arrows.setChecked(True)
    explore.mesh.setChecked(True)
    z = np.array([1.5, 0.5], dtype=np.float32)
    explore.state.set_z(z)
    qtbot.waitUntil(lambda: explore.shown is not None and np.array_equal(explore.shown.z, z)
                    and explore.shown.surface is not None, timeout=20000)
    disp = run.displacement(z)
    moved = np.linalg.norm(disp, axis=1) >= 1e-3                  # the widget's cut-off, before scaling
    assert 0 < moved.sum()
    vectors = viewer.layers["flexview flow"].data
    np.testing.assert_allclose(vectors[:, 0], physical_to_world(run.mesh.vertices[moved], run.box, run.pixel_size))
    np.testing.assert_allclose(vectors[:, 1], 4.0 * disp[moved][:, ::-1], rtol=1e-5, atol=1e-6)
    verts = viewer.layers["flexview mesh"].data[0]
    np.testing.assert_allclose(verts, physical_to_world(run.mesh.vertices + disp, run.box, run.pixel_size), atol=1e-5)


@pytest.mark.parametrize("rendering", ["iso", "attenuated_mip"])
def test_3d_screenshot_of_the_density_is_not_blank(viewer, qtbot, tiny_flex_run, rendering):
    from flexview._napari.explore import open_run_in_viewer

    explore = open_run_in_viewer(viewer, tiny_flex_run)
    explore.rendering.setCurrentText(rendering)
    wait_shown(qtbot, explore, explore.state.z)
    layer = viewer.layers["flexview density"]
    assert layer.rendering == rendering and viewer.dims.ndisplay == 3
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False)
    gray = shot[..., :3].astype(float).mean(axis=2)
    assert gray.std() > 5.0
    assert 0.002 < (gray > 40).mean() < 0.9     # the molecule covers part of the canvas, not all of it


def test_pause_holds_training_until_continue(viewer, qtbot, tiny_flex_dataset, make_tiny_config, tmp_path):
    import time

    train = dock(viewer, "Train")
    _configure(train, make_tiny_config(tiny_flex_dataset, epochs=100), tmp_path / "run")
    assert train.start()
    qtbot.waitUntil(lambda: len(train.state.history) >= 1, timeout=60000)
    train.toggle_pause()
    qtbot.waitUntil(lambda: train.state.status == "paused", timeout=30000)
    assert train.pause_button.text() == "Continue"
    held = len(train.state.history)
    time.sleep(0.3)
    qtbot.wait(200)
    assert len(train.state.history) == held
    train.toggle_pause()
    qtbot.waitUntil(lambda: train.state.status == "running", timeout=30000)
    qtbot.waitUntil(lambda: len(train.state.history) > held or train.state.status != "running", timeout=30000)
    train.stop()
    qtbot.waitUntil(lambda: not train.state.active, timeout=60000)
    assert train.state.status in ("stopped", "finished")


def test_movie_writes_a_five_frame_gif_and_the_volume_series(viewer, qtbot, tiny_flex_run, tmp_path):
    import imageio.v3 as iio

    from flexview.io import read_map

    explore = dock(viewer, "Explore")
    explore.open_folder(tiny_flex_run)
    movie = dock(viewer, "Movie")
    assert movie.state.run is explore.state.run              # the run is shared between widgets
    movie.n_frames.setValue(5)
    movie.rotate.setValue(40.0)
    movie.frame_width.setValue(160)
    movie.gif.setChecked(True)
    movie.mrc.setChecked(True)
    movie.output.set_text(tmp_path / "latent.gif")
    assert movie.record()
    qtbot.waitUntil(lambda: not movie.recording, timeout=60000)
    assert set(movie.written) == {"gif", "mrc"}, movie.status.text()
    frames = iio.imread(tmp_path / "latent.gif", index=None)
    assert frames.shape[0] == 5 and frames.shape[2] == 160
    run = movie.state.run
    points = run.axis_values(0, 5, movie.extent.value())
    for i in range(5):
        volume, px = read_map(tmp_path / "latent_frames" / f"frame_{i:03d}.mrc")
        np.testing.assert_array_equal(volume, run.generate(points[i]))
        assert px == pytest.approx(run.pixel_size)
    assert (tmp_path / "latent_frames" / "latents.csv").read_text().count("\n") == 6


def test_movie_along_a_drawn_path(viewer, qtbot, tiny_flex_run, tmp_path):
    movie = dock(viewer, "Movie")
    movie.folder.set_text(tiny_flex_run)
    movie.open_folder()
    movie.scatter.polyline_changed.emit(np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0]]))  # three clicks
    assert movie.source.currentText() == "drawn path"
    movie.n_frames.setValue(5)
    movie.read_settings()
    np.testing.assert_allclose(movie.state.points(), [[-1, -1], [0, -1], [1, -1], [1, 0], [1, 1]], atol=1e-6)
    movie.gif.setChecked(False)
    movie.mp4.setChecked(True)
    movie.output.set_text(tmp_path / "path.mp4")
    assert movie.record()
    qtbot.waitUntil(lambda: not movie.recording, timeout=60000)
    assert (tmp_path / "path.mp4").stat().st_size > 1000, movie.status.text()


def test_lasso_selection_exports_exactly_the_selected_particles(viewer, qtbot, tiny_flex_run, tmp_path):
    from matplotlib.path import Path as PolygonPath

    from flexview.io import read_particles

    select = dock(viewer, "Select")
    select.folder.set_text(tiny_flex_run)
    select.open_folder()
    z = select.state.run.latents
    lo, hi = z.min(axis=0), z.max(axis=0)
    mid = (lo + hi) / 2
    polygon = np.array([[lo[0] - 1, lo[1] - 1], [mid[0], lo[1] - 1], [mid[0], mid[1]], [lo[0] - 1, hi[1] + 1]])
    select.scatter.polygon_drawn.emit(polygon)                 # as the lasso tool emits it
    expected = PolygonPath(polygon).contains_points(z)
    assert 0 < expected.sum() < len(z)
    assert select.count.text().startswith(f"{expected.sum():,} of {len(z):,}")
    select.star.set_text(tmp_path / "subset.star")
    assert select.export() == [tmp_path / "subset.star"]
    back = read_particles(tmp_path / "subset.star")
    original = read_particles(select.state.run.config.particles)
    rows = np.nonzero(expected)[0]
    assert len(back) == len(rows)
    np.testing.assert_array_equal(back.images.read(slice(None)), original.images.read(rows))
    np.testing.assert_allclose(back.extra["flexviewLatent1"].to_numpy(float), z[rows, 0], rtol=1e-6, atol=1e-7)


def test_a_run_folder_opens_in_explore(viewer, qtbot, tiny_flex_run):
    viewer.open(str(tiny_flex_run), plugin="flexview")
    widgets = [w for w in viewer.window.dock_widgets.values() if type(w).__name__ == "ExploreWidget"]
    assert len(widgets) == 1
    explore = widgets[0]
    wait_shown(qtbot, explore, explore.state.z)
    assert np.array_equal(viewer.layers["flexview density"].data, explore.state.run.generate(explore.state.z))


def test_sample_data_opens_the_synthetic_protein(viewer, monkeypatch, tmp_path):
    from flexview._napari import sample

    monkeypatch.setenv("FLEXVIEW_SAMPLE_DIR", str(tmp_path / "sample"))
    monkeypatch.setattr(sample, "SAMPLE", dict(kind="hinge", n_particles=20, box=24, snr=1.0, seed=0))
    viewer.open_sample("flexview", "hinge")
    consensus = viewer.layers["consensus (sample)"]
    assert consensus.data.shape == (24, 24, 24)
    np.testing.assert_allclose(consensus.scale, [160.0 / 24] * 3)
    assert viewer.layers["particles (sample)"].data.shape == (16, 24, 24)
    assert (tmp_path / "sample" / "particles.star").is_file()


def test_the_scatter_marker_moves_without_leaving_a_trace(qtbot):
    from flexview.app.latent_view import LatentView
    from flexview._napari.scatter import ScatterCanvas

    canvas = ScatterCanvas(mode="pick")
    qtbot.addWidget(canvas)
    canvas.resize(400, 400)
    canvas.show()
    qtbot.waitExposed(canvas)
    canvas.set_view(LatentView(np.random.default_rng(0).normal(size=(500, 2))))
    canvas.draw()
    for uv in ([-1.0, -1.0], [1.2, 0.8]):
        canvas.set_marker(uv)
        qtbot.wait(50)
    image = canvas.grab().toImage()
    rgb = np.array([[image.pixelColor(x, y).getRgb()[:3] for x in range(image.width())]
                    for y in range(image.height())], dtype=int)
    green = np.argwhere((rgb[..., 1] > 200) & (rgb[..., 0] < 80) & (rgb[..., 2] > 80) & (rgb[..., 2] < 200))
    x, y = canvas.axes.transData.transform([1.2, 0.8]) / canvas.device_pixel_ratio
    assert len(green) > 10
    assert np.abs(green[:, 1] - x).max() < 15 and np.abs(green[:, 0] - (image.height() - y)).max() < 15


def test_config_form_reads_back_every_default(qtbot):
    """A fresh form gives exactly TrainConfig's defaults: every default is one of its choices."""
    from dataclasses import asdict

    from flexview._napari._config_form import ConfigForm
    from flexview.train import TrainConfig

    form = ConfigForm()
    values = form.values()
    defaults = {k: v for k, v in asdict(TrainConfig()).items() if k in values}
    assert values == defaults


def slow_embedding(monkeypatch, seconds: float = 0.2, chunk: int = 10):
    """Make the final embedding of a tiny run last a while: chunks of ``chunk`` particles, each
    reported ``seconds`` late, so that the GUI sees it under way."""
    import time

    from flexview.train.trainer import Trainer

    embed = Trainer.embed

    def slow(self, rows, *, progress=None, **kw):
        def tick(done, total):
            time.sleep(seconds)
            progress(done, total)
        return embed(self, rows, chunk=chunk, progress=None if progress is None else tick, **kw)

    monkeypatch.setattr(Trainer, "embed", slow)


def test_train_widget_shows_each_stage_and_the_final_embedding(viewer, qtbot, tiny_flex_dataset,
                                                               make_tiny_config, tmp_path, monkeypatch):
    """The progress bar and status line follow the stages in the GUI thread: the set-up stages,
    the iterations, then "final embedding 10 / 40 particles" (not the last training step), then
    writing; once finished the bar shows the iterations again."""
    from flexview.train.stages import EMBEDDING, STAGES

    slow_embedding(monkeypatch)
    train = dock(viewer, "Train")
    _configure(train, make_tiny_config(tiny_flex_dataset, epochs=1), tmp_path / "run")
    seen = []
    show = train._show_progress

    def spy():
        show()
        if train.state.stage is not None:        # None: started, before the first stage
            seen.append((train.state.stage.stage, train.progress.value(), train.progress.maximum(),
                         train.progress.format(), train.status.text()))

    monkeypatch.setattr(train, "_show_progress", spy)
    assert train.start()
    qtbot.waitUntil(lambda: train.state.status in ("finished", "failed"), timeout=120000)
    assert train.state.status == "finished", train.state.error
    order = [s[0] for i, s in enumerate(seen) if i == 0 or seen[i - 1][0] != s[0]]
    assert order == list(STAGES)
    embedding = [s[1:] for s in seen if s[0] == EMBEDDING]
    assert (10, 40, "final embedding %v / %m particles") in [e[:3] for e in embedding]
    assert any(text.startswith("final embedding 10 / 40 particles") for *_, text in embedding)
    assert (train.progress.value(), train.progress.maximum(), train.progress.format()) == (2, 2, "%v / %m iterations")
