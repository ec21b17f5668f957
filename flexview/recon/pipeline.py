"""``reconstruct_run``: half maps at full resolution from a trained run, FSC, post-processing, files.

For each half set the run's flow generator and latents (or, in the split-halves layout, that
half's own model) are frozen and moved to the reconstruction box; the canonical map starts at
zero on a mask at that box and is solved by full-batch L-BFGS (:mod:`flexview.recon.highres`).
The same solver with the flow switched off gives the rigid ("noflex") half maps.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from flexview.device import resolve_device
from flexview.errors import FlexviewInputError
from flexview.io._atomic import write_text_atomic
from flexview.io.formats import read_particles
from flexview.io.mrc import read_map, write_map
from flexview.io.particles import ParticleSet
from flexview.model.gauge import median_deformation, recentre
from flexview.params import param, validate
from flexview.recon.goldstandard import (
    HALVES,
    RunLayout,
    deformation_disagreement,
    detect_layout,
    half_rows,
    sample_labels,
    summarise_disagreement,
)
from flexview.recon.highres import (
    ReconProblem,
    estimate_noise_weight,
    fourier_preconditioner,
    full_box_model,
    hessian_profile,
    resample_mask,
    resample_volume,
    solve_map,
)
from flexview.recon.postprocess import postprocess
from flexview.recon.report import plot_fsc, write_fsc_csv, write_summary
from flexview.recon.stream import ParticleStream, reconstruction_grid
from flexview.recon.symmetry import symmetrise
from flexview.run import load_run

__all__ = ["ReconOptions", "reconstruct_half", "reconstruct_run"]

MAP_FILES = ("open", "Maps (*.mrc *.map)")


@dataclass
class ReconOptions:
    """Parameters of :func:`reconstruct_run`; each field carries its help, unit and bounds
    (:mod:`flexview.params`), from which ``flexview reconstruct``'s options are generated."""

    iters: int = param(20, "L-BFGS iterations per half map", ge=1, cli="--iters")
    box: int | None = param(None, "reconstruction box; full: the particle box", unit="px", ge=8,
                            multiple_of=2, none="full", cli="--box")
    mask: str | None = param(None, "soft mask (.mrc) for the masked FSC, B-factor fit and weighting; its "
                             "non-zero voxels join the reconstruction support", path=MAP_FILES, cli="--mask")
    labels: str | None = param(None, "label volume (.mrc, integers, 0: none) of regions for the "
                               "split-halves deformation error", path=MAP_FILES, cli="--labels")
    noflex: bool = param(True, "the rigid (noflex) baseline half maps", cli="--no-noflex")
    symmetry: str | None = param(None, "symmetrise the half maps, e.g. C4 or D7 (axis z)",
                                 pattern=(r"\s*[CcDd]\s*0*[1-9]\d*\s*", "Cn or Dn (n ≥ 1)"), cli="--symmetry")
    bfactor: float | None = param(None, "B-factor applied to map_sharp.mrc, negative sharpens", unit="Å²",
                                  none="Guinier fit", cli="--bfactor")
    tikhonov: float = param(0.0, "weight of ‖V‖² relative to the mean radial Hessian profile", ge=0,
                            cli="--tikhonov")
    memory: int = param(20, "L-BFGS history length", ge=1)
    chunk: int | None = param(None, "particles per chunk; automatic: 32 on CPU, 128 on a GPU", ge=1,
                              none="automatic", cli="--chunk")
    kernel: str | None = param(None, "scatter kernel", choices=("linear", "cubic"), none="the run's")
    recentre: bool = param(True, "solve the map in the particles' median conformation, not in the one "
                           "training left it in", cli="--no-recentre")
    device: str = param("auto", "where to compute: auto (the GPU when present), cpu, cuda or cuda:N",
                        choices=("auto", "cpu", "cuda"), pattern=(r"cuda:\d+", "cuda:N"), cli="--device")
    noise_particles: int = param(500, "particles from which the noise power is estimated", ge=1)
    probe_particles: int = param(200, "particles from which the Hessian profile of the preconditioner "
                                 "is estimated", ge=1)
    project_dir: str | None = param(None, "folder that relative image paths are resolved against; "
                                    "automatic: the particle file's folder and its parents",
                                    path=("dir", ""), none="automatic", cli="--project-dir")
    seed: int = param(0, "random seed of the particle subsets and the median conformation", ge=0)

    def __post_init__(self):
        validate(self)


