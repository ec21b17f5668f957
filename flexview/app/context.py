"""What the flexview widgets docked in one viewer share: the chosen inputs and the open run.

The Data widget publishes its inputs here (the Train widget fills its form from them), the Mesh
widget the mesh file it saved (Train's ``mesh`` field follows); Explore,
Train and the command ``open_run_in_viewer`` publish the run they open (Movie and Select follow).
Plain Python (psygnal), no Qt: the Qt widgets connect to the signals.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from pathlib import Path

from psygnal import Signal

from flexview.device import resolve_device
from flexview.run import Run, load_run


@dataclass
class DataInputs:
    """Training inputs chosen in the Data widget (paths as given by the user)."""

    particles: str
    consensus_map: str
    mask: str | None = None
    project_dir: str | None = None
    box: int = 64


class FlexviewContext:
    """Shared state of the flexview widgets of one viewer.

    Signals: ``inputs_changed(DataInputs)``, ``mesh_changed(str)``, ``run_changed(Run)``.
    """

    inputs_changed = Signal(object)
    mesh_changed = Signal(object)
    run_changed = Signal(object)

    def __init__(self):
        self.inputs: DataInputs | None = None
        self.mesh_path: str | None = None
        self.run: Run | None = None

    def set_mesh(self, path: str | Path) -> None:
        """Share a saved mesh file (.npz) for training."""
        self.mesh_path = str(path)
        self.mesh_changed.emit(self.mesh_path)

    def set_inputs(self, inputs: DataInputs) -> None:
        self.inputs = inputs
        self.inputs_changed.emit(inputs)

    def set_run(self, run: Run) -> None:
        if run is self.run:
            return
        self.run = run
        self.run_changed.emit(run)

    def open_run(self, folder: str | Path, device: str = "auto") -> Run:
        """Load the run folder (on the GPU when ``device`` is "auto" and one is present) and share it."""
        run = load_run(folder, device=str(resolve_device(device)))
        self.set_run(run)
        return run


_CONTEXTS: dict[int, FlexviewContext] = {}


def context_for(viewer) -> FlexviewContext:
    """The :class:`FlexviewContext` of ``viewer`` (created on first use, dropped with the viewer)."""
    viewer = getattr(viewer, "__wrapped__", viewer)  # plugin widgets get the viewer behind a proxy
    key = id(viewer)
    if key not in _CONTEXTS:
        _CONTEXTS[key] = FlexviewContext()
        weakref.finalize(viewer, _CONTEXTS.pop, key, None)
    return _CONTEXTS[key]
