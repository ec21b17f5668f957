"""State of the Train widget: the generator a worker thread drives through a training session,
the updates it sends to the GUI, and the losses and status of the run.

:func:`training_updates` wraps :meth:`flexview.train.TrainingSession.iterate`; sending
:data:`STOP` ends it after the current iteration and the session writes a complete, resumable
run folder. The session's stages (:class:`~flexview.train.stages.StageProgress`: set-up, cache,
calibration, initialisation, training, final embedding, writing) go to the ``on_stage`` callback;
:class:`TrainState` turns the latest into the progress bar and the status line.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from psygnal import Signal

from flexview.app.messages import error_text
from flexview.runfolder import RunFolder, read_log
from flexview.train import Progress, TrainConfig, TrainingSession
from flexview.train.session import RunComplete
from flexview.train.stages import TRAINING, StageProgress

STOP = "stop"


@dataclass
class TrainUpdate:
    """What the worker sends to the GUI after each iteration (``progress`` None: before the first)."""

    progress: Progress | None
    iteration: int
    total: int
    pixel_size: float
    volume: np.ndarray | None = None     # canonical map (box, box, box), every few iterations
    latents: np.ndarray | None = None    # (M, K), with the volume


@dataclass
class TrainResult:
    """How the worker ended: the run folder, where training got to, whether it completed."""

    folder: Path
    iteration: int
    total: int
    finished: bool


def training_updates(cfg: TrainConfig, out: str | Path, *, resume: bool = False, refresh_every: int = 5,
                     on_stage=None):
    """Generator run by the worker: start (or resume) a session and yield a :class:`TrainUpdate`
    per iteration; ``on_stage(StageProgress)`` is called (in the worker's thread) as each stage
    of the session advances, also between yields (set-up, final embedding). Sending :data:`STOP`
    ends it after the current iteration; the session then checkpoints and writes its outputs (a
    resumable run folder that Explore opens), keeping the outputs of a run that had completed.
    An error writes no outputs (the last checkpoint is kept). Returns a :class:`TrainResult`."""
    if resume:
        try:
            session = TrainingSession.resume(out, {"epochs": cfg.epochs, "device": cfg.device},
                                             progress=on_stage)
        except RunComplete as done:         # nothing to do, nothing written
            return TrainResult(Path(out), done.iteration, done.iteration, True)
    else:
        session = TrainingSession.start(cfg, out, progress=on_stage)
    trainer = session.trainer
    steps = session.iterate()
    started = False
    try:
        command = yield _snapshot(session, None, True)
        while command != STOP:
            record = next(steps, None)
            started = True
            if record is None:
                break
            fresh = trainer.iteration >= trainer.total_iters or trainer.iteration % max(1, refresh_every) == 0
            command = yield _snapshot(session, record, fresh)
    finally:
        steps.close()  # closed early, the session stops: checkpoint and outputs (TrainingSession.stop)
        if not started:
            session.stop()
    return TrainResult(Path(out), trainer.iteration, trainer.total_iters, session.finished)


def _snapshot(session: TrainingSession, record: Progress | None, with_maps: bool) -> TrainUpdate:
    trainer = session.trainer
    update = TrainUpdate(record, trainer.iteration, trainer.total_iters, trainer.model.pixel_size)
    if with_maps:
        with torch.no_grad():  # the band-limited density, as the run folder's canonical.mrc holds it
            update.volume = trainer.model.canonical.density().cpu().numpy().copy()
        update.latents = trainer.latents.numpy().copy()
    return update


class TrainState:
    """The losses seen so far and the state of the run (``idle``, ``running``, ``paused``,
    ``stopping``, ``finished``, ``stopped``, ``failed``). Signal ``changed()``."""

    changed = Signal()

    def __init__(self):
        self.history: list[Progress] = []
        self.stage: StageProgress | None = None      # the latest stage event of the run
        self.total_iterations = 0                    # of the run, from the latest update
        self.status = "idle"
        self.result: TrainResult | None = None
        self.error: str = ""
        self.out: Path | None = None

    def begin(self, out: Path, resume: bool) -> None:
        self.out, self.result, self.error, self.status = out, None, "", "running"
        self.stage = None
        if not resume:
            self.history = []
        elif not self.history:  # resuming a run this widget did not start: its log so far
            self.history = read_history(RunFolder(out).log)
        self.changed.emit()

    def record(self, update: TrainUpdate) -> None:
        self.total_iterations = update.total
        if update.progress is not None:
            self.history = [p for p in self.history if p.iteration < update.progress.iteration]
            self.history.append(update.progress)

    def set_stage(self, event: StageProgress) -> None:
        self.stage = event

    def progress_bar(self) -> tuple[int, int, str]:
        """(value, maximum, QProgressBar format) for the current stage, e.g. (1500, 4000,
        "final embedding %v / %m particles")."""
        s = self.stage
        if s is None:
            return 0, 0 if self.status == "running" else 1, "starting ..."
        return min(s.done, s.total), max(1, s.total), f"{s.stage} %v / %m {s.unit}"

    def stage_text(self) -> str:
        """The status line while the run is going: during training the last iteration (epoch,
        block, band limit, seconds per iteration), otherwise the stage and its progress, e.g.
        "final embedding 1,500 / 4,000 particles, 42 s"."""
        s, last = self.stage, self.history[-1] if self.history else None
        if s is None:
            return "starting ..."
        if s.stage == TRAINING and last is not None:
            return (f"training: epoch {last.epoch + 1}, {last.block} step, band limit {last.band_A:.1f} Å, "
                    f"{last.seconds:.2f} s/iteration")
        return f"{s.text()}, {s.seconds:.0f} s"

    def end(self, result: TrainResult) -> None:
        self.result = result
        self.status = "finished" if result.finished else "stopped"
        self.changed.emit()

    def fail(self, exc: BaseException) -> None:
        self.status, self.error = "failed", error_text(exc)
        self.changed.emit()

    def set_status(self, status: str) -> None:
        self.status = status
        self.changed.emit()

    def curves(self) -> dict[str, np.ndarray]:
        """Per-iteration arrays: iteration, data, rigidity, band_A."""
        h = self.history
        return {key: np.array([getattr(p, key) for p in h], dtype=float)
                for key in ("iteration", "data", "rigidity", "band_A")}

    @property
    def active(self) -> bool:
        return self.status in ("running", "paused", "stopping")


def read_history(log: Path) -> list[Progress]:
    """Progress records of a run folder's ``log.csv`` (empty when absent or not understood)."""
    try:
        return [Progress(**row) for row in read_log(log)]
    except TypeError:  # a log written by another version, with other columns
        return []
