"""The run folder: the files a training run leaves for later steps, other machines and reviewers.

``config.json``, ``mesh.npz``, ``mask.mrc``, ``flow.pt`` (state dict), ``canonical.mrc``,
``latents.npy`` (M × K float32, input particle order), ``latents.star``, ``calibration.json``,
``log.csv`` and ``checkpoints/``. Every file is written atomically. Training writes the folder;
reconstruction, :func:`flexview.run.load_run` and the app read it through :class:`RunFolder`.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from flexview.io._atomic import atomic_path, write_text_atomic

LATENT_COLUMN = "flexviewLatent{}"


@dataclass(frozen=True)
class RunFolder:
    """Paths of the files in a run folder."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    config = property(lambda s: s.root / "config.json")
    mesh = property(lambda s: s.root / "mesh.npz")
    mask = property(lambda s: s.root / "mask.mrc")
    flow = property(lambda s: s.root / "flow.pt")
    canonical = property(lambda s: s.root / "canonical.mrc")
    latents = property(lambda s: s.root / "latents.npy")
    latents_star = property(lambda s: s.root / "latents.star")
    calibration = property(lambda s: s.root / "calibration.json")
    log = property(lambda s: s.root / "log.csv")
    checkpoints = property(lambda s: s.root / "checkpoints")
    cache = property(lambda s: s.root / "cache")

    @property
    def checkpoint(self) -> Path:
        return self.checkpoints / "latest.pt"


def save_torch(path: Path, obj) -> None:
    """``torch.save`` atomically (tensors, dicts and numbers only: loadable with weights_only)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_torch(path: Path):
    """What :func:`save_torch` wrote, on the CPU; never unpickles arbitrary objects."""
    return torch.load(path, map_location="cpu", weights_only=True)


def save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` atomically, without pickling."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)


def write_log(path: Path, rows: list[dict]) -> None:
    """The per-iteration log as CSV (whole file rewritten atomically)."""
    if not rows:
        return
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())


def read_log(path: Path) -> list[dict]:
    """Rows of ``log.csv`` with numbers parsed (empty when there is no log)."""
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def _number(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def write_json(path: Path, data: dict) -> None:
    """``data`` as indented JSON, atomically."""
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")
