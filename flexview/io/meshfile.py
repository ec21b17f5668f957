"""Tetrahedral meshes on disk: a NumPy ``.npz`` archive (no pickled objects).

==================  ======================  ====================================================
key                 dtype, shape            :class:`~flexview.model.mesh.TetMesh` field
==================  ======================  ====================================================
``vertices``        float64 (V, 3)          ``vertices``, (x, y, z) in Å
``cells``           int64 (C, 4)            ``cells``, vertex indices, positively oriented
``rigidity_weight`` float64 (C,)            ``rigidity_weight``
``pinned``          bool (V,)               ``pinned``
``segment``         int64 (C,)              ``segment``
``box``             int64 scalar            ``box`` (pixels)
``pixel_size``      float64 scalar          ``pixel_size`` (Å/px)
``grid_origin``     float64 (3,), optional  ``grid_origin`` (Å) of a regular mesh
``grid_spacing``    float64 scalar, opt.    ``grid_spacing`` (Å)
``grid_shape``      int64 (3,), optional    ``grid_shape`` (cubes along x, y, z)
==================  ======================  ====================================================

The three ``grid_*`` keys are written together or not at all.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from flexview.errors import FlexviewInputError
from flexview.io._atomic import atomic_path
from flexview.io.problems import load_refusal
from flexview.model.mesh import TetMesh

ARRAYS = ("vertices", "cells", "rigidity_weight", "pinned", "segment")
SCALARS = ("box", "pixel_size")
GRID = ("grid_origin", "grid_spacing", "grid_shape")


def write_mesh(path: str | Path, mesh: TetMesh) -> None:
    """Write ``mesh`` to an ``.npz`` file at ``path``, atomically (see the module table)."""
    data = {name: getattr(mesh, name) for name in ARRAYS}
    data.update(box=np.int64(mesh.box), pixel_size=np.float64(mesh.pixel_size))
    if mesh.grid_origin is not None:
        data.update(grid_origin=mesh.grid_origin, grid_spacing=np.float64(mesh.grid_spacing),
                    grid_shape=mesh.grid_shape)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **data)


def read_mesh(path: str | Path) -> TetMesh:
    """Read a mesh written by :func:`write_mesh`.

    Raises
    ------
    FlexviewInputError
        Naming the file, and the key at fault where there is one: the file is missing or not an
        ``.npz`` archive, a key is missing or holds pickled objects, an array has another kind of
        value or shape than the module table says (floats where indices belong, a NaN vertex, a
        box that is not a positive whole number), or the arrays do not make a valid mesh (wrong
        lengths, a vertex index out of range).
    """
    path = Path(path)
    data = _arrays(path)
    for name in ARRAYS + SCALARS:
        if name not in data:
            raise FlexviewInputError("missing array in mesh file", path, name)
    present = [k for k in GRID if k in data]
    if present and len(present) != len(GRID):
        missing = next(k for k in GRID if k not in data)
        raise FlexviewInputError(f"{', '.join(present)} given without {missing}", path, missing)
    _check_arrays(data, path)
    try:
        return TetMesh(**{k: data[k] for k in ARRAYS}, box=int(data["box"]),
                       pixel_size=float(data["pixel_size"]), **{k: data.get(k) for k in GRID})
    except (FlexviewInputError, ValueError, TypeError) as exc:
        field = getattr(exc, "field", None)
        raise FlexviewInputError(f"invalid mesh ({exc})", path, field) from exc


# key -> (allowed numpy kinds, shape with None for "any length", values finite, lower bound or None)
KINDS = {"vertices": ("fiu", (None, 3), True, None), "cells": ("iu", (None, 4), True, 0),
         "rigidity_weight": ("fiu", (None,), True, 0.0), "pinned": ("b", (None,), False, None),
         "segment": ("iu", (None,), True, None), "grid_origin": ("fiu", (3,), True, None),
         "grid_shape": ("iu", (3,), True, 1)}
SCALAR_KINDS = {"box": "iu", "pixel_size": "fiu", "grid_spacing": "fiu"}
WORDS = {"f": "floats", "i": "integers", "u": "integers", "b": "booleans"}


def _check_arrays(data: dict[str, np.ndarray], path: Path) -> None:
    """Kinds, shapes and values of the arrays against the module table; errors name the key."""
    for key, (kinds, shape, finite, low) in KINDS.items():
        a = data.get(key)
        if a is None:
            continue
        if a.dtype.kind not in kinds:
            raise FlexviewInputError(f"expected {WORDS[kinds[0]]}, found dtype {a.dtype}", path, key)
        if a.ndim != len(shape) or any(want is not None and got != want for got, want in zip(a.shape, shape)):
            wanted = tuple("N" if want is None else want for want in shape)
            raise FlexviewInputError(f"expected shape {wanted}, found {a.shape}", path, key)
        if finite and a.dtype.kind == "f" and not np.isfinite(a).all():
            raise FlexviewInputError(f"{int((~np.isfinite(a)).sum())} values are NaN or infinite", path, key)
        if low is not None and a.size and a.min() < low:
            raise FlexviewInputError(f"values must be at least {low}, found {a.min()}", path, key)
    for key, kinds in SCALAR_KINDS.items():
        a = data.get(key)
        if a is None:
            continue
        if a.dtype.kind not in kinds or a.size != 1:
            raise FlexviewInputError(f"expected one number ({WORDS[kinds[0]]}), found dtype {a.dtype}, shape "
                                     f"{a.shape}", path, key)
        value = a.reshape(-1)[0]
        if not np.isfinite(value) or value <= 0:
            raise FlexviewInputError(f"must be a positive number, found {value}", path, key)


def _arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of the archive; a key whose array cannot be read is named in the error."""
    if not path.is_file():
        raise FlexviewInputError("file not found", path)
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise FlexviewInputError(f"cannot read the mesh: {load_refusal(exc)}", path) from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise FlexviewInputError("not an .npz archive of mesh arrays", path)
    data = {}
    with archive:
        for key in archive.files:
            try:
                data[key] = archive[key]
            except (OSError, ValueError) as exc:
                raise FlexviewInputError(f"cannot read this array: {load_refusal(exc)}", path, key) from exc
    return data
