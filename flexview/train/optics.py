"""Particles of optics groups with different pixel sizes or boxes, brought to one grid.

Merged data sets (RELION 3.1 ``data_optics`` groups, cryoSPARC exposure groups) may differ in
pixel size (say 1.24 and 1.25 Å) or in box. Training and reconstruction use one grid of ``box``
pixels spanning the extent of the *reference group*, the lowest optics-group number present
(:attr:`~flexview.io.particles.ParticleSet.extent_A`); RELION 3.1 reconstructs on that group's
grid too, so a consensus map refined there spans the same extent. The grid's pixel size is
``extent / box``.

The images of every other group are Fourier-cropped (or zero-padded in Fourier space) to
``M = round(extent_g / pixel)`` pixels, the size whose pixel is closest to the grid's, then cropped
or zero-padded in real space to ``box`` around the centre pixel (:func:`~flexview.preprocess.resample_images`).
Origins and the CTF are in Å and need no change. The reference group itself is Fourier-cropped to
``box`` exactly as a uniform set is.

Tolerances. ``M`` is an integer, so a group's pixels end up ``achieved = extent_g / M`` rather
than the grid's; the relative residual ``ε = achieved / pixel − 1`` satisfies ``|ε| ≤ 1 / (2M)``,
which moves the outermost sample of the group's images (radius ``min(M, box) / 2``) by at most a
quarter of a pixel, and its outermost Fourier sample by at most a quarter of a Fourier pixel: less
than the grid resolves. :data:`MAX_SHIFT_PX` (half a pixel) is the documented bound, checked. A
group is refused when the grid's pixels are more than :data:`MAX_UPSAMPLING` (1 %, the extent
tolerance of :func:`~flexview.preprocess.map_at_box`) finer than its own, since its images hold no
frequency beyond their own Nyquist limit: the model would be fitted to zeros there.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flexview.errors import FlexviewInputError
from flexview.io.particles import ImageSource, ParticleSet, Sampling
from flexview.preprocess import resample_images

MAX_SHIFT_PX = 0.5
MAX_UPSAMPLING = 0.01


@dataclass(frozen=True)
class Resampling:
    """How the particles ``rows`` of optics groups ``groups`` (``pixel_size`` Å, ``box`` px) reach
    a grid of ``target_box`` px at ``target_pixel_size`` Å: Fourier resizing to ``fourier_box``,
    after which their pixels measure ``achieved_pixel_size`` Å, then a real-space window."""

    groups: tuple[int, ...]
    rows: np.ndarray
    pixel_size: float
    box: int
    fourier_box: int
    target_box: int
    target_pixel_size: float

    @property
    def achieved_pixel_size(self) -> float:
        return self.pixel_size * self.box / self.fourier_box

    @property
    def mismatch(self) -> float:
        """Relative error of the achieved pixel size: achieved / target − 1."""
        return self.achieved_pixel_size / self.target_pixel_size - 1.0

    @property
    def upsampling(self) -> float:
        """How much finer the target pixels are than the group's own, relative (≤ 0: not finer)."""
        return self.pixel_size / self.target_pixel_size - 1.0

    def apply(self, images: np.ndarray) -> np.ndarray:
        """Images ``(n, box, box)`` of these particles on the target grid, ``(n, target_box, target_box)``."""
        return resample_images(images, self.fourier_box, self.target_box)

    @property
    def shift_px(self) -> float:
        """Displacement (px) of the outermost sample of these images on the grid due to ``mismatch``."""
        return abs(self.mismatch) * min(self.fourier_box, self.target_box) / 2

    def problem(self) -> str | None:
        """Why this resampling is refused (a phrase), or None when it is within tolerance."""
        groups = ("optics groups " if len(self.groups) > 1 else "optics group ") + ", ".join(map(str, self.groups))
        if self.upsampling > MAX_UPSAMPLING:
            return (f"that is {100 * self.upsampling:.1f} % finer than the {self.pixel_size:.4f} Å/px of {groups}, "
                    f"whose images hold no such frequencies (at most {100 * MAX_UPSAMPLING:g} %)")
        if self.shift_px > MAX_SHIFT_PX:
            return (f"{groups} ({self.pixel_size:.4f} Å/px, box {self.box}) can only be brought to "
                    f"{self.achieved_pixel_size:.4f} Å/px, which moves its outer pixels by {self.shift_px:.2f} px "
                    f"(at most {MAX_SHIFT_PX:g})")
        return None

    def record(self) -> dict:
        """JSON-ready description."""
        return {"optics_groups": list(self.groups), "particles": int(len(self.rows)),
                "pixel_size_A": self.pixel_size, "box": self.box, "fourier_box": self.fourier_box,
                "achieved_pixel_size_A": self.achieved_pixel_size, "relative_mismatch": self.mismatch,
                "outer_shift_px": self.shift_px}


