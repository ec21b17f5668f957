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
from flexview.params import table
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


def check_mesh(cfg: TrainConfig, pixel_size: float) -> TetMesh | None:
    """The user's mesh (None for a regular one), after checking it against the training box
    ``cfg.box`` at ``pixel_size`` Å/px; refused with :class:`FlexviewInputError` naming the mesh
    file and its field ``box`` or ``pixel_size``. For a regular mesh, refuses cells smaller than
    half a voxel (``--cells-across`` above twice the box, or ``--cell-size`` below half a pixel)."""
    if not cfg.mesh:
        check_cells(cfg.cells_across, cfg.cell_size_A, cfg.box, pixel_size)
        return None
    mesh = read_mesh(cfg.mesh)
    advice = f"build one with `flexview mesh MAP --box {cfg.box}`"
    if mesh.box != cfg.box:
        raise FlexviewInputError(f"the mesh was built for box {mesh.box}, but training runs at box {cfg.box}; "
                                 + advice, cfg.mesh, "box")
    if abs(mesh.pixel_size - pixel_size) > 0.01 * pixel_size:
        raise FlexviewInputError(f"the mesh was built for {mesh.pixel_size:.4g} Å/px, but the training box "
                                 f"has {pixel_size:.4g} Å/px; " + advice + " from the consensus map",
                                 cfg.mesh, "pixel_size")
    return mesh


def check_cells(cells_across: int, cell_size_A: float | None, box: int, pixel_size: float) -> None:
    """A regular mesh's cells span at least half a voxel of ``box`` at ``pixel_size`` Å/px."""
    rows = table(TrainConfig)
    if cell_size_A is not None and cell_size_A < 0.5 * pixel_size:
        raise FlexviewInputError(f"a cell must span at least half a voxel ({0.5 * pixel_size:.3g} Å), not "
                                 f"{cell_size_A:g} Å", field=rows["cell_size_A"].option)
    if cell_size_A is None and cells_across > 2 * box:
        raise FlexviewInputError(f"a cell must span at least half a voxel: at most {2 * box} cells across box "
                                 f"{box}, not {cells_across}", field=rows["cells_across"].option)


def make_mesh(cfg: TrainConfig, consensus: np.ndarray, mask: np.ndarray, pixel_size: float) -> TetMesh:
    """The user's mesh (npz; checked by :func:`check_mesh`) or a regular mesh over every voxel of
    ``mask``.

    Rigidity weights follow the consensus density inside each cell.
    """
    mesh = check_mesh(cfg, pixel_size)
    if mesh is not None:
        return mesh
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
