"""RELION STAR particle files (3.0 single-block layout and 3.1+ ``data_optics`` layout).

Reading maps the RELION columns onto a :class:`~flexview.io.particles.ParticleSet`:

============================================  =============================================
STAR column(s)                                ParticleSet field
============================================  =============================================
``rlnImageName`` (``NNNNNN@stack``, 1-based)  ``images`` (a lazy :class:`StackImages`)
``rlnAngleRot/Tilt/Psi`` (deg)                ``rotations`` (RELION ``A``)
``rlnOriginXAngst/YAngst`` (Å) or
``rlnOriginX/Y`` (px, RELION 3.0)             ``origins_A`` (Å)
``rlnDefocusU/V/Angle``, ``rlnVoltage``, ...  ``ctf``
``rlnRandomSubset`` (1/2)                     ``half_set`` (0/1; -1 when absent)
``rlnOpticsGroup``                            ``optics_group``
``rlnImagePixelSize`` or
``rlnDetectorPixelSize`` (µm) · 1e4 / ``rlnMagnification``  ``pixel_size`` / ``pixel_sizes`` (Å)
``rlnImageSize``                              ``box`` / ``boxes``
============================================  =============================================

Optics groups may differ in pixel size and box (merged data sets): the per-particle values go to
``ParticleSet.pixel_sizes`` and ``boxes``. Every other particle column is kept in
``ParticleSet.extra`` under its STAR name; optics columns are kept in ``ParticleSet.optics``.
Optics values may be overridden per particle by a particle column of the same name.
:mod:`flexview.io.star_write` writes the RELION 3.1 layout. The STAR text is parsed by
:mod:`flexview.io.star_text`; the column values by :mod:`flexview.io.star_values`, which records
unusable values as problems (:mod:`flexview.io.problems`).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from flexview.errors import FlexviewInputError
from flexview.io import star_values as values
from flexview.io.particles import ParticleSet, StackImages
from flexview.io.problems import Problems, is_file
from flexview.io.stacks import check_boxes, name_max, name_too_long, read_stack_headers
from flexview.io.star_text import StarTable, read_star_tables
from flexview.io.star_values import ANGLES, ORIGINS_A, ORIGINS_PX, PARTICLE_CTF, PIXEL_SIZE_COLUMNS, Columns
from flexview.io.tables import GROUP, OPTICS_CTF, complete_optics, group_values

__all__ = ["read_star", "resolve_image_path"]

REFUSED = {
    "rlnCtfDataAreCtfPremultiplied": "the images are CTF-premultiplied; flexview needs images that are not",
    "rlnCtfDataArePhaseFlipped": "the images are phase-flipped; flexview needs images that are not",
}
OPTICS_NUMBERS = (GROUP, *OPTICS_CTF, *PIXEL_SIZE_COLUMNS, "rlnImageSize", *REFUSED)


def read_star(path: str | Path, project_dir: str | Path | None = None, *, validate: bool = False,
              strict: bool = True) -> ParticleSet:
    """Read a RELION particle STAR file (3.0 or 3.1+ layout).

    Parameters
    ----------
    path : str or Path
    project_dir : str or Path, optional
        Image stacks named in ``rlnImageName`` are looked for relative to the STAR file's folder,
        then relative to this folder.
    validate : bool
        Also check that every stack exists, is square at the box size and holds every image.
    strict : bool
        Raise the first problem found in the values (see :mod:`flexview.io.problems`); when False
        they are kept in ``ParticleSet.problems`` (``flexview info`` reports them).

    Raises
    ------
    FlexviewInputError
        For a malformed file, naming the file, the column at fault and the line.
    """
    path = Path(path)
    block, optics_block, layout = _particle_tables(read_star_tables(path), path)
    problems = Problems(path, lambda row: f"line {block.row_line(row)} (particle {row + 1})")
    particles = block.table.reset_index(drop=True)
    optics = None if optics_block is None else _optics_numbers(optics_block, path)
    _refuse_unsupported(particles, optics, path, problems)
    table, optics = _apply_optics(particles, optics, path, problems)
    cols = Columns(table, path, problems)
    images = _image_source(table, path, project_dir, problems)
    facts = read_stack_headers(images, problems, "rlnImageName")
    pixel_sizes = values.pixel_sizes(cols, facts.pixel_size)
    boxes = values.boxes(cols, facts.box)
    if "rlnImageSize" in cols:
        check_boxes(problems, images, facts, boxes, "rlnImageSize")
    images.box = int(boxes[0]) if (boxes == boxes[0]).all() else 0
    rotations = values.rotations(cols)
    ctf = values.ctf(cols)
    known = bool(np.isfinite(pixel_sizes).all())
    result = ParticleSet(
        images=images, pixel_size=float(pixel_sizes[0]) if known else 0.0, box=int(boxes[0]),
        rotations=rotations, origins_A=values.origins(cols, pixel_sizes, rotations is not None), ctf=ctf,
        half_set=values.half_sets(cols), optics_group=table[GROUP].to_numpy(np.int64),
        optics=_optics_summary(optics, table, pixel_sizes, boxes, ctf),
        extra=particles[[c for c in particles.columns if c not in _used_columns(rotations, ctf)]].reset_index(
            drop=True),
        source=path, source_format=layout, pixel_sizes=pixel_sizes if known else None, boxes=boxes,
        problems=problems.items)
    if strict:
        problems.raise_first()
    if validate:
        images.validate()
    return result


def _particle_tables(blocks: dict[str, StarTable], path: Path) -> tuple[StarTable, StarTable | None, str]:
    """(particles, optics or None, layout) from the blocks of a STAR file."""
    if not blocks:
        raise FlexviewInputError("not a STAR file: no data_ block found", path, "data_")
    if "particles" in blocks:
        found = blocks["particles"], blocks.get("optics"), "relion-3.1"
        if "rlnImageName" not in found[0].table.columns and len(found[0].table.columns):
            raise FlexviewInputError("no image names: data_particles needs an rlnImageName column", path,
                                     "rlnImageName")
    elif "optics" in blocks:
        raise FlexviewInputError("the file has data_optics but no data_particles block", path, "data_particles")
    else:
        block = next((b for b in blocks.values() if "rlnImageName" in b.table.columns), None)
        if block is None:
            raise FlexviewInputError("no particle table (a loop with rlnImageName) found", path, "rlnImageName")
        found = block, None, "relion-3.0"
    if len(found[0].table) == 0:
        raise FlexviewInputError("the particle table is empty", path, f"data_{found[0].name}")
    return found


def _optics_numbers(block: StarTable, path: Path) -> pd.DataFrame:
    """The optics table with its numeric columns parsed; text where a number belongs is an error
    naming its line."""
    optics = block.table.copy()
    cols = Columns(optics, path, Problems(path, lambda row: f"line {block.row_line(row)} (data_optics)"))
    for column in OPTICS_NUMBERS:
        if column in optics.columns:
            optics[column] = cols.numeric(column)
    return optics


def _refuse_unsupported(particles: pd.DataFrame, optics: pd.DataFrame | None, path: Path,
                        problems: Problems) -> None:
    """CTF-premultiplied or phase-flipped images are a problem of ``images`` (the forward model
    multiplies projections by the CTF)."""
    for table in (particles, optics):
        if table is None:
            continue
        for column, why in REFUSED.items():
            if column in table.columns:
                numbers = Columns(table, path, problems).numeric(column) if table is particles else table[column]
                if (np.asarray(numbers) == 1).any():
                    problems.add("images", why, column)


def _apply_optics(particles: pd.DataFrame, optics: pd.DataFrame | None, path: Path,
                  problems: Problems) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-particle table with every optics column filled in, and the optics table.

    A particle column of the same name as an optics column overrides it. RELION 3.0 files
    (no optics block) get one optics group per distinct (voltage, Cs, amplitude contrast, pixel size).
    """
    table = particles.copy()
    if optics is None:
        table[GROUP] = _groups_3_0(table, path, problems)
        return table, pd.DataFrame({GROUP: np.unique(table[GROUP])})
    if GROUP not in optics.columns:
        raise FlexviewInputError("data_optics has no optics group column", path, GROUP)
    optics = optics.copy()
    optics[GROUP] = Columns(optics, path, Problems(path, lambda r: f"optics row {r + 1}")).integers(GROUP)
    if optics[GROUP].duplicated().any():
        raise FlexviewInputError("an optics group number appears twice in data_optics", path, GROUP)
    if GROUP not in table.columns:
        if len(optics) != 1:
            raise FlexviewInputError(f"{len(optics)} optics groups but particles name none", path, GROUP)
        table[GROUP] = optics[GROUP].iloc[0]
    groups = Columns(table, path, problems).integers(GROUP)
    unknown = ~np.isin(groups, optics[GROUP].to_numpy())
    if unknown.any():
        row = int(np.argmax(unknown))
        raise FlexviewInputError(f"{problems.where(row)}: optics group {groups[row]} is not in data_optics", path,
                                 GROUP)
    table[GROUP] = groups
    rows = optics.set_index(GROUP).loc[groups]
    for column in rows.columns:
        if column not in table.columns:
            table[column] = rows[column].to_numpy()
    return table, optics


