"""Train widget: the TrainConfig parameters, an output folder, Start / Pause / Stop / Resume.

Training runs in a napari ``thread_worker`` driving :func:`flexview.app.train.training_updates`
(on the GPU when present); the GUI thread only draws the progress, the loss curves, the latent
scatter and swaps the canonical map layer's data. The progress bar and the status line follow
the session's stages (set-up, cache, calibration, initialisation, training, final embedding,
writing), whose events the worker thread sends through a queued Qt signal. Stop ends the
session's generator, which writes a complete, resumable run folder.
"""
from __future__ import annotations

from dataclasses import replace
from functools import partial

from matplotlib.ticker import AutoLocator
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QFormLayout, QHBoxLayout, QLabel, QProgressBar, QPushButton, QSpinBox, QWidget
from superqt import QCollapsible

from flexview._napari import _layers
from flexview._napari._config_form import ESSENTIAL, INPUTS, ConfigForm
from flexview._napari._plot import PlotCanvas, theme_colors
from flexview._napari._qt import PathPicker, heading, notify_error, scroll_layout
from flexview._napari.scatter import ScatterCanvas
from flexview.app.context import context_for
from flexview.app.latent_view import LatentView
from flexview.app.train import STOP, TrainResult, TrainState, TrainUpdate, training_updates
from flexview.errors import FlexviewInputError
from flexview.train import TrainConfig

CANONICAL = "flexview canonical"


def _closing_worker_class():
    from napari.qt.threading import GeneratorWorker

    class ClosingGeneratorWorker(GeneratorWorker):
        """A generator worker that closes its generator when it ends, also after ``quit()`` (which
        napari calls when the window closes), so the session writes its run folder in the
        worker's thread."""

        def work(self):
            try:
                return super().work()
            finally:
                self._gen.close()

    return ClosingGeneratorWorker


class StageSignal(QObject):
    """Carries :class:`~flexview.train.stages.StageProgress` events from the worker's thread to
    the GUI thread (``stage.emit`` is the session's progress callback; the connection is queued
    because this object lives in the GUI thread)."""

    stage = Signal(object)


def _stop_worker(worker) -> None:
    """End a training worker after its current iteration (its run folder is then written)."""
    worker.send(STOP)
    worker.resume()


