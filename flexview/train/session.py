"""A training run from start (or resume) to a complete run folder.

``TrainingSession.start(config, out)`` prepares everything (or resumes from the last checkpoint
with ``resume=True``); ``session.iterate()`` yields one :class:`Progress` per iteration, writes
checkpoints every ``config.checkpoint_every`` iterations and writes the run folder's outputs when
the run ends or the generator is closed (Stop in the app), so a stopped run can be resumed.
"""
from __future__ import annotations

import platform
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
from flexview.preprocess import read_map_at_box
from flexview.runfolder import (LATENT_COLUMN, RunFolder, load_torch, read_log, save_npy, save_torch, write_json,
                                write_log)
from flexview.train.calibrate import calibrate, noise_weight
from flexview.params import validate
from flexview.train.config import TrainConfig
from flexview.train.data import prepare_training_data
from flexview.train.latents import init_latents
from flexview.train.linearised import linearised_start
from flexview.train.setup import make_mesh, make_model, solvent_mask
from flexview.train.trainer import Progress, Trainer


class TrainingSession:
    """Owns a run folder and the :class:`Trainer` that fills it."""

    def __init__(self, cfg: TrainConfig, folder: RunFolder, particles: ParticleSet, trainer: Trainer,
                 log: list[dict]):
        self.cfg, self.folder, self.particles, self.trainer, self.log = cfg, folder, particles, trainer, log

    # ------------------------------------------------------------------ construction
    @classmethod
    def start(cls, cfg: TrainConfig, out: str | Path, *, progress=None) -> "TrainingSession":
        """Set up a new run in the empty (or new) folder ``out``."""
        return cls._build(cfg, RunFolder(out), resume=False, progress=progress)

    @classmethod
    def resume(cls, out: str | Path, overrides: dict | None = None, *, progress=None) -> "TrainingSession":
        """Continue the run in ``out`` from its last checkpoint with its saved parameters.

        ``overrides`` (parameters the user gave again) must agree with the saved ones, except
        ``device`` and ``epochs`` (a run may be extended).
        """
        folder = RunFolder(out)
        return cls._build(_resume_config(overrides or {}, folder), folder, resume=True, progress=progress)

    @classmethod
    def _build(cls, cfg: TrainConfig, folder: RunFolder, *, resume: bool, progress) -> "TrainingSession":
        if not resume and folder.config.exists():
            raise FlexviewInputError("a run already exists here; use --resume or another folder",
                                     folder.root, "--out")
        cfg.versions = _versions()
        particles = read_particles(cfg.particles, cfg.project_dir)
        particles.require("images", "poses", "ctf")
        _check_box(cfg, particles)
        device = resolve_device(cfg.device)
        data = prepare_training_data(particles, cfg.box, folder.cache / f"particles_{cfg.box}.npy",
                                     progress=progress)
        consensus, _ = read_map_at_box(cfg.consensus_map, cfg.box, extent_A=particles.extent_A)
        if resume:
            mask = read_map(folder.mask)[0] > 0.5
            mesh = read_mesh(folder.mesh)
        else:
            mask = solvent_mask(cfg, consensus, particles, data.pixel_size)
            mesh = make_mesh(cfg, consensus, mask, data.pixel_size)
        model = make_model(cfg, consensus, mask, mesh, data.pixel_size).to(device)
        train_rows = _train_rows(cfg, particles)
        if resume:
            trainer = Trainer(cfg, data, model, np.zeros((len(data), cfg.latent_dim), np.float32),
                              torch.ones(1), device, train_rows)
            trainer.load_state_dict(load_torch(folder.checkpoint))
            log = [r for r in read_log(folder.log) if r["iteration"] < trainer.iteration]
        else:
            scale, power = calibrate(model, data, train_rows[:2000], device)
            with torch.no_grad():
                model.canonical.volume.mul_(scale)
            trainer = Trainer(cfg, data, model, np.zeros((len(data), cfg.latent_dim), np.float32),
                              noise_weight(power, data.box), device, train_rows)
            trainer.latents = torch.as_tensor(_initial_latents(cfg, trainer))
            _write_setup(cfg, folder, mask, mesh, data.pixel_size, scale, power)
            log = []
        return cls(cfg, folder, particles, trainer, log)

    # ------------------------------------------------------------------ running
    def iterate(self):
        """Yield :class:`Progress` per iteration; checkpoint periodically; write outputs at the end
        or when closed early."""
        try:
            for record in self.trainer.iterate():
                self.log.append(record.row())
                if self.trainer.iteration % self.cfg.checkpoint_every == 0:
                    self.save_checkpoint()
                yield record
            self.trainer.embed(np.arange(len(self.trainer.data)))   # final model, every particle
            self.trainer.principal_axes()
        finally:
            self.save_checkpoint()
            self.write_outputs()

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

    # ------------------------------------------------------------------ files
    def save_checkpoint(self) -> None:
        save_torch(self.folder.checkpoint, self.trainer.state_dict())
        write_log(self.folder.log, self.log)

    def write_outputs(self) -> None:
        """flow.pt, canonical.mrc, latents.npy, latents.star and log.csv."""
        model, f = self.trainer.model, self.folder
        save_torch(f.flow, {k: v.cpu() for k, v in model.flow.state_dict().items()})
        with torch.no_grad():  # the band-limited density the model used
            write_map(f.canonical, model.canonical.density().cpu().numpy(), model.pixel_size)
        z = self.trainer.latents.numpy().astype(np.float32)
        save_npy(f.latents, z)
        columns = {LATENT_COLUMN.format(k + 1): z[:, k] for k in range(z.shape[1])}
        write_star(f.latents_star, self.particles.with_columns(**columns))
        write_log(f.log, self.log)


