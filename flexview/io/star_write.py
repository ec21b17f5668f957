"""Write a :class:`~flexview.io.particles.ParticleSet` as a RELION 3.1+ STAR file.

The layout is the one :func:`flexview.io.star.read_star` reads: a ``data_optics`` block with one
row per optics group and a ``data_particles`` block with one row per particle (RELION 3.1,
Zivanov et al. 2020, IUCrJ 7:253). Optics CTF values that differ from their group's are written
as per-particle overrides; every extra column is kept under its name.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import starfile

from flexview.errors import FlexviewInputError
from flexview.io._atomic import atomic_path
from flexview.io.particles import ParticleSet, stack_references
from flexview.io.star_values import ANGLES, ORIGINS_A, PARTICLE_CTF
from flexview.io.tables import GROUP, OPTICS_CTF, complete_optics, float32_to_decimal, group_values, relative_path
from flexview.model.pose import matrix_to_euler

FLOAT_FORMAT = "%.10g"


def write_star(path: str | Path, particles: ParticleSet, *, image_root: str | Path | None = None) -> None:
    """Write ``particles`` as a RELION 3.1 STAR file (``data_optics`` + ``data_particles``), atomically.

    Parameters
    ----------
    path : str or Path
    particles : ParticleSet
        Its images must be stacks on disk (:class:`StackImages`, possibly subset).
    image_root : str or Path, optional
        Folder that ``rlnImageName`` paths are written relative to; by default the folder of
        ``path`` (the reader's first choice). Paths with nothing in common with it stay absolute.
    """
    path = Path(path)
    root = Path(os.path.abspath(image_root if image_root is not None else path.parent))
    optics = _optics_out(particles)
    table = _particles_out(particles, optics, root, path)
    with atomic_path(path) as tmp:
        starfile.write({"optics": optics, "particles": table}, tmp, float_format=FLOAT_FORMAT)


def _optics_out(particles: ParticleSet) -> pd.DataFrame:
    """One optics row per group in use; CTF optics values from the group's first particle."""
    groups = np.asarray(particles.optics_group, dtype=np.int64)
    used = np.unique(groups)
    optics = particles.optics
    if GROUP in optics.columns:
        optics = optics[optics[GROUP].isin(used)]
    else:
        optics = pd.DataFrame({GROUP: []})
    missing = [g for g in used if g not in set(optics[GROUP])]
    optics = pd.concat([optics, pd.DataFrame({GROUP: missing})], ignore_index=True)
    optics[GROUP] = optics[GROUP].astype(np.int64)
    optics = optics.sort_values(GROUP).reset_index(drop=True)
    if particles.ctf is not None:
        first = [int(np.argmax(groups == g)) for g in optics[GROUP]]
        for column, name in OPTICS_CTF.items():
            optics[column] = getattr(particles.ctf, name)[first]
    return complete_optics(optics, group_values(optics[GROUP], groups, particles.pixel_size, particles.pixel_sizes),
                           group_values(optics[GROUP], groups, particles.box, particles.boxes))


def _particles_out(particles: ParticleSet, optics: pd.DataFrame, root: Path, path: Path) -> pd.DataFrame:
    """The data_particles table: mapped fields first, then every extra column."""
    n = len(particles)
    columns: dict[str, np.ndarray] = {"rlnImageName": _image_names(particles, root, path)}
    if particles.rotations is not None:
        angles = matrix_to_euler(particles.rotations)
        columns.update({c: angles[:, i] for i, c in enumerate(ANGLES)})
    if particles.origins_A is not None:
        columns.update({c: particles.origins_A[:, i] for i, c in enumerate(ORIGINS_A)})
    if particles.ctf is not None:
        columns.update(_ctf_columns(particles, optics))
    columns[GROUP] = np.asarray(particles.optics_group, dtype=np.int64)
    columns.update(_sampling_overrides(particles, optics))
    if particles.has_half_sets:
        columns["rlnRandomSubset"] = particles.half_set.astype(np.int64) + 1
    table = pd.DataFrame(columns, index=pd.RangeIndex(n))
    for name in particles.extra.columns:
        if name in table.columns:
            raise FlexviewInputError("an extra column has the name of a mapped STAR column", path, name)
        values = particles.extra[name].to_numpy()
        table[name] = float32_to_decimal(values) if values.dtype == np.float32 else values
    return table


def _sampling_overrides(particles: ParticleSet, optics: pd.DataFrame) -> dict[str, np.ndarray]:
    """``rlnImagePixelSize`` / ``rlnImageSize`` per particle where a particle's differs from its group's."""
    out = {}
    rows = np.searchsorted(optics[GROUP].to_numpy(), particles.optics_group)  # optics is sorted by group
    for column, values in (("rlnImagePixelSize", particles.pixel_sizes), ("rlnImageSize", particles.boxes)):
        if values is not None and column in optics.columns and not np.array_equal(
                values, optics[column].to_numpy()[rows]):
            out[column] = values
    return out


def _ctf_columns(particles: ParticleSet, optics: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per-particle CTF columns, plus optics CTF values as overrides where they differ from the group's."""
    ctf = particles.ctf
    out = {column: getattr(ctf, name) for column, (name, _) in PARTICLE_CTF.items()}
    rows = np.searchsorted(optics[GROUP].to_numpy(), particles.optics_group)  # optics is sorted by group
    for column, name in OPTICS_CTF.items():
        values = getattr(ctf, name)
        if not np.array_equal(values, optics[column].to_numpy(np.float64)[rows]):
            out[column] = values
    return out


def _image_names(particles: ParticleSet, root: Path, path: Path) -> np.ndarray:
    """``NNNNNN@stack`` for every particle, stack paths relative to ``root`` where possible."""
    refs = stack_references(particles.images)
    if refs is None:
        raise FlexviewInputError("the images are not in stack files on disk; write them with write_stack "
                                 "first", path, "rlnImageName")
    if (refs.factor != 1).any():
        raise FlexviewInputError("some images have opposite contrast (cryoSPARC blob/sign +1); RELION has "
                                 "no field for that: write the sign-corrected images to a stack first",
                                 path, "rlnImageName")
    stacks = np.array([relative_path(p, root) for p in refs.paths], dtype=object)
    numbers = np.char.zfill((refs.slice_index + 1).astype(str), 6)
    return np.char.add(np.char.add(numbers, "@"), stacks[refs.file_index].astype(str)).astype(object)
