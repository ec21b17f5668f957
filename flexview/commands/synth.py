"""``flexview synth``: write a built-in synthetic flexible data set with its ground truth."""
from __future__ import annotations

import argparse
import math
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


# what `flexview synth` writes in --out (dataset.json last)
OUTPUTS = ("particles.star", "particles.cs", "particles.mrcs", "consensus.mrc", "dataset.json", "ground_truth")


def check_args(args: argparse.Namespace) -> None:
    """Refuse, before anything is simulated or written, a number out of bounds or an --out that
    holds files `flexview synth` did not write."""
    from flexview.commands._params import check_option
    from flexview.io.outputs import check_output_folder
    from flexview.train.config import TrainConfig

    if args.n < 2:
        raise FlexviewInputError(f"need at least 2 particles, not {args.n}", field="--n")
    check_option(TrainConfig, "box", args.box, "--box")
    check_option(TrainConfig, "seed", args.seed, "--seed")
    for value, option in ((args.box_size_A, "--box-size"), (args.snr, "--snr")):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise FlexviewInputError(f"must be a finite number > 0, not {value:g}", field=option)
    check_output_folder(args.out, marker="dataset.json", names=OUTPUTS)


def run(args: argparse.Namespace) -> int:
    from flexview.synth.dataset import make_dataset

    check_args(args)
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
