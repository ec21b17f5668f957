"""Small Qt helpers shared by the flexview dock widgets."""
from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import QObject, QSize, Qt, Signal
from qtpy.QtWidgets import (
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from flexview.app.messages import error_text


class PathPicker(QWidget):
    """A line edit and a "…" button that opens a file or folder dialog.

    ``mode``: ``"open"`` (existing file), ``"save"`` (new file) or ``"dir"`` (folder).
    ``filters``: Qt name filter, e.g. ``"Particles (*.star *.cs)"``.
    """

    changed = Signal(str)

    def __init__(self, mode: str = "open", filters: str = "", placeholder: str = "", parent=None):
        super().__init__(parent)
        self.mode, self.filters = mode, filters
        self.edit = QLineEdit()
        self.edit.setPlaceholderText(placeholder)
        self.edit.editingFinished.connect(lambda: self.changed.emit(self.text()))
        button = QPushButton("…")
        button.setFixedWidth(28)
        button.setToolTip("browse")
        button.clicked.connect(self._browse)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.edit)
        layout.addWidget(button)

    def text(self) -> str:
        return self.edit.text().strip()

    def path(self) -> Path | None:
        return Path(self.text()) if self.text() else None

    def set_text(self, text: str | Path | None) -> None:
        self.edit.setText("" if text is None else str(text))
        self.changed.emit(self.text())

    def _browse(self) -> None:
        start = self.text() or str(Path.cwd())
        if self.mode == "dir":
            chosen = QFileDialog.getExistingDirectory(self, "Choose a folder", start)
        elif self.mode == "save":
            chosen, _ = QFileDialog.getSaveFileName(self, "Save as", start, self.filters)
        else:
            chosen, _ = QFileDialog.getOpenFileName(self, "Open", start, self.filters)
        if chosen:
            self.set_text(chosen)


class _VerticalScroll(QScrollArea):
    """Scrolls vertically only; asks for the full width of its contents."""

    def _extra(self) -> int:
        return self.verticalScrollBar().sizeHint().width() + 2

    def sizeHint(self) -> QSize:
        inner = self.widget().sizeHint()
        return QSize(inner.width() + self._extra(), min(inner.height(), 900))

    def minimumSizeHint(self) -> QSize:
        return QSize(self.widget().minimumSizeHint().width() + self._extra(), 120)


def scroll_layout(widget: QWidget) -> QVBoxLayout:
    """Give ``widget`` a vertical scroll area and return the layout of its contents, so a tall
    dock widget never forces the viewer window to grow."""
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    area = _VerticalScroll()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    inner = QWidget()
    area.setWidget(inner)
    outer.addWidget(area)
    return QVBoxLayout(inner)


def run_folder_row(layout: QVBoxLayout, on_open) -> PathPicker:
    """Add a "Run" heading and a run-folder picker with an Open button to ``layout``; returns the picker."""
    from qtpy.QtWidgets import QHBoxLayout, QPushButton

    layout.addWidget(heading("Run"))
    row = QHBoxLayout()
    picker = PathPicker("dir", placeholder="run folder (or open one in Explore)")
    open_button = QPushButton("Open")
    open_button.clicked.connect(on_open)
    row.addWidget(picker)
    row.addWidget(open_button)
    layout.addLayout(row)
    return picker


def heading(text: str) -> QLabel:
    label = QLabel(f"<b>{text}</b>")
    label.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
    return label


def notify_error(exc: BaseException | str) -> None:
    """Show an error in napari's notification area (the viewer stays usable)."""
    from napari.utils.notifications import show_error

    show_error(exc if isinstance(exc, str) else error_text(exc))


def notify_info(text: str) -> None:
    from napari.utils.notifications import show_info

    show_info(text)


class Relay(QObject):
    """Carries a value from any thread to the GUI thread (queued signal)."""

    arrived = Signal(object)