def _groups_3_0(table: pd.DataFrame, path: Path, problems: Problems) -> np.ndarray:
    """Optics-group numbers (1-based) for a RELION 3.0 table: one per distinct optics value set."""
    present = [c for c in (*OPTICS_CTF, *PIXEL_SIZE_COLUMNS) if c in table.columns]
    if not present:
        return np.ones(len(table), dtype=np.int64)
    cols = Columns(table, path, problems)
    found = np.nan_to_num(np.stack([cols.numeric(c) for c in present], axis=1), nan=-1.0)
    _, inverse = np.unique(found, axis=0, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64) + 1


def _image_source(table: pd.DataFrame, path: Path, project_dir: str | Path | None,
                  problems: Problems) -> StackImages:
    """Lazy images from ``rlnImageName`` (box set by the caller)."""
    if "rlnImageName" not in table.columns:
        raise FlexviewInputError("no image names: the particles need an rlnImageName column", path,
                                 "rlnImageName")
    numbers, names = _split_image_names(table["rlnImageName"], path, problems)
    codes, distinct = pd.factorize(pd.Series(names, dtype=object))
    folder = Path(os.path.abspath(path)).parent
    folders = [folder] + ([Path(project_dir)] if project_dir else [])
    limit = name_max(folder)
    for k, name in enumerate(distinct):
        too_long = name_too_long(str(name), folder, limit)
        if too_long:
            raise FlexviewInputError(f"{problems.where(int(np.argmax(codes == k)))}: {too_long}", path,
                                     "rlnImageName")
    paths = [resolve_image_path(str(name), folders) for name in distinct]
    return StackImages(paths, codes, numbers - 1, 0, field="rlnImageName")


