"""Reading and writing particle metadata (RELION STAR, cryoSPARC .cs), maps, image stacks and meshes."""
from flexview.io.cs import read_cs
from flexview.io.cs_write import write_cs
from flexview.io.formats import read_particles
from flexview.io.meshfile import read_mesh, write_mesh
from flexview.io.mrc import open_stack, read_map, stack_header, write_map, write_stack
from flexview.io.particles import (
    ArrayImages,
    ImageSource,
    ParticleSet,
    SignedImages,
    StackImages,
    StackReferences,
    SubsetImages,
    stack_references,
)
from flexview.io.star import read_star
from flexview.io.star_write import write_star
from flexview.io.summary import particle_summary

__all__ = [
    "ArrayImages", "ImageSource", "ParticleSet", "SignedImages", "StackImages", "StackReferences",
    "SubsetImages", "open_stack", "particle_summary", "read_cs", "read_map", "read_mesh", "read_particles",
    "read_star", "stack_header", "stack_references", "write_cs", "write_map", "write_mesh", "write_stack",
    "write_star",
]
