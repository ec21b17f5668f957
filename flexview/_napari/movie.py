"""Movie widget: a path through latent space (one axis ± k sd, or a polyline drawn on the
scatter), frames rendered by the engine off the GUI thread, shown in the viewer and captured as
screenshots, written as GIF and MP4, and the volumes as an MRC series.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from psygnal import Signal
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
from flexview._napari._context import FollowsContextRun, context_for
from flexview._napari._plot import theme_colors
from flexview._napari._qt import PathPicker, error_text, heading, notify_error, run_folder_row, scroll_layout
from flexview._napari.latent_view import LatentView
from flexview._napari.scatter import ScatterCanvas
from flexview.io._atomic import atomic_path
from flexview.model.mesh import auto_threshold
from flexview.run import Run, write_volume_series

AXIS, DRAWN = "latent axis", "drawn path"


@dataclass
class MovieSettings:
    """What to record. ``rotate_deg``: camera turn over the whole movie; ``bounce``: the path
    forth and back (a seamless loop); ``width``: frame width in pixels (0: the canvas size)."""

    source: str = AXIS
    axis: int = 0
    extent: float = 1.5
    frames: int = 21
    fps: float = 10.0
    rotate_deg: float = 0.0
    label: bool = True
    bounce: bool = False
    width: int = 0
    gif: bool = True
    mp4: bool = False
    mrc: bool = False
    polyline: np.ndarray | None = field(default=None, repr=False)


class MovieState:
    """The run, its latent view and the movie settings. Signal ``run_changed(Run)``."""

    run_changed = Signal(object)

    def __init__(self):
        self.run: Run | None = None
        self.view: LatentView | None = None
        self.settings = MovieSettings()

    def set_run(self, run: Run) -> None:
        self.run = run
        self.view = LatentView(run.latents)
        self.settings.polyline = None
        self.run_changed.emit(run)

    def points(self) -> np.ndarray:
        """Latent points of the frames, (frames, K) float32 ((2 · frames − 2, K) forth and back)."""
        s = self.settings
        if self.run is None:
            raise ValueError("open a run first")
        if s.frames < 2:
            raise ValueError("a movie needs at least 2 frames")
        if s.source == DRAWN:
            if s.polyline is None or len(s.polyline) < 2:
                raise ValueError("draw a path on the scatter first (click at least two points)")
            points = self.view.along(s.polyline, s.frames, np.median(self.run.latents, axis=0))
        else:
            points = self.run.axis_values(s.axis, s.frames, s.extent)
        return np.concatenate([points, points[-2:0:-1]]) if s.bounce else points

    def volumes(self, points: np.ndarray):
        """Generator of ``(i, z, volume)``: the engine's density at each point (any thread; one
        torch CPU thread there, as the GUI thread draws each frame meanwhile)."""
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for i, z in enumerate(points):
                yield i, z, self.run.generate(z)
        finally:
            torch.set_num_threads(previous)  # the worker's thread is pooled

    def camera_angles(self, start: tuple[float, float, float], i: int, n: int) -> tuple[float, float, float]:
        """Camera Euler angles (degrees) of frame ``i`` of ``n``: ``start`` turned about the
        vertical axis of the view by ``rotate_deg · i / n``."""
        turn = self.settings.rotate_deg * i / max(n, 1)
        return (start[0], start[1] + turn, start[2])

    @staticmethod
    def label(z: np.ndarray) -> str:
        return "z = (" + ", ".join(f"{v:+.2f}" for v in z) + ")"

    def outputs(self, base: str | Path) -> dict[str, Path]:
        """Files to write for ``base`` (its suffix replaced): ``gif``, ``mp4``, ``mrc`` (a folder)."""
        base = Path(base)
        stem = base.with_suffix("") if base.suffix.lower() in (".gif", ".mp4", ".mrc") else base
        s, out = self.settings, {}
        if s.gif:
            out["gif"] = stem.with_suffix(".gif")
        if s.mp4:
            out["mp4"] = stem.with_suffix(".mp4")
        if s.mrc:
            out["mrc"] = stem.parent / f"{stem.name}_frames"
        return out


def resize_frames(frames: list[np.ndarray], width: int) -> list[np.ndarray]:
    """Frames (H, W, 3|4) uint8 scaled to ``width`` pixels (0: unchanged), RGB, even sizes."""
    from PIL import Image

    out = []
    for frame in frames:
        image = Image.fromarray(np.ascontiguousarray(frame[..., :3]))
        if width and width != image.width:
            image = image.resize((width, max(2, round(image.height * width / image.width))), Image.LANCZOS)
        array = np.asarray(image)
        out.append(array[: array.shape[0] // 2 * 2, : array.shape[1] // 2 * 2])
    return out


def write_gif(path: Path, frames: list[np.ndarray], fps: float) -> None:
    """An animated GIF that loops, atomically."""
    import imageio.v3 as iio

    with atomic_path(path) as tmp:
        iio.imwrite(tmp, np.stack(frames), extension=".gif", duration=1000.0 / fps, loop=0)


def write_mp4(path: Path, frames: list[np.ndarray], fps: float) -> None:
    """An H.264 MP4 (yuv420p, plays everywhere) through imageio-ffmpeg, atomically.
    Frames must be RGB uint8 of even width and height (see :func:`resize_frames`)."""
    import imageio_ffmpeg

    height, width = frames[0].shape[:2]
    with atomic_path(path) as tmp:
        writer = imageio_ffmpeg.write_frames(str(tmp), (width, height), fps=fps, codec="libx264", quality=8,
                                             pix_fmt_out="yuv420p", macro_block_size=1,
                                             output_params=["-f", "mp4"])
        writer.send(None)  # start ffmpeg
        try:
            for frame in frames:
                writer.send(np.ascontiguousarray(frame))
        finally:
            writer.close()


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
            first = run.generate(self._points[0])
            canonical = run.model.canonical.volume.detach().cpu().numpy()
            try:
                threshold = auto_threshold(canonical)
            except ValueError:
                threshold = float(canonical.max()) / 2
            _layers.show_volume(self.viewer, _layers.DENSITY, first, run.pixel_size, iso_threshold=threshold)
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
