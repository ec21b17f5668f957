"""Synthetic flexible data sets, as a user has them after consensus refinement, plus ground truth.

``make_dataset(out)`` writes::

    out/particles.mrcs            noisy, CTF-modulated images
    out/particles.star            RELION 3.1 metadata (poses, CTF, rlnRandomSubset)
    out/particles.cs              the cryoSPARC twin (same images)
    out/consensus.mrc             rigid reconstruction of the noisy particles (not the true mean)
    out/dataset.json              what was simulated (kind, n, box, pixel size, SNR, seed, motions)
    out/ground_truth/motion_coords.npy   (N, K) true motion coordinates, particle order
    out/ground_truth/map_NNN.mrc  true maps at chosen motion coordinates, indexed by maps.json
    out/ground_truth/domains.mrc  label volume: 0 solvent, d + 1 inside domain d
    out/ground_truth/domain_<name>.mrc   one binary mask per domain
    out/ground_truth/phantom.npz  the atom model (:func:`~flexview.synth.phantom.load_phantom`)

Everything is seeded and deterministic; every file is written atomically.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree

from flexview.errors import FlexviewInputError
from flexview.io._atomic import atomic_path, write_text_atomic
from flexview.io.cs_write import write_cs
from flexview.io.mrc import write_map, write_stack
from flexview.io.particles import ParticleSet, StackImages
from flexview.io.star_write import write_star
from flexview.model.grid import voxel_coords
from flexview.recon.rigid import reconstruct_rigid
from flexview.synth.phantom import DEFAULT_PHANTOM_SEED, Phantom, make_phantom
from flexview.synth.simulate import Simulation, render_map, simulate

DEFAULT_BOX_SIZE_A = 160.0          # physical box edge: 2.5 Å/px at box 64
DOMAIN_RADIUS_A = 6.0               # voxels this close to an atom belong to its domain
MAX_SHIFT_PX = 3.0


def default_map_coords(n_motions: int) -> np.ndarray:
    """Motion coordinates of the ground-truth maps: c = 0, then −1 and +1 along each motion, (1 + 2K, K)."""
    rows = [np.zeros(n_motions)]
    for k in range(n_motions):
        for sign in (-1.0, 1.0):
            rows.append(sign * np.eye(n_motions)[k])
    return np.array(rows)


def simulate_dataset(kind: str = "hinge", n_particles: int = 2000, box: int = 64, *,
                     box_size_A: float | None = None, snr: float | None = 0.05, seed: int = 0,
                     coords: np.ndarray | None = None, ctf: bool = True,
                     phantom_seed: int = DEFAULT_PHANTOM_SEED) -> Simulation:
    """In-memory data set (images as ArrayImages): the phantom of ``kind`` seen ``n_particles`` times.

    The pixel size is ``box_size_A / box`` (default box 160 Å). ``coords`` (N, K) replaces the drawn
    motion coordinates (uniform on [−1, 1]); ``snr=None`` gives noise-free images.
    """
    if n_particles < 1 or box < 8 or box % 2:
        raise FlexviewInputError(f"need at least one particle and an even box ≥ 8 (got n={n_particles}, "
                                 f"box={box})", field="box" if n_particles >= 1 else "n_particles")
    if snr is not None and not snr > 0:
        raise FlexviewInputError(f"the SNR must be positive (got {snr})", field="snr")
    pixel_size = (box_size_A or DEFAULT_BOX_SIZE_A) / box
    return simulate(make_phantom(kind, seed=phantom_seed), n_particles, box, pixel_size, snr=snr,
                    seed=seed, coords=coords, ctf=ctf, max_shift_px=MAX_SHIFT_PX)


def domain_labels(phantom: Phantom, box: int, pixel_size: float) -> np.ndarray:
    """Label volume (z, y, x) int: 0 solvent, d + 1 where the nearest atom (canonical pose, within
    ``DOMAIN_RADIUS_A``) belongs to domain d."""
    grid = voxel_coords(box, pixel_size, dtype=torch.float64).numpy().reshape(-1, 3)
    dist, nearest = cKDTree(phantom.positions).query(grid, distance_upper_bound=DOMAIN_RADIUS_A)
    labels = np.zeros(len(grid), dtype=np.int64)
    inside = np.isfinite(dist)
    labels[inside] = phantom.labels[nearest[inside]] + 1
    return labels.reshape(box, box, box)


@dataclass
class SynthDataset:
    """Paths of a written synthetic data set."""

    root: Path
    star: Path
    cs: Path
    stack: Path
    consensus: Path
    description: Path
    ground_truth: Path
    motion_coords: Path
    maps_index: Path
    maps: list[Path] = field(default_factory=list)
    domain_labels: Path | None = None
    domain_masks: list[Path] = field(default_factory=list)
    phantom: Path | None = None

    def as_dict(self) -> dict:
        return {k: ([str(p) for p in v] if isinstance(v, list) else str(v)) for k, v in asdict(self).items()}


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)


def _write_particles(out: Path, sim: Simulation, seed: int) -> tuple[Path, Path, Path]:
    p = sim.particles
    stack, star, cs = out / "particles.mrcs", out / "particles.star", out / "particles.cs"
    write_stack(stack, p.images.read(slice(None)), p.pixel_size)
    n = len(p)
    on_disk = ParticleSet(images=StackImages([stack], np.zeros(n, int), np.arange(n), p.box),
                          pixel_size=p.pixel_size, box=p.box, rotations=p.rotations,
                          origins_A=p.origins_A, ctf=p.ctf, half_set=p.half_set, optics=p.optics)
    write_star(star, on_disk)
    uids = np.random.default_rng([seed, 99]).integers(1, 2**63 - 1, n, dtype=np.int64).astype(np.uint64)
    write_cs(cs, on_disk.with_columns(uid=uids))
    return stack, star, cs


def _write_ground_truth(gt: Path, sim: Simulation, map_coords: np.ndarray) -> dict:
    ph, p = sim.phantom, sim.particles
    _save_npy(gt / "motion_coords.npy", sim.coords.astype(np.float64))
    entries, maps = [], []
    for i, c in enumerate(map_coords):
        path = gt / f"map_{i:03d}.mrc"
        write_map(path, render_map(ph, c, p.box, p.pixel_size), p.pixel_size)
        entries.append({"file": path.name, "coords": [float(x) for x in c]})
        maps.append(path)
    index = {"pixel_size": p.pixel_size, "motion_names": list(ph.moves.names), "maps": entries}
    write_text_atomic(gt / "maps.json", json.dumps(index, indent=2))
    labels = domain_labels(ph, p.box, p.pixel_size)
    write_map(gt / "domains.mrc", labels.astype(np.float32), p.pixel_size)
    masks = []
    for d, name in enumerate(ph.domain_names):
        masks.append(gt / f"domain_{name}.mrc")
        write_map(masks[-1], (labels == d + 1).astype(np.float32), p.pixel_size)
    ph.save(gt / "phantom.npz")
    return {"maps": maps, "masks": masks}


def _motions_description(ph: Phantom) -> list[dict]:
    m, out = ph.moves, []
    for k, name in enumerate(m.names):
        moves = []
        for j in np.nonzero(m.coord == k)[0]:
            rotation = m.kind[j] == 0
            moves.append({"domain": ph.domain_names[m.domain[j]],
                          "type": "rotation" if rotation else "translation",
                          "axis" if rotation else "direction": [float(x) + 0.0 for x in m.vector[j]],
                          **({"pivot_A": [float(x) + 0.0 for x in m.pivot[j]]} if rotation else {}),
                          ("degrees_per_unit" if rotation else "angstrom_per_unit"): float(m.amount[j])})
        out.append({"name": name, "coordinate": k, "moves": moves})
    return out


def make_dataset(out_dir: str | Path, kind: str = "hinge", n_particles: int = 2000, box: int = 64,
                 box_size_A: float | None = None, snr: float | None = 0.05, seed: int = 0,
                 gt_coords: np.ndarray | None = None) -> SynthDataset:
    """Simulate and write a data set of ``kind`` ("hinge", "rigid", "shear") to ``out_dir``.

    ``gt_coords`` (M, K): motion coordinates of the ground-truth maps (default
    :func:`default_map_coords`); ``snr=None`` writes noise-free images. Returns the paths written.
    """
    out = Path(out_dir)
    sim = simulate_dataset(kind, n_particles, box, box_size_A=box_size_A, snr=snr, seed=seed)
    gt = out / "ground_truth"
    gt.mkdir(parents=True, exist_ok=True)
    p = sim.particles
    stack, star, cs = _write_particles(out, sim, seed)
    write_map(out / "consensus.mrc", reconstruct_rigid(p), p.pixel_size)
    k = sim.phantom.n_motions
    coords = default_map_coords(k) if gt_coords is None or k == 0 else np.asarray(gt_coords, float).reshape(-1, k)
    written = _write_ground_truth(gt, sim, coords)
    description = {
        "kind": kind, "n_particles": n_particles, "box": box, "pixel_size": p.pixel_size,
        "box_size_A": p.pixel_size * box, "snr": snr, "noise_sigma": sim.noise_sigma,
        "signal_variance": sim.signal_var, "seed": seed, "phantom_seed": DEFAULT_PHANTOM_SEED,
        "n_atoms": len(sim.phantom.positions), "domains": list(sim.phantom.domain_names),
        "n_motions": k, "motion_coords": {"distribution": "uniform", "low": -1.0, "high": 1.0},
        "motions": _motions_description(sim.phantom),
        "poses": {"rotations": "uniform on SO(3)", "origin_px": f"uniform in ±{MAX_SHIFT_PX} (x, y)"},
        "ctf": {"voltage_kv": 300.0, "cs_mm": 2.7, "amplitude_contrast": 0.1, "mean_defocus_A": [10000, 25000],
                "astigmatism_A": [0, 1000], "applied_on": "2x padded grid"},
        "snr_definition": "mean over particles of var(noise-free image) / noise_sigma^2",
        "units": {"maps": "density averaged over each voxel; image = pixel_size * sum_z(map)"},
        "files": {"star": star.name, "cs": cs.name, "stack": stack.name, "consensus": "consensus.mrc",
                  "ground_truth": "ground_truth"},
    }
    write_text_atomic(out / "dataset.json", json.dumps(description, indent=2))
    return SynthDataset(root=out, star=star, cs=cs, stack=stack, consensus=out / "consensus.mrc",
                        description=out / "dataset.json", ground_truth=gt,
                        motion_coords=gt / "motion_coords.npy", maps_index=gt / "maps.json",
                        maps=written["maps"], domain_labels=gt / "domains.mrc",
                        domain_masks=written["masks"], phantom=gt / "phantom.npz")
