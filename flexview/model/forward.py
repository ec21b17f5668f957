"""The 3DFlex image model, equation (1) of Punjani & Fleet (2023): ``I = C · P(φ) · D(f_θ(z), V) + η``.

:meth:`FlexForwardModel.render_spectra` is the one place where the projection and the CTF meet;
training, calibration, latent inference and reconstruction all render through it.

References
----------
Punjani & Fleet (2023), "3DFlex: determining structure and motion of flexible proteins from
cryo-EM", Nature Methods 20:860.
"""
from __future__ import annotations

import torch
from jaxtyping import Complex, Float
from torch import Tensor, nn

from flexview.model._kernels import check_kernel, splat
from flexview.model.canonical import CanonicalMap
from flexview.model.convect import convect_volume, projection_affine
from flexview.model.ctf import CTF, evaluate_ctf
from flexview.model.flow import FlowGenerator, VertexInterpolator
from flexview.model.grid import fft2_centered, ifft2_centered, image_frequencies
from flexview.model.mesh import TetMesh, locate, rest_inverse
from flexview.model.pose import Pose
from flexview.model.rigidity import deformation_gradient, rigidity_from_gradient

__all__ = ["CTF_PAD", "FlexForwardModel"]

CTF_PAD = 2
"""Size of the grid the CTF is applied on, in multiples of the box.

The CTF delocalises signal by up to ``λ Δz k`` (≈ 50 Å at 300 kV, 2 µm defocus and 1/8 Å⁻¹): in a
particle extracted from a micrograph, the part of it that leaves the box is lost. Applied on the
box itself (1), the CTF wraps that signal around to the opposite edge instead; on a 2× zero-padded
grid it leaves the box as it does in the microscope, as the independent simulations of
``conventions`` and of :mod:`flexview.synth` do.

Measured on the shared conventions set (1000 rigid particles, 64 px at 1.5 Å/px, SNR 1, CTF of
an independent simulator applied on a 2× grid), rendering the ground-truth map rigidly with the
least-squares scale of :func:`flexview.train.calibrate.calibrate` (Gaussian negative
log-likelihood per particle with the calibrated noise spectrum):

===========================  ===============  ===============
                             pad 1            pad 2
===========================  ===============  ===============
box 64: fitted map scale     0.954            1.022
box 64: correlation 12–6 Å   0.465            0.550
box 64: correlation 6–3 Å    0.093            0.194
box 64: Gaussian NLL         +136 nats         0 (reference)
box 32: correlation 12–6 Å   0.457            0.520
box 32: Gaussian NLL         +30 nats          0 (reference)
rigid map, FSC at 8 Å        0.928            0.971
500 particles, box 64, CPU   0.75 s fwd,      0.81 s fwd,
(1 thread, 17 k voxels)      1.58 s fwd+bwd   1.70 s fwd+bwd
===========================  ===============  ===============

Residual power is 5–18 % lower with pad 2 in every shell up to 0.22 Å⁻¹ at box 64. The padded
grid costs 8–11 % more CPU time per render (the projection and its scatter dominate), so it is
used everywhere: training, calibration, latent inference and reconstruction.
"""


