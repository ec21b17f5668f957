"""Every stage of a training run reported, timed and recorded: the events a tiny run sends (order,
counts), the command line's bars and summary, the stage times in ``status.json`` and how they add
up over a resume, and the Train widget's state text for each event."""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch

from flexview.train import stages
from flexview.train.stages import EMBEDDING, STAGES, TRAINING, WRITING, StageClock, StageProgress


class FakeTime:
    """A stand-in for :func:`time.perf_counter` that moves only when told."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_clock_counts_each_stage_and_leaves_out_held_time(monkeypatch):
    """Closed form: 2 s, then 5 s held (not counted), then 1 s → 3 s for the stage; earlier
    times are added to; opening the next stage ends the open one with done = total."""
    fake = FakeTime()
    monkeypatch.setattr(stages.time, "perf_counter", fake)
    events = []
    clock = StageClock(events.append, {TRAINING: 10.0})
    clock.begin(TRAINING, 4, done=1)
    fake.now += 2
    clock.update(2)
    clock.hold()
    fake.now += 5
    clock.release()
    fake.now += 1
    clock.begin(EMBEDDING, 40)
    fake.now += 4
    clock.update(20)
    assert [(e.stage, e.done, e.total, e.seconds) for e in events] == [
        (TRAINING, 1, 4, 0.0), (TRAINING, 2, 4, 2.0), (TRAINING, 4, 4, 3.0),
        (EMBEDDING, 0, 40, 0.0), (EMBEDDING, 20, 40, 4.0)]
    assert clock.times == {TRAINING: 13.0, EMBEDDING: 4.0}     # mid-stage time already counted
    assert clock.summary() == "training 13.0 s, final embedding 4.0 s, total 17.0 s"


def test_stage_progress_text():
    event = StageProgress(EMBEDDING, 1500, 4000, 42.0)
    assert event.text() == "final embedding 1,500 / 4,000 particles"
    assert not event.finished and StageProgress(WRITING, 5, 5, 0.1).finished


def check_sequence(events, *, particles: int, iterations: int, first_iteration: int = 0, expected=STAGES):
    """The stages come in the order ``expected``, each once; within each, ``done`` and ``seconds``
    never decrease, ``total`` is fixed, and the last event has done = total."""
    order = [e.stage for i, e in enumerate(events) if i == 0 or events[i - 1].stage != e.stage]
    assert order == list(expected)
    for name in expected:
        mine = [e for e in events if e.stage == name]
        assert len({e.total for e in mine}) == 1, name
        assert all(a.done <= b.done and a.seconds <= b.seconds for a, b in zip(mine, mine[1:])), name
        assert mine[-1].done == mine[-1].total, name
    by_stage = {e.stage: e for e in events}
    assert by_stage[stages.CACHE].total == particles
    assert by_stage[EMBEDDING].total == particles
    assert by_stage[TRAINING].total == iterations
    training = [e.done for e in events if e.stage == TRAINING]
    assert training == list(range(first_iteration, iterations + 1)) + [iterations]   # each, then the end


@pytest.fixture(scope="module")
def staged_run(tiny_flex_dataset, tmp_path_factory):
    """A tiny run through ``flexview train``, then resumed with one more epoch: the run folder,
    the status after each part, and what each part printed (stdout, stderr)."""
    from flexview.cli import main

    out = tmp_path_factory.mktemp("stages") / "run"
    common = ["--box", "16", "--batch-size", "20", "--cells-across", "6", "--device", "cpu"]
    parts = []
    for args in (["train", str(tiny_flex_dataset / "particles.star"), "--map", str(tiny_flex_dataset / "consensus.mrc"),
                  "--out", str(out), "--epochs", "1", "--set", "hidden=16", "--set", "layers=3", *common],
                 ["train", "--out", str(out), "--resume", "--epochs", "2"]):
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            assert main(args) == 0
        parts.append((json.loads((out / "status.json").read_text()), stdout.getvalue(), stderr.getvalue()))
    return out, parts


def test_cli_draws_a_bar_per_stage_and_prints_their_times(staged_run):
    _, [(status, stdout, stderr), _] = staged_run
    for name in STAGES:
        assert f"{name}: 100%" in stderr, name                 # each bar ran to its end
    assert "particle/s" in stderr and "iteration/s" in stderr  # rates
    line = next(l for l in stdout.splitlines() if l.startswith("stage times"))
    shown = dict(part.rsplit(" ", 2)[:2] for part in line.split(": ", 1)[1].split(", "))
    assert list(shown) == [*STAGES, "total"]
    for name in STAGES:
        assert float(shown[name]) == pytest.approx(status["stages"][name], abs=0.051)


def test_stage_times_are_written_and_add_up_over_a_resume(staged_run):
    """Every stage is in ``status.json``; after the resume (which reads the inputs, the cache
    and the model again, trains one more epoch, embeds and writes again) each time is at least
    the first part's, and the stages that ran again are longer; log.csv keeps the seconds of
    every iteration."""
    from flexview.runfolder import read_log

    out, [(first, *_), (second, _, stderr)] = staged_run
    assert first["state"] == second["state"] == "complete"
    assert set(first["stages"]) == set(STAGES)
    for name in STAGES:
        assert second["stages"][name] >= first["stages"][name] >= 0
        again = name not in (stages.CALIBRATION, stages.INITIALISATION)     # kept in the checkpoint
        assert (f"{name}: 100%" in stderr) == again, name
    for name in (stages.READING, TRAINING, EMBEDDING, WRITING):
        assert second["stages"][name] > first["stages"][name]
    log = read_log(out / "log.csv")
    assert len(log) == 4 and all(row["seconds"] > 0 for row in log)
    assert sum(row["seconds"] for row in log) <= second["stages"][TRAINING] + 1e-3


def test_session_reports_every_stage_in_order(tiny_flex_dataset, make_tiny_config, tmp_path):
    """The events of a start and of a resume: one sequence of stages, each counted to its end;
    the stage times of the resume equal the first part's plus the resume's own events."""
    from flexview.runfolder import RunFolder, read_status
    from flexview.train import TrainingSession

    events = []
    session = TrainingSession.start(make_tiny_config(tiny_flex_dataset, epochs=1), tmp_path / "run",
                                    progress=events.append)
    session.run()
    check_sequence(events, particles=40, iterations=2)
    first = read_status(RunFolder(tmp_path / "run"))["stages"]
    again = []
    resumed = TrainingSession.resume(tmp_path / "run", {"epochs": 2}, progress=again.append)
    resumed.run()
    check_sequence(again, particles=40, iterations=4, first_iteration=2,
                   expected=[s for s in STAGES if s not in (stages.CALIBRATION, stages.INITIALISATION)])
    second = read_status(RunFolder(tmp_path / "run"))["stages"]
    last = {e.stage: e.seconds for e in again}
    for name in STAGES:
        assert second[name] == pytest.approx(first[name] + last.get(name, 0.0), abs=2e-3), name


def test_app_state_turns_events_into_the_bar_and_the_status_line():
    from flexview.app.train import TrainState
    from flexview.train import Progress

    state = TrainState()
    state.status = "running"
    assert state.stage_text() == "starting ..."
    assert state.progress_bar() == (0, 0, "starting ...")          # a busy bar before the first event
    state.set_stage(StageProgress(stages.CACHE, 128, 4000, 3.2))
    assert state.stage_text() == "particle cache 128 / 4,000 particles, 3 s"
    state.set_stage(StageProgress(TRAINING, 3, 160, 9.0))
    state.history.append(Progress(2, 160, 0, "flow", 12.5, 1.0, 0.1, 0.2, 0.25))
    assert state.stage_text() == "training: epoch 1, flow step, band limit 12.5 Å, 0.25 s/iteration"
    assert state.progress_bar() == (3, 160, "training %v / %m iterations")
    state.set_stage(StageProgress(EMBEDDING, 1500, 4000, 42.4))
    assert state.stage_text() == "final embedding 1,500 / 4,000 particles, 42 s"
    assert state.progress_bar() == (1500, 4000, "final embedding %v / %m particles")


def test_training_updates_pass_the_stages_on(tiny_flex_dataset, make_tiny_config, tmp_path):
    """The app's generator hands the session's events to ``on_stage``, the final embedding included
    (it runs after the last update)."""
    from flexview.app.train import training_updates

    events = []
    gen = training_updates(make_tiny_config(tiny_flex_dataset, epochs=1), tmp_path / "run", on_stage=events.append)
    updates = []
    with pytest.raises(StopIteration) as end:
        while True:
            updates.append(next(gen))
    assert end.value.value.finished
    check_sequence(events, particles=40, iterations=2)
    assert np.array_equal([u.iteration for u in updates], [0, 1, 2])


def test_embedding_reports_each_chunk_and_chunks_change_nothing(tiny_flex_dataset, make_tiny_config, tmp_path,
                                                                monkeypatch):
    """``Trainer.embed(progress=...)`` is called after every chunk with the particles done so far;
    chunks grow (doubling, up to ``chunk``) while they are fast; the latents are the same as in
    one chunk of every particle."""
    from flexview.train import TrainingSession, trainer as trainer_module

    session = TrainingSession.start(make_tiny_config(tiny_flex_dataset, epochs=1), tmp_path / "run")
    session.run()
    trainer = session.trainer
    start = trainer.latents.clone()
    trainer.embed(np.arange(40), chunk=500)
    whole = trainer.latents.clone()
    monkeypatch.setattr(trainer_module, "FIRST_CHUNK", 4)
    for seconds, expected in ((1e9, [4, 12, 28, 40]), (0.0, [4, 8, 12, 16, 20, 24, 28, 32, 36, 40])):
        monkeypatch.setattr(trainer_module, "CHUNK_SECONDS", seconds)
        trainer.latents = start.clone()
        calls = []
        trainer.embed(np.arange(40), chunk=16, progress=lambda done, total: calls.append((done, total)))
        assert calls == [(done, 40) for done in expected]
        assert torch.equal(trainer.latents, whole)
    assert whole.abs().max() > 0


def test_cli_bars_keep_the_clock_moving_during_a_long_step(capsys):
    """A one-step stage that takes a while is redrawn every ``tick`` seconds (its elapsed time
    moves) and drawn once more at its end; nothing is redrawn after ``close``."""
    import time

    from flexview.commands.train import StageBars

    bars = StageBars(tick=0.05)
    bars(StageProgress(stages.INITIALISATION, 0, 1, 0.0))
    time.sleep(0.5)
    bars(StageProgress(stages.INITIALISATION, 1, 1, 0.5))
    bars.close()
    drawn = capsys.readouterr().err.split("\r")
    waiting = [d for d in drawn if d.startswith("latent initialisation:   0%")]
    assert len(waiting) >= 4
    assert drawn[-1].startswith("latent initialisation: 100%")
    time.sleep(0.2)
    assert capsys.readouterr().err == ""


def test_stage_times_of_a_killed_run_are_kept_at_each_checkpoint(tiny_flex_dataset, make_tiny_config, tmp_path):
    """A run abandoned mid-training (its generator never closed, as when killed) has its stage
    times up to the last checkpoint in ``status.json``; the resume adds to them."""
    from flexview.runfolder import RunFolder, read_status
    from flexview.train import TrainingSession

    session = TrainingSession.start(make_tiny_config(tiny_flex_dataset, epochs=2, checkpoint_every=1),
                                    tmp_path / "run")
    steps = session.iterate()
    next(steps)
    next(steps)
    killed = read_status(RunFolder(tmp_path / "run"))
    assert killed["state"] == "training" and killed["checkpoint"] == 2
    assert killed["stages"][TRAINING] == pytest.approx(session.clock.times[TRAINING], abs=2e-3)
    assert killed["stages"][TRAINING] > 0
    resumed = TrainingSession.resume(tmp_path / "run")
    assert resumed.clock.times[TRAINING] == pytest.approx(killed["stages"][TRAINING], abs=1e-9)
    resumed.run()
    assert read_status(RunFolder(tmp_path / "run"))["stages"][TRAINING] > killed["stages"][TRAINING]
