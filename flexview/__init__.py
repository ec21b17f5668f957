"""flexview: 3D Flexible Refinement of cryo-EM particles."""
__version__ = "0.1.0"
