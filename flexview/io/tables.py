"""Pieces shared by the RELION STAR and cryoSPARC ``.cs`` formats.

The optics table of a :class:`~flexview.io.particles.ParticleSet` follows RELION's
``data_optics`` block (RELION 3.1+, Zivanov et al. 2020, IUCrJ 7:253) whatever file it came from,
so both formats complete it here; both also write stack paths relative to a folder and tidy
float32 values into short decimals.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

GROUP = "rlnOpticsGroup"
# RELION optics columns of the CTF -> CTFParams field
OPTICS_CTF = {"rlnVoltage": "voltage_kv", "rlnSphericalAberration": "cs_mm",
              "rlnAmplitudeContrast": "amplitude_contrast"}


def complete_optics(optics: pd.DataFrame, pixel_size, box) -> pd.DataFrame:
    """An optics table (``rlnOpticsGroup`` column required) completed with group name, pixel size (Å),
    box (px, omitted when 0 for every group) and dimensionality, columns in RELION order.

    ``pixel_size`` and ``box`` are one value for every group or one per row of ``optics``; a pixel
    size of 0 or NaN (unknown) leaves ``rlnImagePixelSize`` out.
    """
    optics = optics.copy()
    if "rlnOpticsGroupName" not in optics.columns:
        optics["rlnOpticsGroupName"] = [f"opticsGroup{g}" for g in optics[GROUP]]
    px = np.broadcast_to(np.asarray(pixel_size, dtype=np.float64), (len(optics),))
    if len(optics) and np.all(np.isfinite(px) & (px > 0)):
        optics["rlnImagePixelSize"] = px
    else:
        optics = optics.drop(columns=["rlnImagePixelSize"], errors="ignore")
    boxes = np.broadcast_to(np.asarray(box, dtype=np.int64), (len(optics),))
    if len(optics) and np.all(boxes > 0):
        optics["rlnImageSize"] = boxes
    if "rlnImageDimensionality" not in optics.columns:
        optics["rlnImageDimensionality"] = 2
    first = [GROUP, "rlnOpticsGroupName", *OPTICS_CTF, "rlnImagePixelSize", "rlnImageSize"]
    order = [c for c in first if c in optics.columns] + [c for c in optics.columns if c not in first]
    return optics[order].reset_index(drop=True)


def group_values(groups: np.ndarray, particle_groups: np.ndarray, scalar, per_particle: np.ndarray | None):
    """The value of each optics group in ``groups``: ``scalar``, or its first particle's entry of
    ``per_particle`` (shape (N,)) when given."""
    if per_particle is None:
        return scalar
    particle_groups = np.asarray(particle_groups)
    first = [int(np.argmax(particle_groups == g)) for g in groups]
    return np.asarray(per_particle)[first]


def relative_path(target: Path, root: Path) -> str:
    """``target`` relative to ``root`` (POSIX separators); absolute when they share only ``/``."""
    target = Path(os.path.abspath(target))
    try:
        shared = os.path.commonpath([target, root])
    except ValueError:  # different drives
        return target.as_posix()
    if shared == os.path.abspath(os.sep):
        return target.as_posix()
    return Path(os.path.relpath(target, root)).as_posix()


def float32_to_decimal(values: np.ndarray) -> np.ndarray:
    """float64 copy; each float32 value becomes the shortest decimal (≤ 9 significant digits) that
    rounds back to the same float32, e.g. 2.806 rather than 2.80599999, so exported files stay
    tidy. The float32 values themselves are unchanged; other dtypes are only cast to float64."""
    if values.dtype != np.float32:
        return values.astype(np.float64)
    original = values.reshape(-1)
    out = original.astype(np.float64)
    todo = np.isfinite(out) & (out != 0)
    for digits in (6, 7, 8):  # 7, 8, 9 significant digits
        index = np.flatnonzero(todo)
        if not index.size:
            break
        scale = 10.0 ** (digits - np.floor(np.log10(np.abs(out[index]))))
        rounded = np.round(out[index] * scale) / scale
        exact = rounded.astype(np.float32) == original[index]
        out[index[exact]] = rounded[exact]
        todo[index[exact]] = False
    return out.reshape(values.shape)
