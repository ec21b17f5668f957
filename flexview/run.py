"""Open a finished (or stopped) run folder from Python: ``flexview.load_run(RUN)``."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from flexview.errors import FlexviewInputError
from flexview.io._atomic import write_text_atomic
from flexview.io.meshfile import read_mesh
from flexview.io.mrc import read_map, write_map
from flexview.model.canonical import CanonicalMap
from flexview.model.flow import FlowGenerator
from flexview.model.forward import FlexForwardModel
from flexview.model.mesh import TetMesh
from flexview.runfolder import RunFolder, load_torch
from flexview.train.config import TrainConfig


@dataclass
class Run:
    """A trained model: configuration, mesh, latents and the forward model (CPU by default).

    Attributes
    ----------
    config : TrainConfig
    mesh : TetMesh
    latents : ndarray (M, K) float32, rows in the input particle order
    model : FlexForwardModel
    pixel_size : float, Å per voxel at the training box
    """

    folder: RunFolder
    config: TrainConfig
    mesh: TetMesh
    latents: np.ndarray
    model: FlexForwardModel

    @property
    def pixel_size(self) -> float:
        return self.model.pixel_size

    @property
    def box(self) -> int:
        return self.model.box

    @torch.no_grad()
    def generate(self, z) -> np.ndarray:
        """Convected density at latent ``z`` (K,), (box, box, box) float32 in map units."""
        zt = torch.as_tensor(np.asarray(z, dtype=np.float32).reshape(1, -1), device=self.model.canonical.volume.device)
        if zt.shape[1] != self.config.latent_dim:
            raise ValueError(f"z has {zt.shape[1]} values, the run has {self.config.latent_dim} latent dimensions")
        return self.model.volume_at(zt).cpu().numpy().astype(np.float32)

    @torch.no_grad()
    def displacement(self, z) -> np.ndarray:
        """Vertex displacements (V, 3) in Å at latent ``z``."""
        zt = torch.as_tensor(np.asarray(z, dtype=np.float32).reshape(1, -1))
        return self.model.displacements(zt.to(self.model.canonical.volume.device))[0].cpu().numpy()

    def axis_values(self, axis: int, frames: int, extent: float) -> np.ndarray:
        """Latent points along ``axis``: ``frames`` values spanning ± ``extent`` standard deviations
        of that axis over the particles (other coordinates at their median), shape (frames, K)."""
        if not 0 <= axis < self.latents.shape[1]:
            raise ValueError(f"axis {axis} is not one of 0..{self.latents.shape[1] - 1}")
        centre = np.median(self.latents, axis=0)
        sd = float(self.latents[:, axis].std()) or 1.0
        points = np.repeat(centre[None], frames, axis=0)
        points[:, axis] = centre[axis] + np.linspace(-extent, extent, frames) * sd
        return points.astype(np.float32)

    def to(self, device) -> "Run":
        self.model.to(device)
        return self


def write_volume_series(folder: str | Path, volumes, points: np.ndarray, pixel_size: float) -> list[Path]:
    """Write ``folder/frame_000.mrc`` ... (one per volume of the iterable ``volumes``) and
    ``folder/latents.csv`` (one row of ``points`` (frames, K) per frame); returns the MRC paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, volume in enumerate(volumes):
        paths.append(folder / f"frame_{i:03d}.mrc")
        write_map(paths[-1], volume, pixel_size)
    header = ",".join(f"z{k + 1}" for k in range(points.shape[1]))
    rows = [f"{i}," + ",".join(f"{v:.6g}" for v in z) for i, z in enumerate(points)]
    write_text_atomic(folder / "latents.csv", f"frame,{header}\n" + "\n".join(rows) + "\n")
    return paths


def load_run(path: str | Path, *, device: str = "cpu") -> Run:
    """Load a run folder written by ``flexview train`` (or the app)."""
    folder = RunFolder(path)
    for required in (folder.config, folder.mesh, folder.mask, folder.flow, folder.canonical, folder.latents):
        if not required.is_file():
            raise FlexviewInputError("not a complete run folder (file missing)", required)
    cfg = TrainConfig.from_json(folder.config)
    mesh = read_mesh(folder.mesh)
    volume, pixel_size = read_map(folder.canonical)
    mask = read_map(folder.mask)[0] > 0.5
    canonical = CanonicalMap(volume, pixel_size, mask)
    flow = FlowGenerator.for_mesh(mesh, cfg.latent_dim, hidden=cfg.hidden, layers=cfg.layers)
    flow.load_state_dict(load_torch(folder.flow))
    model = FlexForwardModel(canonical, mesh, flow, kernel=cfg.kernel).eval().to(device)
    latents = np.load(folder.latents, allow_pickle=False)
    return Run(folder, cfg, mesh, latents, model)
