"""Contrast transfer function, RELION model (``../GUIDE`` §3).

``CTF(k) = -scale · sin(χ(k)) · exp(-B k²/4)`` is written in the sign convention where defocus is
positive for underfocus and ``CTF(0) = +w`` (amplitude contrast):

    CTF(k) = scale · sin(π λ Δz(θ) k² − (π/2) C_s λ³ k⁴ + φ + asin w) · exp(−B k² / 4)
    Δz(θ) = (U + V)/2 + (U − V)/2 · cos 2(θ − θ_ast),   θ = atan2(k_y, k_x)

with λ the relativistic electron wavelength, φ the phase shift and θ_ast the defocus angle
(direction of U, measured from +x towards +y).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import Tensor


def electron_wavelength(voltage_kv):
    """Relativistic electron wavelength in Å for an accelerating voltage in kV."""
    v = voltage_kv * 1e3
    if isinstance(v, Tensor):
        return 12.2642598 / torch.sqrt(v * (1.0 + 0.978475e-6 * v))
    return 12.2642598 / np.sqrt(v * (1.0 + 0.978475e-6 * v))


@dataclass
class CTFParams:
    """Per-particle CTF parameters; every field an array of shape (N,).

    Units: defocus in Å (positive = underfocus), angles in degrees, voltage in kV, Cs in mm,
    B-factor in Å², amplitude contrast and scale dimensionless.
    """

    defocus_u: np.ndarray
    defocus_v: np.ndarray
    defocus_angle_deg: np.ndarray
    voltage_kv: np.ndarray
    cs_mm: np.ndarray
    amp_contrast: np.ndarray
    phase_shift_deg: np.ndarray
    bfactor: np.ndarray
    scale: np.ndarray

    def __post_init__(self):
        arrays = [np.atleast_1d(np.asarray(getattr(self, f.name), dtype=np.float64)) for f in fields(self)]
        n = max(len(a) for a in arrays)
        for f, a in zip(fields(self), arrays):
            setattr(self, f.name, np.broadcast_to(a, (n,)).copy())

    def __len__(self) -> int:
        return len(self.defocus_u)

    def subset(self, index) -> "CTFParams":
        """Parameters of the particles selected by ``index`` (int array, slice or bool mask)."""
        return CTFParams(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @classmethod
    def concat(cls, parts) -> "CTFParams":
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)})

    def to_tensors(self, index=slice(None), *, dtype=torch.float32, device=None) -> dict[str, Tensor]:
        """The selected particles' parameters as a dict of tensors (same field names)."""
        return {f.name: torch.as_tensor(getattr(self, f.name)[index], dtype=dtype, device=device)
                for f in fields(self)}


def evaluate_ctf(params: dict[str, Tensor], ky: Tensor, kx: Tensor) -> Tensor:
    """CTF of a batch of particles on a frequency grid.

    Parameters
    ----------
    params : dict of Tensors, each shape (B,)
        As returned by :meth:`CTFParams.to_tensors`.
    ky, kx : Tensors, shape (H, W)
        Spatial frequencies in Å⁻¹ (see :func:`flexview.model.grid.image_frequencies`).

    Returns
    -------
    Tensor, shape (B, H, W)
    """
    p = {k: v[:, None, None] for k, v in params.items()}
    lam = electron_wavelength(p["voltage_kv"])
    cs = p["cs_mm"] * 1e7
    k2 = kx**2 + ky**2
    theta = torch.atan2(ky, kx)
    mean = 0.5 * (p["defocus_u"] + p["defocus_v"])
    half_diff = 0.5 * (p["defocus_u"] - p["defocus_v"])
    dz = mean + half_diff * torch.cos(2.0 * (theta - torch.deg2rad(p["defocus_angle_deg"])))
    w = p["amp_contrast"].clamp(-1.0, 1.0)
    chi = (torch.pi * lam * dz * k2 - 0.5 * torch.pi * cs * lam**3 * k2**2
           + torch.deg2rad(p["phase_shift_deg"]) + torch.asin(w))
    return p["scale"] * torch.sin(chi) * torch.exp(-p["bfactor"] * k2 / 4.0)
