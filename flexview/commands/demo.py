"""``flexview demo``: the built-in synthetic dataset, trained end to end, then shown in napari."""
from __future__ import annotations

import time
from pathlib import Path

from flexview.errors import FlexviewInputError


DEMO_DEFAULTS = dict(kind="hinge", n_particles=2000, box=64, snr=0.1, train_box=32, epochs=16,
                     batch_size=100, cells_across=10, lr_flow=0.01)


def register(sub) -> None:
    p = sub.add_parser("demo", help="make the built-in flexible dataset, train on it and show the result",
                       description="Synthetic hinge protein → training → volume series → napari.")
    p.add_argument("--out", required=True, help="new or empty folder for the dataset, the run and the series")
    p.add_argument("--particles", type=int, default=DEMO_DEFAULTS["n_particles"], help="number of particles")
    p.add_argument("--epochs", type=int, default=DEMO_DEFAULTS["epochs"], help="training epochs")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-gui", action="store_true", help="do not open napari at the end")
    p.set_defaults(func=run)


def check_args(args):
    """The demo's training configuration, after refusing, before anything is simulated or
    written, an option out of bounds or an --out that is not a new or empty folder."""
    from flexview.commands._params import build
    from flexview.device import resolve_device
    from flexview.io.outputs import check_output_folder
    from flexview.train import TrainConfig

    out, d = Path(args.out), DEMO_DEFAULTS
    if args.particles < 2:
        raise FlexviewInputError(f"need at least 2 particles, not {args.particles}", field="--particles")
    cfg = build(TrainConfig, dict(particles=str(out / "data" / "particles.star"),
                                  consensus_map=str(out / "data" / "consensus.mrc"), box=d["train_box"],
                                  epochs=args.epochs, batch_size=d["batch_size"], cells_across=d["cells_across"],
                                  lr_flow=d["lr_flow"], device=args.device, seed=args.seed))
    resolve_device(cfg.device)
    check_output_folder(out)
    return cfg


def run(args) -> int:
    from flexview.commands.generate import write_series
    from flexview.commands.train import StageBars, report
    from flexview.run import load_run
    from flexview.synth import make_dataset
    from flexview.train import TrainingSession

    cfg = check_args(args)
    out, d = Path(args.out), DEMO_DEFAULTS
    t0 = time.perf_counter()
    print(f"1/3 simulating {args.particles} particles of a hinged protein (box {d['box']}) ...")
    make_dataset(out / "data", kind=d["kind"], n_particles=args.particles, box=d["box"], snr=d["snr"],
                 seed=args.seed)
    print(f"2/3 training at box {d['train_box']} ...")
    bars = StageBars()
    report(TrainingSession.start(cfg, out / "run", progress=bars), bars)
    print("3/3 writing a volume series along latent axis 0 ...")
    run_obj = load_run(out / "run")
    write_series(run_obj, 0, 21, 1.5, out / "series")
    print(f"done in {time.perf_counter() - t0:.0f} s: {out / 'run'} (run folder), {out / 'series'} (volumes)")
    if not args.no_gui:
        from flexview._napari.explore import show_run

        show_run(out / "run", title="flexview demo")
    return 0
