"""Training parameters: one dataclass, saved as ``config.json`` in every run folder."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from flexview.errors import FlexviewInputError
from flexview.io._atomic import write_text_atomic


CHOICES = {"kernel": ("linear", "cubic"), "latent_inference": ("gauss-newton", "coordinate", "gradient"),
           "latent_estimate": ("mean", "map"), "lr_schedule": ("cosine", "constant"), "halves": ("all", "A", "B")}


@dataclass
class TrainConfig:
    """Every parameter of a training run (defaults follow the 3DFlex paper / cryoSPARC).

    Units: lengths in Å, learning rates per Adam step.
    """

    # inputs
    particles: str = ""
    consensus_map: str = ""
    mask: str | None = None
    mesh: str | None = None
    project_dir: str | None = None
    # geometry
    box: int = 64                      # training box N_L (pixels)
    mask_threshold: float | None = None  # density threshold for the solvent mask (None: automatic)
    mask_dilate_A: float = 6.0
    cells_across: int = 20             # mesh cells across the box (cryoSPARC default)
    cell_size_A: float | None = None   # overrides cells_across when given
    kernel: str = "linear"             # scatter kernel: linear | cubic
    # flow generator
    latent_dim: int = 2
    hidden: int = 64
    layers: int = 6
    # objective
    rigidity_weight: float = 0.1       # λ, per particle negative log-likelihood (nats; see README)
    rigidity_samples: int = 16         # latents per batch on which the rigidity penalty is evaluated
    latent_noise: float = 0.15         # σ of the noise injected into z during training
    prior_weight: float = 1.0          # weight of the unit-Gaussian prior on z
    # latents
    latent_init: str = "linearised"    # linearised | zeros | pca | path to .npy or .cs
    latent_inference: str = "gauss-newton"  # gauss-newton | coordinate | gradient
    latent_steps: int = 1              # Gauss-Newton steps, sweeps (coordinate) or steps (gradient)
    latent_step: float = 0.25          # probe step (coordinate, gradient); Gauss-Newton moves ≤ 4×
    fixed_latent_epochs: int = 1       # first epochs with latents fixed (not with zeros init)
    latent_search: int = 7             # global search grid, points per axis (0: local steps only)
    search_at: float | None = None     # fraction of the run at which all latents are searched again
    latent_estimate: str = "mean"      # final latents: posterior mean | map (the mode)
    # optimisation
    epochs: int = 20
    batch_size: int = 500
    lr_flow: float = 1e-3
    lr_map: float = 1e-2               # relative to the std of the initial canonical map
    lr_schedule: str = "cosine"        # cosine: after marching both rates fall to lr_final × start | constant
    lr_final: float = 0.05
    flow_iters: int = 4                # block coordinate descent: iterations on latents + flow ...
    map_iters: int = 1                 # ... then iterations on the canonical map
    band_start_A: float | None = None  # frequency marching: first band limit (None: 4 × Nyquist length)
    band_end_A: float | None = None    # final band limit (None: Nyquist of the training box)
    march_fraction: float = 0.7        # fraction of the run over which the band limit rises
    halves: str = "all"                # all | A | B: which half set to train on
    # run control
    device: str = "auto"
    seed: int = 0
    checkpoint_every: int = 50         # iterations between checkpoints
    log_every: int = 1
    versions: dict = field(default_factory=dict)

    def __post_init__(self):
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise FlexviewInputError(f"{name} must be one of {', '.join(allowed)}, not {getattr(self, name)!r}",
                                         field=name)
        if not 0 < self.lr_final <= 1:
            raise FlexviewInputError(f"lr_final must be in (0, 1], not {self.lr_final!r}", field="lr_final")

    def to_json(self, path: str | Path) -> None:
        write_text_atomic(path, json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_json(cls, path: str | Path) -> "TrainConfig":
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise FlexviewInputError(f"cannot read the run configuration ({exc})", path) from exc
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise FlexviewInputError(f"unknown parameters {unknown}", path, unknown[0])
        return cls(**raw)
