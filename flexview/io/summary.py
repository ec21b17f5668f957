"""Plain-text summaries of a particle set, for the ``flexview info`` command and the app.

Each function returns lines (no trailing newline): counts, geometry, which metadata are present
(poses, CTF, half sets), the optics groups and whether the image stacks are on disk.
"""
from __future__ import annotations

import numpy as np

from flexview.io.particles import ParticleSet, stack_references

LAYOUTS = {"relion-3.0": "RELION 3.0 STAR (one data block)", "relion-3.1": "RELION 3.1+ STAR (data_optics)",
           "cryosparc": "cryoSPARC .cs"}


def particle_summary(p: ParticleSet) -> list[str]:
    """Lines describing a particle set: counts, geometry, what metadata is present, optics, stacks."""
    n = len(p)
    lines = [f"file: {p.source}", f"format: {LAYOUTS.get(p.source_format, p.source_format or 'unknown')}",
             f"particles: {n}", f"box: {p.box} px" if p.box else "box: unknown (no image size and no stack found)",
             f"pixel size: {p.pixel_size:.4f} Å",
             f"poses: {'present' if p.rotations is not None else 'absent'}"
             + (" (origins only)" if p.rotations is None and p.origins_A is not None else ""),
             f"CTF: {'present' if p.has_ctf else 'absent'}", _halves_line(p)]
    lines += _optics_lines(p)
    lines += _stack_lines(p)
    return lines


def _halves_line(p: ParticleSet) -> str:
    if not p.has_half_sets:
        known = int((p.half_set >= 0).sum())
        return "half sets: absent" if known == 0 else f"half sets: only {known} of {len(p)} particles assigned"
    counts = np.bincount(p.half_set.astype(np.int64), minlength=2)
    return f"half sets: present ({counts[0]} / {counts[1]})"


def _optics_lines(p: ParticleSet) -> list[str]:
    groups, counts = np.unique(p.optics_group, return_counts=True)
    lines = [f"optics groups: {len(groups)}"]
    rows = p.optics.set_index("rlnOpticsGroup") if "rlnOpticsGroup" in p.optics.columns else None
    for g, count in zip(groups, counts):
        row = rows.loc[g] if rows is not None and g in rows.index else {}
        parts = [f"{count} particles", f"{p.pixel_size:.4f} Å/px", f"box {p.box or '?'}"]
        if "rlnVoltage" in row:
            parts += [f"{row['rlnVoltage']:g} kV", f"Cs {row['rlnSphericalAberration']:g} mm",
                      f"amplitude contrast {row['rlnAmplitudeContrast']:g}"]
        name = row.get("rlnOpticsGroupName", "") if len(row) else ""
        lines.append(f"  group {g}{f' ({name})' if name else ''}: " + ", ".join(parts))
    return lines


def _stack_lines(p: ParticleSet) -> list[str]:
    refs = stack_references(p.images)
    if refs is None:
        return ["image stacks: none (images in memory or absent)"]
    missing = [q for q in refs.paths if not q.is_file()]
    lines = [f"image stacks: {len(refs.paths)} file(s), {len(refs.paths) - len(missing)} found, "
             f"{len(missing)} missing"]
    if p.source_format == "cryosparc":
        flipped = int((refs.factor < 0).sum())
        lines.append("blob sign: -1 (RELION contrast) for every particle" if flipped == 0 else
                     f"blob sign: +1 (opposite contrast) for {flipped} particles: their images are "
                     "multiplied by -1 when read")
    return lines
