"""Does training recover the motion that is in the data, and only that?

Makes the built-in hinge dataset (two independent motions) and its rigid control, trains on each
(K = 2) and prints:

- cross-validated R² (k-NN regression) of each true motion coordinate from the latents, and the
  largest |Spearman| between the hinge coordinate and a single latent axis;
- inside a mask around the moving domains, the mean FSC (shells from 40 Å to half of Nyquist)
  against the true map of the map generated at the median latent of the particles nearest each
  tested coordinate, compared with the consensus map's;
- on the rigid control, the mean generated displacement over the particles (Å);
- the ceiling: R² of the posterior mean of the motion coordinates under the exact generative
  model (the phantom itself, the true poses, CTF and noise level), by brute force over a grid of
  coordinates on fresh particles simulated like the dataset. No method can beat it on average.

Usage: python bench/recover.py [--particles 4000] [--box 64] [--train-box 64] [--epochs 16]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from scipy.stats import spearmanr
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsRegressor

import flexview
from flexview.io.mrc import read_map
from flexview.preprocess import fourier_crop_volume
from flexview.recon import fsc
from flexview.synth import make_dataset, simulate
from flexview.synth.phantom import load_phantom
from flexview.train import TrainConfig, TrainingSession


def train(data: Path, out: Path, args) -> tuple[TrainingSession, float]:
    cfg = TrainConfig(particles=str(data / "particles.star"), consensus_map=str(data / "consensus.mrc"),
                      box=args.train_box, epochs=args.epochs, batch_size=args.batch_size,
                      cells_across=args.cells_across, lr_flow=args.lr_flow, seed=args.seed,
                      checkpoint_every=10_000)
    t0 = time.perf_counter()
    session = TrainingSession.start(cfg, out)
    session.run()
    return session, time.perf_counter() - t0


def latent_scores(z: np.ndarray, truth: np.ndarray) -> dict:
    knn = KNeighborsRegressor(n_neighbors=25)
    r2 = [float(cross_val_score(knn, z, truth[:, k], cv=5, scoring="r2").mean()) for k in range(truth.shape[1])]
    spearman = max(abs(spearmanr(z[:, a], truth[:, 0]).statistic) for a in range(z.shape[1]))
    return {"knn_r2": r2, "hinge_best_axis_spearman": float(spearman)}


def moving_mask(gt: Path, names: list[str], box: int, pixel_size_full: float) -> np.ndarray:
    """Union of the moving domains' masks, dilated by 6 Å, at the training box."""
    masks = [read_map(gt / f"domain_{n}.mrc")[0] > 0.5 for n in names if n != "core"]
    full = ndimage.distance_transform_edt(~np.logical_or.reduce(masks)) * pixel_size_full <= 6.0
    small, _ = fourier_crop_volume(full.astype(np.float32), box, pixel_size_full)
    return np.asarray(small) > 0.5


def mean_fsc(a, b, mask, pixel_size, lo_A=40.0, hi_A=None) -> float:
    freq, values = fsc(a, b, mask=mask, pixel_size=pixel_size)
    hi_A = hi_A or 4.0 * pixel_size          # half of the training Nyquist frequency
    sel = (freq >= 1 / lo_A) & (freq <= 1 / hi_A)
    return float(values[sel].mean())


def map_scores(data: Path, run, truth: np.ndarray, n_near: int = 100) -> list[dict]:
    gt = data / "ground_truth"
    index = json.loads((gt / "maps.json").read_text())
    desc = json.loads((data / "dataset.json").read_text())
    box, px = run.box, run.pixel_size
    mask = moving_mask(gt, desc["domains"], box, desc["pixel_size"])
    consensus = np.asarray(fourier_crop_volume(read_map(data / "consensus.mrc")[0], box, desc["pixel_size"])[0])
    rows = []
    for entry in index["maps"]:
        c = np.asarray(entry["coords"])
        true_map = np.asarray(fourier_crop_volume(read_map(gt / entry["file"])[0], box, desc["pixel_size"])[0])
        near = np.argsort(np.linalg.norm(truth - c, axis=1))[:n_near]
        generated = run.generate(np.median(run.latents[near], axis=0))
        rows.append({"coords": c.tolist(), "flexview": mean_fsc(generated, true_map, mask, px),
                     "consensus": mean_fsc(consensus, true_map, mask, px)})
    return rows


