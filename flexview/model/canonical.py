"""The canonical map V: a real-space density with a solvent mask and a band limit."""
from __future__ import annotations

import math

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from flexview.errors import FlexviewInputError
from flexview.model.grid import fftn_centered, ifftn_centered, voxel_coords

__all__ = ["CanonicalMap"]


class CanonicalMap(nn.Module):
    """Canonical density ``V`` (parameter ``volume``, [z, y, x]) with a mask and a band limit.

    Parameters
    ----------
    volume : (box, box, box) initial density (real space), or an int ``box`` for zeros.
    pixel_size : Å/voxel.
    mask : (box, box, box) bool, voxels that carry density (default: all).
    band_limit_px : radius of the band limit in Fourier pixels (None: no limit).
    edge_width_px : width of the raised-cosine edge inside the band limit (Fourier pixels).

    The band limit filter is 1 up to ``r − edge``, falls as a raised cosine, and is 0 from ``r``
    on, so nothing beyond radius ``r`` (Fourier pixels; ``r = box · pixel_size / resolution``)
    passes. Buffers: ``mask`` (bool), ``pixel_size`` (Å), ``band_limit_px`` (inf = none).
    """

    def __init__(self, volume, pixel_size: float, mask=None, *, band_limit_px: float | None = None,
                 edge_width_px: float = 2.0):
        super().__init__()
        if isinstance(volume, int):
            volume = torch.zeros((volume,) * 3)
        vol = torch.as_tensor(np.asarray(volume) if not isinstance(volume, Tensor) else volume,
                              dtype=torch.float32).detach().clone()
        if vol.ndim != 3 or len(set(vol.shape)) != 1:
            raise FlexviewInputError(f"canonical map must be cubic, got {tuple(vol.shape)}",
                                     field="volume")
        box = vol.shape[0]
        mask = torch.ones(vol.shape, dtype=torch.bool) if mask is None else torch.as_tensor(
            np.asarray(mask, dtype=bool) if not isinstance(mask, Tensor) else mask).bool()
        if mask.shape != vol.shape:
            raise FlexviewInputError(f"mask shape {tuple(mask.shape)} != map shape {tuple(vol.shape)}",
                                     field="mask")
        self.volume = nn.Parameter(vol)
        self.edge_width_px = float(edge_width_px)
        self.register_buffer("mask", mask.clone())
        self.register_buffer("pixel_size", torch.tensor(float(pixel_size), dtype=torch.float64))
        self.register_buffer("band_limit_px", torch.tensor(math.inf, dtype=torch.float64))
        index = torch.nonzero(mask.reshape(-1)).squeeze(1)
        self.register_buffer("_mask_index", index, persistent=False)
        coords = voxel_coords(box, float(pixel_size)).reshape(-1, 3)[index]
        self.register_buffer("_coords", coords, persistent=False)
        self.set_band_limit(band_limit_px)

    @property
    def box(self) -> int:
        return self.volume.shape[0]

    @property
    def n_masked(self) -> int:
        """Number of mask voxels P."""
        return self._mask_index.numel()

    @property
    def band_limit_A(self) -> float:
        """Band limit as a resolution in Å (0 when there is none)."""
        r = float(self.band_limit_px)
        return self.box * float(self.pixel_size) / r if math.isfinite(r) and r > 0 else 0.0

    def set_band_limit(self, radius_px: float | None = None, *, resolution_A: float | None = None):
        """Set the band limit by radius (Fourier pixels) or resolution (Å); neither removes it."""
        if resolution_A is not None:
            radius_px = self.box * float(self.pixel_size) / float(resolution_A)
        self.band_limit_px.fill_(math.inf if radius_px is None else float(radius_px))

    def band_filter(self) -> Float[Tensor, "box box half"] | None:
        """Raised-cosine low-pass on the rfft grid, or None when the band limit passes all."""
        r = float(self.band_limit_px)
        n = self.box
        if r >= math.sqrt(3) * (n // 2 + 1):
            return None
        k = torch.fft.fftfreq(n, 1.0 / n, device=self.volume.device, dtype=self.volume.dtype)
        kx = torch.fft.rfftfreq(n, 1.0 / n, device=self.volume.device, dtype=self.volume.dtype)
        radius = torch.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + kx ** 2)
        w = max(self.edge_width_px, 1e-6)
        t = ((radius - (r - w)) / w).clamp(0.0, 1.0)
        return 0.5 * (1.0 + torch.cos(math.pi * t))

    def density(self) -> Float[Tensor, "box box box"]:
        """The band-limited canonical density (differentiable w.r.t. ``volume``)."""
        filt = self.band_filter()
        if filt is None:
            return self.volume
        return ifftn_centered(fftn_centered(self.volume) * filt, self.box)

    def masked_values(self) -> Float[Tensor, "voxels"]:
        """Band-limited density at the mask voxels, (P,), ordered as :meth:`masked_coords`."""
        return self.density().reshape(-1).index_select(0, self._mask_index)

    def masked_coords(self) -> Float[Tensor, "voxels 3"]:
        """(x, y, z) Å of the mask voxels, (P, 3), in C order of [z, y, x]."""
        return self._coords

    def masked_index(self) -> Int[Tensor, "voxels"]:
        """Flat [z, y, x] indices of the mask voxels, (P,)."""
        return self._mask_index
