"""The Mesh widget in a real viewer (under a virtual X server): the same mesh as ``flexview mesh``
from a painted Labels layer, the fuse table ↔ fuse list, a bad fuse list shown. The Qt-free
:class:`~flexview.app.mesh.MeshState` is tested in ``test_app_state.py``."""
from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("qtpy")
pytest.importorskip("napari")

from flexview.io.meshfile import read_mesh  # noqa: E402

needs_display = pytest.mark.skipif(
    not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
         or os.environ.get("QT_QPA_PLATFORM") == "offscreen"), reason="no display (install Xvfb for pytest-xvfb)")


def two_segments(density: np.ndarray) -> np.ndarray:
    """A coarse two-segment labelling of the map: its upper part split at the middle of x."""
    labels = np.zeros(density.shape, np.int32)
    above = density > np.percentile(density, 90)
    x = np.arange(density.shape[2])[None, None, :]
    labels[above & (x < density.shape[2] // 2)] = 1
    labels[above & (x >= density.shape[2] // 2)] = 2
    return labels


@pytest.fixture
def viewer(make_napari_viewer):
    v = make_napari_viewer(show=True)
    v.window.resize(1100, 760)
    return v


@needs_display
@pytest.mark.gui
def test_painted_labels_give_the_same_mesh_as_the_cli(viewer, qtbot, tiny_flex_dataset, tmp_path):
    from qtpy.QtCore import Qt

    from flexview.app.context import context_for
    from flexview.cli import main
    from flexview.io.mrc import read_map, write_map

    _, widget = viewer.window.add_plugin_dock_widget("flexview", "Mesh")
    assert type(widget).__name__ == "MeshWidget"
    qtbot.waitUntil(widget.isVisible, timeout=5000)
    consensus = tiny_flex_dataset / "consensus.mrc"
    widget.map.set_text(consensus)
    widget.cells.setValue(8)
    assert widget.build(), widget.status.text()
    density, px = read_map(consensus)
    labels = two_segments(density)
    widget.labels_layer().data = labels
    widget.update_segments()
    assert widget.state.segments == [1, 2] and widget.state.pairs == [(1, 2)]
    assert widget.pair_table.rowCount() == 1
    widget.pair_table.item(0, 0).setCheckState(Qt.CheckState.Checked)      # check "fuse" for 1 – 2
    assert widget.fuse.text() == "1>2"
    widget.segment_table.item(1, 2).setCheckState(Qt.CheckState.Checked)   # segment 2 rigid
    assert widget.cut(), widget.status.text()
    widget.out.set_text(tmp_path / "gui.npz")
    out = widget.save()
    assert out == tmp_path / "gui.npz" and context_for(viewer).mesh_path == str(out)

    write_map(tmp_path / "seg.mrc", labels, px)
    assert main(["mesh", str(consensus), "--out", str(tmp_path / "cli.npz"), "--segments",
                 str(tmp_path / "seg.mrc"), "--fuse", "1>2", "--rigid", "2", "--cells", "8"]) == 0
    gui, cli = read_mesh(out), read_mesh(tmp_path / "cli.npz")
    for name in ("vertices", "cells", "segment", "pinned", "rigidity_weight"):
        np.testing.assert_array_equal(getattr(gui, name), getattr(cli, name), err_msg=name)
    assert set(np.unique(gui.segment)) == {1, 2} and (gui.rigidity_weight[gui.segment == 2] == 20).all()
    assert "cut mesh" in viewer.layers and not viewer.layers["mesh"].visible

    train = viewer.window.add_plugin_dock_widget("flexview", "Train")[1]
    assert train.form.values()["mesh"] == str(out)


@needs_display
@pytest.mark.gui
def test_unfused_cut_duplicates_the_interface_and_a_bad_fuse_is_shown(viewer, tiny_flex_dataset, tmp_path):
    _, widget = viewer.window.add_plugin_dock_widget("flexview", "Mesh")
    widget.map.set_text(tiny_flex_dataset / "consensus.mrc")
    widget.cells.setValue(8)
    assert widget.build()
    assert widget.propose(), widget.status.text()
    assert widget.state.segments == [1, 2]
    widget.fuse.setText("1>1")
    widget.fuse.editingFinished.emit()
    assert "cycle" in widget.tree.text()
    assert not widget.cut()
    widget.fuse.setText("")
    widget.fuse.editingFinished.emit()
    assert widget.cut(), widget.status.text()
    cut, base = widget.state.cut, widget.state.base
    assert cut.n_cells == base.n_cells and cut.n_vertices > base.n_vertices
    widget.out.set_text(tmp_path / "m")
    path = widget.save()
    assert path == tmp_path / "m.npz"
    np.testing.assert_array_equal(read_mesh(path).cells, cut.cells)
