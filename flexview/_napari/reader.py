"""napari readers: MRC maps (``.mrc``, ``.map``) and stacks (``.mrcs``) as image layers; a
flexview run folder opens in the Explore widget.

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


def get_run_reader(path):
    """Return :func:`read_run_folder` for a flexview run folder (``config.json`` and ``flow.pt``), else None."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    folder = Path(path)
    if folder.is_dir() and (folder / "config.json").is_file() and (folder / "flow.pt").is_file():
        return read_run_folder
    return None


def read_run_folder(path) -> list[tuple]:
    """Open a run folder in the Explore widget of the current viewer.

    Returns napari's "handled, no layers" sentinel ``[(None,)]``: Explore adds the density layer
    itself. Without a viewer (scripts), the canonical map is returned as an image layer.
    """
    import napari

    folder = Path(path[0] if isinstance(path, (list, tuple)) else path)
    viewer = napari.current_viewer()
    if viewer is None:
        return read_mrc_layers(folder / "canonical.mrc")
    from flexview._napari.explore import open_run_in_viewer

    open_run_in_viewer(viewer, folder)
    return [(None,)]
