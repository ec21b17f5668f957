"""``flexview train``: fit a 3DFlex model to particles and write a run folder."""
from __future__ import annotations

import sys
from dataclasses import fields

from flexview.train.config import TrainConfig

# command-line option → TrainConfig field, for the options every user needs; the rest via --set
OPTIONS = {
    "map": "consensus_map", "mask": "mask", "mesh": "mesh", "project_dir": "project_dir",
    "box": "box", "latent_dim": "latent_dim", "epochs": "epochs", "batch_size": "batch_size",
    "device": "device", "seed": "seed", "kernel": "kernel", "cells_across": "cells_across",
    "cell_size": "cell_size_A", "rigidity": "rigidity_weight", "latent_init": "latent_init",
    "halves": "halves", "checkpoint_every": "checkpoint_every",
}


def register(sub) -> None:
    p = sub.add_parser("train", help="train a flexible model (3DFlex) on particles",
                       description="Train the canonical map, flow generator and per-particle latents.")
    p.add_argument("particles", nargs="?", help="particles (.star or .cs) with poses and CTF")
    p.add_argument("--map", help="consensus map (.mrc) over the same box as the particles")
    p.add_argument("--out", required=True, help="run folder to create (or resume)")
    p.add_argument("--mask", help="solvent mask (.mrc); default: thresholded, dilated consensus map")
    p.add_argument("--mesh", help="tetrahedral mesh (.npz from `flexview mesh`); default: regular mesh")
    p.add_argument("--project-dir", help="folder that relative image paths are resolved against")
    p.add_argument("--box", type=int, help="training box in pixels (default 64)")
    p.add_argument("--latent-dim", type=int, help="latent dimensions K (default 2)")
    p.add_argument("--epochs", type=int, help="passes over the particles (default 20)")
    p.add_argument("--batch-size", type=int, help="particles per minibatch (default 500)")
    p.add_argument("--device", help="cuda, cpu or auto (default auto: the GPU when present)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--kernel", choices=["linear", "cubic"], help="scatter kernel (default linear)")
    p.add_argument("--cells-across", type=int, help="mesh cells across the box (default 20)")
    p.add_argument("--cell-size", type=float, help="mesh cell size in Å (overrides --cells-across)")
    p.add_argument("--rigidity", type=float, help="rigidity weight λ (default 2)")
    p.add_argument("--latent-init", help="zeros, pca, or a .npy/.cs file (default zeros)")
    p.add_argument("--halves", choices=["all", "A", "B"], help="train on all particles or one half set")
    p.add_argument("--checkpoint-every", type=int, help="iterations between checkpoints (default 50)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="any other parameter of the run (see config.json), e.g. --set lr_flow=5e-4")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--split-halves", action="store_true",
                   help="gold standard: train one independent model per half set, in --out/half_A and "
                        "--out/half_B (read by `flexview reconstruct`)")
    p.set_defaults(func=run)


def overrides(args) -> dict:
    """Parameters the user gave on the command line, as TrainConfig fields."""
    given = {field: getattr(args, opt) for opt, field in OPTIONS.items() if getattr(args, opt) is not None}
    if args.particles:
        given["particles"] = args.particles
    types = {f.name: f.type for f in fields(TrainConfig)}
    for item in args.set:
        name, _, value = item.partition("=")
        if name not in types:
            raise SystemExit(f"flexview train: error: unknown parameter {name!r} in --set")
        given[name] = _parse(value, TrainConfig.__dataclass_fields__[name].default)
    return given


def _parse(text: str, default):
    if isinstance(default, bool):
        return text.lower() in ("1", "true", "yes")
    if isinstance(default, int):
        return int(text)
    if isinstance(default, float) or default is None:
        try:
            return float(text)
        except ValueError:
            return None if text.lower() == "none" else text
    return text


def run(args) -> int:
    from flexview.train.session import TrainingSession

    given = overrides(args)
    if args.split_halves:
        return run_split_halves(args, given)
    if args.resume:
        session = TrainingSession.resume(args.out, given)
    else:
        if "particles" not in given or "consensus_map" not in given:
            print("flexview train: error: PARTICLES and --map are required", file=sys.stderr)
            return 2
        session = TrainingSession.start(TrainConfig(**given), args.out)
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
    if not args.resume and ("particles" not in given or "consensus_map" not in given):
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
            session = TrainingSession.start(TrainConfig(**{**values, "halves": half}), folder)
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
