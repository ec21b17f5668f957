"""Speed of the synthetic data generator and the rigid reconstruction.

Target: ``make_dataset`` with 2,000 particles at box 64 (simulation, consensus reconstruction and
every file) in under a minute on 2 CPU cores; reconstruction of those particles in a few seconds.

    python bench/synth.py [--n 2000] [--box 64] [--threads 2] [--device cpu]
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

from flexview.recon.rigid import reconstruct_rigid
from flexview.synth.dataset import make_dataset, simulate_dataset


def timed(label: str, func, *args, **kwargs):
    wall, cpu = time.perf_counter(), time.process_time()
    result = func(*args, **kwargs)
    print(f"{label:48s} {time.perf_counter() - wall:7.2f} s wall {time.process_time() - cpu:7.2f} s CPU")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--box", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    with tempfile.TemporaryDirectory() as folder:
        timed(f"make_dataset hinge n={args.n} box={args.box} (all files)", make_dataset, folder, "hinge",
              args.n, args.box)
    sim = timed("simulate (in memory, noisy)", simulate_dataset, "hinge", args.n, args.box)
    for pad in (1, 2):
        timed(f"reconstruct_rigid pad={pad}", reconstruct_rigid, sim.particles, pad=pad, device=args.device)


if __name__ == "__main__":
    main()
