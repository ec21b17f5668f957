"""CTF against closed forms: zeros, astigmatism direction, CTF(0), envelope, phase shift, λ."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from flexview.model import CTFParams, electron_wavelength, evaluate_ctf, image_frequencies


def params(**kw) -> dict[str, torch.Tensor]:
    base = dict(defocus_u_A=15000.0, defocus_v_A=15000.0, defocus_angle_deg=0.0, voltage_kv=300.0,
                cs_mm=0.0, amplitude_contrast=0.0, phase_shift_deg=0.0, bfactor_A2=0.0, scale=1.0)
    base.update(kw)
    return CTFParams(**base).batch(dtype=torch.float64)


def at(p, k: np.ndarray, angle_deg: float | np.ndarray = 0.0) -> np.ndarray:
    """CTF at radii ``k`` (Å⁻¹) along direction ``angle_deg`` (from +x towards +y)."""
    a = np.deg2rad(angle_deg)
    kx = torch.tensor(np.atleast_1d(k * np.cos(a)))[None]
    ky = torch.tensor(np.atleast_1d(k * np.sin(a)))[None]
    return evaluate_ctf(p, ky, kx)[0, 0].numpy()


def test_wavelength():
    # relativistic λ = h / sqrt(2 m e V (1 + e V / 2 m c²)), published values
    assert electron_wavelength(300.0) == pytest.approx(0.019687, abs=2e-6)
    assert electron_wavelength(200.0) == pytest.approx(0.025079, abs=2e-6)
    assert electron_wavelength(100.0) == pytest.approx(0.037014, abs=2e-6)


def test_zeros_without_aberration():
    """No Cs, no amplitude contrast: CTF = sin(π λ Δz k²), zeros at k² = n / (λ Δz)."""
    dz = 12000.0
    lam = electron_wavelength(300.0)
    p = params(defocus_u_A=dz, defocus_v_A=dz)
    n = np.arange(1, 6)
    np.testing.assert_allclose(at(p, np.sqrt(n / (lam * dz))), 0.0, atol=1e-9)
    np.testing.assert_allclose(at(p, np.sqrt((n - 0.5) / (lam * dz))), (-1.0) ** (n + 1), atol=1e-9)
    assert at(p, np.array([0.02]))[0] > 0               # underfocus: first lobe positive


def test_spherical_aberration_and_amplitude_contrast():
    lam, dz, cs, w = electron_wavelength(200.0), 20000.0, 2.7, 0.07
    p = params(voltage_kv=200.0, defocus_u_A=dz, defocus_v_A=dz, cs_mm=cs, amplitude_contrast=w)
    k = np.linspace(0.0, 0.3, 25)
    chi = np.pi * lam * dz * k**2 - np.pi / 2 * cs * 1e7 * lam**3 * k**4
    want = np.sqrt(1 - w**2) * np.sin(chi) + w * np.cos(chi)
    np.testing.assert_allclose(at(p, k), want, atol=1e-9)


def test_value_at_origin_is_amplitude_contrast():
    p = params(amplitude_contrast=0.1, scale=2.0, defocus_u_A=25000.0, defocus_v_A=5000.0, cs_mm=2.7)
    assert at(p, np.array([0.0]))[0] == pytest.approx(0.2, abs=1e-12)


def test_astigmatism_direction():
    """Δz = U along defocus_angle (measured from +x towards +y), V perpendicular to it."""
    lam, u, v, angle = electron_wavelength(300.0), 20000.0, 12000.0, 30.0
    p = params(defocus_u_A=u, defocus_v_A=v, defocus_angle_deg=angle)
    k_u, k_v = np.sqrt(1 / (lam * u)), np.sqrt(1 / (lam * v))          # first zeros
    assert abs(at(p, np.array([k_u]), angle)[0]) < 1e-9
    assert abs(at(p, np.array([k_v]), angle + 90)[0]) < 1e-9
    assert abs(at(p, np.array([k_u]), angle + 90)[0]) > 0.3
    assert abs(at(p, np.array([k_u]), -angle)[0]) > 0.3             # the mirror direction differs
    # the same on the image frequency grid: row index is +y, column +x
    box, px = 64, 1.0
    ky, kx = image_frequencies(box, px, dtype=torch.float64)
    ctf = evaluate_ctf(p, ky, kx)[0]
    a = np.deg2rad(angle)
    k = np.hypot(3, 4) / (box * px)            # sample (row 4, col 3): angle 53.13° from +x
    dz = (u + v) / 2 + (u - v) / 2 * np.cos(2 * (np.arctan2(4, 3) - a))
    assert float(ctf[4, 3]) == pytest.approx(np.sin(np.pi * lam * dz * k**2), abs=1e-12)
    assert float(ctf[-4, 3]) != pytest.approx(float(ctf[4, 3]), abs=1e-3)   # (-y) is another direction


def test_bfactor_envelope_and_phase_shift():
    k = np.linspace(0.01, 0.4, 20)
    plain = at(params(cs_mm=2.7, amplitude_contrast=0.1), k)
    damped = at(params(cs_mm=2.7, amplitude_contrast=0.1, bfactor_A2=80.0), k)
    np.testing.assert_allclose(damped, plain * np.exp(-80.0 * k**2 / 4), atol=1e-12)
    # a 90° phase plate with no amplitude contrast: CTF = cos(π λ Δz k²), 1 at the origin
    lam = electron_wavelength(300.0)
    shifted = at(params(phase_shift_deg=90.0), k)
    np.testing.assert_allclose(shifted, np.cos(np.pi * lam * 15000.0 * k**2), atol=1e-9)
    assert at(params(phase_shift_deg=90.0), np.array([0.0]))[0] == pytest.approx(1.0)