def resampling_plan(particles: ParticleSet, box: int,
                    samplings: list[Sampling] | None = None) -> list[Resampling]:
    """One :class:`Resampling` per (pixel size, box) of ``particles`` (``samplings``, default
    :meth:`ParticleSet.samplings`, the reference group's first) onto ``box`` px spanning
    ``particles.extent_A``. Not checked: see :class:`OpticsGrid`."""
    target = particles.extent_A / box
    return [Resampling(s.groups, s.rows, s.pixel_size, s.box, max(1, round(s.extent_A / target)), int(box),
                       target) for s in (samplings or particles.samplings())]


class OpticsGrid:
    """The images of ``particles`` on the grid of ``box`` px spanning the reference group's extent.

    Raises :class:`FlexviewInputError` naming the particle file and ``field`` when a group is out
    of tolerance (:data:`MAX_UPSAMPLING`, :data:`MAX_SHIFT_PX`), with the nearest even box
    (8 ≤ box ≤ the reference box) that fits.
    """

    def __init__(self, particles: ParticleSet, box: int, *, field: str = "--box"):
        samplings = particles.samplings()
        self.plan = resampling_plan(particles, box, samplings)
        problem = next((r.problem() for r in self.plan if r.problem()), None)
        if problem is not None:
            fits = [b for b in range(8, int(particles.box) + 1, 2)
                    if not any(r.problem() for r in resampling_plan(particles, b, samplings))]
            hint = (f"; {field} {min(fits, key=lambda b: (abs(b - box), -b))} would fit every optics group"
                    if fits else "; no box fits every optics group: use them in separate runs")
            raise FlexviewInputError(f"{field} {box} puts the images at {self.plan[0].target_pixel_size:.4f} "
                                     f"Å/px but {problem}{hint}", particles.source, field)
        self.images: ImageSource = particles.images
        self.box = int(box)
        self.pixel_size = self.plan[0].target_pixel_size
        self._which = np.zeros(len(particles), dtype=np.int64)
        for k, r in enumerate(self.plan):
            self._which[r.rows] = k

    @property
    def mixed(self) -> bool:
        return len(self.plan) > 1

    def read(self, rows) -> np.ndarray:
        """Images of the particles ``rows`` (int array) on the grid, float32 ``(n, box, box)``."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if not self.mixed:
            return np.asarray(self.plan[0].apply(self.images.read(rows)), dtype=np.float32)
        out = np.empty((len(rows), self.box, self.box), dtype=np.float32)
        which = self._which[rows]
        for k in np.unique(which):
            sel = np.nonzero(which == k)[0]
            out[sel] = self.plan[k].apply(self.images.read(rows[sel]))
        return out

    def describe(self) -> str | None:
        """One line naming the optics groups resampled to the reference group's grid, from which
        pixel sizes and boxes, with the residual pixel-size error; None for a uniform set."""
        return describe_resampling(self.plan)


def describe_resampling(plan: list[Resampling]) -> str | None:
    """The line of :meth:`OpticsGrid.describe` for ``plan`` (reference first); None for one entry."""
    if len(plan) < 2:
        return None
    moved = [f"{', '.join(map(str, r.groups))} from {r.pixel_size:.4f} Å/px, box {r.box} (residual "
             f"{100 * r.mismatch:+.2f} %)" for r in plan[1:]]
    count = sum(len(r.groups) for r in plan[1:])
    return (f"optics groups: {count} of {count + len(plan[0].groups)} resampled to the grid of group "
            f"{plan[0].groups[0]} ({plan[0].pixel_size:.4f} Å/px, box {plan[0].box}): group "
            + "; group ".join(moved))
