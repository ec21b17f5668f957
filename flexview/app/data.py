"""State of the Data widget: the particles (STAR or .cs), the consensus map and an optional mask,
what they hold, and the training box. The chosen inputs go to the Train widget.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from psygnal import Signal

from flexview.app.context import DataInputs
from flexview.app.messages import error_text
from flexview.io import read_map, read_particles
from flexview.io.particles import ParticleSet
from flexview.io.summary import particle_summary
from flexview.preprocess import map_at_box

N_SHOWN = 16


class DataState:
    """Inputs of a training run and what they hold. Signal ``changed()`` after every load."""

    changed = Signal()

    def __init__(self):
        self.particles: ParticleSet | None = None
        self.particles_path: Path | None = None
        self.project_dir: Path | None = None
        self.consensus: np.ndarray | None = None
        self.map_pixel_size: float | None = None
        self.map_path: Path | None = None
        self.mask_path: Path | None = None
        self.mask: np.ndarray | None = None
        self.box: int | None = None

    # ------------------------------------------------------------------ loading
    def load_particles(self, path: str | Path, project_dir: str | Path | None = None) -> ParticleSet:
        """Read and validate a STAR or .cs file (every stack opened and checked)."""
        particles = read_particles(path, project_dir or None, validate=True)
        particles.require("images", "poses", "ctf")
        self.particles, self.particles_path = particles, Path(path)
        self.project_dir = Path(project_dir) if project_dir else None
        self.box = self.default_box()
        self.changed.emit()
        return particles

    def load_map(self, path: str | Path) -> np.ndarray:
        self.consensus, self.map_pixel_size = read_map(path)
        self.map_path = Path(path)
        self.changed.emit()
        return self.consensus

    def load_mask(self, path: str | Path | None) -> np.ndarray | None:
        if not path:
            self.mask = self.mask_path = None
        else:
            self.mask, _ = read_map(path)
            self.mask_path = Path(path)
        self.changed.emit()
        return self.mask

    # ------------------------------------------------------------------ facts
    def summary(self) -> list[str]:
        """Lines describing the particles (as ``flexview info`` prints them) and the maps."""
        lines = particle_summary(self.particles) if self.particles is not None else ["no particles loaded"]
        if self.consensus is not None:
            lines.append(f"consensus map: {self.consensus.shape[0]}³ at {self.map_pixel_size:.3f} Å/voxel")
        if self.mask is not None:
            lines.append(f"mask: {self.mask.shape[0]}³")
        return lines

    def default_box(self) -> int:
        """The training box offered first: 64, or the particle box when smaller (even)."""
        return int(min(64, self.particles.box) // 2 * 2)

    def box_range(self) -> tuple[int, int]:
        return 8, int(self.particles.box // 2 * 2)

    def set_box(self, box: int) -> None:
        lo, hi = self.box_range()
        if box % 2 or not lo <= box <= hi:
            raise ValueError(f"training box must be even and between {lo} and {hi}")
        self.box = int(box)
        self.changed.emit()

    def training_pixel_size(self) -> float:
        """Å per pixel at the training box."""
        return self.particles.pixel_size * self.particles.box / self.box

    def check_map(self) -> str:
        """"" when the consensus map fits the particles at the training box, else the reason."""
        if self.particles is None or self.map_path is None:
            return ""
        try:
            map_at_box(self.consensus, self.map_pixel_size, self.box, extent_A=self.particles.extent_A,
                       source=self.map_path)
        except ValueError as exc:
            return error_text(exc)
        return ""

    def sample_images(self, n: int = N_SHOWN) -> np.ndarray:
        """The first ``n`` particle images, (n, box, box) float32."""
        return self.particles.images.read(slice(0, min(n, len(self.particles))))

    def inputs(self) -> DataInputs:
        if self.particles_path is None or self.map_path is None:
            raise ValueError("choose the particles and the consensus map first")
        return DataInputs(particles=str(self.particles_path), consensus_map=str(self.map_path),
                          mask=str(self.mask_path) if self.mask_path else None,
                          project_dir=str(self.project_dir) if self.project_dir else None, box=self.box)
