"""flexview: 3D Flexible Refinement of cryo-EM particles."""
import os as _os

# OpenMP threads that spin while waiting slow torch down by an order of magnitude when the cores
# are shared (a GUI, a second job); passive waiting costs nothing when they are not.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"


def load_run(path, *, device: str = "cpu"):
    """Open a run folder: config, mesh, latents and ``generate(z)`` (see :mod:`flexview.run`)."""
    from flexview.run import load_run as _load_run

    return _load_run(path, device=device)
