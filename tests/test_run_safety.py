"""Nothing lost: output folders, failed runs, the particle cache, resume after kill -9, paths, writes.

Every refusal is checked for its exit code or exception, for a message that names the file and
the field or option, and for leaving every file that was there byte-identical (SHA-256 of the
whole folder before and after).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from flexview.cli import main
from flexview.errors import FlexviewInputError
from flexview.io._atomic import atomic_path, write_text_atomic
from flexview.io.mrc import read_map, write_map
from flexview.runfolder import RunFolder, load_torch, read_log, read_status, save_torch
from flexview.train import TrainingSession
from flexview.train.trainer import Trainer

TINY = ["--box", "16", "--epochs", "1", "--batch-size", "20", "--cells-across", "6", "--device", "cpu",
        "--set", "hidden=16", "--set", "layers=3", "--checkpoint-every", "1"]


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Relative path → (SHA-256, mtime in ns) of every file under ``folder``."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def train_args(dataset: Path, out: Path, *extra: str) -> list[str]:
    return ["train", str(dataset / "particles.star"), "--map", str(dataset / "consensus.mrc"), "--out", str(out),
            *TINY, *extra]


@pytest.fixture(scope="module")
def complete_run(tiny_flex_dataset, tmp_path_factory) -> Path:
    """A run trained to the end by ``flexview train`` (1 epoch, 2 iterations)."""
    out = tmp_path_factory.mktemp("safety") / "run"
    assert main(train_args(tiny_flex_dataset, out)) == 0
    return out


@pytest.fixture
def run_copy(complete_run, tmp_path) -> Path:
    """A private copy of :func:`complete_run`."""
    return Path(shutil.copytree(complete_run, tmp_path / "run"))


def stopped_run(dataset: Path, out: Path, make_config, steps: int = 1) -> Path:
    """A run of 2 epochs stopped after ``steps`` iterations (like Stop in the app)."""
    session = TrainingSession.start(make_config(dataset, epochs=2), out)
    it = session.iterate()
    for _ in range(steps):
        next(it)
    it.close()
    return out


# ---------------------------------------------------------------------------------- --out
def test_foreign_files_in_out_are_refused_and_kept(tiny_flex_dataset, tmp_path, capsys):
    """The issue's example: log.csv and flow.pt that flexview did not write."""
    out = tmp_path / "D"
    out.mkdir()
    (out / "log.csv").write_text("mine\n")
    (out / "flow.pt").write_text("x\n")
    before = snapshot(out)
    for extra in ([], ["--resume"]):
        assert main(train_args(tiny_flex_dataset, out, *extra)) == 2
        err = capsys.readouterr().err
        assert str(out) in err and "--out" in err and "did not write" in err and "Traceback" not in err
        assert snapshot(out) == before


