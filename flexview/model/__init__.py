"""The 3DFlex image model: poses, CTF, grids, mesh, flow, convection/projection, losses."""
from flexview.model.canonical import CanonicalMap
from flexview.model.convect import (KERNELS, convect_project, convect_volume, image_coords,
                                    projection_affine)
from flexview.model.ctf import CTF, CTFParams, electron_wavelength, evaluate_ctf
from flexview.model.cutmesh import cut_mesh, parse_fuse
from flexview.model.flow import FlowGenerator, VertexInterpolator, interpolate_displacement
from flexview.model.forward import CTF_PAD, FlexForwardModel
from flexview.model.grid import (centre_index, coords_to_index, fft2_centered, fftn_centered,
                                 ifft2_centered, ifftn_centered, image_frequencies, index_to_coords,
                                 radial_index, shift_phase, to_numpy, volume_frequencies,
                                 voxel_coords)
from flexview.model.loss import (band_mask, data_loss, particle_spectra, radial_weight,
                                 rfft_multiplicity)
from flexview.model.mesh import (TetMesh, auto_threshold, build_regular_mesh, density_mask, locate,
                                 rest_inverse)
from flexview.model.pose import (Pose, euler_to_matrix, matrix_to_euler, matrix_to_rotvec,
                                 random_rotations, rotvec_to_matrix)
from flexview.model.rigidity import (cell_affine, deformation_gradient, latent_prior,
                                     polar_rotation, rigidity_from_gradient, rigidity_loss)

__all__ = [
    "CanonicalMap", "KERNELS", "convect_project", "convect_volume", "image_coords", "projection_affine",
    "CTF", "CTFParams", "electron_wavelength", "evaluate_ctf", "cut_mesh", "parse_fuse",
    "FlowGenerator", "VertexInterpolator", "interpolate_displacement", "CTF_PAD", "FlexForwardModel",
    "centre_index", "coords_to_index", "fft2_centered", "fftn_centered", "ifft2_centered",
    "ifftn_centered", "image_frequencies", "index_to_coords", "radial_index", "shift_phase",
    "to_numpy", "volume_frequencies", "voxel_coords",
    "band_mask", "data_loss", "particle_spectra", "radial_weight", "rfft_multiplicity",
    "TetMesh", "auto_threshold", "build_regular_mesh", "density_mask", "locate", "rest_inverse",
    "Pose", "euler_to_matrix", "matrix_to_euler", "matrix_to_rotvec", "random_rotations",
    "rotvec_to_matrix",
    "cell_affine", "deformation_gradient", "latent_prior", "polar_rotation",
    "rigidity_from_gradient", "rigidity_loss",
]
