"""Particles prepared for training: cropped to the training box, cached on disk, served in batches."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from flexview.io._atomic import atomic_path
from flexview.io.particles import ParticleSet
from flexview.model.ctf import CTF, CTFParams
from flexview.model.forward import FlexForwardModel
from flexview.model.grid import fft2_centered
from flexview.model.pose import Pose
from flexview.preprocess import fourier_crop


@dataclass
class Batch:
    """One minibatch on the training device.

    ``rows`` (B,) index the training set; ``spectra`` (B, N, N//2+1) complex are the centred DFTs
    of the images; ``pose`` their :class:`Pose`; ``ctf`` their CTF, evaluated once on the
    forward model's CTF grid (:meth:`FlexForwardModel.ctf_image`, (B, n, n//2+1)) or, for a
    batch loaded without a model, the :class:`CTF` parameters. Either goes straight to
    :meth:`FlexForwardModel.render_spectra`.
    """

    rows: np.ndarray
    spectra: Tensor
    pose: Pose
    ctf: CTF | Tensor

    def __len__(self) -> int:
        return len(self.rows)

    def select(self, index: np.ndarray) -> "Batch":
        """The particles at positions ``index`` (int array) of this batch."""
        idx = torch.as_tensor(np.asarray(index), device=self.spectra.device)
        return Batch(self.rows[index], self.spectra[idx], self.pose[idx], self.ctf[idx])


@dataclass
class TrainingData:
    """The particles of a run at the training box.

    Attributes
    ----------
    images : ndarray (M, N, N) float32, memory-mapped from the run's cache
    pixel_size : float, Å per pixel at the training box N
    rotations : ndarray (M, 3, 3); origins_A : ndarray (M, 2); ctf : CTFParams
    rows : ndarray (M,), the particles' indices in the input file
    """

    images: np.ndarray
    pixel_size: float
    rotations: np.ndarray
    origins_A: np.ndarray
    ctf: CTFParams
    rows: np.ndarray

    @property
    def box(self) -> int:
        return self.images.shape[-1]

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, rows: np.ndarray, device, *, model: FlexForwardModel | None = None,
              dtype=torch.float32) -> Batch:
        """Load the particles ``rows`` (indices into this set) onto ``device``; with ``model``,
        their CTF is evaluated on its CTF grid (:meth:`FlexForwardModel.ctf_image`)."""
        rows = np.asarray(rows)
        images = torch.as_tensor(np.asarray(self.images[rows]), dtype=dtype, device=device)
        ctf = self.ctf.batch(rows, dtype=dtype, device=device)
        pose = Pose.from_arrays(self.rotations[rows], self.origins_A[rows], dtype=dtype, device=device)
        return Batch(rows=rows, spectra=fft2_centered(images), pose=pose,
                     ctf=ctf if model is None else model.ctf_image(ctf))


def prepare_training_data(particles: ParticleSet, box: int, cache: str | Path, *, rows=None,
                          chunk: int = 512, progress=None) -> TrainingData:
    """Crop the particles to ``box`` in Fourier space and cache them as ``cache`` (.npy, mmap).

    An existing cache of the right shape is reused (``--resume``). ``rows`` selects particles of
    ``particles`` (default all). Needs poses and CTF.
    """
    particles.require("images", "poses", "ctf")
    rows = np.arange(len(particles)) if rows is None else np.asarray(rows)
    cache = Path(cache)
    shape = (len(rows), box, box)
    if not _cache_matches(cache, shape):
        _write_cache(particles, rows, box, cache, chunk, progress)
    images = np.load(cache, mmap_mode="r", allow_pickle=False)
    return TrainingData(images=images, pixel_size=particles.pixel_size * particles.box / box,
                        rotations=particles.rotations[rows], origins_A=particles.origins_A[rows],
                        ctf=particles.ctf.subset(rows), rows=rows)


def _cache_matches(cache: Path, shape) -> bool:
    if not cache.is_file():
        return False
    try:
        return np.load(cache, mmap_mode="r", allow_pickle=False).shape == shape
    except (ValueError, OSError):
        return False


def _write_cache(particles: ParticleSet, rows, box, cache: Path, chunk, progress) -> None:
    with atomic_path(cache) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(rows), box, box))
        for start in range(0, len(rows), chunk):
            sel = rows[start:start + chunk]
            images = particles.images.read(sel)
            out[start:start + len(sel)] = images if box == particles.box else fourier_crop(images, box)[0]
            if progress is not None:
                progress(min(start + chunk, len(rows)), len(rows))
        out.flush()
        del out
