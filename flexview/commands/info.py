"""``flexview info FILE``: summarise a particle file (.star, .cs) or a map / image stack (.mrc, .mrcs)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from flexview.errors import FlexviewInputError
from flexview.io.mrc import describe_mrc
from flexview.io.particles import ParticleSet, StackImages, read_particles, stack_references

PARTICLE_SUFFIXES = (".star", ".cs")
MRC_SUFFIXES = (".mrc", ".mrcs", ".map")
LAYOUTS = {"relion-3.0": "RELION 3.0 STAR (one data block)", "relion-3.1": "RELION 3.1+ STAR (data_optics)",
           "cryosparc": "cryoSPARC .cs"}


def register(subparsers) -> None:
    parser = subparsers.add_parser("info", help="summarise a particle file or a map",
                                   description=__doc__.split(":", 1)[1].strip())
    parser.add_argument("file", type=Path, help="a .star, .cs, .mrc or .mrcs file")
    parser.add_argument("--project-dir", type=Path, default=None,
                        help="folder that image paths may be relative to (RELION / cryoSPARC project)")
    parser.add_argument("--validate", action="store_true",
                        help="open every image stack and check its shape and the image numbers")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    suffix = args.file.suffix.lower()
    if suffix in PARTICLE_SUFFIXES:
        particles = read_particles(args.file, args.project_dir, validate=args.validate)
        print("\n".join(particle_summary(particles)))
        warn_missing_stacks(particles)
        return 0
    if suffix in MRC_SUFFIXES:
        print("\n".join(mrc_summary(args.file)))
        return 0
    raise FlexviewInputError(f"unknown file type '{args.file.suffix}' (expected .star, .cs, .mrc or .mrcs)",
                             args.file, "file name")


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


def warn_missing_stacks(p: ParticleSet, limit: int = 5) -> None:
    """Print to stderr which image stacks are missing (at most ``limit`` names)."""
    refs = stack_references(p.images)
    missing = [] if refs is None else [q for q in refs.paths if not q.is_file()]
    if not missing:
        return
    field = _stack_field(p.images)
    print(f"flexview info: warning: {len(missing)} image stack(s) named in '{field}' not found "
          "(metadata read; images unavailable):", file=sys.stderr)
    for q in missing[:limit]:
        print(f"  {q}", file=sys.stderr)
    if len(missing) > limit:
        print(f"  ... and {len(missing) - limit} more", file=sys.stderr)


def _stack_field(images) -> str:
    while not isinstance(images, StackImages) and hasattr(images, "parent"):
        images = images.parent
    return getattr(images, "field", "image name")


def mrc_summary(path: Path) -> list[str]:
    """Lines describing an MRC map or stack: kind, shape, voxel size and value range."""
    d = describe_mrc(path)
    shape = " x ".join(str(s) for s in d["shape"])
    return [f"file: {path}", f"kind: {d['kind']}", f"shape: {shape} ({d['axes']})",
            f"voxel size: {d['voxel_size']:.4f} Å" if d["voxel_size"] > 0 else "voxel size: not set (0 in header)",
            f"min: {d['min']:.6g}", f"max: {d['max']:.6g}",
            f"mean: {d['mean']:.6g}", f"std: {d['std']:.6g}"]
