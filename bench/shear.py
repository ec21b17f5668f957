"""Does cutting the mesh between sliding domains help? Regular mesh vs cut mesh on the shear phantom.

Makes the built-in shear dataset (two slab-like domains touching along a plane, sliding in opposite
directions by ±7 Å), trains once with the regular mesh and once with the same mesh cut between the
two domains (segments from ground_truth/domains.mrc; the shear phantom has no hinge, so nothing is
fused), and prints the displacement error against the ground truth at the phantom's atoms:

- matched: at each tested motion coordinate c, the flow at the median latent of the particles whose
  true coordinate is nearest c, vs the phantom's true displacement at c (RMS over atoms, Å);
- per particle: the flow at each particle's own latent vs the true displacement at its coordinate
  (median over particles of the RMS over atoms, Å);
- for scale, the RMS true displacement (the error of a model that does not move).

Usage: python bench/shear.py [--particles 2000] [--box 64] [--train-box 32] [--epochs 6]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import flexview
from flexview.io.meshfile import read_mesh, write_mesh
from flexview.io.mrc import read_map
from flexview.model import TetMesh, cut_mesh, locate
from flexview.synth import load_phantom, make_dataset
from flexview.train import TrainConfig, TrainingSession


def train(data: Path, out: Path, args, mesh: Path | None = None) -> float:
    cfg = TrainConfig(particles=str(data / "particles.star"), consensus_map=str(data / "consensus.mrc"),
                      box=args.train_box, epochs=args.epochs, batch_size=args.batch_size,
                      cells_across=args.cells_across, lr_flow=args.lr_flow, seed=args.seed,
                      checkpoint_every=10_000, mesh=None if mesh is None else str(mesh))
    t0 = time.perf_counter()
    TrainingSession.start(cfg, out).run()
    return time.perf_counter() - t0


def cut_from_domains(regular_run: Path, data: Path, out: Path) -> TetMesh:
    """The regular run's mesh cut between the ground-truth domains (no fusion: the slabs slide)."""
    base = read_mesh(regular_run / "mesh.npz")
    labels, voxel = read_map(data / "ground_truth" / "domains.mrc")
    mesh = cut_mesh(base, labels, "", labels_pixel_size=voxel)
    write_mesh(out, mesh)
    return mesh


def atom_displacements(run, z: np.ndarray, atoms: np.ndarray) -> np.ndarray:
    """Flow at the atoms (A, 3) for latents z (B, K): (B, A, 3) Å (zero outside the mesh)."""
    cell, bary = locate(run.mesh, atoms)
    with torch.no_grad():
        disp = run.model.displacements(torch.as_tensor(z, dtype=torch.float32)).numpy()   # (B, V, 3)
    verts = run.mesh.cells[np.clip(cell, 0, None)]                                    # (A, 4)
    out = (disp[:, verts] * bary[None, :, :, None]).sum(axis=2)
    out[:, cell < 0] = 0.0
    return out


def rms(a: np.ndarray) -> np.ndarray:
    """RMS length over the atoms (second-to-last axis) of (…, A, 3) vectors."""
    return np.sqrt((a ** 2).sum(-1).mean(-1))


def scores(run, phantom, truth: np.ndarray, n_near: int = 100, n_particles: int = 1000) -> dict:
    atoms = phantom.positions
    coords = np.linspace(-1.0, 1.0, 9)[:, None]
    z = np.stack([np.median(run.latents[np.argsort(np.abs(truth[:, 0] - c[0]))[:n_near]], axis=0)
                  for c in coords])
    matched = rms(atom_displacements(run, z, atoms) - phantom.displacement(coords))
    rows = np.random.default_rng(0).choice(len(truth), min(n_particles, len(truth)), replace=False)
    per = rms(atom_displacements(run, run.latents[rows], atoms) - phantom.displacement(truth[rows]))
    by_domain = {}
    for d, name in enumerate(phantom.domain_names):
        sel = phantom.labels == d
        err = atom_displacements(run, z, atoms[sel]) - phantom.displacement(coords)[:, sel]
        by_domain[name] = float(rms(err).mean())
    return {"matched_rms_A": float(matched.mean()), "matched_at_c": [round(float(v), 2) for v in matched],
            "per_particle_median_A": float(np.median(per)), "matched_by_domain_A": by_domain,
            "outside_mesh_atoms": int((locate(run.mesh, atoms)[0] < 0).sum())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="bench_out/shear")
    p.add_argument("--particles", type=int, default=2000)
    p.add_argument("--box", type=int, default=64)
    p.add_argument("--snr", type=float, default=0.05)
    p.add_argument("--train-box", type=int, default=32)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--cells-across", type=int, default=10)
    p.add_argument("--lr-flow", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    out = Path(args.out)
    data = out / "data"
    t0 = time.perf_counter()
    make_dataset(data, kind="shear", n_particles=args.particles, box=args.box, snr=args.snr, seed=args.seed)
    print(f"dataset: {time.perf_counter() - t0:.1f} s", flush=True)
    phantom = load_phantom(data / "ground_truth" / "phantom.npz")
    truth = np.load(data / "ground_truth" / "motion_coords.npy")
    true_disp = phantom.displacement(np.linspace(-1, 1, 9)[:, None])
    report = {"true_rms_displacement_A": float(rms(true_disp).mean())}
    t_reg = train(data, out / "regular", args)
    mesh = cut_from_domains(out / "regular", data, out / "cut_mesh.npz")
    print(f"cut mesh: {mesh.n_cells} cells, {mesh.n_vertices} vertices, segments "
          f"{dict(zip(*np.unique(mesh.segment, return_counts=True)))}", flush=True)
    t_cut = train(data, out / "cut", args, out / "cut_mesh.npz")
    for name, seconds in (("regular", t_reg), ("cut", t_cut)):
        entry = scores(flexview.load_run(out / name), phantom, truth)
        entry["train_s"] = round(seconds, 1)
        report[name] = entry
        print(name, json.dumps(entry, indent=1, default=int), flush=True)
    reg, cut = report["regular"], report["cut"]
    print(f"true RMS displacement {report['true_rms_displacement_A']:.2f} Å; displacement error (matched, "
          f"RMS over atoms): regular mesh {reg['matched_rms_A']:.2f} Å, "
          f"cut mesh {cut['matched_rms_A']:.2f} Å; "
          f"per particle (median): regular {reg['per_particle_median_A']:.2f} Å, "
          f"cut {cut['per_particle_median_A']:.2f} Å")


if __name__ == "__main__":
    main()
