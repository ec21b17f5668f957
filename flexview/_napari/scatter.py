"""The latent scatter: a density-shaded 2-D histogram of the particles (fast for 10⁶ points) on
which the user picks a latent point, draws a path or lassoes a selection.

Modes: ``"pick"`` (press or drag: :attr:`ScatterCanvas.picked`), ``"lasso"`` and ``"box"``
(:attr:`ScatterCanvas.polygon_drawn`), ``"polyline"`` (each click adds a vertex:
:attr:`ScatterCanvas.polyline_changed`), ``"none"``. Coordinates are those of a
:class:`~flexview.app.latent_view.LatentView`.
"""
from __future__ import annotations

import numpy as np
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.ticker import AutoLocator
from matplotlib.widgets import LassoSelector, RectangleSelector
from qtpy.QtCore import Signal
from scipy.ndimage import gaussian_filter

from flexview._napari._plot import PlotCanvas, PlotColors
from flexview.app.latent_view import LatentView

MODES = ("pick", "lasso", "box", "polyline", "none")
DOTS_UP_TO = 20_000    # fewer particles than this are also drawn as dots over the density
SELECTED = LinearSegmentedColormap.from_list("flexview_selected", [(0.4, 0.76, 1.0, 0.0), (0.4, 0.76, 1.0, 0.9)])


