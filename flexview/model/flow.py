"""Flow generator f_θ: latent coordinates z → displacement of every mesh vertex (Å)."""
from __future__ import annotations

import warnings

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

__all__ = ["FlowGenerator", "interpolate_displacement", "VertexInterpolator"]


class FlowGenerator(nn.Module):
    """MLP from latents to vertex displacements.

    ``layers`` hidden layers of ``hidden`` units, each ``Linear`` + ReLU, then a final ``Linear``
    without bias to ``3 · n_vertices`` outputs (GUIDE §4: 6 × 64 by default). Outputs are
    displacements (x, y, z) in Å; pinned vertices are forced to zero. The buffer ``offset``
    (V, 3) Å, zero unless the flow was re-referenced (:func:`flexview.model.gauge.recentre`), is
    added to every output.

    Parameters
    ----------
    latent_dim : K, dimension of z.
    n_vertices : V (may be omitted when ``pinned`` is given).
    hidden, layers : width and number of hidden layers.
    pinned : (V,) bool, vertices held fixed.
    """

    def __init__(self, latent_dim: int = 2, n_vertices: int | None = None, *, hidden: int = 64,
                 layers: int = 6, pinned=None):
        super().__init__()
        if pinned is not None:
            pinned = torch.as_tensor(np.asarray(pinned, dtype=bool) if not isinstance(pinned, Tensor)
                                     else pinned).bool().reshape(-1)
            n_vertices = len(pinned) if n_vertices is None else n_vertices
            if len(pinned) != n_vertices:
                raise ValueError(f"pinned has {len(pinned)} entries for {n_vertices} vertices")
        if n_vertices is None:
            raise ValueError("FlowGenerator needs n_vertices (or pinned)")
        self.latent_dim, self.n_vertices = int(latent_dim), int(n_vertices)
        dims = [self.latent_dim] + [hidden] * layers
        blocks: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            blocks += [nn.Linear(a, b), nn.ReLU()]
        blocks.append(nn.Linear(dims[-1], 3 * self.n_vertices, bias=False))
        self.net = nn.Sequential(*blocks)
        self.reset_parameters()
        free = torch.ones(self.n_vertices, 1) if pinned is None else (~pinned).float()[:, None]
        self.register_buffer("free", free)
        self.register_buffer("offset", torch.zeros(self.n_vertices, 3))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # flow.pt files written before ``offset`` existed carry none: it is zero for them
        state_dict.setdefault(prefix + "offset", torch.zeros(self.n_vertices, 3))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def reset_parameters(self, output_std_A: float = 1e-3) -> None:
        """He initialisation of the hidden layers (zero biases), so every layer keeps the spread
        of the latents and the last hidden features still vary along every latent axis; output
        weights of ``output_std_A`` so the initial flow is almost zero.

        PyTorch's default initialisation shrinks the signal about threefold per ReLU layer: after
        six layers the features hardly depend on z, and the flow then learns a second motion only
        after hundreds of steps.
        """
        linears = [m for m in self.net if isinstance(m, nn.Linear)]
        for layer in linears[:-1]:
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)
        nn.init.normal_(linears[-1].weight, std=output_std_A)

    @classmethod
    def for_mesh(cls, mesh, latent_dim: int = 2, **kwargs) -> "FlowGenerator":
        """A generator for ``mesh`` (a TetMesh), honouring its pinned vertices."""
        return cls(latent_dim, mesh.n_vertices, pinned=mesh.pinned, **kwargs)

    def forward(self, z: Float[Tensor, "batch latent"]) -> Float[Tensor, "batch vertices 3"]:
        """Vertex displacements in Å, (B, V, 3)."""
        out = self.net(z).reshape(z.shape[0], self.n_vertices, 3) + self.offset
        return out * self.free


