"""Analytic images and maps of a :class:`~flexview.synth.phantom.Phantom`.

Everything here is computed from the Gaussian atoms directly, independently of the forward model
used for refinement. Both maps and images are *averages over each voxel / pixel* of the density
(separable, exact via ``erf``), so a map voxel and an image pixel agree in units
(``../shared/data/conventions/README.md`` point 8): an image equals ``pixel_size × Σ_z`` of the
rotated map, i.e. the line integral of the density (density · Å³ / Å²).

Image geometry: atom ``r`` (x, y, z Å) of the deformed model lands at ``A r``; the particle is then
displaced by ``−origin_A``, so its pixel column is ``(A r)_x / px − origin_x / px + N // 2`` (row
likewise with y). CTF: applied in Fourier space on a 2× zero-padded grid, then cropped.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from flexview.io.particles import ArrayImages, ParticleSet
from flexview.model.ctf import CTF, CTFParams, evaluate_ctf
from flexview.model.grid import fft2_centered, ifft2_centered, image_frequencies
from flexview.model.pose import random_rotations
from flexview.synth.phantom import Phantom, draw_motion_coords

NOISE_BLOCK = 256        # particles per noise block: noise depends on the seed only, not on chunking


def pixel_profiles(centres_A: Tensor, sigma_A: Tensor, box: int, pixel_size: float) -> Tensor:
    """Average over each pixel of 1-D unit Gaussians: (..., n) centres → (..., n, box), units 1/Å.

    Pixel ``i`` covers ``[(i − N//2 − ½) px, (i − N//2 + ½) px]``; the profile of a Gaussian that lies
    wholly inside the grid sums to ``1 / px``.
    """
    edges = (torch.arange(box + 1, dtype=centres_A.dtype, device=centres_A.device)
             - box // 2 - 0.5) * pixel_size
    z = (edges - centres_A[..., None]) / (np.sqrt(2.0) * sigma_A[..., None])
    cdf = 0.5 * torch.erf(z)
    return (cdf[..., 1:] - cdf[..., :-1]) / pixel_size


def _atoms(phantom: Phantom, dtype, device):
    t = lambda a: torch.as_tensor(a, dtype=dtype, device=device)  # noqa: E731
    return t(phantom.amplitudes), t(phantom.sigmas)


def render_map(phantom: Phantom, coords, box: int, pixel_size: float) -> np.ndarray:
    """The true map (z, y, x) float32 at motion coordinates ``coords`` (K,): voxel-averaged density."""
    pos = torch.as_tensor(phantom.deform(coords), dtype=torch.float64)
    amp, sig = _atoms(phantom, torch.float64, None)
    g = pixel_profiles(pos, sig[:, None], box, pixel_size)           # (n, 3, box): x, y, z profiles
    vol = torch.einsum("az,ay,ax->zyx", g[:, 2] * amp[:, None], g[:, 1], g[:, 0])
    return vol.to(torch.float32).numpy()


def project_atoms(positions: Tensor, amplitudes: Tensor, sigmas: Tensor, rotations: Tensor,
                  origins_A: Tensor, box: int, pixel_size: float) -> Tensor:
    """Noise-free, CTF-free projections, pixel-averaged.

    Parameters
    ----------
    positions : (B, n, 3) or (n, 3)  atom centres, Å.
    amplitudes, sigmas : (n,)          Gaussian integrals and standard deviations (Å).
    rotations : (B, 3, 3)              RELION matrices A.
    origins_A : (B, 2)                 RELION origins (x, y), Å.

    Returns
    -------
    (B, box, box) images ``[y, x]``: line integrals of the density.
    """
    rotated = torch.matmul(positions, rotations.transpose(1, 2))    # rows: A r
    cx = rotated[..., 0] - origins_A[:, None, 0]
    cy = rotated[..., 1] - origins_A[:, None, 1]
    gx = pixel_profiles(cx, sigmas, box, pixel_size)                  # (B, n, box)
    gy = pixel_profiles(cy, sigmas, box, pixel_size)
    return torch.bmm((gy * amplitudes[:, None]).transpose(1, 2), gx)


def apply_ctf(images: Tensor, ctf: CTF, pixel_size: float, pad: int = 2) -> Tensor:
    """Multiply ``images`` (B, N, N) by their CTF in Fourier space on a ``pad``× zero-padded grid.

    The image centre (index N//2) stays at the padded grid's centre, so phases are undisturbed. The
    padded grid's Nyquist row and column are zeroed (the CTF has no Hermitian symmetry there).
    ``ctf`` holds the B particles' parameters (:meth:`CTFParams.batch`).
    """
    n = images.shape[-1]
    big, lo = pad * n, pad * n // 2 - n // 2
    padded = images.new_zeros(images.shape[:-2] + (big, big))
    padded[..., lo:lo + n, lo:lo + n] = images
    ky, kx = image_frequencies(big, pixel_size, dtype=images.dtype, device=images.device)
    weights = evaluate_ctf(ctf, ky, kx)
    weights[..., big // 2, :] = 0.0        # Nyquist row and column: an astigmatic CTF is not
    weights[..., :, -1] = 0.0              # Hermitian there, so they are left out
    out = ifft2_centered(fft2_centered(padded) * weights, big)
    return out[..., lo:lo + n, lo:lo + n]


@dataclass
class PoseDraw:
    """Random per-particle parameters of a simulated data set (N particles)."""

    rotations: np.ndarray      # (N, 3, 3) RELION A
    origins_A: np.ndarray      # (N, 2) Å
    ctf: CTFParams
    half_set: np.ndarray       # (N,) int8 0/1, balanced
    coords: np.ndarray         # (N, K) motion coordinates


def draw_parameters(n: int, n_motions: int, pixel_size: float, rng: np.random.Generator, *,
                    max_shift_px: float = 3.0) -> PoseDraw:
    """Draw poses uniform on SO(3), origins uniform in ±``max_shift_px``, CTFs and half sets.

    CTF: 300 kV, Cs 2.7 mm, amplitude contrast 0.1; mean defocus uniform 1.0–2.5 µm, U − V uniform
    in 0–1000 Å, defocus angle uniform in [0°, 180°).
    """
    rotations = random_rotations(n, rng)
    origins = rng.uniform(-max_shift_px, max_shift_px, (n, 2)) * pixel_size
    mean_df = rng.uniform(10000.0, 25000.0, n)
    astig = rng.uniform(0.0, 1000.0, n)
    angle = rng.uniform(0.0, 180.0, n)
    ctf = CTFParams(defocus_u_A=mean_df + astig / 2, defocus_v_A=mean_df - astig / 2,
                    defocus_angle_deg=angle, voltage_kv=300.0, cs_mm=2.7, amplitude_contrast=0.1,
                    phase_shift_deg=0.0, bfactor_A2=0.0, scale=1.0)
    half = rng.permutation(np.arange(n) % 2).astype(np.int8)
    coords = draw_motion_coords(n, n_motions, rng)
    return PoseDraw(rotations, origins, ctf, half, coords)


def clean_images(phantom: Phantom, draw: PoseDraw, box: int, pixel_size: float, *,
                 ctf: bool = True, chunk: int = 256, device=None) -> np.ndarray:
    """Noise-free particle images (N, box, box) float32 for the parameters in ``draw``."""
    n = len(draw.rotations)
    out = np.empty((n, box, box), dtype=np.float32)
    amp, sig = _atoms(phantom, torch.float32, device)
    for start in range(0, n, chunk):
        sl = slice(start, min(start + chunk, n))
        pos = torch.as_tensor(phantom.deform(draw.coords[sl]), dtype=torch.float32, device=device)
        rot = torch.as_tensor(draw.rotations[sl], dtype=torch.float32, device=device)
        org = torch.as_tensor(draw.origins_A[sl], dtype=torch.float32, device=device)
        img = project_atoms(pos, amp, sig, rot, org, box, pixel_size)
        if ctf:
            img = apply_ctf(img, draw.ctf.batch(sl, device=device), pixel_size)
        out[sl] = img.cpu().numpy()
    return out


def add_noise(images: np.ndarray, snr: float, seed: int) -> float:
    """Add white Gaussian noise in place so that mean_i var(image_i) / σ² = ``snr``; returns σ.

    Noise for particles ``[k·256, (k+1)·256)`` comes from ``default_rng([seed, k])``.
    """
    sigma = float(np.sqrt(images.var(axis=(1, 2), dtype=np.float64).mean() / snr))
    for k, start in enumerate(range(0, len(images), NOISE_BLOCK)):
        block = images[start:start + NOISE_BLOCK]
        block += sigma * np.random.default_rng([seed, k]).standard_normal(block.shape, dtype=np.float32)
    return sigma


def optics_table(box: int, pixel_size: float) -> pd.DataFrame:
    """RELION ``data_optics`` table of the simulated data (one optics group)."""
    return pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"],
                         "rlnVoltage": [300.0], "rlnSphericalAberration": [2.7],
                         "rlnAmplitudeContrast": [0.1], "rlnImagePixelSize": [pixel_size],
                         "rlnImageSize": [box], "rlnImageDimensionality": [2],
                         "rlnCtfDataAreCtfPremultiplied": [0]})


@dataclass
class Simulation:
    """An in-memory simulated data set."""

    particles: ParticleSet     # images as ArrayImages
    coords: np.ndarray         # (N, K) true motion coordinates, particle order
    phantom: Phantom
    noise_sigma: float         # σ of the added noise (0 when snr is None)
    signal_var: float          # mean over particles of var(noise-free image)


def simulate(phantom: Phantom, n: int, box: int, pixel_size: float, *, snr: float | None = 0.05,
             seed: int = 0, coords: np.ndarray | None = None, ctf: bool = True,
             max_shift_px: float = 3.0, device=None) -> Simulation:
    """Simulate ``n`` particles of ``phantom`` (seeded, deterministic).

    ``coords`` (n, K) overrides the drawn motion coordinates; ``snr=None`` gives noise-free images;
    ``ctf=False`` leaves the CTF out of the images (the ParticleSet still carries the drawn CTF).
    """
    rng = np.random.default_rng(seed)
    draw = draw_parameters(n, phantom.n_motions, pixel_size, rng, max_shift_px=max_shift_px)
    if coords is not None:
        draw.coords = np.asarray(coords, dtype=np.float64).reshape(n, phantom.n_motions)
    images = clean_images(phantom, draw, box, pixel_size, ctf=ctf, device=device)
    signal_var = float(images.var(axis=(1, 2), dtype=np.float64).mean())
    sigma = 0.0 if snr is None else add_noise(images, snr, seed)
    particles = ParticleSet(images=ArrayImages(images), pixel_size=float(pixel_size), box=box,
                            rotations=draw.rotations, origins_A=draw.origins_A, ctf=draw.ctf,
                            half_set=draw.half_set, optics=optics_table(box, pixel_size))
    return Simulation(particles, draw.coords, phantom, sigma, signal_var)
