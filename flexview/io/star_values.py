"""Values of RELION particle columns: pixel size, box, poses, origins, CTF and half sets.

Each function reads a per-particle table (optics values already filled in per particle; see
:mod:`flexview.io.star`). Text where a number is needed is an error at once, naming the line;
values that parse but cannot be used (NaN, a negative defocus, origins that disagree, a missing
CTF column) are recorded in a :class:`~flexview.io.problems.Problems`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from flexview.errors import FlexviewInputError
from flexview.io.problems import Problems, check_ctf
from flexview.io.tables import OPTICS_CTF
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
ORIGIN_TOLERANCE_PX = 0.01
NAN_TEXT = ["nan", "-nan", "+nan"]


class Columns:
    """Numeric access to a table's columns; a value that is not a number is an error naming the
    file, the column and the row's place (``where(row)``, e.g. its line)."""

    def __init__(self, table: pd.DataFrame, path: Path, problems: Problems):
        self.table, self.path, self.problems = table, path, problems

    def __contains__(self, column: str) -> bool:
        return column in self.table.columns

    def numeric(self, column: str) -> np.ndarray:
        """The column as float64 (NaN and inf kept)."""
        series = self.table[column]
        if pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series):
            text = series.astype(str).str.strip()
            values = pd.to_numeric(text, errors="coerce")  # reads inf, -inf, Infinity
            bad = values.isna() & ~(series.isna() | text.str.lower().isin(NAN_TEXT))
            if bad.any():
                row = int(np.argmax(bad.to_numpy()))
                raise FlexviewInputError(f"{self.problems.where(row)}: value '{series.iloc[row]}' is not a number",
                                         self.path, column)
            series = values
        return series.to_numpy(dtype=np.float64, na_value=np.nan)

    def finite(self, column: str, aspect: str) -> np.ndarray:
        """The column as float64; a problem of ``aspect`` when a value is NaN or infinite."""
        return self.problems.finite(self.numeric(column), aspect, column)

    def integers(self, column: str) -> np.ndarray:
        """A column of whole numbers as int64; anything else is an error naming the row."""
        values = self.numeric(column)
        bad = ~np.isfinite(values) | (values != np.round(values))
        if bad.any():
            row = int(np.argmax(bad))
            raise FlexviewInputError(f"{self.problems.where(row)}: expected a whole number, found {values[row]:g}",
                                     self.path, column)
        return values.astype(np.int64)


def pixel_sizes(cols: Columns, from_stacks: np.ndarray) -> np.ndarray:
    """Å per pixel of each particle, NaN where unknown (a problem of ``images`` is recorded).

    ``rlnImagePixelSize``; else ``rlnDetectorPixelSize`` (µm) · 10⁴ / ``rlnMagnification``; else the
    voxel size in the particle's stack header (``from_stacks``, NaN or 0 where unknown).
    """
    if "rlnImagePixelSize" in cols:
        column, values = "rlnImagePixelSize", cols.finite("rlnImagePixelSize", "images")
    elif "rlnDetectorPixelSize" in cols and "rlnMagnification" in cols:
        column = "rlnDetectorPixelSize"
        values = cols.finite(column, "images") * 1e4 / cols.finite("rlnMagnification", "images")
    else:
        values = np.where(from_stacks > 0, from_stacks, np.nan)
        if np.isnan(values).any():
            row = int(np.argmax(np.isnan(values)))
            cols.problems.add("images", f"no pixel size: no rlnImagePixelSize (or rlnDetectorPixelSize and "
                              f"rlnMagnification) column, and no readable stack header gives one for "
                              f"{cols.problems.where(row)}", "rlnImagePixelSize")
        return values
    cols.problems.positive(values, "images", column, "the pixel size")
    return np.where(np.isfinite(values) & (values > 0), values, np.nan)


def boxes(cols: Columns, from_stacks: np.ndarray) -> np.ndarray:
    """Image edge in pixels of each particle: ``rlnImageSize``, else its stack's (0 where unknown)."""
    if "rlnImageSize" not in cols:
        return from_stacks.astype(np.int64)
    values = cols.integers("rlnImageSize")
    cols.problems.positive(values.astype(np.float64), "images", "rlnImageSize", "the image size")
    return values


def rotations(cols: Columns) -> np.ndarray | None:
    """RELION matrices from the Euler angles; None when rot and tilt are absent (2-D data)."""
    if not any(c in cols for c in ANGLES[:2]):
        return None
    for column in ANGLES:
        if column not in cols:
            raise FlexviewInputError("angles are incomplete: rlnAngleRot, rlnAngleTilt and rlnAnglePsi are "
                                     "all needed", cols.path, column)
    return euler_to_matrix(*(cols.finite(c, "poses") for c in ANGLES))


