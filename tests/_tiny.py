"""Tiny in-memory models, particles and trainers for direct tests of the core functions.

Everything is built through public constructors: a sum of Gaussian blobs as the canonical map, a
regular tetrahedral mesh over it, poses and CTFs drawn by the simulator, particle images rendered
by the forward model itself, and a :class:`~flexview.train.trainer.Trainer` around them. Not a
test module (pytest collects ``test_*.py`` only).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from flexview.model import CanonicalMap, FlexForwardModel, Pose, build_regular_mesh, density_mask, voxel_coords
from flexview.synth.simulate import draw_parameters
from flexview.train import TrainConfig
from flexview.train.data import TrainingData
from flexview.train.trainer import Trainer

BOX, PX = 16, 2.0


def blobs(box: int = BOX, px: float = PX, seed: int = 0) -> np.ndarray:
    """Four Gaussian blobs (σ 3 Å) at random centres within ±5 Å, float64 (box³)."""
    rng = np.random.default_rng(seed)
    r = voxel_coords(box, px, dtype=torch.float64).numpy()
    return sum(a * np.exp(-((r - m) ** 2).sum(-1) / (2 * 3.0**2))
               for a, m in zip(rng.uniform(0.5, 1.5, 4), rng.uniform(-5, 5, (4, 3))))


class FieldFlow(nn.Module):
    """Vertex displacements ``Σ_j profile(z)_j · fields_j`` (Å), (B, V, 3): fixed fields (J, V, 3)
    whose amplitudes (B, J) are a given function of the latents (default: the latents, J = K)."""

    def __init__(self, fields, profile=lambda z: z):
        super().__init__()
        self.fields = nn.Parameter(torch.as_tensor(np.asarray(fields), dtype=torch.float32))
        self.n_vertices = self.fields.shape[1]
        self.profile = profile

    def forward(self, z: Tensor) -> Tensor:
        return torch.einsum("bj,jvd->bvd", self.profile(z).to(self.fields.dtype), self.fields)


def tiny_model(*, seed: int = 0, cells_across: int = 4, flow=None) -> FlexForwardModel:
    """Forward model of :func:`blobs` at box 16, 2 Å/px, float32; ``flow(mesh)`` builds the flow
    generator (None: rigid)."""
    vol = blobs(seed=seed)
    mask = density_mask(vol, PX, threshold=0.05, dilate_A=2.0)
    mesh = build_regular_mesh(vol, PX, threshold=0.05, dilate_A=4.0, cells_across=cells_across)
    canonical = CanonicalMap(vol.astype(np.float32), PX, mask)
    return FlexForwardModel(canonical, mesh, None if flow is None else flow(mesh))


def smooth_field(model_or_mesh, seed: int) -> np.ndarray:
    """An affine vertex-displacement field ``u(v) = M v / R + t`` (random M, t) on the mesh (of
    the model), scaled to a largest vertex displacement of 1 Å, (V, 3) float32."""
    rng = np.random.default_rng(seed)
    mesh = getattr(model_or_mesh, "mesh", model_or_mesh)
    v = np.asarray(mesh.vertices, dtype=np.float64)
    u = v @ rng.normal(size=(3, 3)) / np.abs(v).max() + rng.normal(size=3)
    return (u / np.linalg.norm(u, axis=1).max()).astype(np.float32)


def particle_parameters(n: int, seed: int):
    """Poses (rotations (n, 3, 3), origins (n, 2) Å) and CTFs drawn by the simulator."""
    return draw_parameters(n, 1, PX, np.random.default_rng(seed), max_shift_px=1.0)


def render(model: FlexForwardModel, draw, *, z: Tensor | None = None,
           displacements: Tensor | None = None) -> np.ndarray:
    """The model's particle images (CTF applied) for the poses and CTFs of ``draw`` at latents
    ``z`` or vertex ``displacements`` (n, V, 3) Å, (n, box, box) float32."""
    pose = Pose.from_arrays(draw.rotations, draw.origins_A)
    with torch.no_grad():
        return model.render_images(z, pose, draw.ctf.batch(), displacements=displacements).numpy()


def training_data(images: np.ndarray, draw) -> TrainingData:
    """The particles ``images`` with the poses and CTFs of ``draw`` as in-memory TrainingData."""
    n = len(images)
    return TrainingData(images=np.asarray(images, np.float32), pixel_size=PX, rotations=draw.rotations,
                        origins_A=draw.origins_A, ctf=draw.ctf, rows=np.arange(n))


def make_trainer(model: FlexForwardModel, data: TrainingData, noise_weight: Tensor, **config) -> Trainer:
    """A CPU Trainer on ``data`` with ``model`` and the per-shell ``noise_weight``."""
    values = dict(box=data.box, latent_dim=1, epochs=3, batch_size=len(data), device="cpu")
    values.update(config)
    return Trainer(TrainConfig(**values), data, model, np.zeros((len(data), values["latent_dim"]), np.float32),
                   noise_weight, "cpu")
