"""Sample data (File ▸ Open Sample ▸ flexview): the built-in synthetic flexible protein.

The data set is simulated once into a cache folder and reused; the sample shows its consensus map
and the first particle images. The Data widget's "Sample dataset" button loads the same files.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from flexview.io import read_map, read_particles

SAMPLE = dict(kind="hinge", n_particles=600, box=64, snr=0.1, seed=0)
N_SHOWN = 16


def sample_folder() -> Path:
    """Where the sample data set lives: ``$FLEXVIEW_SAMPLE_DIR`` or a folder in the temp directory."""
    return Path(os.environ.get("FLEXVIEW_SAMPLE_DIR") or Path(tempfile.gettempdir()) / "flexview-sample")


def ensure_sample_dataset(folder: str | Path | None = None) -> Path:
    """Simulate the sample data set into ``folder`` unless it is already there; return the folder."""
    from flexview.synth import make_dataset

    folder = Path(folder) if folder else sample_folder()
    needed = ("particles.star", "particles.mrcs", "consensus.mrc", "dataset.json")
    if not all((folder / name).is_file() for name in needed):
        make_dataset(folder, **SAMPLE)
    return folder


def make_sample_data() -> list[tuple]:
    """Layer data: the consensus map and the first particle images, both with scale in Å."""
    folder = ensure_sample_dataset()
    volume, voxel = read_map(folder / "consensus.mrc")
    particles = read_particles(folder / "particles.star")
    images = particles.images.read(slice(0, N_SHOWN))
    px = particles.pixel_size
    extent = particles.box * px
    return [
        (volume, {"name": "consensus (sample)", "scale": (voxel,) * 3,
                  "metadata": {"flexview_dataset": str(folder)}}, "image"),
        # the images stand beside the map and page through with the slider of its slices
        (images, {"name": "particles (sample)", "scale": (extent / len(images), px, px),
                  "translate": (0.0, 0.0, extent + 4 * px), "colormap": "gray",
                  "metadata": {"flexview_dataset": str(folder)}}, "image"),
    ]
