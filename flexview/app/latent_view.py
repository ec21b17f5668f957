"""A 2-D view of latent space for the scatter plots: two latent axes or the first two principal
components, with the maps between view coordinates ``(u, v)`` and latent points ``z`` (K,).

Plain NumPy (no Qt): the Explore, Movie and Select widgets and their tests share it.
"""
from __future__ import annotations

import numpy as np
from matplotlib.path import Path as PolygonPath

PCA = "PCA"


def view_names(latent_dim: int) -> list[str]:
    """The views offered for ``latent_dim`` dimensions: ``"z1 / z2"`` ... and ``"PCA"`` when K > 2."""
    if latent_dim == 1:
        return ["z1"]
    pairs = [f"z{i + 1} / z{j + 1}" for i in range(latent_dim) for j in range(i + 1, latent_dim)]
    return ([PCA] + pairs) if latent_dim > 2 else pairs


class LatentView:
    """Project latents (M, K) onto a plane and back.

    Parameters
    ----------
    latents : (M, K) latent coordinates of the particles.
    name : one of :func:`view_names` (default: ``"z1 / z2"`` for K = 2, ``"PCA"`` for K > 2).

    Attributes
    ----------
    origin : (K,) the latent point at view coordinates (0, 0) (zeros for axis views, the mean for PCA).
    basis : (K, 2) orthonormal columns spanning the plane.
    points : (M, 2) view coordinates of every particle.
    labels : axis labels of the plane.
    """

    def __init__(self, latents: np.ndarray, name: str | None = None):
        self.latents = np.asarray(latents, dtype=np.float64)
        if self.latents.ndim != 2 or len(self.latents) == 0:
            raise ValueError(f"latents must be a non-empty (M, K) array, got shape {self.latents.shape}")
        k = self.latents.shape[1]
        self.name = name or view_names(k)[0]
        if self.name not in view_names(k):
            raise ValueError(f"view {self.name!r} is not one of {view_names(k)}")
        self.origin, self.basis, self.labels = self._plane(k)
        self.points = self.project(self.latents)

    @property
    def latent_dim(self) -> int:
        return self.latents.shape[1]

    def _plane(self, k: int) -> tuple[np.ndarray, np.ndarray, tuple[str, str]]:
        if self.name == PCA:
            mean = self.latents.mean(axis=0)
            _, s, vt = np.linalg.svd(self.latents - mean, full_matrices=False)
            basis = vt[:2].T * np.sign(vt[:2, np.argmax(np.abs(vt[:2]), axis=1)].diagonal())
            share = s ** 2 / max(float((s ** 2).sum()), 1e-30) * 100
            return mean, basis, (f"PC1 ({share[0]:.0f} %)", f"PC2 ({share[1]:.0f} %)")
        axes = [int(a.strip()[1:]) - 1 for a in self.name.split("/")]
        basis = np.zeros((k, 2))
        for col, axis in enumerate(axes):
            basis[axis, col] = 1.0
        labels = (f"z{axes[0] + 1}", f"z{axes[1] + 1}" if len(axes) > 1 else "")
        return np.zeros(k), basis, labels

    def project(self, z: np.ndarray) -> np.ndarray:
        """View coordinates ``(u, v)`` of latent points ``z`` (..., K) → (..., 2)."""
        return (np.asarray(z, dtype=np.float64) - self.origin) @ self.basis

    def lift(self, uv, base: np.ndarray) -> np.ndarray:
        """The latent point (K,) float32 at view coordinates ``uv`` that keeps the components of
        ``base`` (K,) outside the plane (for K = 2 axis views: simply ``(u, v)``)."""
        base = np.asarray(base, dtype=np.float64)
        delta = np.asarray(uv, dtype=np.float64) - self.project(base)
        return (base + delta @ self.basis.T).astype(np.float32)

    def extent(self, low: float = 1.0, high: float = 99.0, pad: float = 0.25) -> tuple[float, float, float, float]:
        """``(u0, u1, v0, v1)`` covering the particles but the outermost percent on each side
        (padded), never empty."""
        lo = np.percentile(self.points, low, axis=0)
        hi = np.percentile(self.points, high, axis=0)
        span = np.maximum(hi - lo, 1e-6)
        lo, hi = lo - pad * span, hi + pad * span
        small = (hi - lo) < 0.5
        centre = (hi + lo) / 2
        lo = np.where(small, centre - 0.25, lo)
        hi = np.where(small, centre + 0.25, hi)
        return float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])

    def density(self, bins: int = 200, mask: np.ndarray | None = None,
                extent: tuple[float, float, float, float] | None = None) -> np.ndarray:
        """Particle counts per bin over :meth:`extent`, shape (bins, bins) indexed ``[v, u]``.

        ``mask`` (M,) bool counts only the selected particles. O(M), fast for 10⁶ particles.
        """
        u0, u1, v0, v1 = extent or self.extent()
        pts = self.points if mask is None else self.points[np.asarray(mask, dtype=bool)]
        iu = np.floor((pts[:, 0] - u0) / (u1 - u0) * bins).astype(np.int64)
        iv = np.floor((pts[:, 1] - v0) / (v1 - v0) * bins).astype(np.int64)
        keep = (iu >= 0) & (iu < bins) & (iv >= 0) & (iv < bins)
        flat = np.bincount(iv[keep] * bins + iu[keep], minlength=bins * bins)
        return flat.reshape(bins, bins)

    def inside(self, polygon: np.ndarray) -> np.ndarray:
        """Particles whose view coordinates fall inside ``polygon`` (P, 2) (closed implicitly), (M,) bool."""
        polygon = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
        if len(polygon) < 3:
            return np.zeros(len(self.points), dtype=bool)
        return PolygonPath(polygon).contains_points(self.points)

    def along(self, polyline: np.ndarray, frames: int, base: np.ndarray) -> np.ndarray:
        """``frames`` latent points (frames, K) evenly spaced by arc length along ``polyline`` (P, 2)
        drawn in view coordinates (components outside the plane taken from ``base``)."""
        line = np.asarray(polyline, dtype=np.float64).reshape(-1, 2)
        if len(line) < 2:
            raise ValueError("a path needs at least two points")
        seg = np.linalg.norm(np.diff(line, axis=0), axis=1)
        arc = np.r_[0.0, np.cumsum(seg)]
        t = np.linspace(0.0, arc[-1], frames)
        uv = np.stack([np.interp(t, arc, line[:, 0]), np.interp(t, arc, line[:, 1])], axis=1)
        return np.stack([self.lift(p, base) for p in uv])
