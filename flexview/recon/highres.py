"""High-resolution canonical map: least squares under the full forward model, solved by L-BFGS.

With the flow generator and the latents frozen, every particle image is a linear function of the
canonical map ``V`` (its values at the P mask voxels, ``x``):

    f(x) = Σ_i data_loss(CTF_i · FT(P(φ_i) D(f_θ(z_i), V)), X_i) + τ ‖x‖²

(:func:`flexview.model.loss.data_loss`, with a radial noise weighting). :class:`ReconProblem`
evaluates ``f`` and its gradient, and Hessian–vector products, by streaming all particles of a
half set in chunks through :class:`~flexview.model.forward.FlexForwardModel` (memory bounded by
the chunk); :func:`solve_map` minimises ``f`` from ``V = 0`` with :func:`lbfgs_quadratic`. A
radial Fourier preconditioner (:func:`hessian_profile`) evens out the spread of the Hessian's
eigenvalues between low and high frequencies. The same problem with the flow disabled is the
rigid ("noflex") reconstruction.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from flexview.model.canonical import CanonicalMap
from flexview.model.flow import FlowGenerator
from flexview.model.forward import FlexForwardModel
from flexview.model.grid import coords_to_index, fftn_centered, ifftn_centered, radial_index, voxel_coords
from flexview.model.loss import data_loss
from flexview.model.mesh import TetMesh
from flexview.recon.lbfgs import LBFGSResult, lbfgs_quadratic
from flexview.recon.rigid import reconstruct_rigid
from flexview.recon.stream import ParticleStream
from flexview.train.calibrate import calibrate, noise_weight

__all__ = [
    "ReconProblem",
    "estimate_noise_weight",
    "fourier_preconditioner",
    "full_box_model",
    "hessian_profile",
    "resample_mask",
    "resample_volume",
    "solve_map",
]


def resample_volume(volume: np.ndarray, pixel_size: float, box: int, new_pixel_size: float) -> np.ndarray:
    """A map ``[z, y, x]`` linearly interpolated onto another grid of the same physical frame
    (origin at voxel N//2, coordinates in Å); zero outside the source. Returns float32 (box³)."""
    src = np.asarray(volume, dtype=np.float32)
    out = np.empty((box, box, box), dtype=np.float32)
    coords = voxel_coords(box, new_pixel_size, dtype=torch.float64)
    for z in range(box):                      # slab by slab: memory O(box²)
        idx = coords_to_index(coords[z], src.shape[0], pixel_size).numpy()      # (box, box, 3)
        out[z] = ndimage.map_coordinates(src, idx.reshape(-1, 3).T, order=1, mode="constant",
                                         cval=0.0).reshape(box, box)
    return out


def resample_mask(mask: np.ndarray, pixel_size: float, box: int, new_pixel_size: float, *,
                  threshold: float = 0.5) -> np.ndarray:
    """A binary mask on another grid of the same physical frame: the 0/1 mask interpolated
    linearly at every new voxel's position and thresholded, so a mask made at the training box
    covers the same region at the full box. Returns bool (box³)."""
    return resample_volume(np.asarray(mask, np.float32), pixel_size, box, new_pixel_size) > threshold


def full_box_model(mesh: TetMesh, flow: FlowGenerator | None, mask: np.ndarray, pixel_size: float, *,
                   kernel: str = "linear") -> FlexForwardModel:
    """Forward model at a new box: canonical map zero on ``mask`` (box³ bool), the run's mesh (in Å,
    so only its metadata change) and its flow generator, frozen (the flow is in Å, so it carries
    over to any pixel size)."""
    box = mask.shape[0]
    canonical = CanonicalMap(np.zeros(mask.shape, np.float32), pixel_size, mask)
    if flow is not None:
        flow.requires_grad_(False)
    return FlexForwardModel(canonical, mesh.scaled(box=box, pixel_size=pixel_size), flow, kernel=kernel)


class ReconProblem:
    """The least-squares problem of one half set, ``f(x)`` above.

    Parameters
    ----------
    model : FlexForwardModel on ``device`` (its flow is used unless ``use_flow`` is False).
    stream : the half set's particles (with latents when ``use_flow``).
    weight : (R,) radial noise weighting of :func:`data_loss` (per integer Fourier radius).
    tikhonov : τ, absolute weight of ‖x‖².
    chunk : particles per chunk (memory ∝ chunk · P).
    """

    def __init__(self, model: FlexForwardModel, stream: ParticleStream, weight: Tensor, *,
                 use_flow: bool = True, tikhonov: float = 0.0, chunk: int = 32, device="cpu"):
        self.model, self.stream, self.use_flow = model, stream, bool(use_flow)
        self.device = torch.device(device)
        self.weight = weight.to(self.device, torch.float32)
        self.tikhonov, self.chunk = float(tikhonov), int(chunk)
        self.passes, self.pass_seconds = 0, 0.0
        if self.use_flow and stream.latents is None:
            raise ValueError("a flexible reconstruction needs the particles' latents")

    @property
    def n_values(self) -> int:
        """P, the number of unknowns (mask voxels)."""
        return self.model.canonical.n_masked

    def volume(self, x: Tensor) -> np.ndarray:
        """Map values ``x`` (P,) as a (box, box, box) float32 volume, zero outside the mask."""
        out = torch.zeros(self.model.box ** 3, dtype=torch.float32, device=x.device)
        out[self.model.canonical.masked_index().to(x.device)] = x.to(torch.float32)
        return out.reshape((self.model.box,) * 3).cpu().numpy()

    def _load(self, x: Tensor) -> None:
        vol = self.model.canonical.volume
        with torch.no_grad():
            vol.zero_()
            vol.view(-1)[self.model.canonical.masked_index()] = x.to(vol.device, vol.dtype)
        vol.grad = None

    def _sweep(self, x: Tensor, with_data: bool) -> tuple[float, Tensor]:
        """Σ_i data_loss(A_i x, X_i or 0) and its gradient w.r.t. x, one pass over all particles."""
        t0 = time.perf_counter()
        model = self.model
        model.flow_enabled = self.use_flow
        self._load(x)
        total = 0.0
        for rows in self.stream.chunks(self.chunk):
            c = self.stream.load(rows, self.device, with_images=with_data)
            z = c.z if self.use_flow else None
            spectra = model.render_spectra(z, c.pose, c.ctf)
            target = c.spectra if with_data else torch.zeros_like(spectra)
            loss = data_loss(spectra, target, noise_weight=self.weight).sum()
            loss.backward()
            total += float(loss.detach())
        vol = model.canonical.volume
        grad = vol.grad.reshape(-1)[model.canonical.masked_index()].detach().clone()
        vol.grad = None
        self.passes += 1
        self.pass_seconds += time.perf_counter() - t0
        return total, grad

    def objective(self, x: Tensor) -> tuple[float, Tensor]:
        """``f(x)`` and its gradient (P,), float64 (one pass, reading the images)."""
        x64 = x.to(self.device, torch.float64)
        f, g = self._sweep(x64, with_data=True)
        return (f + self.tikhonov * float(torch.dot(x64, x64)),
                g.to(torch.float64) + 2.0 * self.tikhonov * x64)

    def hessian_vector(self, d: Tensor) -> Tensor:
        """``H d`` (P,), float64 (one pass, images not needed)."""
        d64 = d.to(self.device, torch.float64)
        _, g = self._sweep(d64, with_data=False)
        return g.to(torch.float64) + 2.0 * self.tikhonov * d64    # ∇‖Ad‖²_W = 2 AᵀWA d = H d

    @property
    def seconds_per_pass(self) -> float:
        return self.pass_seconds / max(self.passes, 1)


def _shell_sums(spectrum: Tensor, box: int) -> Tensor:
    """Sum of a real rfft-layout 3-D array over integer Fourier shells (Hermitian pairs counted
    twice), (R,) with R = max radius + 1."""
    r = radial_index(box, ndim=3, device=spectrum.device).reshape(-1)
    mult = torch.full(spectrum.shape, 2.0, dtype=spectrum.dtype, device=spectrum.device)
    mult[..., 0] = 1.0
    if box % 2 == 0:
        mult[..., -1] = 1.0
    return torch.zeros(int(r.max()) + 1, dtype=spectrum.dtype, device=spectrum.device).index_add_(
        0, r, (spectrum * mult).reshape(-1))


def hessian_profile(problem: ReconProblem, *, seed: int = 0, floor: float = 1e-3) -> Tensor:
    """Radial profile h(r) of the Hessian in Fourier space, (R,) per integer radius (3-D).

    One Hessian–vector product on a white-noise probe ``e`` (mask voxels):
    ``h(r) = Σ_shell Re(Ê* · (He)^) / Σ_shell |Ê|²`` (Tikhonov term included). Shells beyond the
    images' Nyquist radius take the value at Nyquist; values are floored at ``floor × max`` so that
    the inverse stays bounded.
    """
    box = problem.model.box
    gen = torch.Generator().manual_seed(seed)
    e = torch.randn(problem.n_values, generator=gen, dtype=torch.float64).to(problem.device)
    he = problem.hessian_vector(e)
    fe = fftn_centered(torch.as_tensor(problem.volume(e), dtype=torch.float64, device=problem.device))
    fh = fftn_centered(torch.as_tensor(problem.volume(he), dtype=torch.float64, device=problem.device))
    num = _shell_sums((fe.conj() * fh).real, box)
    den = _shell_sums(fe.real ** 2 + fe.imag ** 2, box)
    h = num / den.clamp_min(1e-300)
    nyq = box // 2
    h[nyq + 1:] = h[nyq]
    h = h.clamp_min(floor * float(h[: nyq + 1].max()))
    return h.float()


def fourier_preconditioner(problem: ReconProblem, profile: Tensor) -> Callable[[Tensor], Tensor]:
    """``v ↦ S F⁻¹ diag(1/h(|k|)) F Sᵀ v``: the inverse of the radial Hessian profile, between the
    mask voxels (S: restriction to the mask). Symmetric positive definite."""
    box = problem.model.box
    index = problem.model.canonical.masked_index().to(problem.device)
    inv = (1.0 / profile.to(problem.device, torch.float64))[
        radial_index(box, ndim=3, device=problem.device).clamp(max=len(profile) - 1)]

    def apply(v: Tensor) -> Tensor:
        full = torch.zeros(box ** 3, dtype=torch.float64, device=v.device)
        full[index] = v
        out = ifftn_centered(fftn_centered(full.reshape(box, box, box)) * inv, box)
        return out.reshape(-1)[index]

    return apply


def estimate_noise_weight(model: FlexForwardModel, stream: ParticleStream, *, count: int = 500,
                          device="cpu", seed: int = 0) -> tuple[Tensor, Tensor]:
    """Radial noise weighting at the reconstruction box, from residuals against the projections of
    a rigid reconstruction of the same particles (:func:`flexview.train.calibrate.calibrate`, the
    method training uses at the training box).

    Uses at most ``count`` particles. Returns ``(weight (R,), noise_power (R,))``; the weight is
    ``N² / 2σ²(r)`` with the DC term given the weight of shell 1 (training leaves DC out; here
    the map's mean must be determined too).
    """
    sub = stream.subset(count, seed)
    if stream.grid.mixed:    # optics groups of other pixel sizes or boxes: their images on the grid
        reference = reconstruct_rigid(sub.on_grid(), device=device)
    else:
        reference = reconstruct_rigid(stream.particles, box=stream.box, indices=sub.rows, device=device)
    canonical = model.canonical
    flow_enabled = model.flow_enabled
    with torch.no_grad():
        canonical.volume.copy_(torch.as_tensor(reference, device=canonical.volume.device)
                               * canonical.mask)
    try:
        model.flow_enabled = False
        data = sub.training_data()
        _, power = calibrate(model, data, np.arange(len(data)), device)
    finally:
        model.flow_enabled = flow_enabled
        with torch.no_grad():
            canonical.volume.zero_()
    weight = noise_weight(power.clone(), stream.box)
    weight[0] = weight[1]
    return weight, power


def solve_map(problem: ReconProblem, *, iters: int = 20, memory: int = 20,
              preconditioner: Callable[[Tensor], Tensor] | None = None,
              callback: Callable[[int, LBFGSResult], None] | None = None) -> LBFGSResult:
    """Minimise the problem's objective from ``V = 0`` by full-batch L-BFGS (``iters`` passes
    after the first, which computes the gradient at zero)."""
    zero = torch.zeros(problem.n_values, dtype=torch.float64, device=problem.device)
    f0, g0 = problem.objective(zero)
    return lbfgs_quadratic(g0, f0, problem.hessian_vector, iters=iters, memory=memory,
                           precondition=preconditioner, callback=callback)
