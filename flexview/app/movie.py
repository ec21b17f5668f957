"""State of the Movie widget: a path through latent space (one axis ± k sd, or a polyline drawn
on a 2-D view of the latents), the engine's density at each frame, and the frame writers (GIF
through imageio, H.264 MP4 through imageio-ffmpeg).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from psygnal import Signal

from flexview.app.latent_view import LatentView
from flexview.io._atomic import atomic_path
from flexview.run import Run

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
