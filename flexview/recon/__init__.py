"""Reference reconstructions and resolution measures."""
from flexview.recon.fsc import fsc, fsc_at, resolution_at
from flexview.recon.rigid import output_pixel_size, reconstruct_half_maps, reconstruct_rigid

__all__ = ["fsc", "fsc_at", "output_pixel_size", "reconstruct_half_maps", "reconstruct_rigid", "resolution_at"]
