"""Finite interpolation kernels and the scatter ("splat") of point masses onto a regular grid.

A point of mass ``m`` at fractional grid index ``c`` (per axis) adds ``m · Π_a K(c_a − i_a)`` to
every grid node ``i`` within the kernel's support. Both kernels are partitions of unity
(``Σ_i K(c − i) = 1`` for every ``c``), so the total mass on the grid equals the mass pushed,
apart from taps that fall outside the grid, which are dropped.

Kernels
-------
``linear``  the hat function (bilinear / trilinear splatting), 2 taps per axis.
``cubic``   Keys' cubic convolution kernel with ``a = -0.5`` (Catmull-Rom), 4 taps per axis. It
            is interpolating (``K(0) = 1``, ``K(±1) = K(±2) = 0``), C¹, and reproduces
            quadratics, so it blurs less than the cubic B-spline; its outer lobes are negative.

The scatter is an autograd ``Function`` whose backward gathers the incoming gradient at the same
taps, so nothing of size (batch × points × taps) is kept between forward and backward. Work is
chunked over the batch so that memory stays bounded.
"""
from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor

KERNELS = ("linear", "cubic")
_TAPS = {"linear": (0, 2), "cubic": (-1, 4)}   # (offset of the first tap from floor(c), taps)
_CHUNK_ELEMENTS = {"cpu": 1 << 17, "cuda": 1 << 26}  # (batch × points × taps) per chunk


def check_kernel(kernel: str) -> str:
    """Return ``kernel`` if it names a known kernel, else raise ``ValueError``."""
    if kernel not in _TAPS:
        raise ValueError(f"unknown kernel {kernel!r}; expected one of {KERNELS}")
    return kernel


def kernel_weights(frac: Tensor, kernel: str) -> tuple[Tensor, Tensor]:
    """1-D tap weights and their derivatives for a fractional offset.

    Parameters
    ----------
    frac : Tensor (...,)
        ``c − floor(c)`` in [0, 1).
    kernel : "linear" or "cubic"

    Returns
    -------
    (w, dw) : Tensors (..., T)
        Weights of taps ``floor(c) + first + t`` (``t = 0..T-1``) and ``d w / d c``.
    """
    f = frac[..., None]
    if kernel == "linear":
        w = torch.cat([1.0 - f, f], dim=-1)
        dw = torch.cat([-torch.ones_like(f), torch.ones_like(f)], dim=-1)
        return w, dw
    f2 = f * f
    f3 = f2 * f
    w = torch.cat([-0.5 * f3 + f2 - 0.5 * f,
                   1.5 * f3 - 2.5 * f2 + 1.0,
                   -1.5 * f3 + 2.0 * f2 + 0.5 * f,
                   0.5 * f3 - 0.5 * f2], dim=-1)
    dw = torch.cat([-1.5 * f2 + 2.0 * f - 0.5,
                    4.5 * f2 - 5.0 * f,
                    -4.5 * f2 + 4.0 * f + 0.5,
                    1.5 * f2 - f], dim=-1)
    return w, dw


def kernel_value(t: Tensor, kernel: str) -> Tensor:
    """The continuous kernel ``K(t)`` (t in grid units), for references and tests."""
    a = t.abs()
    if kernel == "linear":
        return (1.0 - a).clamp(min=0.0)
    inner = 1.5 * a**3 - 2.5 * a**2 + 1.0
    outer = -0.5 * a**3 + 2.5 * a**2 - 4.0 * a + 2.0
    return torch.where(a <= 1.0, inner, torch.where(a < 2.0, outer, torch.zeros_like(a)))


def _axis_taps(c: Tensor, n: int, kernel: str) -> tuple[Tensor, Tensor, Tensor]:
    """Tap indices (clamped into [0, n)), weights and derivatives along one axis; (..., T) each.

    Taps outside the grid get weight 0 (and derivative 0).
    """
    first, taps = _TAPS[kernel]
    base = torch.floor(c)
    w, dw = kernel_weights(c - base, kernel)
    idx = base.long()[..., None] + torch.arange(first, first + taps, device=c.device)
    valid = (idx >= 0) & (idx < n)
    return idx.clamp_(0, n - 1), w * valid, dw * valid


def _spread(t: Tensor, axis: int, ndim: int) -> Tensor:
    """(b, P, T) → (b, P, 1, .., T, .., 1) with T on tap axis ``axis`` of ``ndim``."""
    shape = t.shape[:2] + (1,) * axis + t.shape[2:] + (1,) * (ndim - axis - 1)
    return t.reshape(shape)


