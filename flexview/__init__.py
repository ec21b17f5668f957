"""flexview: 3D Flexible Refinement of cryo-EM particles."""
import os as _os

from flexview._version import __version__

# OpenMP threads that spin while waiting slow torch down by an order of magnitude when the cores
# are shared (a GUI, a second job); passive waiting costs nothing when they are not.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__all__ = ["__version__", "load_run"]


def load_run(path, *, device: str = "cpu"):
    """Open a run folder: config, mesh, latents and ``generate(z)`` (see :mod:`flexview.run`)."""
    from flexview.run import load_run as _load_run

    return _load_run(path, device=device)