def mean_displacement(run) -> float:
    """Mean over particles of the density-weighted mean displacement at the mask voxels (Å)."""
    model = run.model
    with torch.no_grad():
        pos = model.voxel_positions(torch.as_tensor(run.latents))
        disp = (pos - model.canonical.masked_coords()).norm(dim=-1)
        w = model.canonical.masked_values().clamp_min(0)
        return float(((disp * w).sum(dim=1) / w.sum()).mean())


def ceiling_r2(data: Path, *, n: int = 300, points: int = 21, seed: int = 7) -> list[float]:
    """R² of the exact model's posterior mean of each motion coordinate (uniform prior on the
    dataset's coordinate range), on ``n`` fresh particles simulated like the dataset."""
    desc = json.loads((data / "dataset.json").read_text())
    phantom = load_phantom(data / "ground_truth" / "phantom.npz")
    box, px = desc["box"], desc["pixel_size"]
    noisy = simulate(phantom, n, box, px, snr=desc["snr"], seed=seed)
    images = noisy.particles.images.read(slice(None)).astype(np.float64)
    clean = simulate(phantom, n, box, px, snr=None, seed=seed).particles.images.read(slice(None))
    sigma2 = float((images - clean).var())
    lo, hi = desc["motion_coords"]["low"], desc["motion_coords"]["high"]
    axis = np.linspace(lo, hi, points)
    grid = np.stack(np.meshgrid(*([axis] * phantom.n_motions), indexing="ij"), -1).reshape(-1, phantom.n_motions)
    cost = np.empty((n, len(grid)))
    for j, c in enumerate(grid):
        model = simulate(phantom, n, box, px, snr=None, seed=seed, coords=np.tile(c, (n, 1)))
        cost[:, j] = ((images - model.particles.images.read(slice(None))) ** 2).sum((1, 2)) / (2 * sigma2)
    post = np.exp(-(cost - cost.min(axis=1, keepdims=True)))
    estimate = (post / post.sum(axis=1, keepdims=True)) @ grid
    truth = noisy.coords
    return [float(1 - ((estimate[:, k] - truth[:, k]) ** 2).mean() / truth[:, k].var())
            for k in range(truth.shape[1])]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="bench_out/recover")
    p.add_argument("--particles", type=int, default=4000)
    p.add_argument("--box", type=int, default=64)
    p.add_argument("--snr", type=float, default=0.05)
    p.add_argument("--train-box", type=int, default=64)
    p.add_argument("--epochs", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--cells-across", type=int, default=10)
    p.add_argument("--lr-flow", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    out = Path(args.out)
    report = {}
    for kind in ("hinge", "rigid"):
        t0 = time.perf_counter()
        make_dataset(out / kind / "data", kind=kind, n_particles=args.particles, box=args.box, snr=args.snr,
                     seed=args.seed)
        t_data = time.perf_counter() - t0
        session, t_train = train(out / kind / "data", out / kind / "run", args)
        run = flexview.load_run(out / kind / "run")
        entry = {"dataset_s": round(t_data, 1), "train_s": round(t_train, 1)}
        if kind == "hinge":
            truth = np.load(out / kind / "data" / "ground_truth" / "motion_coords.npy")
            entry.update(latent_scores(run.latents, truth))
            entry["maps"] = map_scores(out / kind / "data", run, truth)
            entry["ceiling_r2"] = ceiling_r2(out / kind / "data")
        entry["mean_displacement_A"] = mean_displacement(run)
        report[kind] = entry
        print(kind, json.dumps(entry, indent=1), flush=True)
    h, r = report["hinge"], report["rigid"]
    checks = {
        "R2 >= 0.9 for every motion": all(v >= 0.9 for v in h["knn_r2"]),
        "hinge on one axis |Spearman| >= 0.9": h["hinge_best_axis_spearman"] >= 0.9,
        "generated beats consensus at every coordinate": all(m["flexview"] > m["consensus"] for m in h["maps"]),
        "rigid control mean displacement < 0.5 A": r["mean_displacement_A"] < 0.5,
        "training within 15 min (hinge)": h["train_s"] <= 900,
    }
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")


if __name__ == "__main__":
    main()
