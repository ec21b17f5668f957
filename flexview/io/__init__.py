"""Reading and writing particle metadata (RELION STAR, cryoSPARC .cs), maps and image stacks."""
from flexview.io.cs import read_cs, write_cs
from flexview.io.mrc import open_stack, read_map, stack_header, write_map, write_stack
from flexview.io.particles import (
    ArrayImages,
    ImageSource,
    ParticleSet,
    SignedImages,
    StackImages,
    StackReferences,
    SubsetImages,
    read_particles,
    stack_references,
)
from flexview.io.star import read_star, write_star

__all__ = [
    "ArrayImages", "ImageSource", "ParticleSet", "SignedImages", "StackImages", "StackReferences",
    "SubsetImages", "open_stack", "read_cs", "read_map", "read_particles", "read_star", "stack_header",
    "stack_references", "write_cs", "write_map", "write_stack", "write_star",
]
