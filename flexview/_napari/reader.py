"""napari reader: MRC maps (``.mrc``, ``.map``) and stacks (``.mrcs``) as image layers.

The voxel size from the header becomes the layer scale (Å), so maps of different pixel sizes
overlay correctly.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from flexview.io.mrc import open_stack, read_map

MAP_SUFFIXES = {".mrc", ".map", ".mrcs"}


def get_reader(path):
    """Return :func:`read_mrc_layers` for a single MRC path, else None."""
    if isinstance(path, (list, tuple)):
        return None
    return read_mrc_layers if Path(path).suffix.lower() in MAP_SUFFIXES else None


def read_mrc_layers(path) -> list[tuple]:
    """Layer data for one MRC file: ``[(data, {"name", "scale", ...}, "image")]``."""
    path = Path(path)
    if path.suffix.lower() == ".mrcs":
        from flexview.io.mrc import stack_header

        _, _, _, px = stack_header(path)
        data = open_stack(path)
        scale = (1.0, px or 1.0, px or 1.0)
    else:
        data, px = read_map(path)
        scale = (px,) * 3
    lo, hi = np.percentile(np.asarray(data[: min(len(data), 64)]), [1, 99.9])
    meta = {"name": path.stem, "scale": scale, "contrast_limits": (float(lo), float(hi) if hi > lo else float(lo) + 1)}
    return [(data, meta, "image")]