class TrainWidget(QWidget):
    """Dock widget: the configuration form, the controls and the live views of a training run."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.state = TrainState()
        self.context = context_for(napari_viewer)
        self.form = ConfigForm()
        self.worker = None
        self._build()
        self.state.changed.connect(self._on_state)
        self.context.inputs_changed.connect(self._on_inputs)
        self.context.mesh_changed.connect(self._on_mesh)
        if self.context.inputs is not None:
            self._on_inputs(self.context.inputs)
        if self.context.mesh_path:
            self._on_mesh(self.context.mesh_path)
        self._on_state()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        layout = scroll_layout(self)
        layout.addWidget(heading("Inputs"))
        inputs = QFormLayout()
        self.form.add_rows(inputs, INPUTS)
        layout.addLayout(inputs)
        layout.addWidget(heading("Parameters"))
        essential = QFormLayout()
        self.form.add_rows(essential, ESSENTIAL)
        self.out = PathPicker("dir", placeholder="new folder for the run")
        self.out.edit.setToolTip("the run folder (created); Resume continues the run found there")
        essential.addRow("output folder", self.out)
        self.refresh = QSpinBox()
        self.refresh.setRange(1, 1000)
        self.refresh.setValue(5)
        self.refresh.setToolTip("iterations between updates of the canonical map layer and the latent plot")
        essential.addRow("refresh every", self.refresh)
        layout.addLayout(essential)
        advanced = QCollapsible("Advanced parameters")
        inner = QWidget()
        rows = QFormLayout(inner)
        self.form.add_rows(rows, [n for n in self.form.fields if n not in INPUTS and n not in ESSENTIAL])
        advanced.addWidget(inner)
        layout.addWidget(advanced)
        buttons = QHBoxLayout()
        self.start_button = QPushButton("Start")
        self.pause_button = QPushButton("Pause")
        self.stop_button = QPushButton("Stop")
        self.resume_button = QPushButton("Resume")
        self.start_button.setToolTip("start a new run in the output folder")
        self.pause_button.setToolTip("pause after the current iteration / continue")
        self.stop_button.setToolTip("stop after the current iteration and write a resumable run folder")
        self.resume_button.setToolTip("continue the run in the output folder from its last checkpoint")
        self.start_button.clicked.connect(lambda: self.start(resume=False))
        self.resume_button.clicked.connect(lambda: self.start(resume=True))
        self.pause_button.clicked.connect(self.toggle_pause)
        self.stop_button.clicked.connect(self.stop)
        for b in (self.start_button, self.pause_button, self.stop_button, self.resume_button):
            buttons.addWidget(b)
        layout.addLayout(buttons)
        self.progress = QProgressBar()
        self.progress.setFormat("")
        layout.addWidget(self.progress)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        colors = theme_colors(self.viewer)
        self.loss_plot = PlotCanvas(colors, height=2.0, margins=(66, 64, 40, 12))
        self._loss_axes2 = self.loss_plot.axes.twinx()
        self.loss_plot.style_axes(self._loss_axes2)
        self._style_loss_axes()
        layout.addWidget(self.loss_plot)
        self.scatter = ScatterCanvas(colors, mode="none", height=2.4)
        layout.addWidget(self.scatter)
        self.explore_button = QPushButton("Open in Explore")
        self.explore_button.setToolTip("explore the run folder: latent space and the density at z")
        self.explore_button.clicked.connect(self.open_in_explore)
        layout.addWidget(self.explore_button)

    def _style_loss_axes(self) -> None:
        c = self.loss_plot.colors
        ax, ax2 = self.loss_plot.axes, self._loss_axes2
        ax.set_xlabel("iteration", fontsize=8)
        ax.set_ylabel("data term", fontsize=8, color=c.accent)
        ax2.set_ylabel("rigidity", fontsize=8, color=c.secondary)
        self._data_line, = ax.plot([], [], color=c.accent, linewidth=1.2)
        self._rigid_line, = ax2.plot([], [], color=c.secondary, linewidth=1.0)
        for axes in (ax, ax2):  # no made-up ticks before the first iteration
            axes.set_xticks([])
            axes.set_yticks([])
        self._loss_empty = ax.text(0.5, 0.5, "no iterations yet", transform=ax.transAxes, ha="center",
                                   va="center", color=c.text, fontsize=9)

    # ------------------------------------------------------------------ inputs
    def _on_inputs(self, inputs) -> None:
        self.form.set_values({"particles": inputs.particles, "consensus_map": inputs.consensus_map,
                              "mask": inputs.mask, "project_dir": inputs.project_dir, "box": inputs.box})

    def _on_mesh(self, path: str) -> None:
        self.form.set_values({"mesh": path})

    def config(self) -> TrainConfig:
        return self.form.config()

    # ------------------------------------------------------------------ control
    def start(self, resume: bool = False) -> bool:
        """Start (or resume) training in a worker thread. False, with a message, on bad input."""
        from napari.qt.threading import thread_worker

        if self.state.active:
            return False
        try:
            cfg = self.config()
            out = self.out.path()
            if out is None:
                raise FlexviewInputError("choose an output folder", field="output folder")
        except Exception as exc:
            self._on_error(exc)
            return False
        self.state.begin(out, resume)
        self._show_progress()
        stages = StageSignal(self)
        self.worker = thread_worker(training_updates, start_thread=False, ignore_errors=True,
                                    worker_class=_closing_worker_class())(
            replace(cfg), out, resume=resume, refresh_every=self.refresh.value(), on_stage=stages.stage.emit)
        self._connect(self.worker, stages)
        self.destroyed.connect(partial(_stop_worker, self.worker))  # the viewer closes mid-run
        self.worker.start()
        return True

    def _connect(self, worker, stages: StageSignal) -> None:
        """Route ``worker``'s signals to the widget while it is the current worker. Its signals
        are queued from its thread, so its ``finished`` can arrive after its ``returned`` has
        ended the run and a new (resumed) worker has started; those late signals are dropped."""
        def current(handler):
            def call(*args):
                if worker is self.worker:
                    handler(*args)
            return call

        stages.stage.connect(current(self._on_stage))
        worker.yielded.connect(current(self._on_update))
        worker.returned.connect(current(self.state.end))
        worker.finished.connect(current(self._on_finished))
        worker.errored.connect(current(self._on_error))
        worker.paused.connect(current(lambda: self.state.set_status("paused")))
        worker.resumed.connect(current(lambda: self.state.set_status("running")))

    def toggle_pause(self) -> None:
        if self.worker is not None and self.state.status in ("running", "paused"):
            self.worker.toggle_pause()

    def stop(self) -> None:
        """Stop after the current iteration; the run folder is written and can be resumed."""
        if self.worker is None or not self.state.active:
            return
        _stop_worker(self.worker)
        self.state.set_status("stopping")

    def open_in_explore(self) -> None:
        from flexview._napari.explore import open_run_in_viewer

        folder = self.out.path()
        if folder is not None:
            open_run_in_viewer(self.viewer, folder)

    # ------------------------------------------------------------------ worker → GUI
    def _show_progress(self) -> None:
        """The progress bar and status line from the state's current stage."""
        value, maximum, text = self.state.progress_bar()
        self.progress.setRange(0, maximum)
        self.progress.setValue(value)
        self.progress.setFormat(text)
        if self.state.status == "running":
            self.status.setText(self.state.stage_text())

    def _on_stage(self, event) -> None:
        self.state.set_stage(event)
        self._show_progress()

    def _on_update(self, update: TrainUpdate) -> None:
        self.state.record(update)
        self._show_progress()
        if update.progress is not None:
            self._draw_losses()
        if update.volume is not None:
            if _layers.find_layer(self.viewer, CANONICAL) is None:
                self._hide_inputs()
            _layers.show_volume(self.viewer, CANONICAL, update.volume, update.pixel_size, rendering="mip",
                                colormap="bop orange", blending="additive")
        if update.latents is not None and update.latents.shape[1] >= 1:
            self.scatter.set_view(LatentView(update.latents))

    def _hide_inputs(self) -> None:
        """The canonical map takes the place of the Data widget's consensus map and images."""
        from flexview._napari.data import MAP_LAYER, MASK_LAYER, PARTICLES_LAYER

        for name in (MAP_LAYER, MASK_LAYER, PARTICLES_LAYER):
            layer = _layers.find_layer(self.viewer, name)
            if layer is not None:
                layer.visible = False

    def _draw_losses(self) -> None:
        curves = self.state.curves()
        self._data_line.set_data(curves["iteration"], curves["data"])
        self._rigid_line.set_data(curves["iteration"], curves["rigidity"])
        if self._loss_empty is not None:
            self._loss_empty.remove()
            self._loss_empty = None
            for ax in (self.loss_plot.axes, self._loss_axes2):
                ax.xaxis.set_major_locator(AutoLocator())
                ax.yaxis.set_major_locator(AutoLocator())
        for ax in (self.loss_plot.axes, self._loss_axes2):
            ax.relim()
            ax.autoscale_view()
        self.loss_plot.draw_idle()

    def _on_finished(self) -> None:
        """After quit() no result comes back: the run stopped where the last update was."""
        if self.state.active:
            done = self.state.history[-1].iteration + 1 if self.state.history else 0
            total = self.state.total_iterations
            self.state.end(TrainResult(self.state.out, done, total, done >= total > 0))

    def _on_error(self, exc: BaseException) -> None:
        self.state.fail(exc)
        notify_error(exc)

    def _on_state(self) -> None:
        s = self.state
        self.start_button.setEnabled(not s.active)
        self.resume_button.setEnabled(not s.active)
        self.pause_button.setEnabled(s.status in ("running", "paused"))
        self.pause_button.setText("Continue" if s.status == "paused" else "Pause")
        self.stop_button.setEnabled(s.status in ("running", "paused"))
        self.explore_button.setEnabled(s.status in ("finished", "stopped"))
        if s.status == "failed":
            self.status.setText(f"failed: {s.error}")
        elif s.status == "paused":
            self.status.setText("paused")
        elif s.status == "running":
            self.status.setText(s.stage_text())
        elif s.status == "stopping":
            self.status.setText("stopping after this iteration ...")
        elif s.result is not None:
            r = s.result
            what = "finished" if r.finished else "stopped (Resume continues)"
            self.status.setText(f"{what} at iteration {r.iteration} of {r.total}: {r.folder}")
            self.progress.setRange(0, max(1, r.total))
            self.progress.setValue(r.iteration)
            self.progress.setFormat("%v / %m iterations")
