"""Read a particle file of either supported format, chosen by its suffix.

``.star``: RELION (:func:`flexview.io.star.read_star`); ``.cs``: cryoSPARC
(:func:`flexview.io.cs.read_cs`). Both return a :class:`~flexview.io.particles.ParticleSet` in
the same conventions, so nothing downstream needs to know where the particles came from.
"""
from __future__ import annotations

from pathlib import Path

from flexview.errors import FlexviewInputError
from flexview.io.cs import read_cs
from flexview.io.particles import ParticleSet
from flexview.io.star import read_star

PARTICLE_SUFFIXES = (".star", ".cs")


def read_particles(path: str | Path, project_dir: str | Path | None = None, *,
                   validate: bool = False, strict: bool = True) -> ParticleSet:
    """Read a RELION ``.star`` or cryoSPARC ``.cs`` particle file.

    Parameters
    ----------
    path : str or Path
        The metadata file; its suffix (case-insensitive) picks the reader.
    project_dir : str or Path, optional
        Folder against which image paths are also resolved (RELION project, cryoSPARC project).
    validate : bool
        Also open every image stack and check it exists, is square at the right box and holds
        every referenced image (see :meth:`~flexview.io.particles.StackImages.validate`).
    strict : bool
        Raise the first unusable value found (a NaN angle, a negative defocus, ...; see
        :mod:`flexview.io.problems`); when False such values are listed in ``ParticleSet.problems``.

    Raises
    ------
    FlexviewInputError
        For another suffix, or a file the reader refuses (naming the file and the field).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".star":
        return read_star(path, project_dir, validate=validate, strict=strict)
    if suffix == ".cs":
        return read_cs(path, project_dir, validate=validate, strict=strict)
    raise FlexviewInputError(f"unknown particle file type '{path.suffix}' (expected .star or .cs)", path,
                             "file name")