def _map_at(path: str, box: int, pixel_size: float) -> np.ndarray:
    """A map over the particles' physical box, resampled to the reconstruction grid."""
    volume, voxel = read_map(path, cubic=True)
    extent, target = volume.shape[0] * voxel, box * pixel_size
    if abs(extent - target) > 0.01 * target:
        raise FlexviewInputError(f"the map spans {extent:.1f} Å but the reconstruction box spans "
                                 f"{target:.1f} Å", path, "voxel size")
    if volume.shape[0] == box:
        return volume
    return resample_volume(volume, voxel, box, pixel_size)


def _support(runs: dict, box: int, pixel_size: float, user_mask: np.ndarray | None) -> np.ndarray:
    """Reconstruction mask: the union of the runs' masks resampled to the box (and the user mask's
    non-zero voxels)."""
    support = np.zeros((box,) * 3, dtype=bool)
    for run in {id(r): r for r in runs.values()}.values():
        mask = read_map(run.folder.mask)[0] > 0.5
        support |= resample_mask(mask, run.pixel_size, box, pixel_size)
    if user_mask is not None:
        support |= user_mask > 1e-3
    if not support.any():
        raise FlexviewInputError("the reconstruction mask is empty", runs["A"].folder.mask)
    return support


def reconstruct_half(run, particles: ParticleSet, rows: np.ndarray, support: np.ndarray,
                     opts: ReconOptions, device: torch.device,
                     log: Callable[[str], None] = lambda s: None, gauge: tuple | None = None,
                     grid=None) -> dict:
    """Flexible (and rigid) half map of the particles ``rows`` with ``run``'s frozen model.

    ``gauge``: ``(mesh, flow, shift)`` of :func:`_gauge` when the caller already has it (one run
    serves both halves); otherwise it is computed here. ``grid``: the particles'
    :func:`~flexview.recon.stream.reconstruction_grid` at the support's box, when the caller has it.

    Returns ``{"flex": volume, "noflex": volume or None, "stats": {...}}``.
    """
    stream = ParticleStream(particles, rows, support.shape[0], run.latents, grid=grid)
    kernel = opts.kernel or run.config.kernel
    mesh, flow, shift = gauge or _gauge(run, opts, log)
    model = full_box_model(mesh, flow, support, stream.pixel_size, kernel=kernel).to(device)
    chunk = opts.chunk or (128 if device.type == "cuda" else 32)
    t0 = time.perf_counter()
    weight, power = estimate_noise_weight(model, stream, count=opts.noise_particles, device=device,
                                          seed=opts.seed)
    probe = ReconProblem(model, stream.subset(opts.probe_particles, opts.seed), weight, use_flow=False,
                         chunk=chunk, device=device)
    profile = hessian_profile(probe, seed=opts.seed) * (len(stream) / len(probe.stream))
    tau = opts.tikhonov * float(profile[1:stream.box // 2 + 1].mean())
    precondition = fourier_preconditioner(probe, profile + 2.0 * tau)
    stats = {"particles": len(stream), "mask_voxels": int(support.sum()), "tikhonov_abs": tau,
             "recentre_shift_A": {"rms": float(np.sqrt((shift ** 2).sum(1).mean())),
                                  "max": float(np.sqrt((shift ** 2).sum(1)).max(initial=0.0))},
             "setup_seconds": time.perf_counter() - t0,
             "noise_power": power.cpu().numpy(), "hessian_profile": profile.cpu().numpy()}
    out = {"flex": None, "noflex": None, "stats": stats}
    for name, use_flow in (("flex", True), ("noflex", False)):
        if name == "noflex" and not opts.noflex:
            continue
        problem = ReconProblem(model, stream, weight, use_flow=use_flow, tikhonov=tau, chunk=chunk,
                               device=device)

        def report(k, res, name=name):
            log(f"  {name} iteration {k}/{opts.iters}: objective {res.objective[-1]:.6g} "
                f"({res.seconds[-1]:.1f} s)")

        result = solve_map(problem, iters=opts.iters, memory=opts.memory, preconditioner=precondition,
                           callback=report)
        out[name] = problem.volume(result.x)
        stats[name] = {"objective": result.objective, "grad_norm": result.grad_norm,
                       "iterations": result.iterations, "passes": problem.passes,
                       "seconds": problem.pass_seconds,
                       "seconds_per_pass_per_1000": problem.seconds_per_pass / len(stream) * 1000}
    return out


def _gauge(run, opts: ReconOptions, log: Callable[[str], None] = lambda s: None):
    """The run's mesh and flow, re-referenced to the median conformation of its particles when
    ``opts.recentre``; also the vertex shift (V, 3) Å applied (zeros when not)."""
    shift = np.zeros((run.mesh.n_vertices, 3))
    if not opts.recentre:
        return run.mesh, run.model.flow, shift
    shift = median_deformation(run.model.flow, run.latents, seed=opts.seed)
    try:
        mesh, flow = recentre(run.mesh, run.model.flow, shift)
    except ValueError as exc:
        log(f"  keeping the trained conformation: {exc}")
        return run.mesh, run.model.flow, np.zeros_like(shift)
    log(f"  map solved in the median conformation: vertices moved by up to "
        f"{np.sqrt((shift ** 2).sum(1)).max(initial=0.0):.2f} Å")
    return mesh, flow, shift


def _load_runs(layout: RunLayout) -> dict:
    """The run (on the CPU) that serves each half set; one object when both use the same folder."""
    loaded = {}
    for folder in dict.fromkeys(layout.runs.values()):
        loaded[folder] = load_run(folder)
    return {h: loaded[folder] for h, folder in layout.runs.items()}


def _disagreement(runs: dict, particles: ParticleSet, labels_path: str | None, out: Path) -> dict:
    """Deformation error between the two halves' models, per particle (CSV) and summarised."""
    labels = None
    if labels_path:
        vol, voxel = read_map(labels_path)
        labels = sample_labels(vol, voxel, runs["A"].model.canonical.masked_coords().cpu().numpy())
    summary = {}
    lines = []
    for half in HALVES:
        rows = half_rows(particles.half_set, half)
        result = deformation_disagreement(runs["A"], runs["B"], rows, labels=labels)
        summary[f"particles_of_half_{half}"] = summarise_disagreement(result)
        for i, r in enumerate(rows):
            lines.append([str(r), half] + [f"{result['regions'][n]['error'][i]:.4f}"
                                           for n in result["regions"]])
    names = list(result["regions"])
    header = ",".join(["row", "half"] + [f"error_{n}_A" for n in names])
    write_text_atomic(out / "deformation_error.csv", "\n".join([header] + [",".join(x) for x in lines]) + "\n")
    return summary


def reconstruct_run(run_path: str | Path, particles_path: str | Path | None, out: str | Path,
                    opts: ReconOptions | None = None, *,
                    log: Callable[[str], None] = lambda s: None) -> dict:
    """Reconstruct half maps at full resolution from a run (or a split-halves run) and write
    ``half_A.mrc, half_B.mrc, map.mrc, map_sharp.mrc, noflex_half_A.mrc, noflex_half_B.mrc,
    fsc.csv, fsc.png, summary.json`` (and ``deformation_error.csv`` for split halves) to ``out``.

    Returns the summary dictionary.
    """
    opts = opts or ReconOptions()
    t_start = time.perf_counter()
    out = Path(out)
    layout = detect_layout(run_path)
    device = resolve_device(opts.device)
    runs = _load_runs(layout)
    particles = read_particles(particles_path or runs["A"].config.particles, opts.project_dir)
    particles.require("images", "poses", "ctf", "half_sets")
    box = int(opts.box or particles.box)
    grid = reconstruction_grid(particles, box)      # optics groups of other pixel sizes resampled to it
    pixel_size = particles.pixel_size * particles.box / box
    if grid.mixed:
        log(grid.describe())
    fsc_mask = _map_at(opts.mask, box, pixel_size).clip(0.0, 1.0) if opts.mask else None
    support = _support(runs, box, pixel_size, fsc_mask)
    gauges = {key: _gauge(run, opts, log) for key, run in {id(r): r for r in runs.values()}.items()}
    maps, stats = {}, {}
    for half in HALVES:
        log(f"half {half}: {int((particles.half_set == HALVES[half]).sum())} particles at box {box} "
            f"({pixel_size:.3f} Å/px), model {layout.runs[half]}")
        res = reconstruct_half(runs[half], particles, half_rows(particles.half_set, half), support,
                               opts, device, log, gauge=gauges[id(runs[half])], grid=grid)
        maps[half], stats[half] = res, res["stats"]
    flex, rigid = _postprocess_halves(maps, opts, pixel_size, fsc_mask)
    _write_maps(out, maps, flex, rigid, support, pixel_size)
    _write_fsc(out, flex, rigid, box, train_px=runs["A"].pixel_size)
    summary = {
        "run": str(layout.root), "layout": "split-halves" if layout.split else "single",
        "particles": str(particles_path or runs["A"].config.particles),
        "box": box, "pixel_size": pixel_size, "training_box": runs["A"].box,
        "training_nyquist_A": 2.0 * runs["A"].pixel_size, "device": str(device),
        "options": asdict(opts), "resolution_A": _resolutions(flex, rigid),
        "bfactor_applied_A2": flex.bfactor_applied, "bfactor_source": flex.bfactor_source,
        "halves": stats,
    }
    if grid.mixed:
        summary["optics_resampling"] = [r.record() for r in grid.plan]
    if layout.split:
        summary["deformation_error_A"] = _disagreement(runs, particles, opts.labels, out)
    summary["seconds"] = time.perf_counter() - t_start
    write_summary(out / "summary.json", summary)
    return summary


def _postprocess_halves(maps: dict, opts: ReconOptions, pixel_size: float, fsc_mask: np.ndarray | None):
    """Symmetrise the half maps (in place) and post-process the flex and noflex pairs."""
    for key in ("flex", "noflex"):
        for half in HALVES:
            if maps[half][key] is not None and opts.symmetry:
                maps[half][key] = symmetrise(maps[half][key], opts.symmetry)
    flex = postprocess(maps["A"]["flex"], maps["B"]["flex"], pixel_size, mask=fsc_mask,
                       bfactor=opts.bfactor)
    rigid = (postprocess(maps["A"]["noflex"], maps["B"]["noflex"], pixel_size, mask=fsc_mask,
                         bfactor=opts.bfactor) if opts.noflex else None)
    return flex, rigid


def _write_maps(out: Path, maps: dict, flex, rigid, support: np.ndarray, pixel_size: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for half in HALVES:
        write_map(out / f"half_{half}.mrc", maps[half]["flex"], pixel_size)
        if rigid is not None:
            write_map(out / f"noflex_half_{half}.mrc", maps[half]["noflex"], pixel_size)
    write_map(out / "map.mrc", flex.combined, pixel_size)
    write_map(out / "map_sharp.mrc", flex.sharpened, pixel_size)
    write_map(out / "support_mask.mrc", support.astype(np.float32), pixel_size)


def _write_fsc(out: Path, flex, rigid, box: int, *, train_px: float) -> None:
    """``fsc.csv`` and ``fsc.png`` (training Nyquist marked)."""
    curves = {"flex_global": flex.fsc_global}
    if flex.fsc_masked is not None:
        curves["flex_masked"] = flex.fsc_masked
    if rigid is not None:
        curves["noflex_global"] = rigid.fsc_global
        if rigid.fsc_masked is not None:
            curves["noflex_masked"] = rigid.fsc_masked
    write_fsc_csv(out / "fsc.csv", flex.freq, curves, box)
    marks = {"training Nyquist": 1.0 / (2.0 * train_px)}
    title = f"flexview {flex.resolution_A:.2f} Å" + (f", noflex {rigid.resolution_A:.2f} Å" if rigid else "")
    plot_fsc(out / "fsc.png", flex.freq, curves, title=title, marks=marks)


def _resolutions(flex, rigid) -> dict:
    out = {"flex": flex.resolution_A, "flex_global": flex.resolution_global_A,
           "flex_masked": flex.resolution_masked_A}
    if rigid is not None:
        out.update(noflex=rigid.resolution_A, noflex_global=rigid.resolution_global_A,
                   noflex_masked=rigid.resolution_masked_A)
    return out