def test_out_that_is_a_file_or_too_long_is_refused(tiny_flex_dataset, tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("mine\n")
    assert main(train_args(tiny_flex_dataset, target)) == 2
    err = capsys.readouterr().err
    assert str(target) in err and "is a file" in err and "--out" in err
    assert target.read_text() == "mine\n"
    long = tmp_path / ("n" * 300)
    assert main(train_args(tiny_flex_dataset, long)) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "name too long" in err.lower()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_starting_over_an_existing_run_says_resume(complete_run, tiny_flex_dataset, capsys):
    before = snapshot(complete_run)
    assert main(train_args(tiny_flex_dataset, complete_run)) == 2
    err = capsys.readouterr().err
    assert str(complete_run) in err and "already here" in err and "--resume" in err and "complete" in err
    assert snapshot(complete_run) == before


def test_a_refused_set_up_leaves_nothing(tiny_flex_dataset, tmp_path, capsys):
    """The refusal comes after the particle cache was built: the cache goes too."""
    empty_mask = tmp_path / "empty_mask.mrc"
    write_map(empty_mask, np.zeros((24, 24, 24), np.float32), read_map(tiny_flex_dataset / "consensus.mrc")[1])
    out, existing = tmp_path / "new", tmp_path / "empty"
    existing.mkdir()
    for folder in (out, existing):
        assert main(train_args(tiny_flex_dataset, folder, "--mask", str(empty_mask))) == 2
        assert "empty" in capsys.readouterr().err
    assert not out.exists() and list(existing.iterdir()) == []


# ---------------------------------------------------------------------------------- failures
def fail_at(monkeypatch, iteration: int) -> None:
    """Make training raise RuntimeError("boom") when it reaches ``iteration``."""
    step = Trainer.step

    def failing(self):
        if self.iteration == iteration:
            raise RuntimeError("boom")
        return step(self)

    monkeypatch.setattr(Trainer, "step", failing)


def test_a_failed_run_writes_no_outputs_and_resume_continues(tiny_flex_dataset, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    fail_at(monkeypatch, 1)
    assert main(train_args(tiny_flex_dataset, out)) == 1
    err = capsys.readouterr().err
    assert "failed at iteration 1 of 2: RuntimeError: boom" in err and "--resume" in err
    assert "checkpoint of iteration 1 is kept" in err
    folder = RunFolder(out)
    assert not any(p.exists() for p in folder.outputs)
    status = read_status(folder)
    assert status["state"] == "failed" and status["checkpoint"] == 1 and "boom" in status["error"]
    assert load_torch(folder.checkpoint)["iteration"] == 1
    monkeypatch.undo()
    assert main(["train", "--out", str(out), "--resume"]) == 0
    assert all(p.is_file() for p in folder.outputs) and read_status(folder)["state"] == "complete"


def test_a_failed_extension_keeps_the_complete_outputs(run_copy, monkeypatch, capsys):
    folder = RunFolder(run_copy)
    outputs = {p.name: p.read_bytes() for p in folder.outputs}
    fail_at(monkeypatch, 3)
    assert main(["train", "--out", str(run_copy), "--resume", "--epochs", "2"]) == 1
    assert "failed at iteration 3 of 4" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in folder.outputs} == outputs
    assert read_status(folder)["state"] == "failed"


def test_stop_during_an_extension_keeps_the_complete_outputs(run_copy):
    folder = RunFolder(run_copy)
    outputs = {p.name: p.read_bytes() for p in folder.outputs}
    session = TrainingSession.resume(run_copy, {"epochs": 2})
    steps = session.iterate()
    next(steps)
    steps.close()                                    # Stop in the app
    assert {p.name: p.read_bytes() for p in folder.outputs} == outputs
    assert read_status(folder)["state"] == "stopped" and load_torch(folder.checkpoint)["iteration"] == 3


def test_resume_of_a_complete_run_changes_nothing(complete_run, capsys):
    """From the command line and from the app's Resume."""
    from flexview.app.train import training_updates
    from flexview.train import TrainConfig

    before = snapshot(complete_run)
    assert main(["train", "--out", str(complete_run), "--resume"]) == 0
    assert "the run is complete (2 iterations)" in capsys.readouterr().out
    updates = training_updates(TrainConfig.from_json(complete_run / "config.json"), complete_run, resume=True)
    with pytest.raises(StopIteration) as ended:
        next(updates)
    assert ended.value.value.finished and ended.value.value.iteration == 2
    assert snapshot(complete_run) == before


def test_a_checkpoint_with_the_wrong_latent_shape_is_refused(tiny_flex_dataset, tmp_path, make_tiny_config, capsys):
    out = stopped_run(tiny_flex_dataset, tmp_path / "run", make_tiny_config)
    folder = RunFolder(out)
    state = torch.load(folder.checkpoint, weights_only=True)
    state["latents"] = torch.zeros(len(state["latents"]), 3)
    torch.save(state, folder.checkpoint)
    before = snapshot(out)
    assert main(["train", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert str(folder.checkpoint) in err and "field 'latents'" in err and "(40, 3)" in err and "(40, 2)" in err
    assert snapshot(out) == before


def test_a_checkpoint_holding_code_is_refused_without_torch_advice(tiny_flex_dataset, tmp_path, make_tiny_config,
                                                                    capsys):
    import argparse

    out = stopped_run(tiny_flex_dataset, tmp_path / "run", make_tiny_config)
    folder = RunFolder(out)
    torch.save({"iteration": 1, "payload": argparse.Namespace(x=1)}, folder.checkpoint)
    before = snapshot(out)
    assert main(["train", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert str(folder.checkpoint) in err and "Python code or objects" in err
    assert "weights_only" not in err and "Traceback" not in err
    assert snapshot(out) == before
    folder.checkpoint.write_bytes(b"PK\x03\x04 not a whole file")
    with pytest.raises(FlexviewInputError, match="damaged or truncated"):
        load_torch(folder.checkpoint)


# ---------------------------------------------------------------------------------- cache
def test_the_particle_cache_is_matched_by_fingerprint(make_particles, tmp_path):
    from flexview.train.data import prepare_training_data

    first, images_a = make_particles(tmp_path / "a", n=6, box=16, seed=0)
    other, images_b = make_particles(tmp_path / "b", n=6, box=16, seed=1)
    cache = tmp_path / "run" / "cache" / "particles_16.npy"
    assert np.allclose(prepare_training_data(first, 16, cache).images, images_a)
    stamp = cache.stat().st_mtime_ns
    assert np.allclose(prepare_training_data(first, 16, cache).images, images_a)
    assert cache.stat().st_mtime_ns == stamp                        # same particles: reused
    assert np.allclose(prepare_training_data(other, 16, cache).images, images_b)     # same shape, rebuilt
    rows = np.array([5, 4, 3, 2, 1, 0])
    assert np.allclose(prepare_training_data(other, 16, cache, rows=rows).images, images_b[rows])
    fingerprint = json.loads(cache.with_suffix(".json").read_text())
    assert fingerprint["box"] == 16 and fingerprint["rows"] == 6
    assert fingerprint["stacks"][0]["path"] == str((tmp_path / "b" / "stacks" / "a.mrcs").resolve())
    from flexview.io.mrc import write_stack
    from flexview.io.particles import StackImages

    time.sleep(0.01)
    write_stack(tmp_path / "b" / "stacks" / "b.mrcs", -images_b[3:], 2.0)    # a stack rewritten in place
    src = other.images
    other.images = StackImages(src.paths, src.file_index, src.slice_index, src.box)  # read afresh
    assert np.allclose(prepare_training_data(other, 16, cache, rows=rows).images[:3], -images_b[3:][::-1])


# ---------------------------------------------------------------------------------- paths
def legacy_layout(dataset: Path, root: Path, run: Path) -> Path:
    """The README demo's layout, ``root/demo/{data,run}``, with the relative paths older runs
    stored (relative to ``root``, where the run was started)."""
    data = root / "demo" / "data"
    data.mkdir(parents=True)
    for name in ("particles.star", "particles.mrcs", "consensus.mrc"):
        shutil.copy(dataset / name, data / name)
    shutil.copytree(run, root / "demo" / "run")
    config = root / "demo" / "run" / "config.json"
    raw = json.loads(config.read_text())
    raw.update(particles="demo/data/particles.star", consensus_map="demo/data/consensus.mrc")
    config.write_text(json.dumps(raw))
    return root / "demo" / "run"


def test_new_runs_store_absolute_paths_and_export_from_anywhere(tiny_flex_dataset, tmp_path, monkeypatch):
    from flexview.app.select import SelectState
    from flexview.run import load_run

    project = tmp_path / "project"
    shutil.copytree(tiny_flex_dataset, project / "data")
    monkeypatch.chdir(project)
    session = TrainingSession.start(_config("data/particles.star", "data/consensus.mrc"), "run")
    raw = json.loads((project / "run" / "config.json").read_text())
    assert raw["particles"] == str(project / "data" / "particles.star")
    assert raw["consensus_map"] == str(project / "data" / "consensus.mrc")
    session.run()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    state = SelectState()
    state.set_run(load_run(project / "run"))
    state.mask[:5] = True
    written = state.export(star=elsewhere / "subset.star")
    assert written == [elsewhere / "subset.star"] and (elsewhere / "subset.star").is_file()


def _config(particles: str, consensus: str):
    from flexview.train import TrainConfig

    return TrainConfig(particles=particles, consensus_map=consensus, box=16, epochs=1, batch_size=20,
                       cells_across=6, hidden=16, layers=3, device="cpu", latent_init="zeros")


def test_old_relative_paths_resolve_from_any_folder(complete_run, tiny_flex_dataset, tmp_path, monkeypatch):
    """The demo run of an older version: its Select export and a resume work from another folder."""
    from flexview.app.select import SelectState
    from flexview.run import load_run

    run = legacy_layout(tiny_flex_dataset, tmp_path / "work", complete_run)
    monkeypatch.chdir(tmp_path)
    state = SelectState()
    state.set_run(load_run(run))
    state.mask[:3] = True
    assert state.export(star=tmp_path / "sel.star") == [tmp_path / "sel.star"]
    assert state.particles().source.resolve() == (run.parent / "data" / "particles.star").resolve()
    (run / "status.json").unlink()                     # an older run: no status.json
    assert main(["train", "--out", str(run), "--resume"]) == 0   # complete, found from here


def test_old_relative_path_found_nowhere_names_the_field(complete_run, tmp_path, monkeypatch, capsys):
    run = Path(shutil.copytree(complete_run, tmp_path / "run"))
    raw = json.loads((run / "config.json").read_text())
    raw["particles"] = "gone/particles.star"
    (run / "config.json").write_text(json.dumps(raw))
    (run / "status.json").unlink()
    before = snapshot(run)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert str(run / "config.json") in err and "field 'particles'" in err and "gone/particles.star" in err
    assert snapshot(run) == before


# ---------------------------------------------------------------------------------- writes
def test_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path):
    flow, volume = tmp_path / "flow.pt", tmp_path / "canonical.mrc"
    flow.write_bytes(b"old flow")
    volume.write_bytes(b"old map")
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    errors = []
    resource.setrlimit(resource.RLIMIT_FSIZE, (65536, hard))
    try:
        for write in (lambda: save_torch(flow, {"w": torch.zeros(100_000)}),     # torch: "unexpected pos"
                      lambda: write_map(volume, np.zeros((48, 48, 48), np.float32), 1.0)):
            try:
                write()
            except Exception as exc:                 # checked below, once the limit is lifted
                errors.append(exc)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
    assert [type(e) for e in errors] == [FlexviewInputError, FlexviewInputError]
    assert str(flow) in str(errors[0]) and "File too large" in str(errors[0])
    assert str(volume) in str(errors[1])
    assert flow.read_bytes() == b"old flow" and volume.read_bytes() == b"old map"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["canonical.mrc", "flow.pt"]


def test_a_read_only_folder_names_the_file(tmp_path, monkeypatch):
    import flexview.io._atomic as atomic

    def read_only(*args, dir=None, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(dir))

    target = tmp_path / "config.json"
    target.write_text("old")
    monkeypatch.setattr(atomic.tempfile, "mkstemp", read_only)
    with pytest.raises(FlexviewInputError, match="Read-only file system") as caught:
        write_text_atomic(target, "new")
    assert caught.value.path == str(target) and target.read_text() == "old"


def test_long_names_and_input_errors(tmp_path):
    write_text_atomic(tmp_path / ("n" * 250), "fits")                 # the temporary name is cut
    assert (tmp_path / ("n" * 250)).read_text() == "fits"
    with pytest.raises(FlexviewInputError, match="name too long") as caught:
        write_text_atomic(tmp_path / ("n" * 300), "too long")
    assert caught.value.path == str(tmp_path / ("n" * 300))
    with pytest.raises(FlexviewInputError, match="cannot write"):
        write_text_atomic(tmp_path / ("n" * 250) / "under_a_file.json", "x")
    with pytest.raises(FileNotFoundError):                          # reading an input is not a write error
        with atomic_path(tmp_path / "out.mrc"):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/elsewhere/input.mrcs")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n" * 250]


# ---------------------------------------------------------------------------------- kill -9
KILL_OPTIONS = ["--box", "16", "--epochs", "2", "--batch-size", "20", "--cells-across", "6", "--device", "cpu",
                "--set", "hidden=16", "--set", "layers=3", "--checkpoint-every", "1"]


def _spawn(dataset: Path, out: Path) -> subprocess.Popen:
    """``flexview train ... --resume`` in a new process: starts the run, or continues it."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "flexview.cli", "train", str(dataset / "particles.star"), "--map",
           str(dataset / "consensus.mrc"), "--out", str(out), *KILL_OPTIONS, "--resume"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_when(proc: subprocess.Popen, moment, timeout: float = 60.0) -> bool:
    """SIGKILL ``proc`` as soon as ``moment(seconds since it started)`` is true; False when it
    ended first."""
    start = time.monotonic()
    while proc.poll() is None and time.monotonic() < start + timeout:
        if moment(time.monotonic() - start):
            proc.kill()
            proc.wait()
            return True
        time.sleep(0.002)
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err.decode()
    return False


def _log_rows(out: Path) -> int:
    try:
        return len(read_log(out / "log.csv"))
    except (OSError, ValueError, KeyError):
        return 0


def _chain(dataset: Path, out: Path, moments) -> list[bool]:
    """Start the run, kill it at each of ``moments`` in turn (resuming in between), then resume
    it to the end; returns which moments were reached before the process ended."""
    reached = [_kill_when(_spawn(dataset, out), moment) for moment in moments]
    proc = _spawn(dataset, out)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    return reached


def test_kill_9_at_any_moment_resumes_to_the_uninterrupted_result(tiny_flex_dataset, tmp_path):
    """Kills: as soon as config.json exists (set-up half done), after the cache, between
    checkpoints, right after the last iteration's checkpoint (before the final latents), when
    the first output appears; and, in a second folder, at a random moment (fixed seed). Each folder is resumed to
    the end and must equal an uninterrupted run."""
    rng = np.random.default_rng(16)
    delays = rng.uniform(1.0, 6.0, 1)
    marked, timed, reference = tmp_path / "marked", tmp_path / "timed", tmp_path / "reference"
    moments = [lambda _: (marked / "config.json").exists(),
               lambda _: (marked / "cache" / "particles_16.json").exists(),
               lambda _: _log_rows(marked) >= 2,
               lambda _: _log_rows(marked) >= 4,
               lambda _: (marked / "flow.pt").exists()]
    results = {}

    def timed_chain():
        results["timed"] = _chain(tiny_flex_dataset, timed, [lambda t, d=d: t > d for d in delays])

    worker = threading.Thread(target=timed_chain)
    worker.start()
    proc = _spawn(tiny_flex_dataset, reference)
    results["marked"] = _chain(tiny_flex_dataset, marked, moments)
    assert proc.wait(timeout=120) == 0
    worker.join(timeout=300)
    assert results["marked"][0] and results["marked"][2], results      # set-up and mid-run kills happened
    ref = RunFolder(reference)
    z_ref = np.load(ref.latents)
    for out in (marked, timed):
        folder = RunFolder(out)
        assert read_status(folder)["state"] == "complete"
        np.testing.assert_allclose(np.load(folder.latents), z_ref, atol=1e-5)
        flow, flow_ref = load_torch(folder.flow), load_torch(ref.flow)
        for key in flow_ref:
            assert torch.allclose(flow[key], flow_ref[key], atol=1e-5), key
        np.testing.assert_allclose(read_map(folder.canonical)[0], read_map(ref.canonical)[0], atol=1e-5)
        assert [r["iteration"] for r in read_log(folder.log)] == list(range(4))
        assert not [p for p in out.rglob(".*.tmp")]
