"""Write a :class:`~flexview.io.particles.ParticleSet` as a cryoSPARC ``.cs`` file.

The fields are those :func:`flexview.io.cs.read_cs` reads (see its table): ``blob/*`` from the
stack references and each particle's pixel size and box, ``ctf/*``, ``alignments3D/*`` (rotation
vector, shift in pixels of ``alignments3D/psize_A``), ``optics/<column>`` for optics columns no
other field carries, and every extra column under its name.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from flexview.errors import FlexviewInputError
from flexview.io._atomic import atomic_path
from flexview.io.cs import CTF_FIELDS, GROUP_FIELD, OPTICS_MAPPED, OPTICS_PREFIX
from flexview.io.particles import ParticleSet, stack_references
from flexview.io.tables import relative_path
from flexview.model.pose import matrix_to_rotvec


def write_cs(path: str | Path, particles: ParticleSet) -> None:
    """Write ``particles`` as a cryoSPARC ``.cs`` file, atomically.

    ``blob/path`` is written relative to the ``.cs`` folder where possible; ``blob/sign`` is -1
    (RELION contrast) except for images read with ``blob/sign`` +1. Extra columns become further
    fields (text as fixed-width bytes; ``name/0, name/1, ...`` columns join into one vector field).
    """
    path = Path(path)
    fields = {"uid": _uids(particles)}
    fields.update(_blob_fields(particles, path))
    fields.update(_ctf_fields(particles))
    fields.update(_alignment_fields(particles))
    fields.update(_optics_fields(particles))
    for name, values in _extra_fields(particles.extra.drop(columns=["uid"], errors="ignore")).items():
        if name in fields:
            raise FlexviewInputError("an extra column has the name of a mapped .cs field", path, name)
        fields[name] = values
    array = np.empty(len(particles), dtype=[(k, v.dtype, v.shape[1:]) for k, v in fields.items()])
    for name, values in fields.items():
        array[name] = values
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)


def _uids(particles: ParticleSet) -> np.ndarray:
    """Existing ``uid`` values, else fresh random 63-bit ids."""
    if "uid" in particles.extra.columns:
        return particles.extra["uid"].to_numpy(np.uint64)
    return np.random.default_rng().integers(1, 2**63 - 1, size=len(particles), dtype=np.int64).astype(np.uint64)


def _blob_fields(particles: ParticleSet, path: Path) -> dict[str, np.ndarray]:
    refs = stack_references(particles.images)
    if refs is None:
        raise FlexviewInputError("the images are not in stack files on disk; write them with write_stack first",
                                 path, "blob/path")
    root = Path(os.path.abspath(path)).parent
    names = np.array([relative_path(p, root).encode("utf-8") for p in refs.paths], dtype=bytes)
    return {
        "blob/path": names[refs.file_index],
        "blob/idx": refs.slice_index.astype(np.uint32),
        "blob/shape": np.repeat(_per_particle(particles, "boxes", "box")[:, None], 2, axis=1).astype(np.uint32),
        "blob/psize_A": _per_particle(particles, "pixel_sizes", "pixel_size").astype(np.float32),
        "blob/sign": (-refs.factor).astype(np.float32),
    }


def _per_particle(particles: ParticleSet, array: str, scalar: str) -> np.ndarray:
    """``particles.pixel_sizes`` (or ``boxes``) as an (N,) array, the scalar repeated when None."""
    values = getattr(particles, array)
    return np.full(len(particles), getattr(particles, scalar)) if values is None else np.asarray(values)


def _ctf_fields(particles: ParticleSet) -> dict[str, np.ndarray]:
    out = {GROUP_FIELD: np.asarray(particles.optics_group).astype(np.uint32)}
    if particles.ctf is not None:
        for name, (attr, factor, _) in CTF_FIELDS.items():
            out[name] = (getattr(particles.ctf, attr) / factor).astype(np.float32)
    return out


def _alignment_fields(particles: ParticleSet) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    n = len(particles)
    if particles.rotations is not None:
        out["alignments3D/pose"] = matrix_to_rotvec(particles.rotations).astype(np.float32)
    pixel_sizes = _per_particle(particles, "pixel_sizes", "pixel_size")
    if particles.origins_A is not None:
        out["alignments3D/shift"] = (particles.origins_A / pixel_sizes[:, None]).astype(np.float32)
    if out:
        out["alignments3D/psize_A"] = pixel_sizes.astype(np.float32)
    if particles.has_half_sets and n:
        out["alignments3D/split"] = particles.half_set.astype(np.uint32)
    return out


def _optics_fields(particles: ParticleSet) -> dict[str, np.ndarray]:
    """Optics columns no other field carries, repeated per particle as ``optics/<column>``."""
    optics = particles.optics
    if "rlnOpticsGroup" not in optics.columns:
        return {}
    rows = optics.set_index("rlnOpticsGroup").reindex(np.asarray(particles.optics_group))
    columns = [c for c in rows.columns if c not in OPTICS_MAPPED]
    return {OPTICS_PREFIX + c: _as_field(rows[c]) for c in columns}


def _extra_fields(extra: pd.DataFrame) -> dict[str, np.ndarray]:
    """Extra columns as fields; ``name/0 .. name/k-1`` are joined into one (N, k) field."""
    out: dict[str, np.ndarray] = {}
    groups: dict[str, list[tuple[int, str]]] = {}
    for column in extra.columns:
        match = re.fullmatch(r"(.+)/(\d+)", str(column))
        if match:
            groups.setdefault(match.group(1), []).append((int(match.group(2)), column))
        else:
            out[str(column)] = _as_field(extra[column])
    for name, parts in groups.items():
        parts.sort()
        if [i for i, _ in parts] == list(range(len(parts))) and name not in out:
            out[name] = np.stack([extra[c].to_numpy() for _, c in parts], axis=1)
        else:
            out.update({c: _as_field(extra[c]) for _, c in parts})
    return out


def _as_field(column: pd.Series) -> np.ndarray:
    """A DataFrame column as a fixed-width NumPy array (text → UTF-8 bytes)."""
    if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
        return column.to_numpy()
    text = [("" if pd.isna(v) else str(v)).encode("utf-8") for v in column]
    width = max([len(t) for t in text] + [1])
    return np.array(text, dtype=f"S{width}")
