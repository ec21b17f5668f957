"""Built-in synthetic flexible data sets: pseudo-atomic phantoms, analytic images, ground truth."""
from flexview.synth.dataset import SynthDataset, default_map_coords, make_dataset, simulate_dataset
from flexview.synth.phantom import KINDS, Phantom, load_phantom, make_phantom
from flexview.synth.simulate import Simulation, apply_ctf, project_atoms, render_map, simulate

__all__ = ["KINDS", "Phantom", "Simulation", "SynthDataset", "apply_ctf", "default_map_coords",
           "load_phantom", "make_dataset", "make_phantom", "project_atoms", "render_map", "simulate",
           "simulate_dataset"]