class ScatterCanvas(PlotCanvas):
    """Density image of a :class:`LatentView` with a marker, a path and a selection overlay."""

    picked = Signal(object)            # (2,) view coordinates
    polygon_drawn = Signal(object)     # (P, 2) lasso outline or box corners
    polyline_changed = Signal(object)  # (P, 2) vertices so far

    def __init__(self, colors: PlotColors | None = None, *, mode: str = "pick", max_bins: int = 256,
                 width: float = 3.2, height: float = 3.0, parent=None):
        super().__init__(colors, width=width, height=height, parent=parent)
        self.max_bins = max_bins
        self.bins = 32
        self.view: LatentView | None = None
        self._extent = None
        self._image = self._overlay = self._empty = self._dots = None
        self._background = None
        self._marker, = self.axes.plot([], [], marker="+", markersize=16, markeredgewidth=2,
                                       color="#00ff88", linestyle="none", zorder=5, animated=True)
        self._path, = self.axes.plot([], [], "-o", color="#ffd23f", markersize=3, linewidth=1.5, zorder=4)
        self._outline, = self.axes.plot([], [], "-", color="#66c1ff", linewidth=1.2, zorder=4)
        self._polyline: list[tuple[float, float]] = []
        self._dragging = False
        # no blitting in the selectors: theirs would redraw (and so freeze) the blitted marker
        self._lasso = LassoSelector(self.axes, self._on_polygon, useblit=False, props={"color": "#66c1ff"})
        self._box = RectangleSelector(self.axes, self._on_box, useblit=False,
                                      props={"edgecolor": "#66c1ff", "fill": False})
        self.mpl_connect("draw_event", self._on_draw)
        self.mpl_connect("button_press_event", self._on_press)
        self.mpl_connect("motion_notify_event", self._on_motion)
        self.mpl_connect("button_release_event", self._on_release)
        self.mode = "none"
        self.set_mode(mode)
        self._show_empty()

    # ------------------------------------------------------------------ content
    def _show_empty(self) -> None:
        self.axes.set_xticks([])
        self.axes.set_yticks([])
        self._empty = self.axes.text(0.5, 0.5, "no latents yet", transform=self.axes.transAxes,
                                     ha="center", va="center", color=self.colors.text, fontsize=9)

    def _remove_images(self) -> None:
        for name in ("_image", "_overlay", "_empty", "_dots"):
            artist = getattr(self, name, None)
            if artist is not None:
                artist.remove()
            setattr(self, name, None)

    def set_view(self, view: LatentView | None) -> None:
        """Show the particle density of ``view`` (log-shaded counts)."""
        self.view = view
        self._remove_images()
        if view is None:
            self._show_empty()
            self.draw_idle()
            return
        self._extent = view.extent()
        n = len(view.points)
        self.bins = int(np.clip(2.5 * np.sqrt(n), 32, self.max_bins))
        self._image = self.axes.imshow(self._shade(view.density(self.bins, extent=self._extent)),
                                       origin="lower", extent=self._extent, aspect="auto", cmap="magma",
                                       vmin=0, vmax=1, interpolation="bilinear", zorder=1)
        if n <= DOTS_UP_TO:
            self._dots, = self.axes.plot(view.points[:, 0], view.points[:, 1], ".", markersize=2.0,
                                         color="#f0f1f2", alpha=0.6 if n < 2000 else 0.3, zorder=2)
        self.axes.set_xlim(self._extent[:2])
        self.axes.set_ylim(self._extent[2:])
        self.axes.xaxis.set_major_locator(AutoLocator())
        self.axes.yaxis.set_major_locator(AutoLocator())
        self.axes.set_xlabel(view.labels[0], fontsize=9)
        self.axes.set_ylabel(view.labels[1], fontsize=9)
        self.axes.set_title(f"{len(view.points):,} particles", fontsize=9, color=self.colors.text)
        self.draw_idle()

    @staticmethod
    def _shade(counts: np.ndarray) -> np.ndarray:
        """Counts → display values in [0, 1]: lightly smoothed, logarithmic."""
        smooth = gaussian_filter(counts.astype(np.float64), 0.7)
        top = np.log1p(smooth.max())
        return np.log1p(smooth) / top if top > 0 else smooth

    def set_marker(self, uv) -> None:
        """Mark view point ``uv`` (2,), or nothing for None (blitted: cheap while dragging)."""
        if uv is None:
            self._marker.set_data([], [])
        else:
            self._marker.set_data([uv[0]], [uv[1]])
        if self._background is None:
            self.draw_idle()
            return
        self.restore_region(self._background)
        self.axes.draw_artist(self._marker)
        self.blit(self.axes.bbox)

    def _on_draw(self, event) -> None:
        self._background = self.copy_from_bbox(self.figure.bbox)
        self.axes.draw_artist(self._marker)

    def set_path(self, points) -> None:
        """Draw a path through ``points`` (P, 2) view coordinates (None clears it)."""
        pts = np.zeros((0, 2)) if points is None else np.asarray(points, dtype=float).reshape(-1, 2)
        self._path.set_data(pts[:, 0], pts[:, 1])
        self.draw_idle()

    def set_selection(self, polygon, mask: np.ndarray | None) -> None:
        """Outline ``polygon`` (P, 2) and shade the density of the particles in ``mask`` (M,) bool."""
        pts = np.zeros((0, 2)) if polygon is None else np.asarray(polygon, dtype=float).reshape(-1, 2)
        if len(pts):
            pts = np.vstack([pts, pts[:1]])
        self._outline.set_data(pts[:, 0], pts[:, 1])
        if self._overlay is not None:
            self._overlay.remove()
            self._overlay = None
        if self.view is not None and mask is not None and np.any(mask):
            counts = self.view.density(self.bins, mask=mask, extent=self._extent)
            shade = np.where(counts > 0, 0.4 + 0.6 * np.log1p(counts) / np.log1p(counts.max()), 0.0)
            self._overlay = self.axes.imshow(shade, origin="lower", extent=self._extent, aspect="auto",
                                             cmap=SELECTED, vmin=0, vmax=1, interpolation="nearest", zorder=2)
        self.draw_idle()

    # ------------------------------------------------------------------ interaction
    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {MODES}")
        self.mode = mode
        self._lasso.set_active(mode == "lasso")
        self._box.set_active(mode == "box")

    def clear_polyline(self) -> None:
        self._polyline = []
        self.set_path(None)

    def _inside(self, event) -> bool:
        return self.view is not None and event.inaxes is self.axes and event.xdata is not None

    def _on_press(self, event) -> None:
        if not self._inside(event) or event.button != 1:
            return
        if self.mode == "pick":
            self._dragging = True
            self.picked.emit(np.array([event.xdata, event.ydata]))
        elif self.mode == "polyline":
            self._polyline.append((event.xdata, event.ydata))
            self.set_path(self._polyline)
            self.polyline_changed.emit(np.array(self._polyline))

    def _on_motion(self, event) -> None:
        if self._dragging and self.mode == "pick" and self._inside(event):
            self.picked.emit(np.array([event.xdata, event.ydata]))

    def _on_release(self, event) -> None:
        self._dragging = False

    def _on_polygon(self, vertices) -> None:
        self.polygon_drawn.emit(np.asarray(vertices, dtype=float))

    def _on_box(self, press, release) -> None:
        x0, x1 = sorted((press.xdata, release.xdata))
        y0, y1 = sorted((press.ydata, release.ydata))
        self.polygon_drawn.emit(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=float))
