"""Movie widget: a path through latent space (one axis ± k sd, or a polyline drawn on the
scatter), frames rendered by the engine off the GUI thread, shown in the viewer and captured as
screenshots, written as GIF and MP4, and the volumes as an MRC series.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QWidget,
)

from flexview._napari import _layers
from flexview._napari._context import FollowsContextRun
from flexview._napari._plot import theme_colors
from flexview._napari._qt import PathPicker, heading, notify_error, run_folder_row, scroll_layout
from flexview._napari.scatter import ScatterCanvas
from flexview.app.context import context_for
from flexview.app.explore import iso_threshold
from flexview.app.messages import error_text
from flexview.app.movie import AXIS, DRAWN, MovieSettings, MovieState, resize_frames, write_gif, write_mp4
from flexview.run import Run, write_volume_series


class MovieWidget(FollowsContextRun, QWidget):
    """Dock widget over :class:`MovieState`; records through the viewer's own canvas."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.state = MovieState()
        self.context = context_for(napari_viewer)
        self.worker = None
        self.frames: list[np.ndarray] = []
        self.volumes: list[np.ndarray] = []
        self.written: dict[str, Path] = {}
        self.recording = False
        self._build()
        self.state.run_changed.connect(self._on_run)
        self.context.run_changed.connect(self._on_context_run)
        if self.context.run is not None:
            self.state.set_run(self.context.run)

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        layout = scroll_layout(self)
        self.folder = run_folder_row(layout, self.open_folder)
        layout.addWidget(heading("Path"))
        form = QFormLayout()
        self.source = QComboBox()
        self.source.addItems([AXIS, DRAWN])
        self.source.setToolTip("along one latent axis, or along a path clicked on the scatter")
        self.axis = QSpinBox()
        self.axis.setToolTip("latent axis (1-based) of the path")
        self.extent = QDoubleSpinBox()
        self.extent.setRange(0.1, 10.0)
        self.extent.setSingleStep(0.5)
        self.extent.setToolTip("the path spans ± this many standard deviations of the axis")
        self.n_frames = QSpinBox()
        self.n_frames.setRange(2, 1000)
        self.fps = QDoubleSpinBox()
        self.fps.setRange(1.0, 60.0)
        self.rotate = QDoubleSpinBox()
        self.rotate.setRange(-3600.0, 3600.0)
        self.rotate.setSingleStep(45.0)
        self.rotate.setToolTip("turn the camera by this many degrees over the movie")
        self.frame_width = QSpinBox()
        self.frame_width.setRange(0, 4096)
        self.frame_width.setSingleStep(32)
        self.frame_width.setToolTip("frame width in pixels (0: the canvas size)")
        self.label = QCheckBox("label frames with z")
        self.bounce = QCheckBox("forth and back")
        self.bounce.setToolTip("run the path forth and back, so the movie loops without a jump")
        for name, w in (("source", self.source), ("axis", self.axis), ("± sd", self.extent),
                        ("frames", self.n_frames), ("frames / s", self.fps), ("camera turn (°)", self.rotate),
                        ("frame width", self.frame_width), ("", self.label), ("", self.bounce)):
            form.addRow(name, w)
        layout.addLayout(form)
        self.scatter = ScatterCanvas(theme_colors(self.viewer), mode="polyline", height=2.4)
        self.scatter.setToolTip("drawn path: click points in order")
        self.scatter.polyline_changed.connect(self._on_polyline)
        layout.addWidget(self.scatter)
        clear = QPushButton("Clear drawn path")
        clear.clicked.connect(self._clear_polyline)
        layout.addWidget(clear)
        layout.addWidget(heading("Output"))
        self.output = PathPicker("save", "Movies (*.gif *.mp4)", "movie.gif")
        self.output.edit.setToolTip("file name; each format replaces the suffix (MRC: a <name>_frames folder)")
        layout.addWidget(self.output)
        formats = QHBoxLayout()
        self.gif, self.mp4, self.mrc = QCheckBox("GIF"), QCheckBox("MP4"), QCheckBox("MRC series")
        for w in (self.gif, self.mp4, self.mrc):
            formats.addWidget(w)
        layout.addLayout(formats)
        self.record_button = QPushButton("Record")
        self.record_button.clicked.connect(self.record)
        layout.addWidget(self.record_button)
        self.progress = QProgressBar()
        layout.addWidget(self.progress)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self._show_settings(self.state.settings)

    def _show_settings(self, s: MovieSettings) -> None:
        self.source.setCurrentText(s.source)
        self.axis.setValue(s.axis + 1)
        self.extent.setValue(s.extent)
        self.n_frames.setValue(s.frames)
        self.fps.setValue(s.fps)
        self.rotate.setValue(s.rotate_deg)
        self.frame_width.setValue(s.width)
        self.label.setChecked(s.label)
        self.bounce.setChecked(s.bounce)
        self.gif.setChecked(s.gif)
        self.mp4.setChecked(s.mp4)
        self.mrc.setChecked(s.mrc)

    def read_settings(self) -> MovieSettings:
        s = self.state.settings
        s.source, s.axis, s.extent = self.source.currentText(), self.axis.value() - 1, self.extent.value()
        s.frames, s.fps, s.rotate_deg = self.n_frames.value(), self.fps.value(), self.rotate.value()
        s.width, s.label, s.bounce = self.frame_width.value(), self.label.isChecked(), self.bounce.isChecked()
        s.gif, s.mp4, s.mrc = self.gif.isChecked(), self.mp4.isChecked(), self.mrc.isChecked()
        return s

    # ------------------------------------------------------------------ run
    def _on_run(self, run: Run) -> None:
        self.folder.edit.setText(str(run.folder.root))
        self.axis.setRange(1, run.config.latent_dim)
        self.scatter.clear_polyline()
        self.scatter.set_view(self.state.view)

    def _on_polyline(self, points) -> None:
        self.state.settings.polyline = np.asarray(points)
        self.source.setCurrentText(DRAWN)

    def _clear_polyline(self) -> None:
        self.state.settings.polyline = None
        self.scatter.clear_polyline()

    # ------------------------------------------------------------------ recording
    def record(self) -> bool:
        """Render the frames in a worker; capture each in the GUI thread; write the files at the end."""
        from napari.qt.threading import thread_worker

        if self.recording:
            return False
        settings = self.read_settings()
        try:
            points = self.state.points()
            if not self.output.text():
                raise ValueError("choose an output file")
            if not self.state.outputs(self.output.text()):
                raise ValueError("tick at least one output format")
        except Exception as exc:
            self.status.setText(error_text(exc))
            notify_error(exc)
            return False
        self.recording, self.frames, self.volumes, self.written = True, [], [], {}
        self._points = points
        self._prepare_canvas(settings)
        self.progress.setRange(0, len(points))
        self.progress.setValue(0)
        self.record_button.setEnabled(False)
        self.status.setText("rendering ...")
        self.worker = thread_worker(self.state.volumes, start_thread=False, ignore_errors=True)(points)
        self.worker.yielded.connect(self._capture)
        self.worker.finished.connect(self._finish)
        self.worker.errored.connect(self._failed)
        self.worker.start()
        return True

    def _prepare_canvas(self, settings: MovieSettings) -> None:
        run = self.state.run
        overlay = self.viewer.text_overlay
        self._restore = (overlay.visible, overlay.text, tuple(self.viewer.camera.angles))
        self._start_angles = tuple(self.viewer.camera.angles)
        if _layers.find_layer(self.viewer, _layers.DENSITY) is None:
            _layers.show_volume(self.viewer, _layers.DENSITY, run.generate(self._points[0]), run.pixel_size,
                                iso_threshold=iso_threshold(run))
        if self.viewer.dims.ndisplay != 3:
            self.viewer.dims.ndisplay = 3
        overlay.visible = settings.label
        overlay.font_size = 12
        overlay.color = "white"

    def _capture(self, item) -> None:
        i, z, volume = item
        _layers.show_volume(self.viewer, _layers.DENSITY, volume, self.state.run.pixel_size)
        self.viewer.camera.angles = self.state.camera_angles(self._start_angles, i, len(self._points))
        self.viewer.text_overlay.text = self.state.label(z)
        self.frames.append(self.viewer.screenshot(canvas_only=True, flash=False))
        self.volumes.append(volume)
        self.progress.setValue(i + 1)

    def _failed(self, exc: BaseException) -> None:
        self.status.setText(error_text(exc))
        notify_error(exc)

    def _finish(self) -> None:
        visible, text, angles = self._restore
        self.viewer.text_overlay.visible, self.viewer.text_overlay.text = visible, text
        self.viewer.camera.angles = angles
        self.record_button.setEnabled(True)
        try:
            if len(self.frames) == len(self._points):
                self.written = self._write()
                self.status.setText("wrote " + ", ".join(str(p) for p in self.written.values()))
        except Exception as exc:
            self._failed(exc)
        finally:
            self.recording = False

    def _write(self) -> dict[str, Path]:
        s = self.state.settings
        targets = self.state.outputs(self.output.text())
        frames = resize_frames(self.frames, s.width) if ("gif" in targets or "mp4" in targets) else []
        if "gif" in targets:
            write_gif(targets["gif"], frames, s.fps)
        if "mp4" in targets:
            write_mp4(targets["mp4"], frames, s.fps)
        if "mrc" in targets:
            write_volume_series(targets["mrc"], self.volumes, self._points, self.state.run.pixel_size)
        return targets
