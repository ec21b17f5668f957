"""The stages of a training run, their progress and their times.

A run passes through :data:`STAGES` in order (a resumed run skips those it no longer needs).
Each stage reports its progress as :class:`StageProgress` events (``done`` of ``total`` units,
seconds so far) through one callback; the command line draws a progress bar per stage from them
and the Train widget its progress bar and status line. :class:`StageClock` sends the events and
accumulates the wall time of each stage (seconds), which the run folder keeps in
``status.json`` (``"stages"``), added up over every resume.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

READING = "reading inputs"
CACHE = "particle cache"
MODEL = "model set-up"          # solvent mask, mesh, flow generator and canonical map
CALIBRATION = "calibration"
INITIALISATION = "latent initialisation"
TRAINING = "training"
EMBEDDING = "final embedding"
WRITING = "writing outputs"

STAGES = (READING, CACHE, MODEL, CALIBRATION, INITIALISATION, TRAINING, EMBEDDING, WRITING)
"""Every stage, in the order a new run passes through them."""

UNITS = {READING: "steps", CACHE: "particles", MODEL: "steps", CALIBRATION: "steps",
         INITIALISATION: "steps", TRAINING: "iterations", EMBEDDING: "particles", WRITING: "files"}
"""What ``done`` and ``total`` count in each stage."""


@dataclass(frozen=True)
class StageProgress:
    """Where one stage stands: ``done`` of ``total`` units (:data:`UNITS`) after ``seconds`` (s,
    wall time spent in the stage by this process so far)."""

    stage: str
    done: int
    total: int
    seconds: float

    @property
    def unit(self) -> str:
        return UNITS.get(self.stage, "steps")

    @property
    def finished(self) -> bool:
        return self.done >= self.total

    def text(self) -> str:
        """e.g. ``"final embedding 1,500 / 4,000 particles"``."""
        return f"{self.stage} {self.done:,} / {self.total:,} {self.unit}"


Callback = Callable[[StageProgress], None]


class StageClock:
    """Sends :class:`StageProgress` events to ``callback`` (optional) and adds up the seconds spent
    in each stage to ``times`` (stage → s), starting from ``times`` (those of earlier sessions of
    the run, from ``status.json``).

    ``begin(stage, total)`` opens a stage (reports 0 / total), ``update(done)`` reports progress,
    ``end()`` reports total / total and adds the stage's time; opening a stage ends the open one.
    """

    def __init__(self, callback: Callback | None = None, times: dict | None = None):
        self.callback = callback
        self.times: dict[str, float] = {k: float(v) for k, v in (times or {}).items()}
        self.stage: str | None = None
        self.total = 0
        self._t0 = 0.0
        self._counted = 0.0
        self._held: float | None = None

    def begin(self, stage: str, total: int, done: int = 0) -> None:
        if self.stage is not None:
            self.end()
        self.stage, self.total, self._t0, self._counted = stage, max(int(total), 0), time.perf_counter(), 0.0
        self._held = None
        self.update(done)

    def hold(self) -> None:
        """Stop the open stage's clock (while the consumer has control, e.g. a paused worker)."""
        if self._held is None:
            self._held = time.perf_counter()

    def release(self) -> None:
        """Restart the clock stopped by :meth:`hold`; the time held is not counted."""
        if self._held is not None:
            self._t0 += time.perf_counter() - self._held
            self._held = None

    def update(self, done: int, total: int | None = None) -> None:
        """Report ``done`` units of the open stage (its total changed to ``total`` when given);
        the time so far is added to :attr:`times` at once, so that a status written mid-stage
        holds it."""
        if self.stage is None:
            return
        if total is not None:
            self.total = int(total)
        elapsed = time.perf_counter() - self._t0
        self.times[self.stage] = self.times.get(self.stage, 0.0) + elapsed - self._counted
        self._counted = elapsed
        if self.callback is not None:
            self.callback(StageProgress(self.stage, int(done), self.total, elapsed))

    def end(self) -> None:
        if self.stage is not None:
            self.update(self.total)
            self.stage = None

    def run(self, stage: str, work: Callable, *args, **kwargs):
        """``work(*args, **kwargs)`` as a stage of one step."""
        self.begin(stage, 1)
        result = work(*args, **kwargs)
        self.end()
        return result

    def summary(self) -> str:
        """``"reading inputs 1.2 s, ..., total 93.4 s"`` in the order of :data:`STAGES`."""
        names = [s for s in STAGES if s in self.times] + [s for s in self.times if s not in STAGES]
        parts = [f"{name} {self.times[name]:.1f} s" for name in names]
        return ", ".join(parts + [f"total {sum(self.times.values()):.1f} s"])
