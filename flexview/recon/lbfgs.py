"""Full-batch L-BFGS for a convex quadratic objective, with exact line search.

For a fixed flow and fixed latents the image model is linear in the canonical map, so the
least-squares objective is a quadratic ``f(x) = f₀ + g₀·x + ½ xᵀ H x`` (x: map values). Each
iteration therefore needs one Hessian–vector product ``H d`` (one pass over all particles):

- direction ``d = −B g`` by the two-loop recursion over the stored pairs ``(s, y = H s)``, with
  an initial inverse Hessian ``γ M`` (``M`` a symmetric positive preconditioner, identity by
  default; ``γ = sᵀy / yᵀMy`` of the newest pair);
- exact step ``α = −g·d / dᵀHd``, then ``x += α d``, ``g += α H d`` and
  ``f += α g·d + ½ α² dᵀHd`` (the objective is tracked exactly, without another pass).

Vectors are float64 on the device of ``grad0``; ``hvp`` may compute in float32.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["LBFGSResult", "lbfgs_quadratic"]


@dataclass
class LBFGSResult:
    """Solution ``x`` (P,) and one entry per iteration (entry 0: the start point).

    ``objective`` f(x_k); ``grad_norm`` ‖g_k‖; ``step`` α_k (0 for the start); ``seconds`` wall time
    of each iteration (its Hessian–vector product dominates).
    """

    x: Tensor
    objective: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    step: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    @property
    def iterations(self) -> int:
        return len(self.objective) - 1


def _two_loop(g: Tensor, pairs: list[tuple[Tensor, Tensor, float]], precondition) -> Tensor:
    """``B g`` for the L-BFGS inverse-Hessian approximation ``B`` (Nocedal & Wright, Alg. 7.4)."""
    q = g.clone()
    alphas = []
    for s, y, rho in reversed(pairs):
        a = rho * float(torch.dot(s, q))
        q -= a * y
        alphas.append(a)
    if pairs:
        s, y, _ = pairs[-1]
        my = precondition(y)
        gamma = float(torch.dot(s, y)) / max(float(torch.dot(y, my)), 1e-300)
        r = gamma * precondition(q)
    else:
        r = precondition(q)
    for (s, y, rho), a in zip(pairs, reversed(alphas)):
        b = rho * float(torch.dot(y, r))
        r += (a - b) * s
    return r


def lbfgs_quadratic(grad0: Tensor, f0: float, hvp: Callable[[Tensor], Tensor], *, iters: int = 20,
                    memory: int = 20, precondition: Callable[[Tensor], Tensor] | None = None,
                    callback: Callable[[int, LBFGSResult], None] | None = None,
                    tol: float = 1e-10) -> LBFGSResult:
    """Minimise ``f(x) = f0 + grad0·x + ½ xᵀ H x`` from ``x = 0``.

    Parameters
    ----------
    grad0 : (P,) gradient at x = 0.
    f0 : objective at x = 0.
    hvp : ``d ↦ H d`` (P,) → (P,), H symmetric positive semi-definite.
    iters : iterations (Hessian–vector products).
    memory : number of (s, y) pairs kept.
    precondition : ``v ↦ M v``, M symmetric positive definite (default identity).
    callback : called as ``callback(k, result)`` after iteration k.
    tol : stop early when ‖g‖ falls below ``tol · ‖grad0‖`` or the curvature along d vanishes.
    """
    precondition = precondition or (lambda v: v)
    g = grad0.detach().to(torch.float64).clone()
    x = torch.zeros_like(g)
    f = float(f0)
    g0_norm = float(g.norm())
    out = LBFGSResult(x, [f], [g0_norm], [0.0], [0.0])
    pairs: list[tuple[Tensor, Tensor, float]] = []
    for k in range(1, iters + 1):
        if float(g.norm()) <= tol * g0_norm:
            break
        t0 = time.perf_counter()
        d = -_two_loop(g, pairs, precondition)
        gd = float(torch.dot(g, d))
        if gd >= 0:                     # not a descent direction (round-off): restart
            pairs.clear()
            d = -precondition(g)
            gd = float(torch.dot(g, d))
        hd = hvp(d).detach().to(torch.float64)
        curvature = float(torch.dot(d, hd))
        if curvature <= 0 or gd >= 0:
            break
        alpha = -gd / curvature
        x += alpha * d
        g += alpha * hd
        f += alpha * gd + 0.5 * alpha * alpha * curvature
        pairs.append((alpha * d, alpha * hd, 1.0 / (alpha * alpha * curvature)))
        del pairs[:-memory]
        out.objective.append(f)
        out.grad_norm.append(float(g.norm()))
        out.step.append(alpha)
        out.seconds.append(time.perf_counter() - t0)
        if callback is not None:
            callback(k, out)
    return out
