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
``rlnDetectorPixelSize`` (µm) · 1e4 / ``rlnMagnification``  ``pixel_size`` (Å)
``rlnImageSize``                              ``box``
============================================  =============================================

Every other particle column is kept in ``ParticleSet.extra`` under its STAR name; optics columns
are kept in ``ParticleSet.optics``. Optics values may be overridden per particle by a particle
column of the same name. :mod:`flexview.io.star_write` writes the RELION 3.1 layout. The STAR
text itself is parsed by the ``starfile`` package (Hall 1991, J. Chem. Inf. Comput. Sci. 31:326).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import starfile

from flexview.errors import FlexviewInputError
from flexview.io.mrc import stack_header
from flexview.io.particles import ParticleSet, StackImages
from flexview.io.tables import GROUP, OPTICS_CTF, complete_optics
from flexview.model.ctf import CTFParams
from flexview.model.pose import euler_to_matrix

ANGLES = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")
ORIGINS_A = ("rlnOriginXAngst", "rlnOriginYAngst")
ORIGINS_PX = ("rlnOriginX", "rlnOriginY")
# CTF columns that live in data_particles: column -> (CTFParams field, default or None if required)
PARTICLE_CTF = {
    "rlnDefocusU": ("defocus_u_A", None),
    "rlnDefocusV": ("defocus_v_A", "rlnDefocusU"),
    "rlnDefocusAngle": ("defocus_angle_deg", 0.0),
    "rlnPhaseShift": ("phase_shift_deg", 0.0),
    "rlnCtfBfactor": ("bfactor_A2", 0.0),
    "rlnCtfScalefactor": ("scale", 1.0),
}
PIXEL_SIZE_COLUMNS = ("rlnImagePixelSize", "rlnDetectorPixelSize", "rlnMagnification")
REFUSED = {
    "rlnCtfDataAreCtfPremultiplied": "the images are CTF-premultiplied; flexview needs images that are not",
    "rlnCtfDataArePhaseFlipped": "the images are phase-flipped; flexview needs images that are not",
}


def read_star(path: str | Path, project_dir: str | Path | None = None, *, validate: bool = False) -> ParticleSet:
    """Read a RELION particle STAR file (3.0 or 3.1+ layout).

    Parameters
    ----------
    path : str or Path
    project_dir : str or Path, optional
        Image stacks named in ``rlnImageName`` are looked for relative to the STAR file's folder,
        then relative to this folder.
    validate : bool
        Also check that every stack exists, is square at the box size and holds every image.

    Raises
    ------
    FlexviewInputError
        For a malformed file, naming the file and the column at fault.
    """
    path = Path(path)
    particles, optics, layout = _particle_tables(_read_blocks(path), path)
    _refuse_unsupported(particles, optics, path)
    table, optics = _apply_optics(particles, optics, path)
    images, box_from_stack, px_from_stack = _image_source(table, path, project_dir)
    pixel_size = _pixel_size(table, path, px_from_stack)
    box = _box(table, path, box_from_stack)
    images.box = box
    rotations = _rotations(table, path)
    ctf = _ctf(table, path)
    used = _used_columns(table, rotations is not None, ctf is not None)
    result = ParticleSet(
        images=images, pixel_size=pixel_size, box=box, rotations=rotations,
        origins_A=_origins(table, path, pixel_size, rotations is not None), ctf=ctf,
        half_set=_half_sets(table, path), optics_group=table[GROUP].to_numpy(np.int64),
        optics=_optics_summary(optics, table, pixel_size, box, ctf),
        extra=particles[[c for c in particles.columns if c not in used]].reset_index(drop=True),
        source=path, source_format=layout)
    if validate:
        images.validate()
    return result


def _read_blocks(path: Path) -> dict:
    """All data blocks of a STAR file as a dict of name → DataFrame."""
    if not path.is_file():
        raise FlexviewInputError("file not found", path)
    try:
        blocks = starfile.read(path, always_dict=True)
    except Exception as exc:  # starfile raises many types for malformed text
        raise FlexviewInputError(f"not a readable STAR file ({exc})", path, "data_") from exc
    if not blocks:
        raise FlexviewInputError("not a STAR file: no data block found", path, "data_")
    return {name: pd.DataFrame([b]) if isinstance(b, dict) else b for name, b in blocks.items()}


