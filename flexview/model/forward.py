"""The 3DFlex image model, equation (1): ``I = C · P(φ) · D(f_θ(z), V) + η``."""
from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor, nn

from flexview.model._kernels import check_kernel, splat
from flexview.model.canonical import CanonicalMap
from flexview.model.convect import convect_volume, projection_affine
from flexview.model.ctf import evaluate_ctf
from flexview.model.flow import FlowGenerator, VertexInterpolator
from flexview.model.grid import fft2_centered, ifft2_centered, image_frequencies
from flexview.model.mesh import TetMesh, locate, rest_inverse
from flexview.model.rigidity import deformation_gradient, rigidity_from_gradient

__all__ = ["FlexForwardModel"]


class FlexForwardModel(nn.Module):
    """Canonical map + mesh + flow generator → model particle images.

    Parameters
    ----------
    canonical : CanonicalMap (box, pixel size, mask).
    mesh : TetMesh covering the canonical mask (mask voxels outside it never move).
    flow : FlowGenerator for ``mesh`` (None: rigid model).
    kernel : scatter kernel, "linear" or "cubic".
    ctf_pad : apply the CTF on a grid ``ctf_pad`` times larger (zero-padded projection, then
        cropped), so that signal the CTF delocalises beyond the box is lost as in an extracted
        particle instead of wrapping around. 1 (default) applies it on the box itself.

    Buffers: ``voxel_vertices`` (P, 4) vertex indices of each mask voxel's cell (-1 outside the
    mesh), ``voxel_bary`` (P, 4), ``mesh_cells`` (C, 4), ``rest_inv`` (C, 3, 3),
    ``rigidity_weight`` (C,), and the rfft frequency grid ``ky``, ``kx`` (Å⁻¹).
    Set ``flow_enabled = False`` to render rigidly.
    """

    def __init__(self, canonical: CanonicalMap, mesh: TetMesh, flow: FlowGenerator | None = None,
                 kernel: str = "linear", ctf_pad: int = 1):
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
        ky, kx = image_frequencies(self.box * self.ctf_pad, self.pixel_size, dtype=dtype)
        self.register_buffer("ky", ky, persistent=False)
        self.register_buffer("kx", kx, persistent=False)

    @property
    def box(self) -> int:
        return self.canonical.box

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

    def project(self, z: Tensor | None, rotations: Float[Tensor, "batch 3 3"],
                origins_A: Float[Tensor, "batch 2"]) -> Float[Tensor, "batch box box"]:
        """Projections P(φ) D(f_θ(z), V) before the CTF, (B, box, box) in density × Å."""
        dtype, device = self.voxel_bary.dtype, self.voxel_bary.device
        m, t = projection_affine(rotations.to(device, dtype), origins_A.to(device, dtype),
                                 self.box, self.pixel_size)
        coords = self.canonical.masked_coords() @ m + t[:, None, :]          # rigid part
        if not self._rigid(z):      # the flow is linear in the vertices: project them first
            coords = coords + self.interpolator(self.displacements(z) @ m)
        return splat(self.canonical.masked_values(), coords, (self.box, self.box), self.kernel,
                     scale=self.pixel_size)

    def forward(self, z: Tensor | None, rotations: Tensor, origins_A: Tensor,
                ctf_params: dict[str, Tensor]) -> Float[Tensor, "batch box box"]:
        """Same as :meth:`render_images`."""
        return self.render_images(z, rotations, origins_A, ctf_params)

    def ctf(self, ctf_params: dict[str, Tensor]) -> Float[Tensor, "batch n half"]:
        """CTF on the rfft grid of the (padded) CTF box, (B, n, n // 2 + 1), n = box · ctf_pad."""
        params = {k: v.to(self.ky.device, self.ky.dtype) for k, v in ctf_params.items()}
        return evaluate_ctf(params, self.ky, self.kx)

    def render_spectra(self, z: Tensor | None, rotations: Tensor, origins_A: Tensor,
                       ctf_params: dict[str, Tensor]) -> Tensor:
        """Model images in Fourier space (``fft2_centered`` layout), complex (B, box, box//2+1)."""
        proj = self.project(z, rotations, origins_A)
        if self.ctf_pad == 1:
            return fft2_centered(proj) * self.ctf(ctf_params)
        n, box = self.box * self.ctf_pad, self.box
        lo = n // 2 - box // 2
        padded = torch.nn.functional.pad(proj, (lo, n - box - lo, lo, n - box - lo))
        image = ifft2_centered(fft2_centered(padded) * self.ctf(ctf_params), n)
        return fft2_centered(image[:, lo:lo + box, lo:lo + box])

    def render_images(self, z: Tensor | None, rotations: Tensor, origins_A: Tensor,
                      ctf_params: dict[str, Tensor]) -> Float[Tensor, "batch box box"]:
        """Noise-free particle images ``IFT(CTF · FT(projection))``, real (B, box, box)."""
        return ifft2_centered(self.render_spectra(z, rotations, origins_A, ctf_params), self.box)

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
