"""State of the Select widget: a lasso or box on a 2-D view of the latents → a particle subset →
STAR and .cs files with the latent coordinates as columns ``flexviewLatent1..K``, for RELION
(STAR 3.1) or cryoSPARC (.cs).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from psygnal import Signal

from flexview.app.latent_view import LatentView
from flexview.errors import FlexviewInputError
from flexview.io import read_particles, write_cs, write_star
from flexview.io.particles import ParticleSet
from flexview.run import Run
from flexview.runfolder import LATENT_COLUMN


class SelectState:
    """The run, a view of its latents and the selected particles ``mask`` (M,) bool.

    Signals: ``run_changed(Run)``, ``selection_changed(mask)``.
    """

    run_changed = Signal(object)
    selection_changed = Signal(object)

    def __init__(self):
        self.run: Run | None = None
        self.view: LatentView | None = None
        self.mask: np.ndarray = np.zeros(0, dtype=bool)
        self.polygon: np.ndarray | None = None
        self._particles: ParticleSet | None = None

    def set_run(self, run: Run) -> None:
        self.run, self._particles = run, None
        self.view = LatentView(run.latents)
        self.run_changed.emit(run)
        self.clear()

    def set_view(self, name: str) -> None:
        self.view = LatentView(self.run.latents, name)
        self.clear()

    # ------------------------------------------------------------------ selecting
    def select_polygon(self, polygon: np.ndarray) -> int:
        """Select the particles inside ``polygon`` (P, 2), in the coordinates of :attr:`view`
        (latent coordinates for a K = 2 run). Returns the count."""
        self.polygon = np.asarray(polygon, dtype=float).reshape(-1, 2)
        self.mask = self.view.inside(self.polygon)
        self.selection_changed.emit(self.mask)
        return int(self.mask.sum())

    def invert(self) -> int:
        self.polygon = None
        self.mask = ~self.mask
        self.selection_changed.emit(self.mask)
        return int(self.mask.sum())

    def clear(self) -> None:
        self.polygon = None
        self.mask = np.zeros(0 if self.run is None else len(self.run.latents), dtype=bool)
        self.selection_changed.emit(self.mask)

    @property
    def count(self) -> int:
        return int(self.mask.sum())

    # ------------------------------------------------------------------ export
    def particles(self) -> ParticleSet:
        """The run's input particles (its ``config.particles``), with latent columns added."""
        if self._particles is None:
            cfg = self.run.config
            if not Path(cfg.particles).is_file():
                raise FlexviewInputError(f"the run's particle file {cfg.particles} was not found (a relative "
                                         "path is looked up in the folders above the run folder and in the "
                                         "current folder)", self.run.folder.config, "particles")
            particles = read_particles(cfg.particles, cfg.project_dir)
            z = self.run.latents
            if len(particles) != len(z):
                raise FlexviewInputError(f"the file has {len(particles)} particles but the run has "
                                         f"{len(z)} latent rows", cfg.particles, "particles")
            columns = {LATENT_COLUMN.format(k + 1): z[:, k].astype(np.float64) for k in range(z.shape[1])}
            self._particles = particles.with_columns(**columns)
        return self._particles

    def subset(self) -> ParticleSet:
        if self.count == 0:
            raise ValueError("nothing selected: draw a lasso or a box on the scatter")
        return self.particles().subset(np.nonzero(self.mask)[0])

    def export(self, star: str | Path | None = None, cs: str | Path | None = None) -> list[Path]:
        """Write the selected particles as STAR and/or .cs; returns the paths written."""
        subset = self.subset()
        written = []
        if star:
            write_star(star, subset)
            written.append(Path(star))
        if cs:
            write_cs(cs, subset)
            written.append(Path(cs))
        return written
