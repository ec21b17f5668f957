"""``flexview train``: fit a 3DFlex model to particles and write a run folder."""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
from pathlib import Path

from flexview.commands._params import add_param_options, build, given_params, set_epilog
from flexview.errors import FlexviewInputError
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
    from flexview.runfolder import RunFolder, folder_kind
    from flexview.train.session import RunComplete, TrainingSession, existing_run_error

    given = overrides(args)
    bars = StageBars()
    if args.split_halves:
        return run_split_halves(args, given)
    have_inputs = bool(given.get("particles") and given.get("consensus_map"))
    is_run = folder_kind(Path(args.out)) == "run"          # refuses a file or a foreign folder
    if is_run and not args.resume:
        raise existing_run_error(RunFolder(args.out))
    if is_run:
        try:
            session = TrainingSession.resume(args.out, given, progress=bars)
        except RunComplete as done:
            print(done)
            return 0
        finally:
            bars.close()
    elif args.resume and not have_inputs:
        raise FlexviewInputError("nothing to resume: no flexview run here (no config.json); to start one, "
                                 "give PARTICLES and --map", args.out, "--out")
    elif not have_inputs:
        print("flexview train: error: PARTICLES and --map are required", file=sys.stderr)
        return 2
    else:                                                  # --resume before the run began: start it
        try:
            session = TrainingSession.start(build(TrainConfig, given), args.out, progress=bars)
        finally:
            bars.close()     # the set-up's bars: a refused input is said on a line of its own
    return report(session, bars)


def _check_split_root(root: Path, resume: bool) -> bool:
    """Whether ``root`` already holds a split-halves run; refuses a file, a folder with files
    flexview did not write, and an existing run without ``--resume``."""
    from flexview.recon.goldstandard import HALVES, SPLIT_FILE
    from flexview.runfolder import is_temporary

    ours = {SPLIT_FILE, *(f"half_{h}" for h in HALVES)}
    if not root.exists():
        return False
    if not root.is_dir():
        raise FlexviewInputError("is a file, not a folder: give a new or empty folder", root, "--out")
    names = {p.name for p in root.iterdir()}
    foreign = sorted(n for n in names if n not in ours and not is_temporary(n, ours))
    if foreign:
        raise FlexviewInputError(f"the folder holds files flexview did not write ({', '.join(foreign[:3])}); "
                                 "nothing was written: give a new or empty folder", root, "--out")
    if not names & ours:
        return False
    if not resume:
        raise FlexviewInputError("a split-halves run is already here; add --resume to continue it, or give "
                                 "another folder", root, "--out")
    return True


def run_split_halves(args, given: dict) -> int:
    """Train (or resume) one run folder per half set, ``--out/half_A`` and ``--out/half_B``."""
    from flexview.recon.goldstandard import HALVES, SPLIT_FILE, write_split_json
    from flexview.train.session import RunComplete, TrainingSession

    if given.get("halves", "all") != "all":
        print("flexview train: error: --split-halves trains both half sets; leave out --halves", file=sys.stderr)
        return 2
    root = Path(args.out)
    existing = _check_split_root(root, args.resume)
    if not existing and not (given.get("particles") and given.get("consensus_map")):
        print("flexview train: error: PARTICLES and --map are required", file=sys.stderr)
        return 2
    new_root = not root.exists()
    if not existing:
        write_split_json(root, os.path.abspath(given["particles"]))
    for half in HALVES:
        folder = root / f"half_{half}"
        print(f"half set {half}: {folder}")
        bars = StageBars()
        try:
            if (folder / "config.json").is_file():
                session = TrainingSession.resume(folder, {**given, "halves": half}, progress=bars)
            else:
                values = dict(given)
                if "particles" not in values:    # resumed before this half started: half A's parameters
                    saved = TrainConfig.from_json(root / "half_A" / "config.json").__dict__
                    values = {**{k: v for k, v in saved.items() if k != "versions"}, **values}
                session = TrainingSession.start(build(TrainConfig, {**values, "halves": half}), folder,
                                                progress=bars)
        except RunComplete as done:
            bars.close()
            print(done)
            continue
        except BaseException:
            bars.close()
            if not existing and half == "A":    # nothing of this run was kept: leave no split.json
                (root / SPLIT_FILE).unlink(missing_ok=True)
                if new_root:
                    with contextlib.suppress(OSError):
                        root.rmdir()
            raise
        code = report(session, bars)
        if code:
            return code
    return 0


