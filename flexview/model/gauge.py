"""The canonical map's conformation: re-referencing a trained flow to the median deformation.

The images fix the canonical map and the flow only up to a deformation φ: pushing V by φ and
re-referencing the flow to the pushed map gives exactly the same particle images. Training
leaves V wherever it settled — near the consensus map, whose moving parts sit at their *mean
position*, which for a rotating domain is a conformation no particle has. :func:`recentre` moves
V to the *median* conformation of the particles: φ is the per-vertex median displacement ``u₀``
over the particles' latents, the mesh vertices move by ``u₀`` and ``u₀`` is subtracted from the
flow. Inside every cell both the old flow and ``u₀`` are linear, so a point with barycentric
coordinates β in an old cell has the same β in the moved cell, and every particle's deformed
map is unchanged.
"""
from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import torch

from flexview.model.flow import FlowGenerator
from flexview.model.mesh import TetMesh

__all__ = ["median_deformation", "recentre"]


@torch.no_grad()
def median_deformation(flow: FlowGenerator, latents: np.ndarray, *, n_sample: int = 2000,
                       seed: int = 0, chunk: int = 500) -> np.ndarray:
    """Per-vertex, per-axis median of the flow over the particles' latents.

    Parameters
    ----------
    flow : the trained generator (any device).
    latents : (M, K) latent coordinates; rows with non-finite values are ignored.
    n_sample : at most this many particles, drawn without replacement with ``seed``.

    Returns
    -------
    (V, 3) float64 displacement in Å (zero at pinned vertices).
    """
    z = np.asarray(latents, dtype=np.float32)
    z = z[np.isfinite(z).all(axis=1)]
    if len(z) == 0:
        raise ValueError("no particle has finite latents")
    if len(z) > n_sample:
        z = z[np.sort(np.random.default_rng(seed).choice(len(z), n_sample, replace=False))]
    device = flow.free.device
    parts = [flow(torch.as_tensor(z[i:i + chunk], device=device)).cpu() for i in range(0, len(z), chunk)]
    return np.median(torch.cat(parts).double().numpy(), axis=0)


def recentre(mesh: TetMesh, flow: FlowGenerator, shift: np.ndarray) -> tuple[TetMesh, FlowGenerator]:
    """The same deformation model with the canonical conformation moved by ``shift``.

    Parameters
    ----------
    mesh : the run's mesh (Å).
    flow : its generator; not modified.
    shift : (V, 3) Å vertex displacement that takes the old canonical conformation to the new one
        (e.g. :func:`median_deformation`); zero is used at pinned vertices.

    Returns
    -------
    (mesh, flow): vertices moved by ``shift`` (no longer a regular grid), and a copy of the flow
    whose output is reduced by ``shift``, so ``old vertex + old flow = new vertex + new flow`` for
    every latent. The canonical map must be pushed by ``shift`` (or re-solved) to match.

    Raises
    ------
    ValueError if the shift would invert a cell.
    """
    shift = np.asarray(shift, dtype=np.float64).reshape(mesh.n_vertices, 3) * ~mesh.pinned[:, None]
    moved = replace(mesh, vertices=mesh.vertices + shift, grid_origin=None, grid_spacing=None,
                    grid_shape=None)
    if mesh.n_cells and (moved.cell_volumes() <= 0).any():
        raise ValueError(f"moving the canonical conformation by up to {np.abs(shift).max():.1f} Å "
                         "would invert mesh cells")
    new = copy.deepcopy(flow)
    with torch.no_grad():
        new.offset -= torch.as_tensor(shift, dtype=new.offset.dtype, device=new.offset.device)
    return moved, new
