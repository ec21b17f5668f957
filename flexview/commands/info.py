"""``flexview info FILE``: summarise a particle file (.star, .cs) or a map / image stack (.mrc, .mrcs)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flexview.errors import FlexviewInputError
from flexview.io.formats import PARTICLE_SUFFIXES, read_particles
from flexview.io.mrc import describe_mrc
from flexview.io.particles import ParticleSet, StackImages, stack_references
from flexview.io.summary import particle_summary

MRC_SUFFIXES = (".mrc", ".mrcs", ".map")


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
