"""flexview: 3D Flexible Refinement of cryo-EM particles."""
__version__ = "0.1.0"


def load_run(path, *, device: str = "cpu"):
    """Open a run folder: config, mesh, latents and ``generate(z)`` (see :mod:`flexview.run`)."""
    from flexview.run import load_run as _load_run

    return _load_run(path, device=device)