def _particle_tables(blocks: dict, path: Path) -> tuple[pd.DataFrame, pd.DataFrame | None, str]:
    """(particles, optics or None, layout) from the blocks of a STAR file."""
    if "particles" in blocks:
        found = blocks["particles"].reset_index(drop=True), blocks.get("optics"), "relion-3.1"
    elif "optics" in blocks:
        raise FlexviewInputError("the file has data_optics but no data_particles block", path, "data_particles")
    else:
        block = next((b for b in blocks.values() if "rlnImageName" in b.columns), None)
        if block is None:
            raise FlexviewInputError("no particle table (a loop with rlnImageName) found", path, "rlnImageName")
        found = block.reset_index(drop=True), None, "relion-3.0"
    if len(found[0]) == 0:
        raise FlexviewInputError("the particle table is empty", path, "data_particles")
    return found


def _refuse_unsupported(particles: pd.DataFrame, optics: pd.DataFrame | None, path: Path) -> None:
    """Refuse CTF-premultiplied or phase-flipped images (the forward model does not apply)."""
    for table in (particles, optics):
        if table is None:
            continue
        for column, why in REFUSED.items():
            if column in table.columns and (_numeric(table, column, path) == 1).any():
                raise FlexviewInputError(why, path, column)


def _apply_optics(particles: pd.DataFrame, optics: pd.DataFrame | None,
                  path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-particle table with every optics column filled in, and the optics table.

    A particle column of the same name as an optics column overrides it. RELION 3.0 files
    (no optics block) get one optics group per distinct (voltage, Cs, amplitude contrast).
    """
    table = particles.copy()
    if optics is None:
        table[GROUP] = _groups_3_0(table, path)
        return table, pd.DataFrame({GROUP: np.unique(table[GROUP])})
    if GROUP not in optics.columns:
        raise FlexviewInputError("data_optics has no optics group column", path, GROUP)
    optics = optics.copy()
    optics[GROUP] = _integers(optics, GROUP, path)
    if optics[GROUP].duplicated().any():
        raise FlexviewInputError("an optics group number appears twice in data_optics", path, GROUP)
    if GROUP not in table.columns:
        if len(optics) != 1:
            raise FlexviewInputError(f"{len(optics)} optics groups but particles name none", path, GROUP)
        table[GROUP] = optics[GROUP].iloc[0]
    groups = _integers(table, GROUP, path)
    unknown = sorted(set(groups) - set(optics[GROUP]))
    if unknown:
        raise FlexviewInputError(f"optics group {unknown[0]} is not in data_optics", path, GROUP)
    table[GROUP] = groups
    rows = optics.set_index(GROUP).loc[groups]
    for column in rows.columns:
        if column not in table.columns:
            table[column] = rows[column].to_numpy()
    return table, optics


def _groups_3_0(table: pd.DataFrame, path: Path) -> np.ndarray:
    """Optics-group numbers (1-based) for a RELION 3.0 table: one per distinct optics value set."""
    present = [c for c in (*OPTICS_CTF, *PIXEL_SIZE_COLUMNS) if c in table.columns]
    if not present:
        return np.ones(len(table), dtype=np.int64)
    values = np.stack([_numeric(table, c, path) for c in present], axis=1)
    _, inverse = np.unique(values, axis=0, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64) + 1


def _numeric(table: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    """A column as float64; FlexviewInputError naming it when a value is not a number."""
    series = table[column]
    if pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series):
        values = pd.to_numeric(series, errors="coerce")
        bad = values.isna() & ~_is_nan_text(series)
        if bad.any():
            row = int(np.argmax(bad.to_numpy()))
            raise FlexviewInputError(f"value '{series.iloc[row]}' of particle {row + 1} is not a number",
                                     path, column)
        series = values
    return series.to_numpy(dtype=np.float64, na_value=np.nan)


def _is_nan_text(series: pd.Series) -> pd.Series:
    text = series.astype(str).str.strip().str.lower()
    return series.isna() | text.isin(["nan", "inf", "-inf", "+inf", "infinity", "-infinity"])


def _finite(table: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    """A numeric column that must hold only finite values."""
    values = _numeric(table, column, path)
    if not np.isfinite(values).all():
        row = int(np.argmax(~np.isfinite(values)))
        raise FlexviewInputError(f"particle {row + 1} has a NaN or infinite value", path, column)
    return values


def _integers(table: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    """A column of whole numbers as int64."""
    values = _finite(table, column, path)
    if not np.all(values == np.round(values)):
        raise FlexviewInputError("expected whole numbers", path, column)
    return values.astype(np.int64)


def _image_source(table: pd.DataFrame, path: Path,
                  project_dir: str | Path | None) -> tuple[StackImages, int | None, float | None]:
    """Lazy images from ``rlnImageName``, plus (box, pixel size) from the first stack found."""
    if "rlnImageName" not in table.columns:
        raise FlexviewInputError("no image names: the particles need an rlnImageName column", path,
                                 "rlnImageName")
    numbers, names = _split_image_names(table["rlnImageName"], path)
    codes, distinct = pd.factorize(names)
    folder = Path(os.path.abspath(path)).parent
    paths = [resolve_image_path(name, [folder] + ([Path(project_dir)] if project_dir else [])) for name in distinct]
    images = StackImages(paths, codes, numbers - 1, 0, field="rlnImageName")
    for p in paths:
        if p.is_file():
            n, ny, nx, px = stack_header(p)
            return images, nx, (px or None)
    return images, None, None


def _split_image_names(names: pd.Series, path: Path) -> tuple[np.ndarray, np.ndarray]:
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
        raise FlexviewInputError(f"'{text.iloc[row]}' (particle {row + 1}) is not 'image number@stack file'",
                                 path, "rlnImageName")
    return numbers.to_numpy(dtype=np.int64), stacks.to_numpy(dtype=object)


def resolve_image_path(name: str, folders: list[Path]) -> Path:
    """The first of ``folder / name`` that exists (``name`` itself if absolute); else the first candidate."""
    p = Path(name)
    if p.is_absolute():
        return p
    candidates = [Path(os.path.abspath(f / p)) for f in folders]
    return next((c for c in candidates if c.is_file()), candidates[0])


def _pixel_size(table: pd.DataFrame, path: Path, from_stack: float | None) -> float:
    """Å per pixel, the same for every particle."""
    if "rlnImagePixelSize" in table.columns:
        column, values = "rlnImagePixelSize", _finite(table, "rlnImagePixelSize", path)
    elif "rlnDetectorPixelSize" in table.columns and "rlnMagnification" in table.columns:
        column = "rlnDetectorPixelSize"
        values = _finite(table, column, path) * 1e4 / _finite(table, "rlnMagnification", path)
    elif from_stack:
        return float(from_stack)
    else:
        raise FlexviewInputError("no pixel size (rlnImagePixelSize, or rlnDetectorPixelSize and "
                                 "rlnMagnification) and no readable stack", path, "rlnImagePixelSize")
    if not (values > 0).all():
        raise FlexviewInputError("pixel size must be positive", path, column)
    if not np.allclose(values, values[0], rtol=1e-5, atol=0):
        raise FlexviewInputError(f"mixed pixel sizes ({values.min():g} to {values.max():g} Å) in one set",
                                 path, column)
    return float(values[0])


def _box(table: pd.DataFrame, path: Path, from_stack: int | None) -> int:
    """Image edge in pixels, the same for every particle (0 when unknown)."""
    if "rlnImageSize" not in table.columns:
        return int(from_stack or 0)
    sizes = _integers(table, "rlnImageSize", path)
    if (sizes != sizes[0]).any():
        raise FlexviewInputError(f"mixed box sizes ({sizes.min()} and {sizes.max()} px) in one set", path,
                                 "rlnImageSize")
    return int(sizes[0])


def _rotations(table: pd.DataFrame, path: Path) -> np.ndarray | None:
    """RELION matrices from the Euler angles; None when rot and tilt are absent (2-D data)."""
    if not any(c in table.columns for c in ANGLES[:2]):
        return None
    for column in ANGLES:
        if column not in table.columns:
            raise FlexviewInputError("angles are incomplete: rlnAngleRot, rlnAngleTilt and rlnAnglePsi are "
                                     "all needed", path, column)
    return euler_to_matrix(*(_finite(table, c, path) for c in ANGLES))


def _origins(table: pd.DataFrame, path: Path, pixel_size: float, has_angles: bool) -> np.ndarray | None:
    """RELION origins (x, y) in Å; zeros when poses exist without origins, else None."""
    for columns, scale in ((ORIGINS_A, 1.0), (ORIGINS_PX, pixel_size)):
        present = [c for c in columns if c in table.columns]
        if len(present) == 1:
            missing = next(c for c in columns if c not in present)
            raise FlexviewInputError(f"{present[0]} is given without {missing}", path, missing)
        if present:
            return np.stack([_finite(table, c, path) for c in columns], axis=1) * scale
    return np.zeros((len(table), 2)) if has_angles else None


def _ctf(table: pd.DataFrame, path: Path) -> CTFParams | None:
    """CTF parameters when ``rlnDefocusU`` is present, else None."""
    if "rlnDefocusU" not in table.columns:
        return None
    values = {}
    for column, (name, default) in PARTICLE_CTF.items():
        if column in table.columns:
            values[name] = _finite(table, column, path)
        else:
            values[name] = values[PARTICLE_CTF[default][0]] if isinstance(default, str) else default
    for column, name in OPTICS_CTF.items():
        if column not in table.columns:
            raise FlexviewInputError("the CTF needs this optics value", path, column)
        values[name] = _finite(table, column, path)
    return CTFParams(**values)


def _half_sets(table: pd.DataFrame, path: Path) -> np.ndarray:
    """``rlnRandomSubset`` 1/2 → 0/1; -1 for every particle when the column is absent."""
    if "rlnRandomSubset" not in table.columns:
        return np.full(len(table), -1, dtype=np.int8)
    subset = _integers(table, "rlnRandomSubset", path)
    if not np.isin(subset, (1, 2)).all():
        raise FlexviewInputError(f"random subset {subset[~np.isin(subset, (1, 2))][0]} is not 1 or 2", path,
                                 "rlnRandomSubset")
    return (subset - 1).astype(np.int8)


def _used_columns(table: pd.DataFrame, has_angles: bool, has_ctf: bool) -> set[str]:
    """Particle columns that map onto ParticleSet fields (the rest go to ``extra``)."""
    used = {"rlnImageName", GROUP, "rlnRandomSubset", "rlnImageSize", *PIXEL_SIZE_COLUMNS,
            *ORIGINS_A, *ORIGINS_PX}
    if has_angles:
        used.update(ANGLES)
    if has_ctf:
        used.update(PARTICLE_CTF)
        used.update(OPTICS_CTF)
    return used


def _optics_summary(optics: pd.DataFrame, table: pd.DataFrame, pixel_size: float, box: int,
                    ctf: CTFParams | None) -> pd.DataFrame:
    """The optics table of the groups in use, with pixel size, box and per-group CTF constants."""
    used = np.unique(table[GROUP])
    out = optics[optics[GROUP].isin(used)].drop(columns=list(PIXEL_SIZE_COLUMNS), errors="ignore")
    out = out.sort_values(GROUP).reset_index(drop=True)
    first = {g: int(np.argmax(table[GROUP].to_numpy() == g)) for g in out[GROUP]}
    if ctf is not None:
        for column, name in OPTICS_CTF.items():
            out[column] = [getattr(ctf, name)[first[g]] for g in out[GROUP]]
    return complete_optics(out, pixel_size, box)