def _taps(coords: Tensor, shape: tuple[int, ...], kernel: str):
    """Flat node index (b, P, T, .., T) and per-axis (weights, derivatives) spread over tap axes."""
    ndim = len(shape)
    flat, weights, derivs = 0, [], []
    stride = math.prod(shape)
    for axis, n in enumerate(shape):
        stride //= n
        idx, w, dw = _axis_taps(coords[..., axis], n, kernel)
        flat = flat + _spread(idx, axis, ndim) * stride
        weights.append(_spread(w, axis, ndim))
        derivs.append(_spread(dw, axis, ndim))
    return flat, weights, derivs


def _product(factors: list[Tensor]) -> Tensor:
    out = factors[0]
    for f in factors[1:]:
        out = out * f
    return out


def _chunk(batch: int, points: int, kernel: str, ndim: int, device: torch.device) -> int:
    per_item = max(1, points * _TAPS[kernel][1] ** ndim)
    budget = _CHUNK_ELEMENTS["cuda" if device.type == "cuda" else "cpu"]
    return max(1, min(batch, budget // per_item))


class _Splat(torch.autograd.Function):
    """values (P,), coords (B, P, d) fractional indices → grids (B, *shape) (× ``scale``)."""

    @staticmethod
    def forward(ctx, values, coords, shape, kernel, scale):
        batch, points, ndim = coords.shape
        size = math.prod(shape)
        out = values.new_zeros(batch, size)
        step = _chunk(batch, points, kernel, ndim, coords.device)
        for b0 in range(0, batch, step):
            flat, weights, _ = _taps(coords[b0:b0 + step], shape, kernel)
            mass = _product(weights) * values.view((1, points) + (1,) * ndim)
            out[b0:b0 + step].scatter_add_(1, flat.reshape(flat.shape[0], -1),
                                           mass.reshape(flat.shape[0], -1))
        ctx.save_for_backward(values, coords)
        ctx.shape, ctx.kernel, ctx.scale = shape, kernel, scale
        return (out * scale).reshape(batch, *shape)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        values, coords = ctx.saved_tensors
        shape, kernel = ctx.shape, ctx.kernel
        batch, points, ndim = coords.shape
        grad = grad_out.reshape(batch, -1) * ctx.scale
        grad_values = torch.zeros_like(values) if ctx.needs_input_grad[0] else None
        grad_coords = torch.zeros_like(coords) if ctx.needs_input_grad[1] else None
        tap_dims = tuple(range(2, 2 + ndim))
        step = _chunk(batch, points, kernel, ndim, coords.device)
        for b0 in range(0, batch, step):
            flat, weights, derivs = _taps(coords[b0:b0 + step], shape, kernel)
            g = grad[b0:b0 + step].gather(1, flat.reshape(flat.shape[0], -1)).reshape(flat.shape)
            for axis in range(ndim):
                # contract every other axis with its weights, keep this one
                r = g
                for other in range(ndim):
                    if other != axis:
                        r = (r * weights[other]).sum(dim=2 + other, keepdim=True)
                if grad_coords is not None:
                    grad_coords[b0:b0 + step, :, axis] = (r * derivs[axis]).sum(tap_dims) * values
                if axis == 0 and grad_values is not None:
                    grad_values += (r * weights[0]).sum(tap_dims).sum(0)
        return grad_values, grad_coords, None, None, None


def splat(values: Float[Tensor, "points"], coords: Float[Tensor, "batch points ndim"],
          shape: tuple[int, ...], kernel: str = "linear", scale: float = 1.0
          ) -> Float[Tensor, "batch *grid"]:
    """Scatter point masses onto ``batch`` grids of ``shape`` with a finite kernel.

    Parameters
    ----------
    values : (P,) masses, same dtype as ``coords``.
    coords : (B, P, d) fractional grid indices, axis order matching ``shape`` (e.g. (row, col)).
    shape : grid shape, ``d`` entries.
    kernel : "linear" or "cubic".
    scale : multiplies the result (e.g. the pixel size for a line integral in Å).

    Returns
    -------
    Tensor (B, *shape); differentiable w.r.t. ``values`` and ``coords``.
    """
    check_kernel(kernel)
    if coords.shape[-1] != len(shape):
        raise ValueError(f"coords have {coords.shape[-1]} components for a {len(shape)}-D grid")
    return _Splat.apply(values, coords, tuple(int(s) for s in shape), kernel, float(scale))