def _split_image_names(names: pd.Series, path: Path, problems: Problems) -> tuple[np.ndarray, np.ndarray]:
    """``"NNNNNN@stack"`` → (1-based image numbers, stack names). A bare name is image 1."""
    text = names.astype(str).str.strip()
    parts = text.str.split("@", n=1, expand=True)
    if parts.shape[1] == 1:
        return np.ones(len(text), dtype=np.int64), parts[0].to_numpy(dtype=object)
    has_at = parts[1].notna()
    numbers = pd.to_numeric(parts[0].where(has_at, "1"), errors="coerce")
    stacks = parts[1].where(has_at, parts[0])
    bad = numbers.isna() | (numbers < 1) | (numbers != numbers.round()) | (stacks.str.len() == 0)
    if bad.any():
        row = int(np.argmax(bad.to_numpy()))
        raise FlexviewInputError(f"{problems.where(row)}: '{text.iloc[row]}' is not 'image number@stack file' "
                                 "(image numbers are whole numbers from 1)", path, "rlnImageName")
    return numbers.to_numpy(dtype=np.int64), stacks.to_numpy(dtype=object)


def resolve_image_path(name: str, folders: list[Path]) -> Path:
    """The first of ``folder / name`` that exists (``name`` itself if absolute); else the first candidate."""
    p = Path(name)
    if p.is_absolute():
        return p
    candidates = [Path(os.path.abspath(f / p)) for f in folders]
    return next((c for c in candidates if is_file(c)), candidates[0])


def _used_columns(rotations, ctf) -> set[str]:
    """Particle columns that map onto ParticleSet fields (the rest go to ``extra``)."""
    used = {"rlnImageName", GROUP, "rlnRandomSubset", "rlnImageSize", *PIXEL_SIZE_COLUMNS, *ORIGINS_A, *ORIGINS_PX}
    if rotations is not None:
        used.update(ANGLES)
    if ctf is not None:
        used.update(PARTICLE_CTF)
        used.update(OPTICS_CTF)
    return used


def _optics_summary(optics: pd.DataFrame, table: pd.DataFrame, pixel_sizes: np.ndarray, boxes: np.ndarray,
                    ctf) -> pd.DataFrame:
    """The optics table of the groups in use, with each group's pixel size, box and CTF constants."""
    groups = table[GROUP].to_numpy()
    out = optics[optics[GROUP].isin(np.unique(groups))].drop(columns=list(PIXEL_SIZE_COLUMNS), errors="ignore")
    out = out.sort_values(GROUP).reset_index(drop=True)
    if ctf is not None:
        for column, name in OPTICS_CTF.items():
            out[column] = group_values(out[GROUP], groups, None, getattr(ctf, name))
    return complete_optics(out, group_values(out[GROUP], groups, None, pixel_sizes),
                           group_values(out[GROUP], groups, None, boxes))