def origins(cols: Columns, pixel_size: np.ndarray, has_angles: bool) -> np.ndarray | None:
    """RELION origins (x, y) in Å, shape (N, 2); zeros when poses exist without origins, else None.

    ``rlnOriginXAngst/YAngst`` (Å) win over ``rlnOriginX/Y`` (px · ``pixel_size``); where both are
    given they must agree within 0.01 px, or a problem of ``poses`` is recorded.
    """
    found = {}
    for columns in (ORIGINS_A, ORIGINS_PX):
        present = [c for c in columns if c in cols]
        if len(present) == 1:
            missing = next(c for c in columns if c not in present)
            raise FlexviewInputError(f"{present[0]} is given without {missing}", cols.path, missing)
        if present:
            found[columns] = np.stack([cols.finite(c, "poses") for c in columns], axis=1)
    if not found:
        return np.zeros((len(cols.table), 2)) if has_angles else None
    if ORIGINS_PX in found:
        from_px = found[ORIGINS_PX] * pixel_size[:, None]
        if np.isnan(pixel_size).any() and ORIGINS_A not in found:
            cols.problems.add("poses", "origins in pixels cannot be converted to Å without a pixel size",
                              "rlnOriginX")
    if ORIGINS_A not in found:
        return from_px
    if ORIGINS_PX in found:
        _agree(cols, found[ORIGINS_A], from_px, pixel_size)
    return found[ORIGINS_A]


def _agree(cols: Columns, in_A: np.ndarray, from_px: np.ndarray, pixel_size: np.ndarray) -> None:
    """Origins given both in Å and in pixels must agree within :data:`ORIGIN_TOLERANCE_PX`."""
    gap_px = np.abs(in_A - from_px).max(axis=1) / pixel_size
    bad = np.isfinite(gap_px) & (gap_px > ORIGIN_TOLERANCE_PX)
    if bad.any():
        row = int(np.argmax(gap_px * bad))
        cols.problems.add("poses", f"rlnOriginXAngst/YAngst and rlnOriginX/Y · pixel size disagree by up to "
                          f"{gap_px[row]:.3g} px, at {cols.problems.where(row)}; {int(bad.sum())} of "
                          f"{len(bad)} particles differ by more than {ORIGIN_TOLERANCE_PX} px", "rlnOriginXAngst")


def ctf(cols: Columns) -> CTFParams | None:
    """CTF parameters when ``rlnDefocusU`` is present, else None.

    A missing ``rlnVoltage``, ``rlnSphericalAberration`` or ``rlnAmplitudeContrast`` (in
    ``data_optics`` or per particle) is a problem of ``ctf`` and the CTF is None: RELION would
    silently take 200 kV, 0 mm and an amplitude contrast of 0 (``CTF::read``), which misfits
    the images of most data sets, so flexview asks for the value instead of guessing.
    """
    if "rlnDefocusU" not in cols:
        return None
    values, fields = {}, {}
    for column, (name, default) in PARTICLE_CTF.items():
        if column in cols:
            values[name], fields[name] = cols.numeric(column), column
        else:
            values[name] = values[PARTICLE_CTF[default][0]] if isinstance(default, str) else default
    missing = [c for c in OPTICS_CTF if c not in cols]
    for column in missing:
        cols.problems.add("ctf", "the CTF needs this optics value (in data_optics or per particle); "
                          "RELION's silent default would be wrong for most data", column)
    if missing:
        return None
    for column, name in OPTICS_CTF.items():
        values[name], fields[name] = cols.numeric(column), column
    result = CTFParams(**values)
    check_ctf(result, cols.problems, fields)
    return result


def half_sets(cols: Columns) -> np.ndarray:
    """``rlnRandomSubset`` 1/2 → 0/1; -1 where absent or unusable (a problem of ``half_sets``)."""
    if "rlnRandomSubset" not in cols:
        return np.full(len(cols.table), -1, dtype=np.int8)
    subset = cols.finite("rlnRandomSubset", "half_sets")
    good = np.isin(subset, (1, 2))
    if not good.all():
        row = int(np.argmax(~good))
        cols.problems.add("half_sets", f"{cols.problems.where(row)}: random subset {subset[row]:g} is not 1 or 2",
                          "rlnRandomSubset")
    return np.where(good, subset - 1, -1).astype(np.int8)
