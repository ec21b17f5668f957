"""Gold-standard layout (one model per half set) and the disagreement between two models.

``flexview train --split-halves --out RUN`` writes two ordinary run folders, ``RUN/half_A`` (trained
on half set A, rigid-refinement ``rlnRandomSubset`` 1) and ``RUN/half_B``, plus ``RUN/split.json``.
Each half's model embeds the other half's particles after training, so every particle has a
latent in both models. :func:`deformation_disagreement` compares the displacement fields the two
models give the same particle (DynaMight's deformation error): a per-particle RMS difference in Å
at the canonical mask voxels, overall and per region.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from flexview.errors import FlexviewInputError
from flexview.io._atomic import write_text_atomic
from flexview.model.flow import VertexInterpolator
from flexview.model.grid import coords_to_index
from flexview.model.mesh import locate
from flexview.runfolder import RunFolder

__all__ = ["HALVES", "SPLIT_FILE", "RunLayout", "deformation_disagreement", "detect_layout",
           "half_rows", "sample_labels", "summarise_disagreement", "write_split_json"]

SPLIT_FILE = "split.json"
HALVES = {"A": 0, "B": 1}          # half-set name → ParticleSet.half_set value


@dataclass
class RunLayout:
    """Where the models of a run live: ``runs["A"]``, ``runs["B"]`` (the same folder twice for
    an ordinary run); ``split`` is True for the gold-standard layout."""

    root: Path
    runs: dict[str, Path]
    split: bool


def write_split_json(root: str | Path, particles: str, **info) -> Path:
    """Write ``RUN/split.json`` naming the two half-set run folders; returns its path."""
    root = Path(root)
    data = {"layout": "split-halves", "halves": {h: f"half_{h}" for h in HALVES}, "particles": particles}
    data.update(info)
    path = root / SPLIT_FILE
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")
    return path


def detect_layout(path: str | Path) -> RunLayout:
    """An ordinary run folder, or a split-halves folder (``split.json`` + two run folders)."""
    root = Path(path)
    split = root / SPLIT_FILE
    if split.is_file():
        try:
            halves = json.loads(split.read_text())["halves"]
            runs = {h: root / str(halves[h]) for h in HALVES}
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise FlexviewInputError(f"cannot read the split-halves description ({exc})", split,
                                     "halves") from exc
        for h, folder in runs.items():
            if not RunFolder(folder).config.is_file():
                raise FlexviewInputError(f"half {h}'s run folder is missing", folder)
        return RunLayout(root, runs, True)
    if not RunFolder(root).config.is_file():
        raise FlexviewInputError("not a run folder (no config.json or split.json)", root)
    return RunLayout(root, {h: root for h in HALVES}, False)


def half_rows(half_set: np.ndarray, half: str) -> np.ndarray:
    """Rows of the particles in half set ``half`` ("A" or "B")."""
    rows = np.nonzero(np.asarray(half_set) == HALVES[half])[0]
    if len(rows) == 0:
        raise FlexviewInputError(f"half set {half} holds no particles", field="random subset")
    return rows


def sample_labels(labels: np.ndarray, voxel_size: float, points_A: np.ndarray) -> np.ndarray:
    """Integer label at each point (P, 3) Å (nearest voxel of ``labels`` [z, y, x]; 0 outside)."""
    box = labels.shape[0]
    idx = np.rint(coords_to_index(torch.as_tensor(points_A, dtype=torch.float64), box,
                                  voxel_size).numpy()).astype(np.int64)
    inside = ((idx >= 0) & (idx < box)).all(axis=1)
    out = np.zeros(len(points_A), dtype=np.int64)
    iz, iy, ix = idx[inside].T
    out[inside] = np.rint(labels[iz, iy, ix]).astype(np.int64)
    return out


def _interpolator(model, points: np.ndarray) -> VertexInterpolator:
    cell, bary = locate(model.mesh, points)
    verts = torch.as_tensor(model.mesh.cells)[torch.as_tensor(cell).clamp(min=0)]
    verts[torch.as_tensor(cell) < 0] = -1
    return VertexInterpolator(verts, torch.as_tensor(bary, dtype=torch.float32), model.mesh.n_vertices)


@torch.no_grad()
def deformation_disagreement(run_a, run_b, rows: np.ndarray, *, labels: np.ndarray | None = None,
                             label_names: dict[int, str] | None = None, chunk: int = 64) -> dict:
    """Per-particle RMS difference (Å) between the displacements two runs give the same particles.

    For particle i, ``u_A = f_A(z_A[i])`` and ``u_B = f_B(z_B[i])`` are evaluated at the mask
    voxels of ``run_a``'s canonical map (training box) and ``sqrt(mean |u_A − u_B|²)`` is taken
    over all of them and over each region of ``labels`` (per-voxel ints, 0 = none). The RMS
    displacement of each model is reported beside it, for scale.

    Returns ``{"rows": rows, "regions": {name: {"error": (n,), "motion_A": (n,), "motion_B": (n,)}}}``
    (numpy arrays, per particle).
    """
    model_a, model_b = run_a.model, run_b.model
    points = model_a.canonical.masked_coords().cpu().numpy()
    interp = {"A": _interpolator(model_a, points), "B": _interpolator(model_b, points)}
    regions = {"all": np.ones(len(points), bool)}
    if labels is not None:
        for value in sorted(set(np.unique(labels)) - {0}):
            name = (label_names or {}).get(int(value), f"region_{int(value)}")
            regions[name] = labels == value
    rows = np.asarray(rows)
    out = {name: {k: np.zeros(len(rows)) for k in ("error", "motion_A", "motion_B")} for name in regions}
    for start in range(0, len(rows), chunk):
        sel = rows[start:start + chunk]
        disp = {}
        for h, run in (("A", run_a), ("B", run_b)):
            z = torch.as_tensor(run.latents[sel], dtype=torch.float32)
            flow = run.model.flow.cpu()
            disp[h] = interp[h](flow(z)).numpy()                      # (b, P, 3) Å
        sq = {"error": ((disp["A"] - disp["B"]) ** 2).sum(-1),
              "motion_A": (disp["A"] ** 2).sum(-1), "motion_B": (disp["B"] ** 2).sum(-1)}
        for name, sel_p in regions.items():
            for k, v in sq.items():
                out[name][k][start:start + len(sel)] = np.sqrt(v[:, sel_p].mean(axis=1))
    return {"rows": rows, "regions": out}


def summarise_disagreement(result: dict) -> dict:
    """Median, mean and 90th percentile over the particles of each per-particle figure (Å)."""
    summary = {}
    for name, figs in result["regions"].items():
        summary[name] = {k: {"median": float(np.median(v)), "mean": float(np.mean(v)),
                             "p90": float(np.percentile(v, 90))} for k, v in figs.items()}
    return summary
