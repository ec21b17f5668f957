"""``flexview train``: fit a 3DFlex model to particles and write a run folder."""
from __future__ import annotations

import argparse
import sys

from flexview.commands._params import add_param_options, build, given_params, set_epilog
from flexview.params import table
from flexview.train.config import TrainConfig


def register(sub) -> None:
    p = sub.add_parser("train", help="train a flexible model (3DFlex) on particles",
                       description="Train the canonical map, flow generator and per-particle latents.",
                       epilog=set_epilog(TrainConfig), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("particles", nargs="?", help=table(TrainConfig)["particles"].param.help)
    p.add_argument("--out", required=True, help="run folder to create (or resume)")
    add_param_options(p, TrainConfig, example="lr_flow=5e-4")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--split-halves", action="store_true",
                   help="gold standard: train one independent model per half set, in --out/half_A and "
                        "--out/half_B (read by `flexview reconstruct`)")
    p.set_defaults(func=run)


def overrides(args) -> dict:
    """Parameters the user gave on the command line, as checked TrainConfig fields."""
    given = given_params(args, TrainConfig)
    if args.particles:
        given["particles"] = args.particles
    return given


def run(args) -> int:
    from flexview.train.session import TrainingSession

    given = overrides(args)
    if args.split_halves:
        return run_split_halves(args, given)
    if args.resume:
        session = TrainingSession.resume(args.out, given)
    else:
        if not given.get("particles") or not given.get("consensus_map"):
            print("flexview train: error: PARTICLES and --map are required", file=sys.stderr)
            return 2
        session = TrainingSession.start(build(TrainConfig, given), args.out)
    return report(session)


def run_split_halves(args, given: dict) -> int:
    """Train (or resume) one run folder per half set, ``--out/half_A`` and ``--out/half_B``."""
    from pathlib import Path

    from flexview.recon.goldstandard import HALVES, write_split_json
    from flexview.train.session import TrainingSession

    if given.get("halves", "all") != "all":
        print("flexview train: error: --split-halves trains both half sets; leave out --halves", file=sys.stderr)
        return 2
    root = Path(args.out)
    if not args.resume and not (given.get("particles") and given.get("consensus_map")):
        print("flexview train: error: PARTICLES and --map are required", file=sys.stderr)
        return 2
    if not args.resume:
        write_split_json(root, given["particles"])
    for half in HALVES:
        folder = root / f"half_{half}"
        print(f"half set {half}: {folder}")
        if args.resume and (folder / "config.json").is_file():
            session = TrainingSession.resume(folder, {**given, "halves": half})
        else:
            values = dict(given)
            if "particles" not in values:    # resumed before this half started: half A's parameters
                saved = TrainConfig.from_json(root / "half_A" / "config.json").__dict__
                values = {**{k: v for k, v in saved.items() if k != "versions"}, **values}
            session = TrainingSession.start(build(TrainConfig, {**values, "halves": half}), folder)
        report(session)
    return 0


def report(session) -> int:
    """Drive the session with a progress bar and print a summary."""
    from tqdm import tqdm

    trainer = session.trainer
    bar = tqdm(total=trainer.total_iters, initial=trainer.iteration, unit="it", dynamic_ncols=True)
    last = None
    for last in session.iterate():
        bar.update(1)
        bar.set_postfix(block=last.block, band=f"{last.band_A:.1f}Å", loss=f"{last.data:.4g}")
        for message in trainer.messages:
            bar.write(message)
        trainer.messages.clear()
    bar.close()
    z = trainer.latents.numpy()
    print(f"run folder: {session.folder.root}")
    print(f"particles: {len(z)}  training box: {trainer.data.box}  pixel size: {trainer.data.pixel_size:.3f} Å")
    print(f"iterations: {trainer.iteration}  final band limit: {trainer.schedule.band_end_A:.2f} Å")
    if last is not None:
        print(f"final data term: {last.data:.5g}  rigidity: {last.rigidity:.3g}")
    print("latent std per axis: " + ", ".join(f"{s:.3f}" for s in z.std(axis=0)))
    return 0
