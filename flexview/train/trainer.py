"""The 3DFlex training loop: latent inference, block coordinate descent, frequency marching.

:meth:`Trainer.iterate` is a generator that yields one :class:`Progress` record per iteration,
so a command-line progress bar and a napari ``thread_worker`` (pause, resume, stop) drive the
same loop.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from flexview.model.forward import FlexForwardModel
from flexview.model.gauge import principal_axes, standardise_latents
from flexview.model.loss import band_mask, data_loss, radial_weight, rfft_multiplicity
from flexview.model.rigidity import latent_prior
from flexview.train.config import TrainConfig
from flexview.train.data import Batch, TrainingData
from flexview.train.latents import (coordinate_descent, gauss_newton, gradient_descent, grid_search,
                                    laplace_factor, posterior_mean, search_points)
from flexview.train.schedule import Schedule


FIRST_CHUNK = 50       # particles in the first chunk of an embedding that reports progress
CHUNK_SECONDS = 2.0    # such chunks double in size while one takes less than this (s)


@dataclass
class Progress:
    """What one iteration did (one row of ``log.csv``)."""

    iteration: int
    total: int
    epoch: int
    block: str
    band_A: float
    data: float
    rigidity: float
    prior: float
    seconds: float
    lr_scale: float = 1.0

    def row(self) -> dict:
        return dict(self.__dict__)


class Trainer:
    """Fits the canonical map, the flow generator and the latent table to the particles.

    Parameters
    ----------
    config : TrainConfig
    data : TrainingData (all particles of the input, at the training box)
    model : FlexForwardModel on ``device``
    latents : ndarray (M, K), one row per particle of ``data``
    noise_weight : Tensor (R,), per-shell weights of the data term (see :mod:`calibrate`)
    train_rows : rows of ``data`` used for training (default all)
    """

    def __init__(self, config: TrainConfig, data: TrainingData, model: FlexForwardModel,
                 latents: np.ndarray, noise_weight: Tensor, device, train_rows=None):
        self.cfg, self.data, self.model, self.device = config, data, model, torch.device(device)
        self.latents = torch.as_tensor(latents, dtype=torch.float32).clone()
        self.noise_weight = noise_weight.to(self.device)
        self.train_rows = np.arange(len(data)) if train_rows is None else np.asarray(train_rows)
        self.iteration = 0
        self.micro_batches = 1
        self.generator = torch.Generator().manual_seed(config.seed)
        v_scale = float(model.canonical.volume.detach().std()) or 1.0
        self.initial_lr = {"flow": config.lr_flow, "map": config.lr_map * v_scale}   # before the schedule
        self.opt_flow = torch.optim.Adam(model.flow.parameters(), lr=self.initial_lr["flow"])
        self.opt_map = torch.optim.Adam([model.canonical.volume], lr=self.initial_lr["map"])
        self.schedule = self._make_schedule()
        self.messages: list[str] = []

    # ---------------------------------------------------------------- schedule
    @property
    def iters_per_epoch(self) -> int:
        return max(1, math.ceil(len(self.train_rows) / self.cfg.batch_size))

    @property
    def total_iters(self) -> int:
        return self.cfg.epochs * self.iters_per_epoch

    def _make_schedule(self) -> Schedule:
        nyquist = 2.0 * self.data.pixel_size
        end = self.cfg.band_end_A or nyquist
        start = self.cfg.band_start_A or max(4.0 * nyquist, end)
        return Schedule(self.total_iters, self.cfg.flow_iters, self.cfg.map_iters, start, end,
                        self.cfg.march_fraction, self.cfg.lr_schedule, self.cfg.lr_final)

    @property
    def search_iteration(self) -> int | None:
        """The iteration before which every training particle's latents are searched globally
        (``config.search_at`` of the run, at an epoch boundary), or None."""
        cfg = self.cfg
        if cfg.latent_search <= 0 or cfg.search_at is None or not 0 < cfg.search_at < 1:
            return None
        return max(cfg.fixed_latent_epochs, round(cfg.search_at * cfg.epochs)) * self.iters_per_epoch

    def _batch_rows(self, it: int) -> np.ndarray:
        """Rows of iteration ``it``: a fresh permutation each epoch, fixed by the seed."""
        epoch, k = divmod(it, self.iters_per_epoch)
        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
        perm = torch.randperm(len(self.train_rows), generator=g).numpy()
        bs = self.cfg.batch_size
        return self.train_rows[perm[k * bs:(k + 1) * bs]]

    # ---------------------------------------------------------------- objective
    def band_radius_px(self, band_A: float) -> float:
        return self.data.box * self.data.pixel_size / band_A

    def noise_band(self, radius_px: float) -> Tensor:
        """Per-sample noise weighting times the band limit, (N, N//2+1) (``noise_weight`` of
        :func:`data_loss`)."""
        box = self.data.box
        return radial_weight(self.noise_weight, box) * band_mask(box, radius_px, device=self.device)

    def sample_weight(self, radius_px: float) -> Tensor:
        """The full weight of each rfft sample in the data term, (N, N//2+1): :meth:`noise_band`
        times the Hermitian multiplicity and the 1/N² that :func:`data_loss` applies."""
        box = self.data.box
        return rfft_multiplicity(box, device=self.device) / box**2 * self.noise_band(radius_px)

    def batch(self, rows: np.ndarray) -> Batch:
        """The particles ``rows`` of the data on the device, CTF evaluated on the model's grid."""
        return self.data.batch(rows, self.device, model=self.model)

    def data_term(self, z: Tensor | None, batch: Batch, radius_px: float) -> Tensor:
        """Negative log-likelihood of each particle of ``batch`` under the model at ``z``, (B,)."""
        spectra = self.model.render_spectra(z, batch.pose, batch.ctf)
        return data_loss(spectra, batch.spectra, noise_weight=self.noise_band(radius_px))

    def _renderer(self, batch: Batch):
        """``render(z) -> (B, F)``: the batch's model spectra, flattened, for the latent solvers."""
        return lambda z: self.model.render_spectra(z, batch.pose, batch.ctf).reshape(len(batch), -1)

    def infer_latents(self, batch: Batch, z: Tensor, radius_px: float) -> Tensor:
        """Improve the latents of ``batch`` with the model fixed."""
        method = self.cfg.latent_inference
        if method == "gauss-newton":
            weight = self.sample_weight(radius_px).reshape(-1)
            render = self._renderer(batch)
            for _ in range(self.cfg.latent_steps):
                z = gauss_newton(render, batch.spectra.reshape(len(batch.rows), -1), weight, z,
                                 prior_weight=self.cfg.prior_weight, max_move=self.cfg.latent_step * 4)
            return z

        objective = self.objective(batch, radius_px)
        if method == "gradient":
            return gradient_descent(objective, z, steps=self.cfg.latent_steps, step=self.cfg.latent_step)
        return coordinate_descent(objective, z, step=self.cfg.latent_step, sweeps=self.cfg.latent_steps)

    def objective(self, batch: Batch, radius_px: float):
        """``objective(z) -> (B,)``: negative log posterior of each particle of ``batch``."""
        def cost(z: Tensor) -> Tensor:
            return self.data_term(z, batch, radius_px) + self.cfg.prior_weight * latent_prior(z)
        return cost

    def search_latents(self, batch: Batch, z: Tensor, radius_px: float, *, sweeps: int = 2) -> Tensor:
        """Global search: refine both the current latents and the best point of a coarse grid
        (``config.latent_search`` per axis) by :meth:`infer_latents`, and keep the better.

        Local steps alone keep a particle in whichever basin its first estimate fell into; the
        per-particle posterior is often multimodal when a domain looks alike at several positions.
        """
        objective = self.objective(batch, radius_px)
        candidates = search_points(z.shape[1], self.cfg.latent_search, seed=self.cfg.seed).to(self.device)
        start, _ = grid_search(objective, candidates, len(batch.rows))
        results = []
        for z0 in (z, start):
            for _ in range(sweeps):
                z0 = self.infer_latents(batch, z0, radius_px)
            with torch.no_grad():
                results.append((z0, objective(z0)))
        (za, fa), (zb, fb) = results
        return torch.where((fb < fa)[:, None], zb, za)

    # ---------------------------------------------------------------- one iteration
    def step(self) -> Progress:
        """Run iteration ``self.iteration`` and advance."""
        t0 = time.perf_counter()
        it = self.iteration
        block, band = self.schedule.block(it), self.schedule.band_limit_A(it)
        self.model.canonical.set_band_limit(resolution_A=band)
        radius = self.band_radius_px(band)
        rows = self._batch_rows(it)
        batch = self.batch(rows)
        z = self.latents[rows].to(self.device)
        epoch = it // self.iters_per_epoch
        fixed = self.cfg.fixed_latent_epochs if self.cfg.latent_init != "zeros" else 0
        if it == self.search_iteration:
            self.embed(self.train_rows, band_A=band, sweeps=1)
        if block == "flow" and epoch >= fixed:
            z = self.infer_latents(batch, z, radius)
            self.latents[rows] = z.cpu()
        lr_scale = self.set_learning_rates(it)
        losses = self._update(block, batch, z, radius)
        self.iteration += 1
        if self.iteration % self.iters_per_epoch == 0 and epoch >= fixed:
            self.standardise_latents()
        return Progress(it, self.total_iters, epoch, block, band, *losses, time.perf_counter() - t0, lr_scale)

    def set_learning_rates(self, it: int) -> float:
        """Set both optimisers' learning rates for iteration ``it`` from the schedule; returns the scale."""
        scale = self.schedule.lr_scale(it)
        for opt, name in ((self.opt_flow, "flow"), (self.opt_map, "map")):
            for group in opt.param_groups:
                group["lr"] = self.initial_lr[name] * scale
        return scale

    def _update(self, block: str, batch: Batch, z: Tensor, radius: float) -> tuple[float, float, float]:
        """One Adam step on the flow (``block == "flow"``) or on the canonical map."""
        opt = self.opt_flow if block == "flow" else self.opt_map
        self.model.canonical.volume.requires_grad_(block == "map")
        self.model.flow.requires_grad_(block == "flow")
        if block == "flow":
            noise = torch.randn(z.shape, generator=self.generator).to(self.device)
            z = z + self.cfg.latent_noise * noise
        while True:
            try:
                opt.zero_grad(set_to_none=True)
                data, rigid = self._accumulate(block, batch, z, radius)
                opt.step()
                break
            except torch.OutOfMemoryError:
                if len(batch.rows) // self.micro_batches <= 1:
                    raise
                self.micro_batches *= 2
                self.messages.append(f"out of memory: splitting each batch into {self.micro_batches} parts")
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
        self.model.canonical.volume.requires_grad_(True)
        self.model.flow.requires_grad_(True)
        return data, rigid, float(latent_prior(z).mean())

    def _accumulate(self, block, batch: Batch, z: Tensor, radius: float) -> tuple[float, float]:
        """Gradients of the batch loss, summed over ``micro_batches`` parts."""
        n = len(batch.rows)
        parts = np.array_split(np.arange(n), self.micro_batches)
        data_total = 0.0
        for part in parts:
            sub = batch.select(part)
            loss = self.data_term(z[torch.as_tensor(part, device=self.device)], sub, radius).sum() / n
            loss.backward()
            data_total += float(loss.detach())
        rigid = 0.0
        if block == "flow" and self.cfg.rigidity_weight > 0:
            zs = z[: self.cfg.rigidity_samples]
            r = self.model.rigidity(zs).mean()
            (self.cfg.rigidity_weight * r).backward()
            rigid = float(r.detach())
        return data_total, rigid

    def standardise_latents(self) -> None:
        """Centre the training latents and give each axis unit variance, absorbing the change into
        the flow generator's first layer so every particle's deformation stays exactly the same
        (:func:`flexview.model.gauge.standardise_latents`).

        Keeps the latents at the scale of the unit Gaussian prior and of the injected noise, so a
        weak early flow cannot shrink them towards zero.
        """
        self.latents = standardise_latents(self.latents, self.model.flow, fit=self.train_rows)

    @torch.no_grad()
    def principal_axes(self, n_sample: int = 500) -> np.ndarray:
        """Whiten and rotate the latents so that axis 1 carries the largest deformation of the
        masked voxels (weighted by √density), axis 2 the next, and so on, with every particle's
        deformation unchanged (:func:`flexview.model.gauge.principal_axes`, fitted on up to
        ``n_sample`` training particles). Returns the density-weighted RMS voxel displacement per
        unit of each new axis (Å), decreasing.
        """
        model = self.model
        coords = model.canonical.masked_coords()
        weight = model.canonical.masked_values().detach().clamp_min(0).sqrt()

        def features(z: Tensor) -> Tensor:
            return (model.voxel_positions(z.to(self.device)) - coords) * weight[:, None]

        self.latents, sv = principal_axes(self.latents, model.flow, features=features,
                                          fit=self.train_rows, n_sample=n_sample, seed=self.cfg.seed)
        return (sv / np.sqrt(weight.pow(2).sum().item())).numpy()

    # ---------------------------------------------------------------- loop
    def iterate(self):
        """Yield a :class:`Progress` after every iteration until the run is complete."""
        while self.iteration < self.total_iters:
            yield self.step()

    @torch.no_grad()
    def posterior_latents(self, batch: Batch, z: Tensor, radius_px: float, points: int = 7) -> Tensor:
        """Posterior mean of each latent of ``batch`` (:func:`posterior_mean`), by quadrature over
        ±2.5 standard deviations of the Laplace approximation at ``z`` (the modes)."""
        factor = laplace_factor(self._renderer(batch), self.sample_weight(radius_px).reshape(-1), z,
                                prior_weight=self.cfg.prior_weight)
        return posterior_mean(self.objective(batch, radius_px), z, factor, points=points, seed=self.cfg.seed)

    def embed(self, rows: np.ndarray, *, band_A: float | None = None, chunk: int = 500, sweeps: int = 2,
              progress=None) -> None:
        """Infer the latents of ``rows`` with the model fixed (band limit ``band_A``, default the
        final one): a global search (:meth:`search_latents`) when ``config.latent_search`` > 0,
        otherwise ``sweeps`` local sweeps from the current latents; then, with
        ``config.latent_estimate == "mean"``, the posterior mean around that mode.

        Works in chunks of at most ``chunk`` particles (each particle's result does not depend on
        the chunking). With ``progress``, ``progress(done, total)`` (particles) follows each chunk,
        and the chunks start at :data:`FIRST_CHUNK` particles and double while one takes under
        :data:`CHUNK_SECONDS`, so that progress shows within seconds on any machine."""
        band = band_A or self.schedule.band_end_A
        radius = self.band_radius_px(band)
        self.model.canonical.set_band_limit(resolution_A=band)
        start, size = 0, chunk if progress is None else min(chunk, FIRST_CHUNK)
        while start < len(rows):
            t0 = time.perf_counter()
            sel = rows[start:start + size]
            batch = self.batch(sel)
            z = self.latents[sel].to(self.device)
            if self.cfg.latent_search > 0:
                z = self.search_latents(batch, z, radius, sweeps=sweeps)
            else:
                for _ in range(sweeps):
                    z = self.infer_latents(batch, z, radius)
            if self.cfg.latent_estimate == "mean":
                z = self.posterior_latents(batch, z, radius)
            self.latents[sel] = z.cpu()
            start += len(sel)
            if progress is not None:
                progress(start, len(rows))
                if time.perf_counter() - t0 < CHUNK_SECONDS:
                    size = min(chunk, 2 * size)

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {
            "iteration": self.iteration,
            "micro_batches": self.micro_batches,
            "flow": self.model.flow.state_dict(),
            "canonical": self.model.canonical.state_dict(),
            "opt_flow": self.opt_flow.state_dict(),
            "opt_map": self.opt_map.state_dict(),
            "latents": self.latents.clone(),
            "noise_weight": self.noise_weight.cpu(),
            "generator": self.generator.get_state(),
            "initial_lr": dict(self.initial_lr),
        }

    def load_state_dict(self, state: dict) -> None:
        self.iteration = int(state["iteration"])
        self.micro_batches = int(state["micro_batches"])
        self.model.flow.load_state_dict(state["flow"])
        self.model.canonical.load_state_dict(state["canonical"])
        self.opt_flow.load_state_dict(state["opt_flow"])
        self.opt_map.load_state_dict(state["opt_map"])
        # stored, not recomputed: a resumed model's map no longer has its initial std. Checkpoints
        # from before learning-rate schedules ran at a constant rate, the one their optimisers saved
        self.initial_lr = dict(state.get("initial_lr") or {"flow": self.opt_flow.param_groups[0]["lr"],
                                                          "map": self.opt_map.param_groups[0]["lr"]})
        self.latents = state["latents"].clone()
        self.noise_weight = state["noise_weight"].to(self.device)
        self.generator.set_state(state["generator"])
