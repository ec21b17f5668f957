"""``flexview info FILE``: summarise a particle file (.star, .cs) or a map / image stack (.mrc, .mrcs).

Every file that parses is summarised, exit 0: what the particles hold and lack (poses, CTF,
images, half sets, pixel size), each optics group's pixel size and box, and, as warnings on
stderr, the values ``train`` and ``reconstruct`` would refuse. Exit 2 only for a file that cannot
be parsed (or, with ``--validate``, a stack that is missing or does not fit).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flexview.errors import FlexviewInputError
from flexview.io.formats import PARTICLE_SUFFIXES, read_particles
from flexview.io.mrc import describe_mrc
from flexview.io.particles import ParticleSet, StackImages, stack_references
from flexview.io.summary import particle_summary, problem_summary

MRC_SUFFIXES = (".mrc", ".mrcs", ".map")


def register(subparsers) -> None:
    parser = subparsers.add_parser("info", help="summarise a particle file or a map",
                                   description=__doc__.split("\n")[0].split(":", 1)[1].strip())
    parser.add_argument("file", type=Path, help="a .star, .cs, .mrc or .mrcs file")
    parser.add_argument("--project-dir", type=Path, default=None,
                        help="folder that image paths may be relative to (RELION / cryoSPARC project)")
    parser.add_argument("--validate", action="store_true",
                        help="open every image stack and check its shape and the image numbers")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    suffix = args.file.suffix.lower()
    if suffix in PARTICLE_SUFFIXES:
        particles = read_particles(args.file, args.project_dir, validate=args.validate, strict=False)
        print("\n".join(particle_summary(particles)))
        for line in problem_summary(particles):
            print(f"flexview info: warning: {line}", file=sys.stderr)
        warn_missing_stacks(particles)
        return 0
    if suffix in MRC_SUFFIXES:
        lines, warning = mrc_summary(args.file)
        print("\n".join(lines))
        if warning:
            print(f"flexview info: warning: {args.file}: field 'data': {warning}", file=sys.stderr)
        return 0
    raise FlexviewInputError(f"unknown file type '{args.file.suffix}' (expected .star, .cs, .mrc or .mrcs)",
                             args.file, "file name")


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


def mrc_summary(path: Path) -> tuple[list[str], str]:
    """Lines describing an MRC map or stack (kind, shape, voxel size, range of the finite values),
    and a warning ("" when none) when values are NaN or infinite."""
    d = describe_mrc(path)
    shape = " x ".join(str(s) for s in d["shape"])
    lines = [f"file: {path}", f"kind: {d['kind']}", f"shape: {shape} ({d['axes']})",
             f"voxel size: {d['voxel_size']:.4f} Å" if d["voxel_size"] > 0 else "voxel size: not set (0 in header)",
             f"min: {d['min']:.6g}", f"max: {d['max']:.6g}", f"mean: {d['mean']:.6g}", f"std: {d['std']:.6g}",
             f"non-finite values: {d['non_finite']}"]
    warning = ""
    if d["non_finite"]:
        count = d["non_finite"]
        warning = (f"{count} {'value is' if count == 1 else 'values are'} NaN or infinite (statistics are of the "
                   "others); train and reconstruct refuse such a map or stack")
    return lines, warning
