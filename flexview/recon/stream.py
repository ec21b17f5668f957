"""Particles streamed in chunks at a reconstruction box, with their poses, CTF and latents.

A full-batch objective visits every particle of a half set once per evaluation, so images are
read lazily, chunk by chunk, and Fourier-cropped on the fly when the reconstruction box is
smaller than the particle box; nothing of size (particles × box²) is ever held in memory.
Optics groups of other pixel sizes or boxes are resampled on the fly to the reference group's
grid, as for training (:mod:`flexview.train.optics`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from flexview.errors import FlexviewInputError
from flexview.io.particles import ImageSource, ParticleSet
from flexview.model.ctf import CTF
from flexview.model.grid import fft2_centered
from flexview.model.pose import Pose
from flexview.train.data import TrainingData
from flexview.train.optics import OpticsGrid

__all__ = ["Chunk", "ParticleStream", "reconstruction_grid"]


def reconstruction_grid(particles: ParticleSet, box: int) -> OpticsGrid:
    """The grid of ``box`` px (even, 8 ≤ box ≤ particles.box) the particles are reconstructed on,
    every optics group resampled to it; refusals name the particle file and ``--box``."""
    if not 8 <= box <= particles.box or box % 2:
        raise FlexviewInputError(f"reconstruction box {box} must be even and between 8 and "
                                 f"the particle box {particles.box}", particles.source, "--box")
    return OpticsGrid(particles, box, field="--box")


@dataclass
class Chunk:
    """One chunk of particles on the compute device.

    ``rows`` are rows of the input particle file; ``spectra`` (B, N, N//2+1) complex are the
    centred DFTs of the images (None when the images were not asked for); ``pose`` and ``ctf``
    the particles' :class:`Pose` and :class:`CTF`; ``z`` (B, K) latents or None.
    """

    rows: np.ndarray
    spectra: Tensor | None
    pose: Pose
    ctf: CTF
    z: Tensor | None


class _CroppedImages:
    """Array-like view ``[i] → images`` of selected particles at another box (for TrainingData)."""

    def __init__(self, stream: ParticleStream):
        self.stream = stream
        self.shape = (len(stream.rows), stream.box, stream.box)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        return self.stream.images(self.stream.rows[index])


class _GridImages(ImageSource):
    """The images of a stream's rows on its grid, as an :class:`ImageSource`."""

    def __init__(self, stream: ParticleStream):
        self.stream, self.box = stream, stream.box

    def __len__(self) -> int:
        return len(self.stream.rows)

    def _read(self, idx):
        return self.stream.images(self.stream.rows[idx])


class ParticleStream:
    """The particles ``rows`` of ``particles`` at reconstruction box ``box``.

    Parameters
    ----------
    particles : ParticleSet with images, poses and CTF.
    rows : int array, rows of the input file to use (e.g. one half set).
    box : reconstruction box in pixels (≤ particles.box, even); None: the particle box. For mixed
        optics groups, the box of a grid spanning the reference group's extent.
    latents : (M, K) latent table in input order (M = len(particles)), or None.
    grid : the :class:`OpticsGrid` of ``particles`` at ``box`` when the caller has it.

    Raises :class:`FlexviewInputError` (the particle file, ``--box``) for a box out of range or
    one that an optics group cannot be resampled to within tolerance.
    """

    def __init__(self, particles: ParticleSet, rows, box: int | None = None,
                 latents: np.ndarray | None = None, *, grid: OpticsGrid | None = None):
        particles.require("images", "poses", "ctf")
        self.particles = particles
        self.rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        self.box = int(box or particles.box)
        if grid is None or grid.box != self.box:
            grid = reconstruction_grid(particles, self.box)
        if latents is not None and len(latents) != len(particles):
            raise FlexviewInputError(f"the run has latents for {len(latents)} particles but the particle "
                                     f"file holds {len(particles)}; use the particles the run was "
                                     "trained on", particles.source, "particles")
        self.latents = None if latents is None else np.asarray(latents, dtype=np.float32)
        self.grid = grid

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def pixel_size(self) -> float:
        """Å per pixel at the reconstruction box."""
        return self.particles.pixel_size * self.particles.box / self.box

    def subset(self, count: int, seed: int = 0) -> ParticleStream:
        """At most ``count`` of these particles, drawn at random (seeded), in file order."""
        if count >= len(self.rows):
            return self
        pick = np.sort(np.random.default_rng(seed).choice(len(self.rows), count, replace=False))
        return ParticleStream(self.particles, self.rows[pick], self.box, self.latents, grid=self.grid)

    def chunks(self, size: int) -> list[np.ndarray]:
        """The rows in consecutive chunks of at most ``size``."""
        return [self.rows[i:i + size] for i in range(0, len(self.rows), max(1, int(size)))]

    def images(self, rows: np.ndarray) -> np.ndarray:
        """Images of input rows ``rows`` at the reconstruction box, (B, N, N) float32."""
        return self.grid.read(rows)

    def load(self, rows: np.ndarray, device, *, with_images: bool = True,
             dtype=torch.float32) -> Chunk:
        """The chunk of input rows ``rows`` on ``device``."""
        rows = np.asarray(rows)
        p = self.particles
        spectra = None
        if with_images:
            spectra = fft2_centered(torch.as_tensor(self.images(rows), dtype=dtype, device=device))
        z = None if self.latents is None else torch.as_tensor(self.latents[rows], device=device)
        pose = Pose.from_arrays(p.rotations[rows], p.origins_A[rows], dtype=dtype, device=device)
        return Chunk(rows=rows, spectra=spectra, pose=pose, ctf=p.ctf.batch(rows, dtype=dtype, device=device),
                     z=z)

    def on_grid(self) -> ParticleSet:
        """These particles as a uniform :class:`ParticleSet` on the reconstruction grid (images
        resampled lazily when read), for a rigid reference of mixed optics groups."""
        p = self.particles.subset(self.rows)
        return replace(p, images=_GridImages(self), pixel_size=self.pixel_size, box=self.box,
                       pixel_sizes=None, boxes=None)

    def training_data(self) -> TrainingData:
        """These particles as :class:`~flexview.train.data.TrainingData` (images read lazily),
        for the calibration of :mod:`flexview.train.calibrate`."""
        p = self.particles
        return TrainingData(images=_CroppedImages(self), pixel_size=self.pixel_size,
                            rotations=p.rotations[self.rows], origins_A=p.origins_A[self.rows],
                            ctf=p.ctf.subset(self.rows), rows=self.rows)