def interpolate_displacement(vertex_disp: Float[Tensor, "batch vertices 3"],
                             cells: Int[Tensor, "points 4"],
                             bary: Float[Tensor, "points 4"]) -> Float[Tensor, "batch points 3"]:
    """Displacement at points from their cell's vertices: ``u(p) = Σ_i b_i u_{v_i}``.

    Parameters
    ----------
    vertex_disp : (B, V, 3) Å.
    cells : (P, 4) vertex indices of each point's cell (rows of -1 for points outside the mesh).
    bary : (P, 4) barycentric coordinates.

    Returns
    -------
    (B, P, 3) Å; zero for points outside the mesh.
    """
    inside = cells[:, :1] >= 0
    weights = (bary * inside).to(vertex_disp.dtype)
    idx = cells.clamp(min=0)
    out = None
    for k in range(4):
        term = vertex_disp.index_select(1, idx[:, k]) * weights[:, k, None]
        out = term if out is None else out + term
    return out


def _csr_parts(rows: Tensor, cols: Tensor, vals: Tensor, n_rows: int, n_cols: int):
    """CSR (crow, col, val) of distinct COO entries: sorted by row, then column."""
    order = torch.argsort(rows * n_cols + cols)
    crow = torch.zeros(n_rows + 1, dtype=torch.long)
    crow[1:] = torch.cumsum(torch.bincount(rows, minlength=n_rows), 0)
    return crow, cols[order], vals[order]


def _csr(crow: Tensor, col: Tensor, val: Tensor, size: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(crow, col, val, size, check_invariants=False)


class _SparseApply(torch.autograd.Function):
    """(B, V, k) vertex values → (B, P, k) with ``W`` (P, V) and its transpose for backward."""

    @staticmethod
    def forward(ctx, x, w, w_t):
        batch, n_v, k = x.shape
        ctx.w_t, ctx.shape = w_t, (batch, n_v, k)
        y = torch.sparse.mm(w, x.permute(1, 0, 2).reshape(n_v, batch * k))
        return y.reshape(-1, batch, k).permute(1, 0, 2)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        batch, n_v, k = ctx.shape
        g = torch.sparse.mm(ctx.w_t, grad.permute(1, 0, 2).reshape(-1, batch * k))
        return g.reshape(n_v, batch, k).permute(1, 0, 2), None, None


class VertexInterpolator(nn.Module):
    """Fast barycentric interpolation from mesh vertices to fixed points, as a sparse matrix.

    Same result as :func:`interpolate_displacement` for fixed ``cells`` and ``bary``, for any
    number of components per vertex (e.g. 3-D displacements, or their 2-D image-plane part).
    The matrix ``W`` (P, V) and its transpose (for the backward pass) are kept in CSR form.

    Parameters
    ----------
    cells : (P, 4) vertex indices of each point's cell (rows of -1 outside the mesh).
    bary : (P, 4) barycentric coordinates.
    n_vertices : V.
    """

    def __init__(self, cells: Int[Tensor, "points 4"], bary: Float[Tensor, "points 4"],
                 n_vertices: int):
        super().__init__()
        cells, bary = torch.as_tensor(cells).cpu(), torch.as_tensor(bary).cpu()
        self.n_points, self.n_vertices = cells.shape[0], int(n_vertices)
        rows = torch.arange(self.n_points).repeat_interleave(4)
        cols, vals = cells.reshape(-1), bary.reshape(-1)
        keep = cols >= 0
        rows, cols, vals = rows[keep], cols[keep], vals[keep]
        parts = (_csr_parts(rows, cols, vals, self.n_points, self.n_vertices)
                 + _csr_parts(cols, rows, vals, self.n_vertices, self.n_points))
        for name, t in zip(("crow", "col", "val", "crow_t", "col_t", "val_t"), parts):
            self.register_buffer("_" + name, t, persistent=False)

    def forward(self, x: Float[Tensor, "batch vertices k"]) -> Float[Tensor, "batch points k"]:
        """Interpolated values at the points, (B, P, k)."""
        w = _csr(self._crow, self._col, self._val.to(x.dtype), (self.n_points, self.n_vertices))
        w_t = _csr(self._crow_t, self._col_t, self._val_t.to(x.dtype), (self.n_vertices, self.n_points))
        return _SparseApply.apply(x, w, w_t)
