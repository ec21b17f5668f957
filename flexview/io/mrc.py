"""MRC maps and stacks: float32 data, voxel size in the header, origin 0."""
from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np

from flexview.errors import FlexviewInputError
from flexview.io._atomic import atomic_path


def _open(path: Path, mode: str = "r", mmap: bool = False):
    if not path.is_file():
        raise FlexviewInputError("file not found", path)
    try:
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