class StageBars:
    """Draws the stages of a run as :class:`~flexview.train.stages.StageProgress` events arrive
    (the ``progress`` callback of a session): one tqdm bar per stage, with its count, rate and
    time left, closed when the stage is done or the next one begins. While a bar is open it is
    redrawn every ``tick`` seconds, so that the elapsed time of a long step keeps moving."""

    def __init__(self, tick: float = 1.0):
        self.stage: str | None = None
        self.bar = None
        self.tick = tick
        self._lock = threading.Lock()
        self._stop: threading.Event | None = None

    def __call__(self, event) -> None:
        from tqdm import tqdm

        with self._lock:
            if event.stage != self.stage:
                self._close_bar()
                self.stage = event.stage
                self.bar = tqdm(total=event.total, initial=event.done, desc=event.stage,
                                unit=event.unit.rstrip("s"), dynamic_ncols=True, smoothing=0.1)
                self._start_ticking()
            if self.bar is None:             # the stage was done already
                return
            if event.total != self.bar.total:
                self.bar.total = event.total
            self.bar.update(event.done - self.bar.n)
            if event.finished:
                self._close_bar()

    def postfix(self, **values) -> None:
        with self._lock:
            if self.bar is not None:
                self.bar.set_postfix(**values)

    def write(self, message: str) -> None:
        from tqdm import tqdm

        tqdm.write(message)

    def close(self) -> None:
        with self._lock:
            self._close_bar()
            if self._stop is not None:
                self._stop.set()
                self._stop = None

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar = None

    def _start_ticking(self) -> None:
        if self._stop is None and self.tick > 0:
            self._stop = threading.Event()
            threading.Thread(target=self._redraw, args=(self._stop,), daemon=True).start()

    def _redraw(self, stop: threading.Event) -> None:
        while not stop.wait(self.tick):
            with self._lock:
                if self.bar is not None:
                    self.bar.refresh()


def report(session, bars: StageBars | None = None) -> int:
    """Drive the session, drawing each stage with ``bars`` (the session's progress callback;
    a new one when None), and print a summary with the time of each stage."""
    from flexview.train.optics import describe_resampling

    trainer = session.trainer
    bars = bars or StageBars()
    session.clock.callback = bars
    last = None
    try:
        for last in session.iterate():
            bars.postfix(block=last.block, band=f"{last.band_A:.1f}Å", loss=f"{last.data:.4g}")
            for message in trainer.messages:
                bars.write(message)
            trainer.messages.clear()
    except (Exception, KeyboardInterrupt) as exc:
        bars.close()
        return report_failure(session, exc)
    bars.close()
    z = trainer.latents.numpy()
    print(f"run folder: {session.folder.root}")
    print(f"particles: {len(z)}  training box: {trainer.data.box}  pixel size: {trainer.data.pixel_size:.3f} Å")
    mixed = describe_resampling(list(trainer.data.resampling))
    if mixed:
        print(mixed)
    print(f"iterations: {trainer.iteration}  final band limit: {trainer.schedule.band_end_A:.2f} Å")
    if last is not None:
        print(f"final data term: {last.data:.5g}  rigidity: {last.rigidity:.3g}")
    print("latent std per axis: " + ", ".join(f"{s:.3f}" for s in z.std(axis=0)))
    print("stage times (every session of the run): " + session.clock.summary())
    return 0


def report_failure(session, exc: BaseException) -> int:
    """Say that the run failed (or was interrupted), that no outputs were written and where
    ``--resume`` continues; the exit code: 2 for bad input, 130 for Ctrl-C, else 1."""
    trainer, root = session.trainer, session.folder.root
    what = "was interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
    cause = str(exc) if isinstance(exc, FlexviewInputError) else f"{type(exc).__name__}: {exc}"
    detail = "" if isinstance(exc, KeyboardInterrupt) and not str(exc) else f": {cause}"
    print(f"flexview train: error: the run in {root} {what} at iteration {trainer.iteration} of "
          f"{trainer.total_iters}{detail}", file=sys.stderr)
    print(f"flexview train: no outputs were written (status.json records the failure); the checkpoint of "
          f"iteration {session.checkpoint_iteration} is kept, and `flexview train --out {root} --resume` "
          "continues from it", file=sys.stderr)
    if isinstance(exc, KeyboardInterrupt):
        return 130
    return 2 if isinstance(exc, FlexviewInputError) else 1
