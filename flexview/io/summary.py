"""Plain-text summaries of a particle set, for the ``flexview info`` command and the app.

Each function returns lines (no trailing newline): counts, geometry, which metadata are present
(poses, CTF, half sets), what is missing, the optics groups with each group's pixel size and box,
whether the image stacks are on disk, and the problems the reader recorded.
"""
from __future__ import annotations

import numpy as np

from flexview.io.particles import ParticleSet, stack_references
from flexview.io.problems import is_file, problem_lines

LAYOUTS = {"relion-3.0": "RELION 3.0 STAR (one data block)", "relion-3.1": "RELION 3.1+ STAR (data_optics)",
           "cryosparc": "cryoSPARC .cs"}


def particle_summary(p: ParticleSet) -> list[str]:
    """Lines describing a particle set: counts, geometry, what metadata is present or missing,
    optics groups, stacks and the number of problems (listed by :func:`problem_summary`)."""
    n = len(p)
    lines = [f"file: {p.source}", f"format: {LAYOUTS.get(p.source_format, p.source_format or 'unknown')}",
             f"particles: {n}", _box_line(p), _pixel_size_line(p),
             f"poses: {'present' if p.rotations is not None else 'absent'}"
             + (" (origins only)" if p.rotations is None and p.origins_A is not None else ""),
             _ctf_line(p), _halves_line(p), _missing_line(p)]
    lines += _optics_lines(p)
    lines += _stack_lines(p)
    problems = getattr(p, "problems", [])
    lines.append(f"problems: {len(problems)}" + (" (train and reconstruct refuse these)" if problems else ""))
    return lines


def problem_summary(p: ParticleSet) -> list[str]:
    """One line per problem the reader recorded: ``[part] field 'X': what is wrong``."""
    return problem_lines(getattr(p, "problems", []))


def _box_line(p: ParticleSet) -> str:
    boxes = getattr(p, "boxes", None)
    if boxes is not None:
        return f"box: {boxes.min()} to {boxes.max()} px (differs between optics groups)"
    return f"box: {p.box} px" if p.box else "box: unknown (no image size and no stack found)"


def _pixel_size_line(p: ParticleSet) -> str:
    sizes = getattr(p, "pixel_sizes", None)
    if sizes is not None:
        return f"pixel size: {sizes.min():.4f} to {sizes.max():.4f} Å (differs between optics groups)"
    return f"pixel size: {p.pixel_size:.4f} Å" if p.pixel_size > 0 else "pixel size: unknown"


def _ctf_line(p: ParticleSet) -> str:
    if p.has_ctf:
        return "CTF: present"
    fields = [e.field for aspect, e in getattr(p, "problems", []) if aspect == "ctf"]
    return f"CTF: incomplete (no {', '.join(fields)})" if fields else "CTF: absent"


def _missing_line(p: ParticleSet) -> str:
    """What train and reconstruct need that the set lacks."""
    refs = stack_references(p.images)
    missing = [name for name, absent in (
        ("poses", p.rotations is None), ("CTF", not p.has_ctf),
        ("images", p.images is None or (refs is not None and any(not is_file(q) for q in refs.paths))),
        ("half sets", not p.has_half_sets), ("pixel size", not p.pixel_size > 0)) if absent]
    return "missing: " + (", ".join(missing) if missing else "nothing")


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
        px = row.get("rlnImagePixelSize", p.pixel_size) if len(row) else p.pixel_size
        box = row.get("rlnImageSize", p.box) if len(row) else p.box
        parts = [f"{count} particles", f"{px:.4f} Å/px" if px and px > 0 else "pixel size unknown",
                 f"box {int(box) if box else '?'}"]
        for column, form in (("rlnVoltage", "{:g} kV"), ("rlnSphericalAberration", "Cs {:g} mm"),
                             ("rlnAmplitudeContrast", "amplitude contrast {:g}")):
            if column in row:
                parts.append(form.format(row[column]))
        name = row.get("rlnOpticsGroupName", "") if len(row) else ""
        lines.append(f"  group {g}{f' ({name})' if name else ''}: " + ", ".join(parts))
    return lines


def _stack_lines(p: ParticleSet) -> list[str]:
    refs = stack_references(p.images)
    if refs is None:
        return ["image stacks: none (images in memory or absent)"]
    missing = [q for q in refs.paths if not is_file(q)]
    lines = [f"image stacks: {len(refs.paths)} file(s), {len(refs.paths) - len(missing)} found, "
             f"{len(missing)} missing"]
    if p.source_format == "cryosparc":
        flipped = int((refs.factor < 0).sum())
        lines.append("blob sign: -1 (RELION contrast) for every particle" if flipped == 0 else
                     f"blob sign: +1 (opposite contrast) for {flipped} particles: their images are "
                     "multiplied by -1 when read")
    return lines
