"""State of the Train widget: the generator a worker thread drives through a training session,
the updates it sends to the GUI, and the losses and status of the run.

:func:`training_updates` wraps :meth:`flexview.train.TrainingSession.iterate`; sending
:data:`STOP` ends it after the current iteration and the session writes a complete, resumable
run folder.
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


def training_updates(cfg: TrainConfig, out: str | Path, *, resume: bool = False, refresh_every: int = 5):
    """Generator run by the worker: start (or resume) a session and yield a :class:`TrainUpdate`
    per iteration. Sending :data:`STOP` ends it after the current iteration; the session then
    checkpoints and writes its outputs (a resumable run folder that Explore opens), keeping the
    outputs of a run that had completed. An error writes no outputs (the last checkpoint is kept).
    Returns a :class:`TrainResult`."""
    if resume:
        try:
            session = TrainingSession.resume(out, {"epochs": cfg.epochs, "device": cfg.device})
        except RunComplete as done:         # nothing to do, nothing written
            return TrainResult(Path(out), done.iteration, done.iteration, True)
    else:
        session = TrainingSession.start(cfg, out)
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
        self.status = "idle"
        self.result: TrainResult | None = None
        self.error: str = ""
        self.out: Path | None = None

    def begin(self, out: Path, resume: bool) -> None:
        self.out, self.result, self.error, self.status = out, None, "", "running"
        if not resume:
            self.history = []
        elif not self.history:  # resuming a run this widget did not start: its log so far
            self.history = read_history(RunFolder(out).log)
        self.changed.emit()

    def record(self, update: TrainUpdate) -> None:
        if update.progress is not None:
            self.history = [p for p in self.history if p.iteration < update.progress.iteration]
            self.history.append(update.progress)

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
