"""High-resolution reconstruction on the built-in data: flexview vs rigid (noflex) vs the truth.

Makes the hinge and rigid data sets at box 128 (``flexview.synth.make_dataset``), trains a model on
each at a smaller box, reconstructs half maps at box 128 with and without the flow, and prints

- per Fourier shell up to the training Nyquist, inside a soft mask around the moving domain (the
  hinge's arm; also the twisting domain and the static core), the FSC of the flexview and noflex
  maps (average of the half maps) against the true canonical map (ground truth at c = 0);
- the half-map FSC resolutions (0.143), compared with the training Nyquist;
- the rigid control: flexview and noflex resolutions and their difference in shells;
- seconds per full-batch pass (objective + gradient over all particles) per 1,000 particles;
- with ``--modes split``: the same for gold-standard training (one model per half set) and the
  deformation error between the two models; with ``--modes oracle``: the same with a flow fitted to
  the true deformation and the true motion coordinates as latents (the upper bound of the
  reconstruction when the flow is right, independent of training).

Every step is cached in ``--work`` (delete a folder to redo it). Figures go to stdout and to
``WORK/bench_reconstruct.json``.

    python bench/reconstruct.py --work /tmp/fvbench --threads 1
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")      # before torch starts OpenMP

import numpy as np  # noqa: E402
import torch  # noqa: E402

from flexview.io._atomic import write_text_atomic  # noqa: E402
from flexview.io.mrc import read_map, write_map  # noqa: E402
from flexview.recon.fsc import fsc  # noqa: E402
from flexview.recon.goldstandard import write_split_json  # noqa: E402
from flexview.recon.pipeline import ReconOptions, reconstruct_run  # noqa: E402
from flexview.synth import make_dataset  # noqa: E402
from flexview.train import TrainConfig, TrainingSession  # noqa: E402
from flexview.train.setup import smooth_mask  # noqa: E402


def dataset(work: Path, kind: str, n: int, box: int) -> Path:
    folder = work / f"{kind}{box}"
    if not (folder / "dataset.json").is_file():
        t = time.perf_counter()
        make_dataset(folder, kind=kind, n_particles=n, box=box, seed=0)
        print(f"[{kind}] data set: {n} particles at box {box} ({time.perf_counter() - t:.0f} s)")
    return folder


def train(data: Path, out: Path, args, halves: str = "all") -> None:
    if (out / "latents.npy").is_file():
        return
    values = dict(particles=str(data / "particles.star"), consensus_map=str(data / "consensus.mrc"),
                  box=args.train_box, epochs=args.epochs, device=args.device, halves=halves)
    values.update(json.loads(args.train_set))
    t = time.perf_counter()
    TrainingSession.start(TrainConfig(**values), out).run()
    print(f"[{out.name}] trained: box {args.train_box}, {args.epochs} epochs, halves {halves} "
          f"({time.perf_counter() - t:.0f} s)")


def oracle_run(data: Path, trained: Path, out: Path, steps: int = 3000, seed: int = 0) -> None:
    """A run folder with the trained run's mesh, mask and canonical map, but a flow generator fitted
    to the true deformation of the phantom at the mesh vertices and the true motion coordinates as
    latents: the reconstruction's upper bound when the flow is right (the training is bypassed)."""
    import shutil
    from dataclasses import replace

    from scipy.spatial import cKDTree

    from flexview.io.meshfile import read_mesh
    from flexview.model.flow import FlowGenerator
    from flexview.runfolder import save_npy, save_torch
    from flexview.synth import load_phantom
    from flexview.train.config import TrainConfig

    if (out / "latents.npy").is_file():
        return
    out.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "mesh.npz", "mask.mrc", "canonical.mrc"):
        shutil.copy(trained / name, out / name)
    cfg, mesh = TrainConfig.from_json(out / "config.json"), read_mesh(out / "mesh.npz")
    phantom = load_phantom(data / "ground_truth" / "phantom.npz")
    _, nearest = cKDTree(phantom.positions).query(mesh.vertices)
    vertices = replace(phantom, positions=mesh.vertices, labels=phantom.labels[nearest],
                       amplitudes=np.ones(mesh.n_vertices), bfactors=np.ones(mesh.n_vertices))
    torch.manual_seed(seed)
    flow = FlowGenerator.for_mesh(mesh, phantom.n_motions, hidden=cfg.hidden, layers=cfg.layers)
    opt = torch.optim.Adam(flow.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        c = rng.uniform(-1.0, 1.0, (256, phantom.n_motions))
        target = torch.as_tensor(vertices.displacement(c), dtype=torch.float32)
        loss = (flow(torch.as_tensor(c, dtype=torch.float32)) - target).pow(2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"[{out.name}] flow fitted to the true deformation: RMS vertex error {float(loss.detach()) ** 0.5:.2f} Å")
    save_torch(out / "flow.pt", flow.state_dict())
    save_npy(out / "latents.npy", np.load(data / "ground_truth" / "motion_coords.npy").astype(np.float32))


def soft_mask(path: Path, out: Path) -> Path:
    mask, px = read_map(path)
    write_map(out, smooth_mask(mask > 0.5, px, 6.0), px)
    return out


def reconstruct(run: Path, data: Path, out: Path, args, mask: Path | None) -> dict:
    if not (out / "summary.json").is_file():
        opts = ReconOptions(iters=args.iters, mask=str(mask) if mask else None, device=args.device,
                            labels=str(data / "ground_truth" / "domains.mrc"))
        reconstruct_run(run, data / "particles.star", out, opts,
                        log=lambda s: print(s, flush=True) if args.verbose else None)
    return json.loads((out / "summary.json").read_text())


def truth_table(data: Path, recon: Path, train_px: float) -> dict:
    """FSC against the true canonical map per domain mask, flexview vs noflex, up to training Nyquist."""
    truth, px = read_map(data / "ground_truth" / "map_000.mrc")
    box = truth.shape[0]
    maps = {}
    for key, prefix in (("flex", ""), ("noflex", "noflex_")):
        a, b = (read_map(recon / f"{prefix}half_{h}.mrc")[0] for h in "AB")
        maps[key] = 0.5 * (a + b)
    last = int(np.floor(box * px / (2.0 * train_px) + 1e-6))      # training Nyquist shell
    table = {}
    for domain in ("arm", "twist", "core"):
        mask = smooth_mask(read_map(data / "ground_truth" / f"domain_{domain}.mrc")[0] > 0.5, px, 6.0)
        curves = {k: fsc(v, truth, mask=mask, pixel_size=px)[1] for k, v in maps.items()}
        table[domain] = {k: c[: last + 1].round(4).tolist() for k, c in curves.items()}
        table[domain]["flex_wins_every_shell"] = bool(np.all(curves["flex"][1:last + 1] > curves["noflex"][1:last + 1]))
    table["freq"] = (np.arange(last + 1) / (box * px)).tolist()
    table["training_nyquist_shell"] = last
    return table


def print_truth(table: dict, title: str) -> None:
    print(f"\n{title}: FSC against the true canonical map (c = 0), inside soft domain masks")
    print("shell  res(Å)   arm flex  arm noflex   twist flex  twist noflex   core flex  core noflex")
    for s in range(1, table["training_nyquist_shell"] + 1):
        res = 1.0 / table["freq"][s]
        row = [table[d][k][s] for d in ("arm", "twist", "core") for k in ("flex", "noflex")]
        print(f"{s:5d} {res:7.2f}   " + "  ".join(f"{v:9.3f}" for v in row))
    for d in ("arm", "twist", "core"):
        print(f"  {d}: flexview above noflex at every shell up to the training Nyquist: "
              f"{table[d]['flex_wins_every_shell']}")


def print_summary(summary: dict, title: str) -> None:
    r = summary["resolution_A"]
    box_px = summary["box"] * summary["pixel_size"]
    print(f"\n{title}: half-map FSC 0.143 (training Nyquist {summary['training_nyquist_A']:.2f} Å)")
    for key in ("flex", "flex_global", "noflex", "noflex_global"):
        if r.get(key) is not None:
            print(f"  {key:14s} {r[key]:6.2f} Å  (shell {box_px / r[key]:5.1f})")
    for h in ("A", "B"):
        s = summary["halves"][h]
        times = ", ".join(f"{k} {s[k]['seconds_per_pass_per_1000']:.1f} s" for k in ("flex", "noflex") if k in s)
        print(f"  half {h}: {s['particles']} particles, {s['mask_voxels']} mask voxels; one full-batch pass "
              f"per 1,000 particles: {times}")
    if "deformation_error_A" in summary:
        for group, regions in summary["deformation_error_A"].items():
            text = "; ".join(f"{n}: error {v['error']['median']:.2f} Å (motion {v['motion_A']['median']:.2f}/"
                             f"{v['motion_B']['median']:.2f} Å)" for n, v in regions.items())
            print(f"  deformation error, {group} (median per particle): {text}")


def time_pass(run_path: Path, data: Path, count: int, device: str) -> dict:
    """Seconds per full-batch pass per 1,000 particles (flex and rigid; with and without reading the
    images), measured on ``count`` particles of half A with the current torch thread count."""
    import flexview
    from flexview.io.formats import read_particles
    from flexview.recon.highres import ReconProblem, full_box_model, resample_mask
    from flexview.recon.stream import ParticleStream

    run = flexview.load_run(run_path)
    particles = read_particles(data / "particles.star")
    support = resample_mask(read_map(run.folder.mask)[0] > 0.5, run.pixel_size, particles.box,
                            particles.pixel_size)
    rows = np.nonzero(particles.half_set == 0)[0][:count]
    stream = ParticleStream(particles, rows, latents=run.latents)
    model = full_box_model(run.mesh, run.model.flow, support, particles.pixel_size).to(device)
    weight = torch.ones(particles.box, device=device)
    x = torch.zeros(int(support.sum()), dtype=torch.float64, device=device)
    out = {"mask_voxels": int(support.sum()), "particles": len(rows), "threads": torch.get_num_threads()}
    for name, flow in (("flex", True), ("noflex", False)):
        prob = ReconProblem(model, stream, weight, use_flow=flow, chunk=32 if device == "cpu" else 128,
                            device=device)
        for what, fn in (("objective", prob.objective), ("hessian_vector", prob.hessian_vector)):
            if device != "cpu":
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn(x)
            if device != "cpu":
                torch.cuda.synchronize()
            out[f"{name}_{what}"] = (time.perf_counter() - t) / len(rows) * 1000
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("bench_reconstruct"))
    ap.add_argument("--n", type=int, default=2000, help="particles per data set")
    ap.add_argument("--box", type=int, default=128, help="particle (reconstruction) box")
    ap.add_argument("--train-box", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--train-set", default='{"lr_flow": 0.01, "batch_size": 100, "cells_across": 10}',
                    help="other TrainConfig fields (JSON)")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--modes", default="single,split",
                    help="single, split (gold standard) and/or oracle (flow fitted to the true motion)")
    ap.add_argument("--kinds", default="hinge,rigid")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--timing", type=int, default=0,
                    help="only time one pass on this many particles at the particle box (needs the hinge run)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"torch threads {torch.get_num_threads()}, device {args.device}")
    store = args.work / "bench_reconstruct.json"
    results = json.loads(store.read_text()) if store.is_file() else {}     # earlier invocations kept
    results["args"] = {k: str(v) for k, v in vars(args).items()}
    if args.timing:
        data = dataset(args.work, "hinge", args.n, args.box)
        run = args.work / f"run_hinge_single_{args.train_box}"
        train(data, run, args)
        timing = time_pass(run, data, args.timing, args.device)
        print(f"one full-batch pass at box {args.box}, seconds per 1,000 particles "
              f"({timing['threads']} threads, {args.device}, {timing['mask_voxels']} mask voxels): "
              + ", ".join(f"{k} {v:.1f}" for k, v in timing.items() if "_" in k and k != "mask_voxels"))
        return
    for kind in args.kinds.split(","):
        data = dataset(args.work, kind, args.n, args.box)
        mask = soft_mask(data / "ground_truth" / "domain_arm.mrc", args.work / f"{kind}_arm_mask.mrc") \
            if kind == "hinge" else None
        for mode in args.modes.split(","):
            run = args.work / f"run_{kind}_{mode}_{args.train_box}"
            if mode == "oracle":
                train(data, args.work / f"run_{kind}_single_{args.train_box}", args)
                oracle_run(data, args.work / f"run_{kind}_single_{args.train_box}", run)
            elif mode == "split":
                for half in "AB":
                    train(data, run / f"half_{half}", args, halves=half)
                write_split_json(run, str(data / "particles.star"))
            else:
                train(data, run, args)
            recon = args.work / f"recon_{kind}_{mode}_{args.train_box}"
            summary = reconstruct(run, data, recon, args, mask)
            title = f"{kind}, {mode} model, trained at box {args.train_box}"
            print_summary(summary, title)
            entry = {"summary_resolution_A": summary["resolution_A"],
                     "seconds_per_pass_per_1000": {h: {k: summary["halves"][h][k]["seconds_per_pass_per_1000"]
                                                       for k in ("flex", "noflex")} for h in "AB"},
                     "deformation_error_A": summary.get("deformation_error_A")}
            if kind == "hinge":
                table = truth_table(data, recon, summary["training_nyquist_A"] / 2.0)
                print_truth(table, title)
                entry["truth_fsc"] = table
            else:
                r = summary["resolution_A"]
                box_px = summary["box"] * summary["pixel_size"]
                shells = abs(box_px / r["flex"] - box_px / r["noflex"])
                print(f"  rigid control: flexview {r['flex']:.2f} Å vs noflex {r['noflex']:.2f} Å: "
                      f"{shells:.2f} shells apart (within one shell: {shells <= 1.0})")
                entry["shells_apart"] = shells
            results[f"{kind}_{mode}"] = entry
            write_text_atomic(store, json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
