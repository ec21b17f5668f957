"""Reference reconstructions, high-resolution canonical maps and resolution measures."""
from flexview.recon.fsc import fsc, fsc_at, resolution_at
from flexview.recon.goldstandard import deformation_disagreement, detect_layout, write_split_json
from flexview.recon.highres import ReconProblem, full_box_model, resample_mask, solve_map
from flexview.recon.lbfgs import lbfgs_quadratic
from flexview.recon.pipeline import ReconOptions, reconstruct_half, reconstruct_run
from flexview.recon.postprocess import postprocess
from flexview.recon.rigid import output_pixel_size, reconstruct_half_maps, reconstruct_rigid
from flexview.recon.stream import ParticleStream
from flexview.recon.symmetry import symmetrise

__all__ = ["ParticleStream", "ReconOptions", "ReconProblem", "deformation_disagreement", "detect_layout", "fsc",
           "fsc_at", "full_box_model", "lbfgs_quadratic", "output_pixel_size", "postprocess", "reconstruct_half",
           "reconstruct_half_maps", "reconstruct_rigid", "reconstruct_run", "resample_mask", "resolution_at",
           "solve_map", "symmetrise", "write_split_json"]
