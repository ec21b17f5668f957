"""A matplotlib canvas for dock widgets, coloured like the viewer's theme."""
from __future__ import annotations

from dataclasses import dataclass

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtWidgets import QSizePolicy


@dataclass(frozen=True)
class PlotColors:
    """Colours of a plot: figure background, axes background, text and lines, accent."""

    background: str = "#23242b"
    canvas: str = "#2e333e"
    text: str = "#f0f1f2"
    accent: str = "#66c1ff"
    secondary: str = "#ffb347"


def theme_colors(viewer=None) -> PlotColors:
    """Plot colours from the napari theme of ``viewer`` (dark defaults without one)."""
    try:
        from napari.utils.theme import get_theme

        theme = get_theme(viewer.theme if viewer is not None else "dark")
        return PlotColors(background=theme.background.as_hex(), canvas=theme.foreground.as_hex(),
                          text=theme.text.as_hex())
    except Exception:  # an unknown theme name or an older napari: keep the defaults
        return PlotColors()


class PlotCanvas(FigureCanvasQTAgg):
    """A figure with one axes, styled with :class:`PlotColors`; ``height`` in inches at 100 dpi.

    The axes keep fixed margins in pixels (``margins``: left, right, bottom, top) when the widget
    is resized: cheaper than a layout engine on every draw.
    """

    def __init__(self, colors: PlotColors | None = None, *, width: float = 3.2, height: float = 2.4,
                 margins: tuple[int, int, int, int] = (52, 14, 40, 24), parent=None):
        self.colors = colors or PlotColors()
        self.margins = margins
        figure = Figure(figsize=(width, height), dpi=100, facecolor=self.colors.background)
        super().__init__(figure)
        self.setParent(parent)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumHeight(int(height * 60))
        self.axes = figure.add_subplot(111)
        self.style_axes(self.axes)
        self.mpl_connect("resize_event", lambda _: self._fit_margins())
        self._fit_margins()

    def _fit_margins(self) -> None:
        w, h = self.figure.bbox.width, self.figure.bbox.height
        left, right, bottom, top = self.margins
        if w > left + right + 10 and h > bottom + top + 10:
            self.figure.subplots_adjust(left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h)

    def style_axes(self, axes) -> None:
        """Theme colours on an axes (background, spines, ticks, labels)."""
        c = self.colors
        axes.set_facecolor(c.canvas)
        for spine in axes.spines.values():
            spine.set_color(c.text)
        axes.tick_params(colors=c.text, labelsize=8)
        axes.xaxis.label.set_color(c.text)
        axes.yaxis.label.set_color(c.text)
        axes.title.set_color(c.text)
