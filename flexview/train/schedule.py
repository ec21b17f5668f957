"""Schedules of a training run: block coordinate descent and frequency marching."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    """Which block an iteration updates and the band limit it uses.

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
    """

    total_iters: int
    flow_iters: int
    map_iters: int
    band_start_A: float
    band_end_A: float
    march_fraction: float = 0.7

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
