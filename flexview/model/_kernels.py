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
chunked over the batch so that memory stays bounded (and, on CPU, in cache). Points are scattered
onto a grid padded by T + 1 nodes per side, then cropped; coordinates are clamped into the padding,
so no per-tap bounds checks are needed.
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


def _padded(shape: tuple[int, ...], kernel: str) -> tuple[int, ...]:
    """Grid with ``T + 1`` extra nodes on each side, where clamped points' taps land harmlessly."""
    return tuple(n + 2 * _pad(kernel) for n in shape)


def _pad(kernel: str) -> int:
    return _TAPS[kernel][1] + 1


def _tap_offsets(padded: tuple[int, ...], kernel: str, device) -> Tensor:
    """Flat offsets of the T^d taps from the first one, axis 0 slowest, shape (T^d,)."""
    taps = _TAPS[kernel][1]
    strides = [math.prod(padded[a + 1:]) for a in range(len(padded))]
    grids = torch.meshgrid(*[torch.arange(taps, device=device) * s for s in strides], indexing="ij")
    return sum(grids).reshape(-1)


def _taps(coords: Tensor, shape: tuple[int, ...], kernel: str):
    """Flat indices (b, P, T^d) into the padded grid, and per-axis weights and derivatives.

    Each coordinate is first clamped to ``[−T/2 − 1, n + T/2]``: a point there has all its taps
    in the padding (outside the grid), where they are cropped away and see zero gradient.
    """
    first, taps = _TAPS[kernel]
    padded = _padded(shape, kernel)
    base, weights, derivs = 0, [], []
    for axis, n in enumerate(shape):
        c = coords[..., axis].clamp(-taps / 2 - 1, n + taps / 2)
        i0 = torch.floor(c)
        w, dw = kernel_weights(c - i0, kernel)
        base = base + (i0.long() + (_pad(kernel) + first)) * math.prod(padded[axis + 1:])
        weights.append(w)
        derivs.append(dw)
    flat = base[..., None] + _tap_offsets(padded, kernel, coords.device)
    return flat, weights, derivs


def _outer(factors: list[Tensor]) -> Tensor:
    """Outer product over the last axis: d tensors (b, P, T) → (b, P, T^d), axis 0 slowest."""
    out = factors[0]
    for f in factors[1:]:
        out = (out[..., :, None] * f[..., None, :]).flatten(-2)
    return out


def _contract_others(g: Tensor, weights: list[Tensor], axis: int) -> Tensor:
    """Contract taps (b, P, T, .., T) with the weights of every axis but ``axis`` → (b, P, T)."""
    ndim = len(weights)
    for other in reversed(range(ndim)):
        if other != axis:
            w = weights[other].reshape(weights[other].shape[:2] + (1,) * other + (-1,)
                                       + (1,) * (g.ndim - 3 - other))
            g = (g * w).sum(dim=2 + other)
    return g


def _crop(grid: Tensor, shape: tuple[int, ...], kernel: str) -> Tensor:
    """(B, *padded) → (B, *shape)."""
    pad = _pad(kernel)
    return grid[(slice(None),) + tuple(slice(pad, pad + n) for n in shape)]


def _blocks(coords: Tensor, kernel: str):
    """(batch slice, point slice) blocks of at most a budget of (batch × points × taps) each."""
    batch, points, ndim = coords.shape
    taps = _TAPS[kernel][1] ** ndim
    budget = _CHUNK_ELEMENTS["cuda" if coords.device.type == "cuda" else "cpu"]
    step_p = max(1, min(points, budget // taps))
    step_b = max(1, min(batch, budget // (taps * step_p)))
    for b0 in range(0, batch, step_b):
        for p0 in range(0, points, step_p):
            yield slice(b0, b0 + step_b), slice(p0, p0 + step_p)


class _Splat(torch.autograd.Function):
    """values (P,), coords (B, P, d) fractional indices → grids (B, *shape) (× ``scale``)."""

    @staticmethod
    def forward(ctx, values, coords, shape, kernel, scale):
        batch = coords.shape[0]
        padded = _padded(shape, kernel)
        out = values.new_zeros(batch, math.prod(padded))
        for bs, ps in _blocks(coords, kernel):
            flat, weights, _ = _taps(coords[bs, ps], shape, kernel)
            mass = _outer([weights[0] * values[ps, None]] + weights[1:])
            out[bs].scatter_add_(1, flat.flatten(1), mass.flatten(1))
        ctx.save_for_backward(values, coords)
        ctx.shape, ctx.kernel, ctx.scale = shape, kernel, scale
        return _crop(out.reshape(batch, *padded), shape, kernel).mul(scale)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        values, coords = ctx.saved_tensors
        shape, kernel = ctx.shape, ctx.kernel
        batch, _, ndim = coords.shape
        grad = grad_out.new_zeros(batch, *_padded(shape, kernel))
        _crop(grad, shape, kernel).copy_(grad_out).mul_(ctx.scale)
        grad = grad.reshape(batch, -1)
        grad_values = torch.zeros_like(values) if ctx.needs_input_grad[0] else None
        grad_coords = torch.zeros_like(coords) if ctx.needs_input_grad[1] else None
        for bs, ps in _blocks(coords, kernel):
            flat, weights, derivs = _taps(coords[bs, ps], shape, kernel)
            g = grad[bs].gather(1, flat.flatten(1))
            g = g.reshape(flat.shape[:2] + (_TAPS[kernel][1],) * ndim)
            for axis in range(ndim):
                r = _contract_others(g, weights, axis)          # (b, P, T): this axis' taps
                if grad_coords is not None:
                    grad_coords[bs, ps, axis] = (r * derivs[axis]).sum(-1) * values[ps]
                if axis == 0 and grad_values is not None:
                    grad_values[ps] += (r * weights[0]).sum(-1).sum(0)
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
