"""Build the model of a run from its configuration: maps at the training box, mask, mesh, flow."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from flexview.errors import FlexviewInputError
from flexview.io.mrc import read_map
from flexview.io.particles import ParticleSet
from flexview.model.canonical import CanonicalMap
from flexview.model.flow import FlowGenerator
from flexview.model.forward import FlexForwardModel
from flexview.model.mesh import TetMesh, build_regular_mesh, density_mask
from flexview.preprocess import fourier_crop_volume
from flexview.train.config import TrainConfig


def resolve_device(name: str) -> torch.device:
    """``"auto"`` → CUDA when present, else CPU; otherwise the named device (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FlexviewInputError("CUDA was requested but no GPU is available", field="--device")
    return torch.device(name)


def map_at_box(path: str | Path, particles: ParticleSet, box: int) -> tuple[np.ndarray, float]:
    """Read a map that covers the particles' box and Fourier-crop it to ``box``.

    The map must span the same physical box as the particle images (box × pixel size, 1 %
    tolerance); its voxel size may differ from the images' pixel size.
    """
    volume, voxel = read_map(path)
    extent_map, extent_img = volume.shape[0] * voxel, particles.box * particles.pixel_size
    if abs(extent_map - extent_img) > 0.01 * extent_img:
        raise FlexviewInputError(
            f"map spans {extent_map:.1f} Å ({volume.shape[0]} × {voxel:.3f} Å) but the particles "
            f"span {extent_img:.1f} Å ({particles.box} × {particles.pixel_size:.3f} Å)", path, "voxel size")
    if volume.shape[0] < box:
        raise FlexviewInputError(f"map box {volume.shape[0]} is smaller than the training box {box}",
                                 path, "box")
    if volume.shape[0] == box:
        return volume, voxel
    cropped, px = fourier_crop_volume(volume, box, voxel)
    return np.asarray(cropped, dtype=np.float32), px


def solvent_mask(cfg: TrainConfig, consensus: np.ndarray, particles: ParticleSet, pixel_size: float) -> np.ndarray:
    """The canonical map's mask at the training box: the user's mask (> 0.5 after resampling),
    or the thresholded, dilated consensus map."""
    if cfg.mask:
        mask, _ = map_at_box(cfg.mask, particles, cfg.box)
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
        return TetMesh.load(cfg.mesh)
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
