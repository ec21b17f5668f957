"""``flexview mesh``: a tetrahedral mesh (.npz) for training, regular or cut into fused segments."""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from flexview.errors import FlexviewInputError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "mesh", help="build a regular or segmented (cut and fused) mesh for `flexview train --mesh`",
        description="Cover the thresholded, dilated map with a regular tetrahedral mesh; with --segments, "
                    "cut it into one submesh per segment and fuse only the interfaces listed in --fuse.")
    p.add_argument("map", help="consensus map (.mrc)")
    p.add_argument("--out", required=True, type=Path, help="mesh file to write (.npz)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--cell-size", type=float, dest="cell_size_A", help="cell (cube) edge in Å")
    size.add_argument("--cells", type=int, default=20, help="cells across the box (default 20)")
    p.add_argument("--threshold", type=float, help="density threshold (default: automatic, Otsu)")
    p.add_argument("--dilate", type=float, default=6.0, dest="dilate_A",
                   help="dilation of the thresholded map in Å (default 6)")
    p.add_argument("--box", type=int, help="training box the mesh is for; the map is Fourier-cropped to it "
                                           "(default: the map's box)")
    p.add_argument("--segments",
                   help="label volume (.mrc) over the same box: 0 solvent, one value per segment")
    p.add_argument("--fuse", default="",
                   help="segment pairs to fuse, as a tree: '0>1, 1>2' joins 1 to 0, then 2 to 1 "
                        "(default: no fusion)")
    p.add_argument("--rigid", default="", help="segments to keep rigid, e.g. '3' or '3,5'")
    p.add_argument("--rigid-weight", type=float, default=20.0,
                   help="rigidity weight of rigid segments (default 20)")
    p.add_argument("--pinned", default="", help="segments that never move (e.g. a micelle), e.g. '4'")
    p.set_defaults(func=run)


def parse_ids(text: str, field: str) -> list[int]:
    """``"3, 5"`` → ``[3, 5]``; empty → ``[]``."""
    try:
        return [int(t) for t in str(text or "").replace(";", ",").split(",") if t.strip()]
    except ValueError as exc:
        raise FlexviewInputError(f"expected segment ids like '3,5', not {text!r}", field=field) from exc


def _read_segments(path: str, extent_A: float) -> tuple[np.ndarray, float]:
    from flexview.io.mrc import read_map

    labels, voxel = read_map(path)
    if labels.ndim != 3 or abs(labels.shape[0] * voxel - extent_A) > 0.01 * extent_A:
        raise FlexviewInputError(f"the segmentation spans {labels.shape[0] * voxel:.1f} Å but the map "
                                 f"{extent_A:.1f} Å; it must cover the same box", path, "--segments")
    return labels, voxel


# argument of the engine → the option that sets it
OPTIONS = {"box": "--box", "threshold": "--threshold", "--cells-across": "--cells"}


def check_args(args: argparse.Namespace) -> None:
    """Every check that needs no map: numbers within their bounds, the segment options and --out."""
    from flexview.commands._params import check_option
    from flexview.io.outputs import check_output_file, written_by_flexview
    from flexview.train.config import TrainConfig

    check_option(TrainConfig, "cells_across", args.cells, "--cells")
    check_option(TrainConfig, "cell_size_A", args.cell_size_A, "--cell-size")
    check_option(TrainConfig, "mask_threshold", args.threshold, "--threshold")
    check_option(TrainConfig, "mask_dilate_A", args.dilate_A, "--dilate")
    if args.box is not None:
        check_option(TrainConfig, "box", args.box, "--box")
    if not (math.isfinite(args.rigid_weight) and args.rigid_weight >= 0):
        raise FlexviewInputError(f"must be ≥ 0, not {args.rigid_weight:g}", field="--rigid-weight")
    check_output_file(args.out, ours=written_by_flexview)
    if args.out.suffix.lower() != ".npz":
        raise FlexviewInputError("a mesh file is a NumPy archive whose name ends in .npz", args.out, "--out")


def run(args: argparse.Namespace) -> int:
    from flexview.commands._params import as_options
    from flexview.io.meshfile import write_mesh
    from flexview.model.cutmesh import cut_mesh, parse_fuse
    from flexview.model.mesh import build_regular_mesh
    from flexview.preprocess import read_map_at_box
    from flexview.train.setup import check_cells

    fuse = parse_fuse(args.fuse)
    rigid, pinned = parse_ids(args.rigid, "--rigid"), parse_ids(args.pinned, "--pinned")
    if (fuse or rigid or pinned) and not args.segments:
        raise FlexviewInputError("--fuse, --rigid and --pinned need --segments", field="--segments")
    check_args(args)
    with as_options(OPTIONS):
        density, px = read_map_at_box(args.map, args.box)
        check_cells(args.cells, args.cell_size_A, density.shape[0], px)
        labels, voxel = _read_segments(args.segments, density.shape[0] * px) if args.segments else (None, px)
        mesh = build_regular_mesh(density, px, threshold=args.threshold, cell_size_A=args.cell_size_A,
                                  cells_across=args.cells, dilate_A=args.dilate_A)
    if args.segments:
        mesh = cut_mesh(mesh, labels, fuse, rigid=rigid, pinned=pinned, rigid_weight=args.rigid_weight,
                        labels_pixel_size=voxel)
    write_mesh(args.out, mesh)
    print(f"flexview mesh: {mesh.n_cells} cells, {mesh.n_vertices} vertices, cube edge "
          f"{mesh.grid_spacing:.2f} Å, box {mesh.box} at {mesh.pixel_size:.3f} Å/px -> {args.out}")
    for s in np.unique(mesh.segment) if args.segments else []:
        kind = "pinned" if s in pinned else "rigid" if s in rigid else "flexible"
        print(f"  segment {s}: {int((mesh.segment == s).sum())} cells ({kind})")
    if args.segments:
        print(f"  fused: {', '.join(f'{a}>{b}' for a, b in fuse) or 'none'}")
    return 0