def _initial_latents(cfg: TrainConfig, trainer: Trainer) -> np.ndarray:
    if cfg.latent_init == "linearised":
        return linearised_start(trainer, cfg.latent_dim, seed=cfg.seed)
    return init_latents(cfg.latent_init, len(trainer.data), cfg.latent_dim,
                        images=lambda rows: np.asarray(trainer.data.images[rows]), seed=cfg.seed)


def _versions() -> dict:
    return {"flexview": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def _check_box(cfg: TrainConfig, particles: ParticleSet) -> None:
    if not 8 <= cfg.box <= particles.box:
        raise FlexviewInputError(f"training box {cfg.box} must lie between 8 and the particle box "
                                 f"{particles.box}", field="--box")
    if cfg.box % 2:
        raise FlexviewInputError(f"training box {cfg.box} must be even", field="--box")


def _train_rows(cfg: TrainConfig, particles: ParticleSet) -> np.ndarray:
    if cfg.halves == "all":
        return np.arange(len(particles))
    particles.require("half_sets")                   # TrainConfig has checked halves ∈ {all, A, B}
    return np.nonzero(particles.half_set == {"A": 0, "B": 1}[cfg.halves])[0]


def _resume_config(overrides: dict, folder: RunFolder) -> TrainConfig:
    """The saved configuration, after checking that ``overrides`` do not contradict it."""
    if not folder.checkpoint.is_file():
        raise FlexviewInputError("nothing to resume: no checkpoint", folder.checkpoint)
    saved = TrainConfig.from_json(folder.config)
    for name, value in overrides.items():
        if name in ("device", "epochs"):
            setattr(saved, name, value)
        elif getattr(saved, name) != value:
            raise FlexviewInputError(f"--resume with a different {name}: the run has "
                                     f"{getattr(saved, name)!r}, not {value!r}", folder.config, name)
    validate(saved)        # device and epochs were replaced
    return saved


def _write_setup(cfg, folder: RunFolder, mask, mesh, pixel_size, scale, power) -> None:
    folder.root.mkdir(parents=True, exist_ok=True)
    cfg.to_json(folder.config)
    write_mesh(folder.mesh, mesh)
    write_map(folder.mask, mask.astype(np.float32), pixel_size)
    write_json(folder.calibration, {"map_scale": scale, "pixel_size": pixel_size,
                                    "noise_power": [float(v) for v in power]})
