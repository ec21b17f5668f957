"""Schedules of a training run: block coordinate descent, frequency marching, learning rates."""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    """Which block an iteration updates, the band limit it uses and its learning-rate scale.

    Parameters
    ----------
    total_iters : int
        Iterations in the whole run.
    flow_iters, map_iters : int
        Block lengths: ``flow_iters`` iterations on latents + flow (map fixed), then ``map_iters``
        on the canonical map (flow fixed), repeated.
    band_start_A, band_end_A : float
        Band limit (resolution, Å) at the first iteration and once marching is over.
    march_fraction : float
        Fraction of ``total_iters`` over which the band limit rises (linearly in frequency).
    lr_schedule : str
        ``"constant"``, or ``"cosine"``: once marching is over, both learning rates fall along a
        half cosine to ``lr_final`` times their initial value at the last iteration.
    lr_final : float
        Final learning-rate scale of the ``"cosine"`` schedule.
    """

    total_iters: int
    flow_iters: int
    map_iters: int
    band_start_A: float
    band_end_A: float
    march_fraction: float = 0.7
    lr_schedule: str = "constant"
    lr_final: float = 1.0

    def block(self, it: int) -> str:
        """``"flow"`` or ``"map"`` for iteration ``it`` (0-based)."""
        cycle = self.flow_iters + self.map_iters
        if self.map_iters == 0:
            return "flow"
        if self.flow_iters == 0:
            return "map"
        return "flow" if it % cycle < self.flow_iters else "map"

    def band_limit_A(self, it: int) -> float:
        """Band limit (Å) at iteration ``it``: 1/res rises linearly from start to end."""
        span = max(1.0, self.march_fraction * self.total_iters)
        t = min(1.0, it / span)
        f = (1 - t) / self.band_start_A + t / self.band_end_A
        return 1.0 / f

    def lr_scale(self, it: int) -> float:
        """Factor on both initial learning rates at iteration ``it``: 1 while the band limit rises,
        then (``"cosine"``) ``lr_final + (1 − lr_final) · (1 + cos πt) / 2`` with t going from 0
        at the end of marching to 1 at the last iteration."""
        start = self.march_fraction * self.total_iters
        if self.lr_schedule == "constant" or it <= start:
            return 1.0
        t = min(1.0, (it - start) / (self.total_iters - 1 - start))   # it > start, so > 0
        return self.lr_final + (1.0 - self.lr_final) * 0.5 * (1.0 + math.cos(math.pi * t))
