"""Putting engine results into napari layers, in world coordinates of Å (the coordinates are
computed by :mod:`flexview.app.geometry`)."""
from __future__ import annotations

import numpy as np

DENSITY = "flexview density"
ARROWS = "flexview flow"
MESH = "flexview mesh"
RENDERINGS = ("iso", "attenuated_mip", "mip")
SOFTWARE_GL = ("llvmpipe", "softpipe", "swrast", "software")


def software_opengl() -> bool:
    """True when OpenGL is a software renderer (no GPU): iso-surfaces then take seconds per draw."""
    try:
        from vispy.gloo import gl

        renderer = str(gl.glGetParameter(gl.GL_RENDERER)).lower()
    except Exception:  # no current context: assume hardware
        return False
    return any(name in renderer for name in SOFTWARE_GL)


def default_rendering() -> str:
    """"iso" with a GPU; "attenuated_mip" (tens of ms per draw) with software OpenGL."""
    return "attenuated_mip" if software_opengl() else "iso"


def find_layer(viewer, name: str):
    return viewer.layers[name] if name in viewer.layers else None


def show_volume(viewer, name: str, volume: np.ndarray, pixel_size: float, *, rendering: str | None = None,
                iso_threshold: float | None = None, colormap: str = "gray", blending: str | None = None,
                three_d: bool = True):
    """Put ``volume`` (z, y, x) in the image layer ``name`` (created on first use, data swapped after).

    Only the data changes on an existing layer, so the user's rendering, threshold and contrast
    settings stay.
    """
    layer = find_layer(viewer, name)
    if layer is not None and layer.data.shape == volume.shape:
        layer.data = volume
        return layer
    if layer is not None:
        viewer.layers.remove(layer)
    rendering = rendering or default_rendering()
    hi = float(np.percentile(volume, 99.99)) if volume.size else 1.0
    lo = 0.0 if hi > 0 else float(volume.min())  # density is positive: negative noise stays black
    kwargs = {}
    if iso_threshold is not None:
        kwargs["iso_threshold"] = float(iso_threshold)
    layer = viewer.add_image(volume, name=name, scale=(pixel_size,) * 3, rendering=rendering,
                             colormap=colormap, contrast_limits=(lo, hi if hi > lo else lo + 1.0),
                             blending=blending or ("translucent" if rendering == "iso" else "additive"),
                             **kwargs)
    if three_d and viewer.dims.ndisplay != 3:
        viewer.dims.ndisplay = 3
    viewer.reset_view()
    return layer


def show_vectors(viewer, data: np.ndarray):
    layer = find_layer(viewer, ARROWS)
    if layer is None:
        return viewer.add_vectors(data, name=ARROWS, edge_width=1.0, edge_color="#ffd23f", length=1.0,
                                  vector_style="arrow")
    layer.data = data
    return layer


def show_surface(viewer, surface: tuple[np.ndarray, np.ndarray]):
    layer = find_layer(viewer, MESH)
    if layer is None:
        layer = viewer.add_surface(surface, name=MESH, opacity=0.25, colormap="cyan",
                                   blending="translucent")
        layer.wireframe.visible = True
        layer.wireframe.color = "#66c1ff"
        return layer
    layer.data = surface
    return layer


def remove_layer(viewer, name: str) -> None:
    layer = find_layer(viewer, name)
    if layer is not None:
        viewer.layers.remove(layer)
