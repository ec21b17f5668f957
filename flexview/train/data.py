"""Particles prepared for training: cropped to the training box, cached on disk, served in batches."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from flexview.io._atomic import atomic_path, write_text_atomic
from flexview.io.particles import ParticleSet, stack_references
from flexview.model.ctf import CTF, CTFParams
from flexview.model.forward import FlexForwardModel
from flexview.model.grid import fft2_centered
from flexview.model.pose import Pose
from flexview.train.optics import OpticsGrid, Resampling


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
    resampling : the optics groups' way to the training grid, reference group first (one entry for
        a uniform set; see :mod:`flexview.train.optics`)
    """

    images: np.ndarray
    pixel_size: float
    rotations: np.ndarray
    origins_A: np.ndarray
    ctf: CTFParams
    rows: np.ndarray
    resampling: tuple[Resampling, ...] = ()

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

    Optics groups of other pixel sizes or boxes are resampled to the reference group's grid
    (:class:`~flexview.train.optics.OpticsGrid`, which refuses, before anything is written, a
    group it cannot bring within tolerance).

    An existing cache is reused (``--resume``) only when the fingerprint stored beside it
    (``cache`` with suffix ``.json``, see :func:`cache_fingerprint`) equals the one of this call;
    otherwise it is rebuilt. ``rows`` selects particles of ``particles`` (default all). Needs
    poses and CTF.
    """
    particles.require("images", "poses", "ctf")
    grid = OpticsGrid(particles, box)
    rows = np.arange(len(particles)) if rows is None else np.asarray(rows)
    cache = Path(cache)
    shape = (len(rows), box, box)
    fingerprint = cache_fingerprint(particles, rows, box)
    if not _cache_matches(cache, shape, fingerprint):
        _write_cache(grid, rows, box, cache, chunk, progress, fingerprint)
    images = np.load(cache, mmap_mode="r", allow_pickle=False)
    return TrainingData(images=images, pixel_size=particles.pixel_size * particles.box / box,
                        rotations=particles.rotations[rows], origins_A=particles.origins_A[rows],
                        ctf=particles.ctf.subset(rows), rows=rows, resampling=tuple(grid.plan))


def cache_fingerprint(particles: ParticleSet, rows: np.ndarray, box: int, **extra) -> dict | None:
    """What a cache of the particles ``rows`` at ``box`` is made from, as JSON-ready values.

    The metadata file and every image stack used (absolute path, size in bytes, modification
    time in ns), a SHA-256 digest of the rows with their stack, image number, sign and (for
    mixed optics groups) pixel size and box, the training box, the particle box and pixel size
    (Å), and ``extra`` (further settings the cached pixels depend on; JSON numbers, strings and
    lists). None when the images are not read from files: such a cache is never reused.
    """
    refs = stack_references(particles.images)
    if refs is None:
        return None
    rows = np.asarray(rows, dtype=np.int64)
    digest = hashlib.sha256(rows.tobytes())
    for values in (refs.file_index[rows], refs.slice_index[rows], refs.factor[rows],
                   getattr(particles, "pixel_sizes", None), getattr(particles, "boxes", None)):
        if values is not None:
            digest.update(np.ascontiguousarray(np.asarray(values)[rows]).tobytes())
    used = np.unique(refs.file_index[rows])
    return {"format": 1, "source": _stamp(particles.source), "stacks": [_stamp(refs.paths[i]) for i in used],
            "rows": len(rows), "digest": digest.hexdigest(), "box": int(box), "particle_box": int(particles.box),
            "pixel_size": float(particles.pixel_size), **extra}


def _stamp(path) -> dict | None:
    if path is None:
        return None
    path = Path(os.path.abspath(path))
    try:
        stat = path.stat()
    except OSError:
        return {"path": str(path)}
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _fingerprint_path(cache: Path) -> Path:
    return cache.with_suffix(".json")


def _cache_matches(cache: Path, shape, fingerprint: dict | None) -> bool:
    if fingerprint is None or not cache.is_file():
        return False
    try:
        stored = json.loads(_fingerprint_path(cache).read_text())
        return stored == fingerprint and np.load(cache, mmap_mode="r", allow_pickle=False).shape == shape
    except (ValueError, OSError):
        return False


def _write_cache(grid: OpticsGrid, rows, box, cache: Path, chunk, progress, fingerprint=None) -> None:
    """Write the cache, then its fingerprint (removed first, so a kill in between never pairs
    new pixels with an old fingerprint)."""
    _fingerprint_path(cache).unlink(missing_ok=True)
    with atomic_path(cache) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(rows), box, box))
        for start in range(0, len(rows), chunk):
            sel = rows[start:start + chunk]
            out[start:start + len(sel)] = grid.read(sel)
            if progress is not None:
                progress(min(start + chunk, len(rows)), len(rows))
        out.flush()
        del out
    if fingerprint is not None:
        write_text_atomic(_fingerprint_path(cache), json.dumps(fingerprint, indent=1) + "\n")
