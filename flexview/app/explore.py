"""State of the Explore widget: a latent point ``z`` picked on a 2-D view of the latents (or
one value per dimension), and the engine's convected density ``run.generate(z)`` there, with
optional flow arrows and the deformed mesh.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from psygnal import Signal

from flexview.app.geometry import deformed_surface, flow_vectors
from flexview.app.latent_view import LatentView
from flexview.model.mesh import auto_threshold
from flexview.run import Run


def iso_threshold(run: Run) -> float:
    """Iso-surface level for the run's maps: the automatic (Otsu) threshold of the canonical map,
    half its maximum when the map has no two classes."""
    canonical = run.model.canonical.volume.detach().cpu().numpy()
    try:
        return auto_threshold(canonical)
    except ValueError:
        return float(canonical.max()) / 2


@dataclass
class Rendered:
    """What the Explore widget shows at one latent point."""

    z: np.ndarray
    volume: np.ndarray                                   # (box, box, box)
    vectors: np.ndarray | None = None                    # napari Vectors data (V, 2, 3)
    surface: tuple[np.ndarray, np.ndarray] | None = None  # deformed mesh (vertices, faces)


class ExploreState:
    """The open run, the 2-D view of its latents and the current latent point ``z`` (K,).

    Signals: ``run_changed(Run)``, ``view_changed(LatentView)``, ``z_changed(ndarray)``.
    """

    run_changed = Signal(object)
    view_changed = Signal(object)
    z_changed = Signal(object)

    def __init__(self):
        self.run: Run | None = None
        self.view: LatentView | None = None
        self.z: np.ndarray | None = None
        self.arrow_scale = 5.0

    def open(self, run: Run) -> None:
        self.run = run
        self.view = LatentView(run.latents)
        self.run_changed.emit(run)
        self.view_changed.emit(self.view)
        self.set_z(np.median(run.latents, axis=0))

    def set_view(self, name: str) -> None:
        if self.run is None:
            return
        self.view = LatentView(self.run.latents, name)
        self.view_changed.emit(self.view)

    def set_z(self, z) -> None:
        z = np.asarray(z, dtype=np.float32).reshape(-1)
        if self.run is None:
            raise ValueError("no run is open")
        if z.shape != (self.run.config.latent_dim,):
            raise ValueError(f"z has {z.size} values, the run has {self.run.config.latent_dim} latent dimensions")
        self.z = z
        self.z_changed.emit(z)

    def pick(self, uv) -> None:
        """Set z from view coordinates ``uv`` (2,) (components outside the view plane kept)."""
        self.set_z(self.view.lift(uv, self.z))

    def set_component(self, k: int, value: float) -> None:
        z = self.z.copy()
        z[k] = value
        self.set_z(z)

    def slider_range(self, k: int) -> tuple[float, float]:
        """Range offered for dimension ``k``: the particles' span, at least ± 3 sd of the prior."""
        values = self.run.latents[:, k]
        lo, hi = float(min(values.min(), -3.0)), float(max(values.max(), 3.0))
        return lo, hi

    def render(self, z: np.ndarray, arrows: bool = False, mesh: bool = False) -> Rendered:
        """Engine calls for one latent point (safe to run off the GUI thread)."""
        volume = self.run.generate(z)
        out = Rendered(z=z, volume=volume)
        if arrows or mesh:
            disp = self.run.displacement(z)
            if arrows:
                out.vectors = flow_vectors(self.run.mesh, disp, self.arrow_scale, min_length_A=1e-3)
            if mesh:
                out.surface = deformed_surface(self.run.mesh, disp)
        return out

    def iso_threshold(self) -> float:
        """Iso-surface level of the open run (see :func:`iso_threshold`)."""
        return iso_threshold(self.run)
