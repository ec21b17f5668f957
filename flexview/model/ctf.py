"""Contrast transfer function, RELION's model.

Written in the sign convention where defocus is positive for underfocus and ``CTF(0) = +w``
(amplitude contrast):

    CTF(k) = scale · sin(π λ Δz(θ) k² − (π/2) C_s λ³ k⁴ + φ + asin w) · exp(−B k² / 4)
    Δz(θ) = (U + V)/2 + (U − V)/2 · cos 2(θ − θ_ast),   θ = atan2(k_y, k_x)

with λ the relativistic electron wavelength, φ the phase shift and θ_ast the defocus angle
(direction of U, measured from +x towards +y).

Two containers carry the same nine parameters under the same unit-named fields:
:class:`CTFParams` is the per-particle table of a data set (NumPy, float64), :class:`CTF` the
parameters of one batch on the compute device (torch), as in cryoJAX's ``AstigmaticCTF``.

References
----------
Mindell & Grigorieff (2003), J. Struct. Biol. 142:334 (CTFFIND3, the astigmatic defocus model).
Scheres (2012), J. Struct. Biol. 180:519 (RELION; ``rlnDefocusU/V/Angle``, ``rlnCtfBfactor``).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import Tensor

__all__ = ["CTF", "CTFParams", "electron_wavelength", "evaluate_ctf"]


def electron_wavelength(voltage_kv):
    """Relativistic electron wavelength in Å for an accelerating voltage in kV."""
    v = voltage_kv * 1e3
    if isinstance(v, Tensor):
        return 12.2642598 / torch.sqrt(v * (1.0 + 0.978475e-6 * v))
    return 12.2642598 / np.sqrt(v * (1.0 + 0.978475e-6 * v))


@dataclass
class CTF:
    """CTF parameters of a batch of B particles; every field a Tensor of shape (B,).

    Fields: ``defocus_u_A``, ``defocus_v_A`` (Å, positive = underfocus), ``defocus_angle_deg``
    (direction of U from +x towards +y), ``voltage_kv``, ``cs_mm`` (spherical aberration),
    ``amplitude_contrast`` (w, dimensionless), ``phase_shift_deg``, ``bfactor_A2`` (envelope
    B-factor, Å²), ``scale`` (dimensionless).
    """

    defocus_u_A: Tensor
    defocus_v_A: Tensor
    defocus_angle_deg: Tensor
    voltage_kv: Tensor
    cs_mm: Tensor
    amplitude_contrast: Tensor
    phase_shift_deg: Tensor
    bfactor_A2: Tensor
    scale: Tensor

    def __len__(self) -> int:
        return len(self.defocus_u_A)

    def __getitem__(self, index) -> "CTF":
        """The particles selected by ``index`` (int tensor/array, slice or bool mask)."""
        if isinstance(index, int):                  # keep the batch axis
            index = slice(index, index + 1 or None)
        return CTF(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def to(self, device=None, dtype=None) -> "CTF":
        """The same parameters on ``device`` in ``dtype`` (None: unchanged)."""
        return CTF(**{f.name: getattr(self, f.name).to(device=device, dtype=dtype) for f in fields(self)})

    def evaluate(self, ky: Tensor, kx: Tensor) -> Tensor:
        """The CTF of each particle on a frequency grid, (B, H, W); see :func:`evaluate_ctf`."""
        return evaluate_ctf(self, ky, kx)


@dataclass
class CTFParams:
    """Per-particle CTF parameters of a data set; every field an array of shape (N,), float64.

    Same fields and units as :class:`CTF`: defocus in Å (positive = underfocus), angles in
    degrees, voltage in kV, Cs in mm, B-factor in Å², amplitude contrast and scale dimensionless.
    Scalars broadcast to the common length.
    """

    defocus_u_A: np.ndarray
    defocus_v_A: np.ndarray
    defocus_angle_deg: np.ndarray
    voltage_kv: np.ndarray
    cs_mm: np.ndarray
    amplitude_contrast: np.ndarray
    phase_shift_deg: np.ndarray
    bfactor_A2: np.ndarray
    scale: np.ndarray

    def __post_init__(self):
        arrays = [np.atleast_1d(np.asarray(getattr(self, f.name), dtype=np.float64)) for f in fields(self)]
        n = max(len(a) for a in arrays)
        for f, a in zip(fields(self), arrays):
            setattr(self, f.name, np.broadcast_to(a, (n,)).copy())

    def __len__(self) -> int:
        return len(self.defocus_u_A)

    def subset(self, index) -> "CTFParams":
        """Parameters of the particles selected by ``index`` (int array, slice or bool mask)."""
        return CTFParams(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @classmethod
    def concat(cls, parts) -> "CTFParams":
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)})

    def batch(self, index=slice(None), *, dtype=torch.float32, device=None) -> CTF:
        """The selected particles' parameters as a :class:`CTF` on ``device``."""
        return CTF(**{f.name: torch.as_tensor(getattr(self, f.name)[index], dtype=dtype, device=device)
                      for f in fields(self)})


def evaluate_ctf(ctf: CTF, ky: Tensor, kx: Tensor) -> Tensor:
    """CTF of a batch of particles on a frequency grid.

    Parameters
    ----------
    ctf : CTF of B particles (e.g. :meth:`CTFParams.batch`).
    ky, kx : Tensors, shape (H, W)
        Spatial frequencies in Å⁻¹ (see :func:`flexview.model.grid.image_frequencies`).

    Returns
    -------
    Tensor, shape (B, H, W), dimensionless.
    """
    p = {f.name: getattr(ctf, f.name)[:, None, None] for f in fields(ctf)}
    lam = electron_wavelength(p["voltage_kv"])
    cs_A = p["cs_mm"] * 1e7
    k2 = kx**2 + ky**2
    theta = torch.atan2(ky, kx)
    mean = 0.5 * (p["defocus_u_A"] + p["defocus_v_A"])
    half_diff = 0.5 * (p["defocus_u_A"] - p["defocus_v_A"])
    dz = mean + half_diff * torch.cos(2.0 * (theta - torch.deg2rad(p["defocus_angle_deg"])))
    w = p["amplitude_contrast"].clamp(-1.0, 1.0)
    chi = (torch.pi * lam * dz * k2 - 0.5 * torch.pi * cs_A * lam**3 * k2**2
           + torch.deg2rad(p["phase_shift_deg"]) + torch.asin(w))
    return p["scale"] * torch.sin(chi) * torch.exp(-p["bfactor_A2"] * k2 / 4.0)
