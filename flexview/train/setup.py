"""Build the model of a run from its configuration: maps at the training box, mask, mesh, flow."""
from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from flexview.errors import FlexviewInputError
from flexview.io.meshfile import read_mesh
from flexview.io.particles import ParticleSet
from flexview.model.canonical import CanonicalMap
from flexview.model.flow import FlowGenerator
from flexview.model.forward import FlexForwardModel
from flexview.model.mesh import TetMesh, build_regular_mesh, density_mask
from flexview.preprocess import read_map_at_box
from flexview.train.config import TrainConfig


def solvent_mask(cfg: TrainConfig, consensus: np.ndarray, particles: ParticleSet, pixel_size: float) -> np.ndarray:
    """The canonical map's mask at the training box: the user's mask (> 0.5 after resampling),
    or the thresholded, dilated consensus map."""
    if cfg.mask:
        mask, _ = read_map_at_box(cfg.mask, cfg.box, extent_A=particles.extent_A)
        out = mask > 0.5 * float(mask.max())
        if not out.any():
            raise FlexviewInputError("the mask is empty", cfg.mask, "data")
        return out
    return density_mask(consensus, pixel_size, threshold=cfg.mask_threshold, dilate_A=cfg.mask_dilate_A)


def make_mesh(cfg: TrainConfig, consensus: np.ndarray, mask: np.ndarray, pixel_size: float) -> TetMesh:
    """The user's mesh (npz) or a regular mesh over every voxel of ``mask``.

    Rigidity weights follow the consensus density inside each cell.
    """
    if cfg.mesh:
        return read_mesh(cfg.mesh)
    tiny = 1e-6 * max(float(consensus.max()), 1e-30)
    support = np.where(mask, np.maximum(consensus, tiny), 0.0)
    return build_regular_mesh(support, pixel_size, threshold=0.5 * tiny, cell_size_A=cfg.cell_size_A,
                              cells_across=cfg.cells_across, dilate_A=0.0)


def make_model(cfg: TrainConfig, consensus: np.ndarray, mask: np.ndarray, mesh: TetMesh,
               pixel_size: float) -> FlexForwardModel:
    """Canonical map (the masked consensus), flow generator and forward model, on the CPU."""
    torch.manual_seed(cfg.seed)
    canonical = CanonicalMap(np.where(mask, consensus, 0.0), pixel_size, mask)
    flow = FlowGenerator.for_mesh(mesh, cfg.latent_dim, hidden=cfg.hidden, layers=cfg.layers)
    with torch.no_grad():
        flow.net[-1].weight.mul_(0.1)  # start close to the rigid model
    return FlexForwardModel(canonical, mesh, flow, kernel=cfg.kernel)


def smooth_mask(mask: np.ndarray, pixel_size: float, width_A: float = 6.0) -> np.ndarray:
    """A soft-edged version of a binary mask (for display and FSC), values in [0, 1]."""
    dist = ndimage.distance_transform_edt(~mask) * pixel_size
    return np.clip(1.0 - dist / width_A, 0.0, 1.0).astype(np.float32)
