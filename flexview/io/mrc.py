"""MRC maps and stacks (MRC2014, Cheng et al. 2015, J. Struct. Biol. 192:146): float32 data, voxel
size in the header, origin 0.

Files are opened strictly. The 1024-byte header is checked first, here: a known ``mode``, positive
``nx``, ``ny``, ``nz`` (and ``mz`` for a volume stack), a non-negative extended header length
``nsymbt``, a finite non-negative voxel size (``cella`` / ``mx``), and a file size equal to
header + extended header + ``nx·ny·nz`` values of the mode's width. Then ``mrcfile`` opens the
file, and every warning it gives is an error, except the two header quirks that real files from
several programs carry and that say nothing about the data: a missing ``MAP`` identifier and an
unrecognised machine stamp (the byte order is then the one that gives a known mode,
little-endian first). Errors are :class:`FlexviewInputError` naming the file and the header field.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np
from mrcfile.dtypes import HEADER_DTYPE

from flexview.errors import FlexviewInputError
from flexview.io._atomic import atomic_path

HEADER_BYTES = 1024
# MRC2014 modes mrcfile reads -> (numpy type, words)
MODES = {0: ("i1", "8-bit integers"), 1: ("i2", "16-bit integers"), 2: ("f4", "32-bit floats"),
         4: ("c8", "complex 32-bit floats"), 6: ("u2", "unsigned 16-bit integers"), 12: ("f2", "16-bit floats")}
REAL_MODES = (0, 1, 2, 6, 12)
# mrcfile warnings about header quirks of real files from other programs; they do not affect the data
TOLERATED = ("Map ID string not found", "Unrecognised machine stamp", "Machine stamp")


@dataclass(frozen=True)
class MrcHeader:
    """The checked facts of an MRC header.

    ``shape`` is the data shape in index order (``(nz, ny, nx)``; ``(n_volumes, mz, ny, nx)`` for
    a volume stack), ``mode`` the MRC2014 mode, ``voxel_size`` Å per voxel along x (0 when unset),
    ``image_stack`` whether the space group says image stack (``ispg`` 0).
    """

    shape: tuple[int, ...]
    mode: int
    voxel_size: float
    image_stack: bool


def read_header(path: str | Path) -> MrcHeader:
    """Check the header of an MRC file against its size; see the module docstring for the checks.

    Raises :class:`FlexviewInputError` naming the file and the field (``file size``, ``mode``,
    ``nx``, ``ny``, ``nz``, ``mz``, ``nsymbt``, ``cella``).
    """
    path = Path(path)
    if not _is_file(path):
        raise FlexviewInputError("file not found", path)
    size = os.path.getsize(path)
    if size < HEADER_BYTES:
        raise FlexviewInputError(f"the file has {size} bytes, fewer than the {HEADER_BYTES}-byte MRC header",
                                 path, "file size")
    with open(path, "rb") as fh:
        raw = fh.read(HEADER_BYTES)
    h = _header_in_byte_order(np.frombuffer(raw, dtype=HEADER_DTYPE)[0], raw)
    mode = int(h["mode"])
    if mode not in MODES:
        raise FlexviewInputError(f"mode {mode} is not an MRC2014 data mode flexview reads "
                                 f"(known: {', '.join(map(str, MODES))})", path, "mode")
    shape = _shape(h, path)
    nsymbt = int(h["nsymbt"])
    if nsymbt < 0:
        raise FlexviewInputError(f"extended header length {nsymbt} is negative", path, "nsymbt")
    _check_size(path, size, HEADER_BYTES + nsymbt, int(np.prod(shape, dtype=np.int64)), mode)
    return MrcHeader(shape, mode, _voxel_size(h, path), int(h["ispg"]) == 0)


def _is_file(path: Path) -> bool:
    """``path.is_file()``, False (not an exception) for a name the system refuses (e.g. too long)."""
    try:
        return path.is_file()
    except OSError:
        return False


def _header_in_byte_order(h: np.void, raw: bytes) -> np.void:
    """The header read in the byte order of its machine stamp; with an unknown stamp, the order
    in which the mode is a known one (little-endian first)."""
    stamp = bytes(h["machst"])
    if stamp[:2] in (b"\x44\x44", b"\x44\x41"):
        return h
    if stamp[:2] == b"\x11\x11":
        return np.frombuffer(raw, dtype=HEADER_DTYPE.newbyteorder(">"))[0]
    if int(h["mode"]) in MODES:
        return h
    swapped = np.frombuffer(raw, dtype=HEADER_DTYPE.newbyteorder(">"))[0]
    return swapped if int(swapped["mode"]) in MODES else h


def _shape(h: np.void, path: Path) -> tuple[int, ...]:
    """Data shape in index order, after checking the dimensions are positive."""
    nx, ny, nz = (int(h[k]) for k in ("nx", "ny", "nz"))
    for name, value in (("nx", nx), ("ny", ny), ("nz", nz)):
        if value <= 0:
            raise FlexviewInputError(f"{name} is {value}: every dimension must be at least 1", path, name)
    ispg, mz = int(h["ispg"]), int(h["mz"])
    if 401 <= ispg <= 630:  # a stack of volumes (MRC2014)
        if mz <= 0 or nz % mz:
            raise FlexviewInputError(f"a volume stack (ispg {ispg}) needs mz to divide nz = {nz}, not mz = {mz}",
                                     path, "mz")
        return nz // mz, mz, ny, nx
    return nz, ny, nx


def _check_size(path: Path, size: int, offset: int, count: int, mode: int) -> None:
    """The file must hold exactly ``offset`` bytes then ``count`` values of ``mode``."""
    width = np.dtype(MODES[mode][0]).itemsize
    expected = offset + count * width
    if size == expected:
        return
    if size < expected:
        raise FlexviewInputError(f"the file is truncated: the header (mode {mode}, {count} values after "
                                 f"{offset} header bytes) needs {expected} bytes, the file has {size}",
                                 path, "file size")
    data = size - offset
    fits = [m for m in MODES if m != mode and data == count * np.dtype(MODES[m][0]).itemsize]
    if fits:
        raise FlexviewInputError(
            f"the header says mode {mode} ({MODES[mode][1]}, {width} bytes each) but the file holds "
            f"{data // count} bytes per value, as mode {fits[0]} ({MODES[fits[0]][1]}) would: the header "
            "does not describe the data", path, "mode")
    raise FlexviewInputError(f"the file has {size} bytes but its header (mode {mode}, {count} values after "
                             f"{offset} header bytes) describes {expected}", path, "file size")


def _voxel_size(h: np.void, path: Path) -> float:
    """Å per voxel along x, ``cella.x / mx``; 0 when unset."""
    mx, cella = int(h["mx"]), float(h["cella"]["x"])
    if mx <= 0 or cella == 0:
        return 0.0
    voxel = cella / mx
    if not np.isfinite(voxel) or voxel < 0:
        raise FlexviewInputError(f"the voxel size cella.x / mx = {cella:g} / {mx} is negative or not a number",
                                 path, "cella")
    return voxel


def _open(path: Path, mmap: bool = False, *, real: bool = True):
    """An open ``mrcfile`` object after :func:`read_header`; every mrcfile warning but the
    tolerated header quirks is an error. ``real`` refuses complex data (mode 4)."""
    header = read_header(path)
    if real and header.mode not in REAL_MODES:
        raise FlexviewInputError(f"mode {header.mode} holds {MODES[header.mode][1]}: expected real values "
                                 f"(modes {', '.join(map(str, REAL_MODES))})", path, "mode")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            m = (mrcfile.mmap if mmap else mrcfile.open)(path, mode="r", permissive=True)
        except (ValueError, OSError) as exc:
            raise FlexviewInputError(f"not a readable MRC file ({exc})", path, "header") from exc
    problems = [str(w.message) for w in caught if not str(w.message).startswith(TOLERATED)]
    if problems or m.data is None:
        m.close()
        raise FlexviewInputError(f"not a readable MRC file ({problems[0] if problems else 'no data'})",
                                 path, "header")
    return m


def read_map(path: str | Path, *, cubic: bool = False) -> tuple[np.ndarray, float]:
    """Read a 3-D map.

    Parameters
    ----------
    path : str or Path
    cubic : bool
        Refuse a map whose edges differ (naming ``nx``, ``ny``, ``nz``).

    Returns
    -------
    volume : ndarray (z, y, x) float32
    voxel_size : float
        Å per voxel (from the header's ``cella.x / mx``; 1.0 where the header says 0).

    Raises
    ------
    FlexviewInputError
        For a header that does not match the file, data that are not 3-D, a non-cubic map when
        ``cubic``, or a NaN or infinite value (field ``data``).
    """
    path = Path(path)
    with _open(path) as m:
        if m.data.ndim != 3:
            raise FlexviewInputError(f"expected a 3-D map, found shape {m.data.shape}", path, "nz")
        if cubic and len(set(m.data.shape)) != 1:
            nz, ny, nx = m.data.shape
            raise FlexviewInputError(f"expected a cubic map, found nx = {nx}, ny = {ny}, nz = {nz}", path,
                                     "nx, ny, nz")
        data = np.asarray(m.data, dtype=np.float32).copy()
        voxel = float(m.voxel_size.x) or 1.0
    if not np.isfinite(data).all():
        count = int((~np.isfinite(data)).sum())
        raise FlexviewInputError(f"the map holds {count} NaN or infinite values", path, "data")
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
            m.add_label("written by flexview")   # lets a later run tell its own outputs from the user's
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
    data = _open(path, mmap=True).data
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise FlexviewInputError(f"expected an image stack, found shape {data.shape}", path, "ispg")
    return data


def stack_header(path: str | Path) -> tuple[int, int, int, float]:
    """``(n_images, ny, nx, pixel_size)`` of a stack from its checked header alone (pixel size in Å,
    0 when unset)."""
    path = Path(path)
    header = read_header(path)
    if len(header.shape) != 3:
        raise FlexviewInputError(f"expected an image stack, found shape {header.shape}", path, "ispg")
    n, ny, nx = header.shape
    return n, ny, nx, header.voxel_size


def describe_mrc(path: str | Path, chunk_bytes: int = 1 << 26) -> dict:
    """Header facts and value statistics of an MRC file, read in chunks (memory-mapped).

    Returns
    -------
    dict with ``kind`` ("image", "image stack" or "volume"), ``shape`` (tuple, index order),
    ``axes`` ("y, x", "n, y, x" or "z, y, x"), ``voxel_size`` (Å), ``min``, ``max``, ``mean``,
    ``std`` (of the finite values; NaN when there are none) and ``non_finite`` (how many values
    are NaN or infinite).
    """
    path = Path(path)
    with _open(path, mmap=True) as m:
        data = m.data
        if data.ndim not in (2, 3):
            raise FlexviewInputError(f"expected 2-D or 3-D data, found shape {data.shape}", path, "ispg")
        kind, axes = ("image", "y, x") if data.ndim == 2 else (
            ("image stack", "n, y, x") if m.is_image_stack() or path.suffix.lower() == ".mrcs"
            else ("volume", "z, y, x"))
        stats = _chunked_stats(data.reshape(-1, data.shape[-1]), chunk_bytes)
        return {"kind": kind, "shape": tuple(int(s) for s in data.shape), "axes": axes,
                "voxel_size": float(m.voxel_size.x), **stats}


def _chunked_stats(rows: np.ndarray, chunk_bytes: int) -> dict:
    """min, max, mean, std of the finite values of a 2-D array read ``chunk_bytes`` at a time
    (float64 sums), and the count of the others."""
    step = max(1, chunk_bytes // max(1, rows.shape[1] * rows.itemsize))
    lo, hi, total, total_sq, n, bad = np.inf, -np.inf, 0.0, 0.0, 0, 0
    for start in range(0, rows.shape[0], step):
        chunk = np.asarray(rows[start:start + step], dtype=np.float64)
        finite = np.isfinite(chunk)
        if not finite.all():
            bad += int((~finite).sum())
            chunk = chunk[finite]
        if chunk.size:
            lo, hi = min(lo, chunk.min()), max(hi, chunk.max())
            total += chunk.sum()
            total_sq += np.square(chunk).sum()
            n += chunk.size
    if n == 0:
        return {"min": np.nan, "max": np.nan, "mean": np.nan, "std": np.nan, "non_finite": bad}
    mean = total / n
    return {"min": float(lo), "max": float(hi), "mean": float(mean),
            "std": float(np.sqrt(max(total_sq / n - mean * mean, 0.0))), "non_finite": bad}
