"""Peak memory of the linearised start and of a one-epoch default training run against mesh size.

For every (cells across, particles) pair a fresh Python process runs ``flexview train`` (1 epoch,
default parameters otherwise) on a built-in hinge data set and reports:

* the mesh's vertex count V and the number of particles the deformation modes were fitted on;
* the peak resident set size (``getrusage`` ``ru_maxrss``) just before the linearised start,
  just after it, and at the end of the run (peak RSS is a high-water mark: "after" is the peak of
  set-up and initialisation together; when it equals "before" the initialisation stayed below
  the set-up's peak);
* the time of the linearised start and of the whole run, and peak CUDA memory when on a GPU.

``--dense`` swaps in the former solver (dense 3V × 3V covariances and ``scipy.linalg.eigh``) for
comparison; it needs ~2 × (3V)² × 8 bytes (12 GB at V ≈ 9,000), so use it on small meshes only.

    python bench/memory.py --box 32 --cells 10 15 20 --particles 200 --threads 2
    python bench/memory.py --solver 1000 4000 9226        # the eigen-solver alone, at n_fit

"gradients MB" in the solver table is the peak RSS with the two (n_fit, 3V) float32 arrays made.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")      # before torch starts OpenMP


def peak_mb() -> float:
    """Peak resident set size of this process so far, MB (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def dense_modes(trainer, dim: int, *, band_A: float, max_fit: int = 20000, seed: int = 0,
                ridge: float = 1e-3):
    """The former solver: dense covariances of all (up to 20,000) particles' gradients."""
    import numpy as np
    import scipy.linalg

    from flexview.train.linearised import deformation_gradients
    fit = trainer.train_rows
    if len(fit) > max_fit:
        fit = np.sort(np.random.default_rng(seed).choice(fit, max_fit, replace=False))
    signal = deformation_gradients(trainer, fit, band_A).astype(np.float64)
    noise = deformation_gradients(trainer, fit, band_A, noise_seed=seed).astype(np.float64)
    noise_cov = np.cov(noise.T)
    noise_cov += ridge * np.trace(noise_cov) / len(noise_cov) * np.eye(len(noise_cov))
    n = len(noise_cov)
    _, vectors = scipy.linalg.eigh(np.cov(signal.T), noise_cov, subset_by_index=[n - dim, n - 1])
    modes = vectors[:, ::-1].T.reshape(dim, -1, 3)
    return modes / np.linalg.norm(modes, axis=-1).max(axis=1)[:, None, None]


def child(args) -> None:
    """One measurement in this process; prints one JSON line."""
    import torch

    import flexview.train.linearised as lin
    import flexview.train.session as session
    from flexview.cli import main
    from flexview.io.meshfile import read_mesh

    torch.set_num_threads(args.threads)
    if args.dense:
        lin.deformation_modes = dense_modes
    record = {}
    original = session.linearised_start

    def measured(trainer, dim, **kw):
        record["before_mb"] = peak_mb()
        record["vertices"] = trainer.model.mesh.n_vertices
        record["n_fit"] = len(trainer.train_rows) if args.dense else lin.fit_count(
            trainer.model.mesh.n_vertices, len(trainer.train_rows))
        t0 = time.perf_counter()
        out = original(trainer, dim, **kw)
        record["init_s"] = time.perf_counter() - t0
        record["after_mb"] = peak_mb()
        return out

    session.linearised_start = measured
    t0 = time.perf_counter()
    code = main(["train", str(args.data / "particles.star"), "--map", str(args.data / "consensus.mrc"),
                 "--out", str(args.out), "--box", str(args.box), "--epochs", "1", "--device", args.device,
                 "--set", f"cells_across={args.cells[0]}"])
    record.update(code=code, run_s=time.perf_counter() - t0, final_mb=peak_mb())
    if "vertices" not in record and (args.out / "mesh.npz").exists():
        record["vertices"] = read_mesh(args.out / "mesh.npz").n_vertices
    if torch.cuda.is_available() and args.device.startswith("cuda"):
        record["cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print("RESULT " + json.dumps(record), flush=True)


def solver_child(args) -> None:
    """The matrix-free solver alone at its full particle bound for a mesh of ``args.vertices``
    vertices (random float32 gradients); prints one JSON line."""
    import numpy as np
    import torch

    from flexview.train.linearised import fit_count, generalised_modes

    torch.set_num_threads(args.threads)
    n = fit_count(args.vertices, 10**6)
    rng = np.random.default_rng(0)
    signal = rng.standard_normal((n, 3 * args.vertices), dtype=np.float32)
    noise = rng.standard_normal((n, 3 * args.vertices), dtype=np.float32)
    before = peak_mb()
    t0 = time.perf_counter()
    generalised_modes(signal, noise, 2)
    print("RESULT " + json.dumps({"vertices": args.vertices, "n_fit": n, "data_mb": before,
                                  "peak_mb": peak_mb(), "solve_s": time.perf_counter() - t0}), flush=True)


def solver_table(args) -> None:
    print(f"{'V':>6} {'n_fit':>6} {'gradients MB':>12} {'peak MB':>8} {'solve s':>8}")
    for v in args.solver:
        proc = subprocess.run([sys.executable, __file__, "--solver-child", "--vertices", str(v),
                               "--threads", str(args.threads)], capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if not lines:
            print(f"{v:>6} failed: {proc.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(lines[-1][len("RESULT "):])
        print(f"{v:>6} {r['n_fit']:>6} {r['data_mb']:>12.0f} {r['peak_mb']:>8.0f} {r['solve_s']:>8.1f}")


def synth(folder: Path, n: int, box: int) -> Path:
    data = folder / f"hinge_{n}_{box}"
    if not data.exists():
        subprocess.run([sys.executable, "-m", "flexview.cli", "synth", "--kind", "hinge", "--n", str(n),
                        "--box", str(box), "--out", str(data)], check=True, stdout=subprocess.DEVNULL)
    return data


def measure(args, data: Path, cells: int, work: Path) -> dict:
    out = work / f"run_{data.name}_{cells}_{'dense' if args.dense else 'free'}"
    cmd = [sys.executable, __file__, "--child", "--data", str(data), "--out", str(out), "--box", str(args.box),
           "--cells", str(cells), "--device", args.device, "--threads", str(args.threads)]
    cmd += ["--dense"] if args.dense else []
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        return {"code": proc.returncode, "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(lines[-1][len("RESULT "):])


def table(rows: list[tuple[int, int, dict]]) -> None:
    head = (f"{'cells':>5} {'particles':>9} {'V':>6} {'n_fit':>6} {'before MB':>9} {'after init MB':>13} "
            f"{'final MB':>8} {'init s':>7} {'run s':>7} {'exit':>4}")
    print(head)
    for cells, n, r in rows:
        if "error" in r:
            print(f"{cells:>5} {n:>9}  failed (exit {r['code']}): {r['error']}")
            continue
        print(f"{cells:>5} {n:>9} {r.get('vertices', 0):>6} {r.get('n_fit', 0):>6} "
              f"{r.get('before_mb', 0):>9.0f} "
              f"{r.get('after_mb', 0):>13.0f} {r['final_mb']:>8.0f} {r.get('init_s', 0):>7.1f} "
              f"{r['run_s']:>7.1f} {r['code']:>4}"
              + (f"  cuda {r['cuda_mb']:.0f} MB" if "cuda_mb" in r else ""))


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--box", type=int, default=32)
    p.add_argument("--cells", type=int, nargs="+", default=[10, 15, 20], help="cells across (mesh size)")
    p.add_argument("--particles", type=int, nargs="+", default=[200])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dense", action="store_true", help="the former dense solver, for comparison")
    p.add_argument("--work", type=Path, default=None,
                   help="folder for data sets and runs (default: temporary)")
    p.add_argument("--solver", type=int, nargs="*", default=[],
                   help="instead: time the eigen-solver alone at its particle bound for these vertex counts")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--solver-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--vertices", type=int, help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def run(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = []
        for n in args.particles:
            data = synth(work, n, args.box)
            for cells in args.cells:
                rows.append((cells, n, measure(args, data, cells, work)))
        print(f"box {args.box}, {args.threads} threads, device {args.device}, "
              f"{'dense' if args.dense else 'matrix-free'} linearised start; peak RSS of each run's process")
        table(rows)


if __name__ == "__main__":
    ARGS = parse()
    if ARGS.child:
        child(ARGS)
    elif ARGS.solver_child:
        solver_child(ARGS)
    elif ARGS.solver:
        solver_table(ARGS)
    else:
        run(ARGS)
