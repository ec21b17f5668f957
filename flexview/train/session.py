"""A training run from start (or resume) to a complete run folder.

``TrainingSession.start(config, out)`` checks every input, then sets the run up in ``out`` (a new
or empty folder) and checkpoints it at iteration 0; ``TrainingSession.resume(out)`` continues it
from its last checkpoint, or sets it up again when it was killed during set-up.
``session.iterate()`` yields one :class:`Progress` per iteration and writes a checkpoint every
``config.checkpoint_every`` iterations. Each stage (:mod:`flexview.train.stages`) reports its
progress to the ``progress`` callback given to :meth:`start` or :meth:`resume`, and its time to
``status.json``. The outputs (``flow.pt``, ``canonical.mrc``, ``latents.npy``,
``latents.star``) are written when the run ends well, or when the generator is closed (Stop in
the app: the run is checkpointed and its outputs written so that it can be explored and resumed,
except that the outputs of a run that had completed are never replaced by those of an
unfinished one). An exception during training writes no outputs, keeps the last
checkpoint and records the failure in ``status.json``. A kill at any moment leaves a folder
that :meth:`TrainingSession.resume` continues to the same result.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import traceback
from pathlib import Path

import numpy as np
import torch

from flexview._version import __version__
from flexview.device import resolve_device
from flexview.errors import FlexviewInputError
from flexview.io.formats import read_particles
from flexview.io.meshfile import read_mesh, write_mesh
from flexview.io.mrc import read_map, write_map
from flexview.io.particles import ParticleSet
from flexview.io.star_write import write_star
from flexview.params import validate
from flexview.preprocess import read_map_at_box
from flexview.runfolder import (LATENT_COLUMN, RunFolder, check_state, folder_kind, load_torch, read_log,
                                read_status, remove_run_files, remove_temporaries, save_npy, save_torch,
                                write_json, write_log, write_status)
from flexview.train.calibrate import calibrate, noise_weight
from flexview.train.config import TrainConfig, path_fields
from flexview.train.data import prepare_training_data
from flexview.train.optics import OpticsGrid
from flexview.train.latents import init_latents
from flexview.train.linearised import linearised_start
from flexview.train.setup import check_mesh, make_mesh, make_model, solvent_mask
from flexview.train.stages import (CACHE, CALIBRATION, EMBEDDING, INITIALISATION, MODEL, READING, TRAINING,
                                   WRITING, StageClock)
from flexview.train.trainer import Progress, Trainer


OUTPUT_FILES = 5       # written by TrainingSession.write_outputs


class RunComplete(Exception):
    """Resuming a run that has already ended well: there is nothing to do and nothing is written."""

    def __init__(self, folder: RunFolder, iteration: int):
        self.folder, self.iteration = folder, iteration
        super().__init__(f"{folder.root}: the run is complete ({iteration} iterations); nothing to "
                         "resume and nothing was changed (give a larger --epochs to extend it)")


class TrainingSession:
    """Owns a run folder and the :class:`Trainer` that fills it.

    ``finalised``: the latents of every particle have been inferred with the final model and the
    latent axes put in principal order (done once, after the last iteration).
    ``checkpoint_iteration``: the iteration of the last checkpoint written or loaded.
    ``clock``: the :class:`StageClock` that reports the stages and holds their times.
    """

    def __init__(self, cfg: TrainConfig, folder: RunFolder, particles: ParticleSet, trainer: Trainer,
                 log: list[dict], *, finalised: bool = False, outputs: str | None = None,
                 clock: StageClock | None = None):
        self.cfg, self.folder, self.particles, self.trainer, self.log = cfg, folder, particles, trainer, log
        self.finalised, self.outputs = finalised, outputs
        self.clock = clock or StageClock()
        self.checkpoint_iteration = trainer.iteration

    # ------------------------------------------------------------------ construction
    @classmethod
    def start(cls, cfg: TrainConfig, out: str | Path, *, progress=None) -> "TrainingSession":
        """Set up a new run in ``out``: a new folder or an empty one. A folder that holds a run
        (use :meth:`resume`) or files flexview did not write, or a file, is refused before
        anything is read or written. Input paths are stored absolute. ``progress``: called with a
        :class:`~flexview.train.stages.StageProgress` as each stage advances, here and later."""
        folder = RunFolder(out)
        kind = folder_kind(folder.root)
        if kind == "run":
            raise existing_run_error(folder)
        return cls._set_up(absolute_paths(cfg), folder, clock=StageClock(progress), new_root=kind == "new",
                           redo=False)

    @classmethod
    def resume(cls, out: str | Path, overrides: dict | None = None, *, progress=None) -> "TrainingSession":
        """Continue the run in ``out`` from its last checkpoint with its saved parameters.

        ``overrides`` (parameters the user gave again) must agree with the saved ones, except
        ``device`` and ``epochs`` (a run may be extended). A run killed during set-up is set up
        again in place; a complete run raises :class:`RunComplete` and nothing is written.
        """
        folder = RunFolder(out)
        if folder_kind(folder.root) != "run":
            raise FlexviewInputError("nothing to resume: the folder holds no flexview run (no config.json)",
                                     folder.root, "--out")
        cfg = _resume_config(overrides or {}, folder)
        status = read_status(folder)
        outputs_there = all(p.is_file() for p in folder.outputs)
        if status.get("state") == "complete" and outputs_there and cfg.epochs <= status.get("epochs", 0):
            raise RunComplete(folder, int(status.get("iteration", 0)))
        remove_temporaries(folder)
        clock = StageClock(progress, status.get("stages") if isinstance(status.get("stages"), dict) else None)
        if not folder.checkpoint.is_file():                  # killed during set-up: set it up again
            return cls._set_up(cfg, folder, clock=clock, new_root=False, redo=True)
        session = cls._load(cfg, folder, clock)
        if not status and outputs_there:                     # a run from before status.json
            session.outputs = "complete" if session.finalised else "stopped"
            if session.finalised:
                raise RunComplete(folder, session.trainer.iteration)
        else:
            session.outputs = status.get("outputs")
        return session

    @classmethod
    def _set_up(cls, cfg: TrainConfig, folder: RunFolder, *, clock: StageClock, new_root: bool,
                redo: bool) -> "TrainingSession":
        """Read and check the inputs, then (and only then) write the set-up and checkpoint 0.
        A fresh set-up that fails removes what it wrote; ``redo`` keeps ``config.json``."""
        cfg.versions = _versions()
        particles, consensus, device, train_rows = clock.run(READING, _read_inputs, cfg)
        if not redo:
            remove_temporaries(folder)
        try:
            if not redo:
                cfg.to_json(folder.config)      # marks the folder as a run: resumable from here on
            data = _prepare_data(cfg, folder, particles, clock)
            clock.begin(MODEL, 3)
            mask = solvent_mask(cfg, consensus, particles, data.pixel_size)
            clock.update(1)
            mesh = make_mesh(cfg, consensus, mask, data.pixel_size)
            clock.update(2)
            model = make_model(cfg, consensus, mask, mesh, data.pixel_size).to(device)
            scale, power = clock.run(CALIBRATION, calibrate, model, data, train_rows[:2000], device)
            with torch.no_grad():
                model.canonical.volume.mul_(scale)
            trainer = Trainer(cfg, data, model, np.zeros((len(data), cfg.latent_dim), np.float32),
                              noise_weight(power, data.box), device, train_rows)
            trainer.latents = torch.as_tensor(clock.run(INITIALISATION, _initial_latents, cfg, trainer))
            _write_setup(folder, mask, mesh, data.pixel_size, scale, power, resampling=data.resampling)
            session = cls(cfg, folder, particles, trainer, [], clock=clock)
            session.save_checkpoint()
        except BaseException:
            if not redo:
                remove_run_files(folder, remove_root=new_root)
            raise
        return session

    @classmethod
    def _load(cls, cfg: TrainConfig, folder: RunFolder, clock: StageClock) -> "TrainingSession":
        """The session at the run's last checkpoint (checked against the run before use)."""
        particles, consensus, device, train_rows = clock.run(READING, _read_inputs, cfg)
        data = _prepare_data(cfg, folder, particles, clock)
        clock.begin(MODEL, 1)
        mask = read_map(folder.mask)[0] > 0.5
        mesh = read_mesh(folder.mesh)
        model = make_model(cfg, consensus, mask, mesh, data.pixel_size).to(device)
        clock.end()
        trainer = Trainer(cfg, data, model, np.zeros((len(data), cfg.latent_dim), np.float32),
                          torch.ones(1), device, train_rows)
        state = load_torch(folder.checkpoint)
        reference = {k: v for k, v in trainer.state_dict().items() if k not in ("noise_weight", "generator")}
        check_state(state, reference, folder.checkpoint)
        try:
            trainer.load_state_dict(state)
        except (KeyError, ValueError, RuntimeError, TypeError) as exc:
            raise FlexviewInputError(f"the checkpoint does not fit this run ({type(exc).__name__}: {exc})",
                                     folder.checkpoint, "checkpoint") from None
        done = trainer.iteration >= trainer.total_iters
        finalised = done and bool(state.get("finalised", True))     # older checkpoints: final when done
        log = [r for r in read_log(folder.log) if r["iteration"] < trainer.iteration]
        return cls(cfg, folder, particles, trainer, log, finalised=finalised, clock=clock)

    # ------------------------------------------------------------------ running
    def iterate(self):
        """Yield :class:`Progress` per iteration; checkpoint periodically; at the end infer every
        particle's latents, checkpoint and write the outputs. Closing the generator early is
        :meth:`stop`; an exception records the failure and writes no outputs. The time between a
        yield and the next request is not counted in the training stage's time."""
        self._set_status("training")
        clock, trainer = self.clock, self.trainer
        try:
            if not self.finished:
                clock.begin(TRAINING, trainer.total_iters, done=trainer.iteration)
            for record in trainer.iterate():
                self.log.append(record.row())
                clock.update(trainer.iteration)
                if trainer.iteration % self.cfg.checkpoint_every == 0:
                    self.save_checkpoint()
                    self._set_status("training")      # the stage times so far survive a kill
                clock.hold()
                yield record
                clock.release()
            clock.end()
            self._finish()
        except GeneratorExit:
            self.stop()
            raise
        except BaseException as exc:
            self._record_failure(exc)
            raise

    def run(self, callback=None) -> list[Progress]:
        """Run to the end; ``callback(progress)`` after each iteration."""
        records = []
        for record in self.iterate():
            records.append(record)
            if callback is not None:
                callback(record)
        return records

    @property
    def finished(self) -> bool:
        return self.trainer.iteration >= self.trainer.total_iters

    def _finish(self) -> None:
        clock = self.clock
        if not self.finalised:
            rows = np.arange(len(self.trainer.data))
            clock.begin(EMBEDDING, len(rows))
            self.trainer.embed(rows, progress=clock.update)       # final model, every particle
            self.trainer.principal_axes()
            clock.end()
            self.finalised = True
            self.save_checkpoint()
        clock.begin(WRITING, OUTPUT_FILES)
        self.write_outputs(progress=clock.update)
        clock.end()
        self.outputs = "complete"
        self._set_status("complete")

    def stop(self) -> None:
        """Stop between iterations (Stop in the app): checkpoint, and write the outputs so that the
        stopped run can be explored, unless the folder holds the outputs of a completed run,
        which are kept. ``--resume`` continues from here."""
        self.save_checkpoint()
        if self.outputs != "complete":
            self.write_outputs()
            self.outputs = "stopped"
        self._set_status("stopped")

    def _record_failure(self, exc: BaseException) -> None:
        state = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        with contextlib.suppress(Exception):           # a full disk must not hide the first error
            self._set_status(state, failed_at=self.trainer.iteration, error=f"{type(exc).__name__}: {exc}",
                             traceback="".join(traceback.format_exception(exc)))

    # ------------------------------------------------------------------ files
    def save_checkpoint(self) -> None:
        save_torch(self.folder.checkpoint, {**self.trainer.state_dict(), "finalised": self.finalised})
        write_log(self.folder.log, self.log)
        self.checkpoint_iteration = self.trainer.iteration

    def write_outputs(self, progress=None) -> None:
        """flow.pt, canonical.mrc, latents.npy, latents.star and log.csv (:data:`OUTPUT_FILES`);
        ``progress(done)`` after each."""
        model, f = self.trainer.model, self.folder
        tick = progress or (lambda done: None)
        save_torch(f.flow, {k: v.cpu() for k, v in model.flow.state_dict().items()})
        tick(1)
        with torch.no_grad():  # the band-limited density the model used
            write_map(f.canonical, model.canonical.density().cpu().numpy(), model.pixel_size)
        tick(2)
        z = self.trainer.latents.numpy().astype(np.float32)
        save_npy(f.latents, z)
        tick(3)
        columns = {LATENT_COLUMN.format(k + 1): z[:, k] for k in range(z.shape[1])}
        write_star(f.latents_star, self.particles.with_columns(**columns))
        tick(4)
        write_log(f.log, self.log)
        tick(5)

    def _set_status(self, state: str, **info) -> None:
        write_status(self.folder, state, iteration=self.trainer.iteration, total=self.trainer.total_iters,
                     epochs=self.cfg.epochs, checkpoint=self.checkpoint_iteration, outputs=self.outputs,
                     stages={k: round(v, 3) for k, v in self.clock.times.items()}, **info)


