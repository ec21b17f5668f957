"""MRC maps and stacks: float32 data, voxel size in the header, origin 0."""
from __future__ import annotations

import warnings
from pathlib import Path

import mrcfile
import numpy as np

from flexview.errors import FlexviewInputError
from flexview.io._atomic import atomic_path


def _open(path: Path, mode: str = "r", mmap: bool = False):
    if not path.is_file():
        raise FlexviewInputError("file not found", path)
    try:
        with warnings.catch_warnings():  # permissive mode warns about old headers; shapes are checked here
            warnings.simplefilter("ignore", RuntimeWarning)
            if mmap:
                return mrcfile.mmap(path, mode=mode, permissive=True)
            return mrcfile.open(path, mode=mode, permissive=True)
    except (ValueError, OSError) as exc:
        raise FlexviewInputError(f"not a readable MRC file ({exc})", path, "header") from exc


def read_map(path: str | Path) -> tuple[np.ndarray, float]:
    """Read a 3-D map.

    Returns
    -------
    volume : ndarray (z, y, x) float32
    voxel_size : float
        Å per voxel (from the header's ``voxel_size.x``; 1.0 where the header says 0).
    """
    path = Path(path)
    with _open(path) as m:
        if m.data is None or m.data.ndim != 3:
            raise FlexviewInputError(f"expected a 3-D map, found shape {None if m.data is None else m.data.shape}",
                                     path, "data")
        data = np.asarray(m.data, dtype=np.float32).copy()
        voxel = float(m.voxel_size.x) or 1.0
    if not np.isfinite(data).all():
        raise FlexviewInputError("map contains NaN or infinite values", path, "data")
    return data, voxel


def write_map(path: str | Path, volume: np.ndarray, voxel_size: float) -> None:
    """Write a map (or stack) as float32 MRC with ``voxel_size`` (Å), atomically."""
    path = Path(path)
    data = np.ascontiguousarray(volume, dtype=np.float32)
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as m:
            m.set_data(data)
            m.voxel_size = float(voxel_size)
            m.header.origin = (0.0, 0.0, 0.0)
            if data.ndim == 3 and path.suffix.lower() == ".mrcs":
                m.set_image_stack()


def write_stack(path: str | Path, images: np.ndarray, pixel_size: float) -> None:
    """Write an image stack ``[n, y, x]`` as an MRC stack (``.mrcs``), atomically."""
    path = Path(path)
    data = np.ascontiguousarray(images, dtype=np.float32)
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as m:
            m.set_data(data)
            m.set_image_stack()
            m.voxel_size = float(pixel_size)
            m.header.origin = (0.0, 0.0, 0.0)


def open_stack(path: str | Path) -> np.ndarray:
    """Memory-map an image stack; returns a read-only array ``[n, y, x]`` (a single image → n = 1)."""
    path = Path(path)
    m = _open(path, mmap=True)
    data = m.data
    if data is None:
        raise FlexviewInputError("stack holds no data", path, "data")
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise FlexviewInputError(f"expected an image stack, found shape {data.shape}", path, "data")
    return data


def stack_header(path: str | Path) -> tuple[int, int, int, float]:
    """``(n_images, ny, nx, pixel_size)`` of a stack, reading only the header."""
    path = Path(path)
    with _open(path, mmap=True) as m:
        shape = m.data.shape
        px = float(m.voxel_size.x)
    if len(shape) == 2:
        shape = (1,) + tuple(shape)
    return int(shape[0]), int(shape[1]), int(shape[2]), px


def describe_mrc(path: str | Path, chunk_bytes: int = 1 << 26) -> dict:
    """Header facts and value statistics of an MRC file, read in chunks (memory-mapped).

    Returns
    -------
    dict with ``kind`` ("image", "image stack" or "volume"), ``shape`` (tuple, index order),
    ``axes`` ("y, x", "n, y, x" or "z, y, x"), ``voxel_size`` (Å), ``min``, ``max``, ``mean``, ``std``.

    Raises :class:`FlexviewInputError` (field ``data``) when a value is NaN or infinite.
    """
    path = Path(path)
    with _open(path, mmap=True) as m:
        data = m.data
        if data is None or data.ndim not in (2, 3) or data.size == 0:
            raise FlexviewInputError("no 2-D or 3-D data", path, "data")
        kind, axes = ("image", "y, x") if data.ndim == 2 else (
            ("image stack", "n, y, x") if m.is_image_stack() or path.suffix.lower() == ".mrcs"
            else ("volume", "z, y, x"))
        stats = _chunked_stats(data.reshape(-1, data.shape[-1]), chunk_bytes, path)
        return {"kind": kind, "shape": tuple(int(s) for s in data.shape), "axes": axes,
                "voxel_size": float(m.voxel_size.x), **stats}


def _chunked_stats(rows: np.ndarray, chunk_bytes: int, path: Path) -> dict:
    """min, max, mean, std of a 2-D array read ``chunk_bytes`` at a time (float64 sums)."""
    step = max(1, chunk_bytes // max(1, rows.shape[1] * rows.itemsize))
    lo, hi, total, total_sq = np.inf, -np.inf, 0.0, 0.0
    for start in range(0, rows.shape[0], step):
        chunk = np.asarray(rows[start:start + step], dtype=np.float64)
        if not np.isfinite(chunk).all():
            raise FlexviewInputError("contains NaN or infinite values", path, "data")
        lo, hi = min(lo, chunk.min()), max(hi, chunk.max())
        total += chunk.sum()
        total_sq += np.square(chunk).sum()
    n = rows.size
    mean = total / n
    return {"min": float(lo), "max": float(hi), "mean": float(mean),
            "std": float(np.sqrt(max(total_sq / n - mean * mean, 0.0)))}
