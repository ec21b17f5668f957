"""Throughput of the 3DFlex forward model (convection + projection + CTF) and its backward.

Prints images per second for the forward pass and for forward + backward (data loss w.r.t. the
canonical map and the flow generator) at several boxes, for each scatter kernel, plus peak
memory (CUDA: max_memory_allocated; CPU: peak resident set size of the process so far).

    python bench/forward.py --device cpu --threads 2
    python bench/forward.py --device cuda --batch 512

OpenMP threads that busy-wait collapse throughput (10× and worse) when other processes share
the cores, so this script asks for passive waiting unless OMP_WAIT_POLICY is already set.
"""
from __future__ import annotations

import argparse
import os
import resource
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")      # before torch starts OpenMP

import numpy as np  # noqa: E402
import torch  # noqa: E402

from flexview.model import (CanonicalMap, CTFParams, FlexForwardModel,  # noqa: E402
                            FlowGenerator, Pose, build_regular_mesh, data_loss, density_mask,
                            random_rotations, voxel_coords)


def blob(box: int, pixel_size: float, rng: np.random.Generator) -> np.ndarray:
    """A protein-like blob: Gaussians scattered in a ball of radius box/4 (density [z, y, x])."""
    coords = voxel_coords(box, pixel_size, dtype=torch.float64).numpy()
    radius = box * pixel_size / 4
    centres = rng.normal(size=(60, 3))
    centres *= (radius * 0.8 * rng.random(60) ** (1 / 3) / np.linalg.norm(centres, axis=1))[:, None]
    sigma = box * pixel_size / 24
    vol = np.zeros((box,) * 3)
    for c in centres:
        vol += np.exp(-((coords - c) ** 2).sum(-1) / (2 * sigma ** 2))
    return vol.astype(np.float32)


def mesh_near(vol: np.ndarray, pixel_size: float, vertices: int = 1000):
    """Regular mesh whose vertex count is closest to ``vertices``."""
    meshes = [build_regular_mesh(vol, pixel_size, cells_across=n) for n in range(6, 41, 2)]
    return min(meshes, key=lambda m: abs(m.n_vertices - vertices))


def build(box: int, kernel: str, device: str, rng: np.random.Generator):
    pixel_size = 1.5 * 128 / box
    vol = blob(box, pixel_size, rng)
    mask = density_mask(vol, pixel_size, dilate_A=2 * pixel_size)
    mesh = mesh_near(vol, pixel_size)
    model = FlexForwardModel(CanonicalMap(vol, pixel_size, mask), mesh,
                             FlowGenerator.for_mesh(mesh), kernel=kernel).to(device)
    return model, mesh


def inputs(n: int, box: int, device: str, rng: np.random.Generator):
    pose = Pose.from_arrays(random_rotations(n, rng), rng.uniform(-4, 4, (n, 2)), device=device)
    ctf = CTFParams(rng.uniform(1e4, 2.5e4, n), rng.uniform(1e4, 2.5e4, n), rng.uniform(0, 180, n),
                    300.0, 2.7, 0.1, 0.0, 0.0, 1.0).batch(device=device)
    z = torch.tensor(rng.normal(size=(n, 2)), dtype=torch.float32, device=device)
    target = torch.randn(n, box, box // 2 + 1, dtype=torch.complex64, device=device)
    return z, pose, ctf, target


def timed(fn, device: str, min_time: float) -> tuple[float, float]:
    """(wall, CPU) seconds per call after one warm-up call, averaged over ≥ ``min_time`` s.

    The CPU time (this process, all threads) is less sensitive than the wall time to other
    processes competing for the cores.
    """
    fn()
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    calls, start, cpu = 0, time.perf_counter(), time.process_time()
    while True:
        fn()
        calls += 1
        sync()
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return elapsed / calls, (time.process_time() - cpu) / calls


def peak_memory_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(box: int, kernel: str, device: str, batch: int, min_time: float) -> None:
    rng = np.random.default_rng(box)
    model, mesh = build(box, kernel, device, rng)
    z, pose, ctf, target = inputs(batch, box, device, rng)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()

    def forward():
        with torch.no_grad():
            model.render_spectra(z, pose, ctf)

    def forward_backward():
        model.zero_grad(set_to_none=True)
        data_loss(model.render_spectra(z, pose, ctf), target).sum().backward()

    (t_f, c_f), (t_fb, c_fb) = timed(forward, device, min_time), timed(forward_backward, device, min_time)
    print(f"{box:5d} {kernel:7s} {model.canonical.n_masked:8d} {mesh.n_vertices:6d} {batch:6d} "
          f"{batch / t_f:10.0f} {batch / t_fb:10.0f} {batch / c_f:10.0f} {batch / c_fb:10.0f} "
          f"{peak_memory_mb(device):8.0f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--boxes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--kernels", nargs="+", default=["linear", "cubic"])
    parser.add_argument("--batch", type=int, default=None, help="default: 64 on CPU, 512 on GPU")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch)")
    parser.add_argument("--min-time", type=float, default=2.0, help="seconds per measurement")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    batch = args.batch or (512 if args.device.startswith("cuda") else 64)
    print(f"device {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"OMP_WAIT_POLICY {os.environ['OMP_WAIT_POLICY']}, load average {os.getloadavg()[0]:.1f}")
    print("                                       images / wall s     images / CPU s")
    print("  box kernel   voxels  verts  batch        fwd        f+b        fwd        f+b  peak MB")
    for box in args.boxes:
        for kernel in args.kernels:
            run(box, kernel, args.device, batch, args.min_time)


if __name__ == "__main__":
    main()
