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
from flexview.runfolder import RunFolder, check_state, load_torch
from flexview.train.config import TrainConfig

LATENT_SPREADS = 10.0        # generate: a latent point lies within this many spreads of the particles' median
SERIES_FRAMES = (2, 1000)    # frames of a volume series along one axis
SERIES_EXTENT = 10.0         # largest half-width of a series, in standard deviations of its axis


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
        """Convected density at latent ``z`` (K,), (box, box, box) float32 in map units.

        Raises :class:`FlexviewInputError` (field ``z``) for the wrong number of values or a value
        that is not finite."""
        z = self.latent_point(z, bounded=False)
        zt = torch.as_tensor(z.reshape(1, -1), device=self.model.canonical.volume.device)
        return self.model.volume_at(zt).cpu().numpy().astype(np.float32)

    def latent_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Lowest and highest latent coordinates (K,) accepted by :meth:`latent_point`: the
        particles' median ± :data:`LATENT_SPREADS` spreads, where an axis's spread is the larger
        of its standard deviation over the particles and the prior σ of 1."""
        centre = np.median(self.latents, axis=0)
        reach = LATENT_SPREADS * np.maximum(self.latents.std(axis=0), 1.0)
        return centre - reach, centre + reach

    def latent_point(self, z, *, bounded: bool = True) -> np.ndarray:
        """``z`` as a checked latent point (K,) float32: K finite values, within
        :meth:`latent_bounds` when ``bounded``; otherwise :class:`FlexviewInputError` (field ``z``)."""
        z = np.asarray(z, dtype=np.float64).reshape(-1)
        k = self.config.latent_dim
        if z.size != k:
            raise FlexviewInputError(f"{z.size} value{'' if z.size == 1 else 's'} given but the run has {k} latent "
                                     "dimensions", field="z")
        if not np.isfinite(z).all():
            raise FlexviewInputError(f"latent coordinates must be finite numbers, not {_values(z)}", field="z")
        low, high = self.latent_bounds()
        outside = np.nonzero((z < low) | (z > high))[0] if bounded else []
        if len(outside):
            i = int(outside[0])
            raise FlexviewInputError(f"value {z[i]:g} of latent axis {i} lies far outside the particles' latents: "
                                     f"accepted {low[i]:.3g} to {high[i]:.3g} (median ± {LATENT_SPREADS:g} "
                                     f"spreads)", field="z")
        return z.astype(np.float32)

    @torch.no_grad()
    def displacement(self, z) -> np.ndarray:
        """Vertex displacements (V, 3) in Å at latent ``z``."""
        zt = torch.as_tensor(np.asarray(z, dtype=np.float32).reshape(1, -1))
        return self.model.displacements(zt.to(self.model.canonical.volume.device))[0].cpu().numpy()

    def axis_values(self, axis: int, frames: int, extent: float) -> np.ndarray:
        """Latent points along ``axis`` (0-based): ``frames`` values spanning ± ``extent`` standard
        deviations of that axis over the particles (other coordinates at their median), shape
        (frames, K). Refused with :class:`FlexviewInputError` (field ``axis``, ``frames`` or
        ``extent``) outside :data:`SERIES_FRAMES` and (0, :data:`SERIES_EXTENT`]."""
        check_series(self.latents.shape[1], axis, frames, extent)
        centre = np.median(self.latents, axis=0)
        sd = float(self.latents[:, axis].std()) or 1.0
        points = np.repeat(centre[None], frames, axis=0)
        points[:, axis] = centre[axis] + np.linspace(-extent, extent, frames) * sd
        return points.astype(np.float32)

    def to(self, device) -> "Run":
        self.model.to(device)
        return self


def check_series(dim: int, axis, frames, extent) -> None:
    """The arguments of :meth:`Run.axis_values` for a run with ``dim`` latent dimensions."""
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not 0 <= axis < dim:
        raise FlexviewInputError(f"latent axis {axis!r} does not exist: the run has {dim} latent axes, "
                                 f"numbered 0 to {dim - 1}", field="axis")
    low, high = SERIES_FRAMES
    if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or not low <= frames <= high:
        raise FlexviewInputError(f"a series has {low} to {high} frames, not {frames!r}", field="frames")
    if not (isinstance(extent, (int, float, np.floating)) and np.isfinite(extent) and 0 < extent <= SERIES_EXTENT):
        raise FlexviewInputError(f"the half-width of a series must be more than 0 and at most "
                                 f"{SERIES_EXTENT:g} standard deviations, not {extent!r}", field="extent")


def _values(z: np.ndarray) -> str:
    return ", ".join(f"{v:g}" for v in z)


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
    """Load a run folder written by ``flexview train`` (or the app). The folder is held by its
    absolute path, and relative input paths of older runs are resolved (see
    :meth:`TrainConfig.from_json`), so the run works from any current folder."""
    folder = RunFolder(Path(path).absolute())
    for required in (folder.config, folder.mesh, folder.mask, folder.flow, folder.canonical, folder.latents):
        if not required.is_file():
            raise FlexviewInputError("not a complete run folder (file missing)", required)
    cfg = TrainConfig.from_json(folder.config)
    mesh = read_mesh(folder.mesh)
    volume, pixel_size = read_map(folder.canonical)
    mask = read_map(folder.mask)[0] > 0.5
    canonical = CanonicalMap(volume, pixel_size, mask)
    flow = FlowGenerator.for_mesh(mesh, cfg.latent_dim, hidden=cfg.hidden, layers=cfg.layers)
    state = load_torch(folder.flow)
    check_state(state, flow.state_dict(), folder.flow)
    flow.load_state_dict(state)
    model = FlexForwardModel(canonical, mesh, flow, kernel=cfg.kernel).eval().to(device)
    try:
        latents = np.load(folder.latents, allow_pickle=False)
    except (OSError, ValueError):       # pickled objects, a damaged or foreign file
        raise FlexviewInputError("not a NumPy .npy table of numbers (it is damaged, or holds pickled "
                                 "Python objects, which flexview never loads)", folder.latents) from None
    if latents.ndim != 2 or latents.shape[1] != cfg.latent_dim:
        raise FlexviewInputError(f"latents of shape {latents.shape}, but the run has {cfg.latent_dim} latent "
                                 "dimensions", folder.latents, "latent_dim")
    return Run(folder, cfg, mesh, latents, model)
