"""The Gauss–Newton latent step against the closed-form minimiser of a linear model.

For ``render(z) = A z + c`` the cost ``Σ w |A z + c − t|² + ½ p |z|²`` is quadratic in z; its
minimiser is computed here independently, as a real linear least-squares problem solved by
``numpy.linalg.lstsq``.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from flexview.train.latents import gauss_newton

B, K, F = 6, 3, 40


def linear_problem(seed: int, complex_valued: bool, per_particle_weight: bool):
    """Random ``A`` (B, F, K), ``c``, ``t`` (B, F), weights and start ``z0`` (B, K), float64."""
    g = torch.Generator().manual_seed(seed)
    dtype = torch.complex128 if complex_valued else torch.float64

    def draw(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    a, c, t = draw(B, F, K), draw(B, F), draw(B, F)
    w = torch.rand(B, F, generator=g, dtype=torch.float64) if per_particle_weight else \
        torch.rand(F, generator=g, dtype=torch.float64)
    z0 = 3.0 * torch.randn(B, K, generator=g, dtype=torch.float64)
    return a, c, t, w, z0


def linear_render(a, c):
    return lambda z: torch.einsum("bfk,bk->bf", a, z.to(a.dtype)) + c


def cost(render, t, w, p):
    def f(z):
        r = render(z) - t
        return (w * r.abs() ** 2).sum(-1) + 0.5 * p * (z ** 2).sum(-1)
    return f


def least_squares_minimiser(a, c, t, w, p) -> np.ndarray:
    """argmin_z ‖√w (A z + c − t)‖² + ½ p ‖z‖², one real least-squares problem per particle."""
    a, c, t = a.numpy(), c.numpy(), t.numpy()
    w = np.broadcast_to(w.numpy(), (B, F))
    out = np.empty((B, K))
    for i in range(B):
        sw = np.sqrt(w[i])[:, None]
        rows = [sw * a[i].real, sw * a[i].imag, np.sqrt(p / 2) * np.eye(K)]
        rhs = [sw[:, 0] * (t[i] - c[i]).real, sw[:, 0] * (t[i] - c[i]).imag, np.zeros(K)]
        out[i] = np.linalg.lstsq(np.concatenate(rows), np.concatenate(rhs), rcond=None)[0]
    return out


@pytest.mark.parametrize("complex_valued", [True, False])
@pytest.mark.parametrize("per_particle_weight", [False, True])
def test_one_undamped_step_lands_on_the_minimiser_of_a_linear_model(complex_valued, per_particle_weight):
    a, c, t, w, z0 = linear_problem(0, complex_valued, per_particle_weight)
    p = 0.7
    z = gauss_newton(linear_render(a, c), t, w, z0, prior_weight=p, h=0.3, max_move=1e6, damping=0.0)
    expected = least_squares_minimiser(a, c, t, w, p)
    np.testing.assert_allclose(z.numpy(), expected, rtol=1e-8, atol=1e-10)
    assert (z - z0).norm(dim=1).min() > 0.5                       # a real move, not the start


def test_max_move_clips_the_step_along_the_newton_direction():
    a, c, t, w, z0 = linear_problem(1, True, False)
    p = 0.7
    target = torch.as_tensor(least_squares_minimiser(a, c, t, w, p))
    distance = (target - z0).norm(dim=1)
    max_move = float(distance.median())
    far = distance > max_move
    assert far.any() and (~far).any()
    z = gauss_newton(linear_render(a, c), t, w, z0, prior_weight=p, max_move=max_move, damping=0.0)
    step = z - z0
    direction = (target - z0) / distance[:, None]
    torch.testing.assert_close(step[far].norm(dim=1), torch.full((int(far.sum()),), max_move,
                                                                   dtype=torch.float64))
    torch.testing.assert_close(step[far], max_move * direction[far])
    torch.testing.assert_close(z[~far], target[~far])              # within reach: the minimiser


def test_a_step_that_overshoots_on_a_saturating_model_is_rejected():
    """render(z) = tanh(z): on the flat tail the linearisation asks for a huge step, which lands
    on the other tail where the cost is higher; near zero the step helps."""
    z0 = torch.tensor([[3.0], [-2.5], [0.3], [0.0]], dtype=torch.float64)
    t = torch.tensor([[0.5], [-0.3], [0.5], [-0.4]], dtype=torch.float64)
    w = torch.ones(1, dtype=torch.float64)
    p = 1e-4
    f = cost(torch.tanh, t, w, p)
    slope = 1 - torch.tanh(z0) ** 2
    newton = ((t - torch.tanh(z0)) / slope)[:, 0]                  # the linearised minimiser's offset
    assert (newton[:2].abs() > 5).all()
    z = gauss_newton(torch.tanh, t, w, z0, prior_weight=p, h=1e-4, max_move=100.0)
    assert torch.equal(z[:2], z0[:2])                               # kept: the step would raise the cost
    assert (f(z0 + newton[:, None])[:2] > f(z0)[:2]).all()
    assert (f(z)[2:] < f(z0)[2:] - 1e-3).all()                      # moved where the step helps
    assert (z[2:] - torch.atanh(t[2:])).abs().max() < 0.1


def test_the_cost_never_increases_on_a_rough_complex_model():
    g = torch.Generator().manual_seed(2)
    n, k, f = 300, 2, 16
    freq = torch.randn(k, f, generator=g, dtype=torch.float64) * 2
    phase = torch.rand(n, f, generator=g, dtype=torch.float64) * 6

    def render(z):
        return torch.exp(1j * (z @ freq + phase)) + 0.3 * torch.sin(3 * z @ freq)

    t = render(torch.randn(n, k, generator=g, dtype=torch.float64))
    w = torch.rand(f, generator=g, dtype=torch.float64)
    z0 = torch.randn(n, k, generator=g, dtype=torch.float64)
    objective = cost(render, t, w, 1.0)
    z = gauss_newton(render, t, w, z0, prior_weight=1.0, max_move=2.0)
    before, after = objective(z0), objective(z)
    assert (after <= before).all()
    assert torch.equal(z[after == before], z0[after == before])
    assert (after < before - 1e-6).float().mean() > 0.5
