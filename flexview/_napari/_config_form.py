"""A form for :class:`~flexview.train.config.TrainConfig`, built from the dataclass fields:
one input per field, its default filled in, a tooltip saying what it does.
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any

from qtpy.QtWidgets import QComboBox, QFormLayout, QLineEdit, QSpinBox, QWidget

from flexview._napari._qt import PathPicker
from flexview.errors import FlexviewInputError
from flexview.train.config import CHOICES as CONFIG_CHOICES
from flexview.train.config import TrainConfig

HELP = {
    "particles": "particles (.star or .cs) with poses and CTF",
    "consensus_map": "consensus refinement map over the same box as the particles",
    "mask": "solvent mask (.mrc); empty: the thresholded, dilated consensus map",
    "mesh": "tetrahedral mesh (.npz); empty: a regular mesh over the mask",
    "project_dir": "folder that relative image paths are resolved against",
    "box": "training box N_L in pixels: particles and map are Fourier-cropped to it",
    "mask_threshold": "density threshold of the automatic mask; empty: automatic (Otsu)",
    "mask_dilate_A": "dilation of the automatic mask, Å",
    "cells_across": "mesh cells across the box (cryoSPARC default 20)",
    "cell_size_A": "mesh cell size in Å; overrides cells across when given",
    "kernel": "interpolation kernel that spreads each pushed voxel: linear or cubic",
    "latent_dim": "latent dimensions K",
    "hidden": "units per hidden layer of the flow generator",
    "layers": "layers of the flow generator",
    "rigidity_weight": "weight λ of the rigidity penalty, per particle log-likelihood in nats",
    "rigidity_samples": "latent points per batch on which rigidity is evaluated",
    "latent_noise": "σ of the noise added to the latents during training (cryoSPARC: 0.15)",
    "prior_weight": "weight of the unit-Gaussian prior on the latents",
    "latent_init": "initial latents: linearised, zeros, pca, or a .npy / .cs file",
    "latent_inference": "latent update: Gauss-Newton, coordinate or gradient descent",
    "latent_steps": "Gauss-Newton steps, sweeps (coordinate) or steps (gradient) per latent update",
    "latent_step": "probe step of coordinate descent, in prior σ",
    "fixed_latent_epochs": "epochs with the latents held fixed (external initialisation)",
    "latent_search": "global latent search at the end: grid points per axis (0: off)",
    "search_at": "also search every latent globally at this fraction of the run; empty: never",
    "latent_estimate": "final latents: the posterior mean (best prediction of the conformation) or its mode",
    "epochs": "passes over the particles",
    "batch_size": "particles per minibatch (≥ 500 on real data)",
    "lr_flow": "Adam learning rate of the flow generator",
    "lr_map": "Adam learning rate of the canonical map, relative to its initial std",
    "lr_schedule": "learning rates after marching: cosine (fall to lr final) or constant",
    "lr_final": "final learning-rate scale of the cosine schedule",
    "flow_iters": "block coordinate descent: iterations on latents + flow ...",
    "map_iters": "... then iterations on the canonical map",
    "band_start_A": "frequency marching: first band limit in Å; empty: 4 × Nyquist",
    "band_end_A": "final band limit in Å; empty: Nyquist of the training box",
    "march_fraction": "fraction of the run over which the band limit rises",
    "halves": "train on all particles or on half set A or B",
    "device": "auto (the GPU when present), cpu or cuda",
    "seed": "random seed",
    "checkpoint_every": "iterations between checkpoints (Stop / Resume continue from the last)",
    "log_every": "iterations between log rows",
}
PATHS = {"particles": ("open", "Particles (*.star *.cs)"), "consensus_map": ("open", "Maps (*.mrc *.map)"),
         "mask": ("open", "Maps (*.mrc *.map)"), "mesh": ("open", "Meshes (*.npz)"),
         "project_dir": ("dir", "")}
CHOICES = {**{name: list(values) for name, values in CONFIG_CHOICES.items()}, "device": ["auto", "cpu", "cuda"]}
EDITABLE_CHOICES = {"latent_init": ["linearised", "zeros", "pca"]}
HIDDEN = {"versions"}
REQUIRED = ("particles", "consensus_map")
INPUTS = tuple(PATHS)
ESSENTIAL = ("box", "latent_dim", "epochs", "batch_size", "cells_across", "device")


def _default(f) -> Any:
    return f.default_factory() if callable(getattr(f, "default_factory", None)) else f.default


class ConfigForm:
    """Inputs for the fields of TrainConfig, placed in QFormLayouts chosen by the caller.

    ``widgets[name]`` is the input of field ``name``; :meth:`config` reads them back, raising
    :class:`FlexviewInputError` naming the field when a value is not understood.
    """

    def __init__(self):
        self.fields = {f.name: f for f in fields(TrainConfig) if f.name not in HIDDEN}
        self.widgets: dict[str, QWidget] = {name: self._make(f) for name, f in self.fields.items()}
        self.set_values({name: _default(f) for name, f in self.fields.items()})

    def _make(self, f) -> QWidget:
        name, default = f.name, _default(f)
        if name in PATHS:
            mode, filters = PATHS[name]
            w = PathPicker(mode, filters, "optional" if default is None else "")
            w.edit.setToolTip(HELP.get(name, ""))
            return w
        if name in CHOICES or name in EDITABLE_CHOICES:
            w = QComboBox()
            w.addItems(CHOICES.get(name) or EDITABLE_CHOICES[name])
            w.setEditable(name in EDITABLE_CHOICES)
        elif isinstance(default, int) and not isinstance(default, bool) and "None" not in str(f.type):
            w = QSpinBox()
            w.setRange(0, 10_000_000)
            if name == "box":
                w.setRange(8, 1024)
                w.setSingleStep(2)
        else:
            w = QLineEdit()
            if "None" in str(f.type):
                w.setPlaceholderText("never" if name == "search_at" else "automatic")
        w.setToolTip(HELP.get(name, ""))
        return w

    def add_rows(self, layout: QFormLayout, names) -> None:
        for name in names:
            label = name.replace("_A", " (Å)").replace("_", " ")
            layout.addRow(label, self.widgets[name])

    def set_values(self, values: dict) -> None:
        for name, value in values.items():
            if name not in self.widgets:
                continue
            w = self.widgets[name]
            if isinstance(w, PathPicker):
                w.set_text(value or "")
            elif isinstance(w, QComboBox):
                w.setCurrentText(str(value))
            elif isinstance(w, QSpinBox):
                w.setValue(int(value))
            else:
                w.setText("" if value is None else f"{value:g}" if isinstance(value, float) else str(value))

    def values(self) -> dict:
        """Field values as TrainConfig expects them (empty optional fields → None)."""
        out = {}
        for name, f in self.fields.items():
            w = self.widgets[name]
            optional = "None" in str(f.type)
            if isinstance(w, PathPicker):
                text = w.text()
                out[name] = text or (None if optional else "")
            elif isinstance(w, QComboBox):
                out[name] = w.currentText().strip()
            elif isinstance(w, QSpinBox):
                out[name] = int(w.value())
            else:
                out[name] = _parse(w.text().strip(), f, optional)
        return out

    def config(self) -> TrainConfig:
        values = self.values()
        for name in REQUIRED:
            if not values[name]:
                raise FlexviewInputError("choose a file", field=name)
        return TrainConfig(**values)


def _parse(text: str, f, optional: bool):
    if not text:
        if optional:
            return None
        raise FlexviewInputError("a value is needed", field=f.name)
    if "float" in str(f.type):
        try:
            return float(text)
        except ValueError:
            raise FlexviewInputError(f"{text!r} is not a number", field=f.name) from None
    return text
