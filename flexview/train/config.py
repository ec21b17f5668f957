"""Training parameters: one dataclass, saved as ``config.json`` in every run folder.

Each field is declared with :func:`flexview.params.param`: its help text, unit, choices and
bounds live here and nowhere else; ``flexview train`` and the napari Train form are generated
from this table, and :func:`flexview.params.validate` checks every value on construction.
Defaults follow the 3DFlex paper (Punjani & Fleet, Nat. Methods 20, 860–870, 2023) and
cryoSPARC's Flex Train job.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from flexview.errors import FlexviewInputError
from flexview.io._atomic import write_text_atomic
from flexview.params import ParameterError, param, table, validate
from flexview.runfolder import resolve_relative_paths

PARTICLE_FILES = ("open", "Particles (*.star *.cs)")
MAP_FILES = ("open", "Maps (*.mrc *.map)")
DEVICES = dict(choices=("auto", "cpu", "cuda"), pattern=(r"cuda:\d+", "cuda:N"))


@dataclass
class TrainConfig:
    """Every parameter of a training run. Lengths in Å, learning rates per Adam step."""

    # inputs
    particles: str = param("", "particles (.star or .cs) with poses and CTF", path=PARTICLE_FILES,
                           cli="particles")
    consensus_map: str = param("", "consensus refinement map (.mrc) over the same box as the particles",
                               path=MAP_FILES, cli="--map", label="consensus map")
    mask: str | None = param(None, "solvent mask (.mrc); automatic: the thresholded, dilated consensus map",
                             path=MAP_FILES, none="automatic", cli="--mask")
    mesh: str | None = param(None, "tetrahedral mesh (.npz from `flexview mesh`); regular: a regular "
                             "mesh over the mask", path=("open", "Meshes (*.npz)"), none="regular", cli="--mesh")
    project_dir: str | None = param(None, "folder that relative image paths are resolved against; "
                                    "automatic: the particle file's folder and its parents",
                                    path=("dir", ""), none="automatic", cli="--project-dir",
                                    label="project folder")
    # geometry
    box: int = param(64, "training box N_L: particles and map are Fourier-cropped to it",
                     unit="px", ge=8, multiple_of=2, cli="--box", label="training box (px)")
    mask_threshold: float | None = param(None, "density threshold of the automatic mask; automatic: Otsu",
                                         none="automatic")
    mask_dilate_A: float = param(6.0, "dilation of the automatic mask", unit="Å", ge=0)
    cells_across: int = param(20, "mesh cells across the box (as cryoSPARC counts them)", ge=1,
                              cli="--cells-across")
    cell_size_A: float | None = param(None, "mesh cell size; overrides cells across when given",
                                      unit="Å", gt=0, none="from cells across", cli="--cell-size")
    kernel: str = param("linear", "interpolation kernel that spreads each pushed voxel",
                        choices=("linear", "cubic"), cli="--kernel")
    # flow generator
    latent_dim: int = param(2, "latent dimensions K", ge=1, cli="--latent-dim", label="latent dimensions K")
    hidden: int = param(64, "units per hidden layer of the flow generator", ge=1, label="hidden units")
    layers: int = param(6, "layers of the flow generator", ge=1, label="flow layers")
    # objective
    rigidity_weight: float = param(0.1, "weight λ of the rigidity penalty, relative to the per-particle "
                                   "negative log-likelihood in nats", ge=0, cli="--rigidity",
                                   label="rigidity weight λ")
    rigidity_samples: int = param(16, "latent points per batch on which the rigidity penalty is evaluated",
                                  ge=1)
    latent_noise: float = param(0.15, "σ of the noise added to the latents during training, as in "
                                "cryoSPARC", unit="prior σ", ge=0)
    prior_weight: float = param(1.0, "weight of the unit-Gaussian prior on the latents", ge=0)
    # latents
    latent_init: str = param("linearised", "initial latents: linearised (deformation modes of the "
                             "linearised model), zeros, pca, or a .npy / .cs file",
                             choices=("linearised", "zeros", "pca"),
                             pattern=(r".+\.(npy|cs)", "a .npy or .cs file"), cli="--latent-init",
                             label="initial latents")
    latent_inference: str = param("gauss-newton", "latent update: Gauss-Newton, coordinate or gradient "
                                  "descent", choices=("gauss-newton", "coordinate", "gradient"))
    latent_steps: int = param(1, "Gauss-Newton steps, sweeps (coordinate) or steps (gradient) per "
                              "latent update (0: latents keep their initial values)", ge=0)
    latent_step: float = param(0.25, "probe step of coordinate and gradient descent; Gauss-Newton "
                               "moves at most 4 × this", unit="prior σ", gt=0)
    fixed_latent_epochs: int = param(1, "first epochs with the latents held fixed (not with zeros "
                                     "init)", ge=0)
    latent_search: int = param(7, "global latent search: grid points per axis (0: local steps only)",
                               ge=0)
    search_at: float | None = param(None, "also search every latent globally at this fraction of the run",
                                    gt=0, lt=1, none="never", label="search again at")
    latent_estimate: str = param("mean", "final latents: the posterior mean (best prediction of the "
                                 "conformation) or its mode (map)", choices=("mean", "map"))
    # optimisation
    epochs: int = param(20, "passes over the particles", ge=1, cli="--epochs")
    batch_size: int = param(500, "particles per minibatch; 500 or more on real data", ge=1, cli="--batch-size")
    lr_flow: float = param(1e-3, "Adam learning rate of the flow generator", gt=0, label="learning rate, flow")
    lr_map: float = param(1e-2, "Adam learning rate of the canonical map, relative to the std of the "
                          "initial map", gt=0, label="learning rate, map")
    lr_schedule: str = param("cosine", "learning rates once marching is over: cosine (fall to lr final "
                             "× start) or constant", choices=("cosine", "constant"),
                             label="learning-rate schedule")
    lr_final: float = param(0.05, "final learning-rate scale of the cosine schedule", gt=0, le=1,
                            label="final learning-rate scale")
    flow_iters: int = param(4, "block coordinate descent: iterations on latents + flow, then …", ge=1,
                            label="flow iterations")
    map_iters: int = param(1, "… iterations on the canonical map (0: the map stays fixed)", ge=0,
                           label="map iterations")
    band_start_A: float | None = param(None, "frequency marching: first band limit; automatic: "
                                       "4 × the Nyquist length", unit="Å", gt=0, none="automatic")
    band_end_A: float | None = param(None, "final band limit; automatic: Nyquist of the training box",
                                     unit="Å", gt=0, none="automatic")
    march_fraction: float = param(0.7, "fraction of the run over which the band limit rises", ge=0, le=1)
    halves: str = param("all", "train on all particles or on half set A or B",
                        choices=("all", "A", "B"), cli="--halves")
    # run control
    device: str = param("auto", "where to compute: auto (the GPU when present), cpu, cuda or cuda:N",
                        **DEVICES, cli="--device")
    seed: int = param(0, "random seed", ge=0, cli="--seed")
    checkpoint_every: int = param(50, "how often to write a checkpoint (Stop / resume continue from "
                                  "the last)", unit="iterations", ge=1, cli="--checkpoint-every")
    log_every: int = param(1, "unused: log.csv holds one row per iteration (kept so that older "
                           "config.json files load)", unit="iterations", ge=1, hidden=True)
    versions: dict = param(factory=dict, help="versions of flexview, torch, numpy and python that "
                           "wrote the run", hidden=True)

    def __post_init__(self):
        validate(self)

    def to_json(self, path: str | Path) -> None:
        write_text_atomic(path, json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_json(cls, path: str | Path) -> "TrainConfig":
        """The configuration saved in ``path``; fields it lacks (older runs) take their defaults."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise FlexviewInputError(f"cannot read the run configuration ({exc})", path) from exc
        if isinstance(raw, dict):
            raw = resolve_relative_paths(raw, path_fields(raw), path)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise FlexviewInputError(f"unknown parameters {unknown}", path, unknown[0])
        try:
            return cls(**raw)
        except ParameterError as exc:
            raise ParameterError(exc.reason, exc.name, path) from None


def path_fields(values: dict) -> list[str]:
    """Names of the fields of ``values`` (TrainConfig fields) that hold file or folder paths:
    the inputs, and ``latent_init`` when it names a ``.npy`` / ``.cs`` file."""
    names = [name for name, row in table(TrainConfig).items() if row.param.path]
    init = values.get("latent_init")
    if isinstance(init, str) and init.lower().endswith((".npy", ".cs")):
        names.append("latent_init")
    return names
