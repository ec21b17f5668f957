"""``flexview synth``: write a built-in synthetic flexible data set with its ground truth."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from flexview.errors import FlexviewInputError
from flexview.synth.phantom import KINDS


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "synth", help="simulate a flexible test data set (particles, consensus map, ground truth)",
        description="Simulate particles of a pseudo-atomic phantom that bends (hinge), slides (shear) or "
                    "stays rigid, and write particles.star/.cs/.mrcs, consensus.mrc and ground_truth/.")
    parser.add_argument("--kind", choices=KINDS, default="hinge", help="phantom and motion (default hinge)")
    parser.add_argument("--n", type=int, default=2000, help="number of particles (default 2000)")
    parser.add_argument("--box", type=int, default=64, help="image box in pixels (default 64)")
    parser.add_argument("--box-size", type=float, default=None, dest="box_size_A",
                        help="physical box edge in Å (default 160: 2.5 Å/px at box 64)")
    parser.add_argument("--snr", type=float, default=0.05,
                        help="mean var(signal) / noise variance (default 0.05)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from flexview.synth.dataset import make_dataset

    if args.n < 2:
        raise FlexviewInputError("need at least 2 particles", field="--n")
    start = time.perf_counter()
    ds = make_dataset(args.out, kind=args.kind, n_particles=args.n, box=args.box,
                      box_size_A=args.box_size_A, snr=args.snr, seed=args.seed)
    px = (args.box_size_A or 160.0) / args.box
    print(f"flexview synth: {args.n} particles of the '{args.kind}' phantom, box {args.box} at "
          f"{px:.3f} Å/px, SNR {args.snr}, seed {args.seed} ({time.perf_counter() - start:.1f} s)")
    for label, path in [("particles", ds.star), ("cryoSPARC twin", ds.cs), ("images", ds.stack),
                        ("consensus map", ds.consensus), ("description", ds.description),
                        ("ground truth", ds.ground_truth)]:
        print(f"  {label:15s} {path}")
    return 0