class FlexForwardModel(nn.Module):
    """Canonical map + mesh + flow generator → model particle images.

    Parameters
    ----------
    canonical : CanonicalMap (box, pixel size, mask).
    mesh : TetMesh covering the canonical mask (mask voxels outside it never move).
    flow : FlowGenerator for ``mesh`` (None: rigid model).
    kernel : scatter kernel, "linear" or "cubic".
    ctf_pad : the CTF grid in multiples of the box (:data:`CTF_PAD`; other values only to compare).

    Buffers: ``voxel_vertices`` (P, 4) vertex indices of each mask voxel's cell (-1 outside the
    mesh), ``voxel_bary`` (P, 4), ``mesh_cells`` (C, 4), ``rest_inv`` (C, 3, 3),
    ``rigidity_weight`` (C,), and the rfft frequency grid ``ky``, ``kx`` (Å⁻¹) of the CTF grid.
    Set ``flow_enabled = False`` to render rigidly.
    """

    def __init__(self, canonical: CanonicalMap, mesh: TetMesh, flow: FlowGenerator | None = None,
                 kernel: str = "linear", *, ctf_pad: int = CTF_PAD):
        super().__init__()
        if flow is not None and flow.n_vertices != mesh.n_vertices:
            raise ValueError(f"flow generator has {flow.n_vertices} vertices, mesh {mesh.n_vertices}")
        self.canonical, self.flow, self.mesh = canonical, flow, mesh
        self.kernel = check_kernel(kernel)
        self.flow_enabled = True
        self.ctf_pad = max(1, int(ctf_pad))
        self._pixel_size = float(canonical.pixel_size)
        cell, bary = locate(mesh, canonical.masked_coords())
        verts = torch.as_tensor(mesh.cells)[torch.as_tensor(cell).clamp(min=0)]
        verts[torch.as_tensor(cell) < 0] = -1
        dtype = canonical.volume.dtype
        self.register_buffer("voxel_vertices", verts)
        self.register_buffer("voxel_bary", torch.as_tensor(bary, dtype=dtype))
        self.interpolator = VertexInterpolator(verts, bary, mesh.n_vertices)
        self.register_buffer("mesh_cells", torch.as_tensor(mesh.cells))
        self.register_buffer("rest_inv", torch.as_tensor(rest_inverse(mesh), dtype=dtype))
        self.register_buffer("rigidity_weight", torch.as_tensor(mesh.rigidity_weight, dtype=dtype))
        ky, kx = image_frequencies(self.ctf_box, self.pixel_size, dtype=dtype)
        self.register_buffer("ky", ky, persistent=False)
        self.register_buffer("kx", kx, persistent=False)

    @property
    def box(self) -> int:
        return self.canonical.box

    @property
    def ctf_box(self) -> int:
        """n = box · ctf_pad, the side of the grid the CTF is applied on."""
        return self.box * self.ctf_pad

    @property
    def pixel_size(self) -> float:
        """Å/pixel (fixed at construction)."""
        return self._pixel_size

    @property
    def outside_fraction(self) -> float:
        """Fraction of mask voxels outside the mesh (they keep zero displacement)."""
        return float((self.voxel_vertices[:, 0] < 0).float().mean())

    def _rigid(self, z: Tensor | None) -> bool:
        return z is None or self.flow is None or not self.flow_enabled

    def displacements(self, z: Float[Tensor, "batch latent"]) -> Float[Tensor, "batch vertices 3"]:
        """Vertex displacements f_θ(z) in Å, (B, V, 3) (zeros for a rigid model)."""
        if self._rigid(z):
            n = 1 if z is None else z.shape[0]
            return self.voxel_bary.new_zeros(n, self.mesh.n_vertices, 3)
        return self.flow(z.to(self.voxel_bary.dtype))

    def voxel_positions(self, z: Tensor | None) -> Float[Tensor, "*batch voxels 3"]:
        """Deformed positions y + u(y) of the mask voxels in Å: (B, P, 3), or (P, 3) if rigid."""
        coords = self.canonical.masked_coords()
        if self._rigid(z):
            return coords
        return coords + self.interpolator(self.displacements(z))

    def project(self, z: Tensor | None, pose: Pose, *,
                displacements: Float[Tensor, "batch vertices 3"] | None = None
                ) -> Float[Tensor, "batch box box"]:
        """Projections P(φ) D(u, V) before the CTF, (B, box, box) in density × Å.

        ``u`` is ``displacements`` (B, V, 3) in Å when given (``z`` is then ignored, whether or
        not the flow is enabled), otherwise f_θ(z), or no deformation for ``z = None``.
        """
        dtype, device = self.voxel_bary.dtype, self.voxel_bary.device
        m, t = projection_affine(pose.rotations.to(device, dtype), pose.origins_A.to(device, dtype),
                                 self.box, self.pixel_size)
        coords = self.canonical.masked_coords() @ m + t[:, None, :]          # rigid part
        if displacements is None and not self._rigid(z):
            displacements = self.displacements(z)
        if displacements is not None:   # the flow is linear in the vertices: project them first
            coords = coords + self.interpolator(displacements.to(device, dtype) @ m)
        return splat(self.canonical.masked_values(), coords, (self.box, self.box), self.kernel,
                     scale=self.pixel_size)

    def ctf_image(self, ctf: CTF) -> Float[Tensor, "batch n half"]:
        """The particles' CTF on the rfft grid of the CTF box, (B, n, n // 2 + 1), n = :attr:`ctf_box`.

        Compute it once per batch and pass it to :meth:`render_spectra` when the same particles
        are rendered many times (latent search, Gauss–Newton steps, a reconstruction pass).
        """
        return evaluate_ctf(ctf.to(self.ky.device, self.ky.dtype), self.ky, self.kx)

    def render_spectra(self, z: Tensor | None, pose: Pose, ctf: CTF | Tensor, *,
                       displacements: Float[Tensor, "batch vertices 3"] | None = None
                       ) -> Complex[Tensor, "batch box half"]:
        """Model images in Fourier space (``fft2_centered`` layout), complex (B, box, box//2+1).

        ``C · P(φ) · D(u, V)``: the projection (:meth:`project`, with ``displacements`` as
        there) multiplied by the CTF on the CTF grid (zero-padded to :attr:`ctf_box`, then
        cropped back to the box). ``ctf`` is the particles' :class:`CTF`, or its
        :meth:`ctf_image` computed beforehand.
        """
        proj = self.project(z, pose, displacements=displacements)
        weights = self._ctf_weights(ctf, len(pose))
        if self.ctf_pad == 1:
            return fft2_centered(proj) * weights
        n, box = self.ctf_box, self.box
        lo = n // 2 - box // 2
        padded = torch.nn.functional.pad(proj, (lo, n - box - lo, lo, n - box - lo))
        image = ifft2_centered(fft2_centered(padded) * weights, n)
        return fft2_centered(image[:, lo:lo + box, lo:lo + box])

    def _ctf_weights(self, ctf: CTF | Tensor, batch: int) -> Tensor:
        if isinstance(ctf, CTF):
            return self.ctf_image(ctf)
        n = self.ctf_box
        if ctf.shape[-2:] != (n, n // 2 + 1) or ctf.shape[0] not in (1, batch):
            raise ValueError(f"a precomputed CTF of shape {tuple(ctf.shape)} does not fit {batch} "
                             f"particles on the CTF grid ({n}, {n // 2 + 1}); use ctf_image()")
        return ctf

    def render_images(self, z: Tensor | None, pose: Pose, ctf: CTF | Tensor, *,
                      displacements: Tensor | None = None) -> Float[Tensor, "batch box box"]:
        """Noise-free particle images, real (B, box, box): the inverse transform of
        :meth:`render_spectra` (same arguments)."""
        return ifft2_centered(self.render_spectra(z, pose, ctf, displacements=displacements), self.box)

    def forward(self, z: Tensor | None, pose: Pose, ctf: CTF | Tensor) -> Float[Tensor, "batch box box"]:
        """Same as :meth:`render_images`."""
        return self.render_images(z, pose, ctf)

    def volume_at(self, z: Tensor | None = None) -> Float[Tensor, "box box box"]:
        """Deformed density W = D(f_θ(z), V) for one latent z (K,) or (1, K), (box, box, box)."""
        if z is not None:
            z = z.reshape(1, -1)
        pos = self.voxel_positions(z)
        pos = pos if pos.ndim == 2 else pos[0]
        return convect_volume(self.canonical.masked_values(), pos, self.box, self.pixel_size,
                              self.kernel)

    def rigidity(self, z: Float[Tensor, "batch latent"]) -> Float[Tensor, "batch"]:
        """Weighted rigidity penalty of the flow at each z, (B,)."""
        f = deformation_gradient(self.displacements(z), self.mesh_cells, self.rest_inv)
        return rigidity_from_gradient(f, self.rigidity_weight)