def existing_run_error(folder: RunFolder) -> FlexviewInputError:
    """The refusal to start a run where one already is."""
    return FlexviewInputError(f"a flexview run is already here ({describe_run(folder)}); add --resume to "
                              "continue it, or give another folder", folder.root, "--out")


def describe_run(folder: RunFolder) -> str:
    """How the run in ``folder`` stands, in a few words (from ``status.json``)."""
    status = read_status(folder)
    state, it, total = status.get("state"), status.get("iteration"), status.get("total")
    if not folder.checkpoint.is_file():
        return "its set-up did not finish"
    if state == "complete":
        return f"complete after {it} iterations"
    if state in ("failed", "interrupted", "stopped", "training"):
        word = {"training": "stopped unexpectedly"}.get(state, state)
        return f"{word} at iteration {status.get('failed_at', it)} of {total}; last checkpoint at " \
               f"iteration {status.get('checkpoint', it)}"
    return "an earlier run"


def absolute_paths(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with its relative input paths made absolute (from the current folder), so that
    the run can be resumed and explored from anywhere."""
    changes = {name: os.path.abspath(getattr(cfg, name)) for name in path_fields(vars(cfg))
               if getattr(cfg, name)}
    return dataclasses.replace(cfg, **changes)


def _read_inputs(cfg: TrainConfig):
    """Read and check what set-up needs before anything is written: particles (with images,
    poses, CTF), the training rows, the device and the consensus map at the training box."""
    particles = read_particles(cfg.particles, cfg.project_dir)
    particles.require("images", "poses", "ctf")
    _check_box(cfg, particles)
    check_mesh(cfg, particles.extent_A / cfg.box)       # the user's mesh fits the training box
    train_rows = _train_rows(cfg, particles)
    device = resolve_device(cfg.device)
    consensus, _ = read_map_at_box(cfg.consensus_map, cfg.box, extent_A=particles.extent_A)
    return particles, consensus, device, train_rows


def _cache_file(cfg: TrainConfig, folder: RunFolder) -> Path:
    return folder.cache / f"particles_{cfg.box}.npy"


def _prepare_data(cfg: TrainConfig, folder: RunFolder, particles: ParticleSet, clock: StageClock):
    """The particle cache at the training box, as the stage :data:`CACHE` (counted in particles)."""
    clock.begin(CACHE, len(particles))
    data = prepare_training_data(particles, cfg.box, _cache_file(cfg, folder), progress=clock.update)
    clock.end()
    return data


def _initial_latents(cfg: TrainConfig, trainer: Trainer) -> np.ndarray:
    if cfg.latent_init == "linearised":
        return linearised_start(trainer, cfg.latent_dim, seed=cfg.seed)
    return init_latents(cfg.latent_init, len(trainer.data), cfg.latent_dim,
                        images=lambda rows: np.asarray(trainer.data.images[rows]), seed=cfg.seed)


def _versions() -> dict:
    return {"flexview": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def _check_box(cfg: TrainConfig, particles: ParticleSet) -> None:
    """The training box against the particles (TrainConfig has checked it is even and ≥ 8)."""
    if cfg.box > particles.box:
        raise FlexviewInputError(f"training box {cfg.box} must lie between 8 and the particle box "
                                 f"{particles.box}", field="--box")
    OpticsGrid(particles, cfg.box)      # every optics group can be resampled to the training grid


def _train_rows(cfg: TrainConfig, particles: ParticleSet) -> np.ndarray:
    if cfg.halves == "all":
        return np.arange(len(particles))
    particles.require("half_sets")                   # TrainConfig has checked halves ∈ {all, A, B}
    return np.nonzero(particles.half_set == {"A": 0, "B": 1}[cfg.halves])[0]


def _resume_config(overrides: dict, folder: RunFolder) -> TrainConfig:
    """The saved configuration, after checking that ``overrides`` do not contradict it and that
    its input files are still there."""
    saved = TrainConfig.from_json(folder.config)
    given = dict(overrides)
    given.update({name: os.path.abspath(given[name]) for name in path_fields(given) if given.get(name)})
    for name, value in given.items():
        if name in ("device", "epochs"):
            setattr(saved, name, value)
        elif getattr(saved, name) != value:
            raise FlexviewInputError(f"--resume with a different {name}: the run has "
                                     f"{getattr(saved, name)!r}, not {value!r}", folder.config, name)
    validate(saved)        # device and epochs were replaced
    for name in path_fields(vars(saved)):
        value = getattr(saved, name)
        if value and not Path(value).exists():
            raise FlexviewInputError(f"{value} not found (a relative path is looked up in the folders above "
                                     "the run folder and in the current folder)", folder.config, name)
    return saved


def _write_setup(folder: RunFolder, mask, mesh, pixel_size, scale, power, resampling=()) -> None:
    write_mesh(folder.mesh, mesh)
    write_map(folder.mask, mask.astype(np.float32), pixel_size)
    mixed = {"optics_resampling": [r.record() for r in resampling]} if len(resampling) > 1 else {}
    write_json(folder.calibration, {"map_scale": scale, "pixel_size": pixel_size,
                                    "noise_power": [float(v) for v in power], **mixed})
