"""The Mesh widget: touching segments, the fuse list ↔ checked pairs, and the same mesh as
``flexview mesh`` from a Labels layer painted in a real viewer (under a virtual X server)."""
from __future__ import annotations

import itertools
import os

import numpy as np
import pytest

pytest.importorskip("qtpy")
pytest.importorskip("napari")

from flexview._napari.mesh import MeshState  # noqa: E402
from flexview.model.cutmesh import touching_pairs  # noqa: E402
from flexview.model.mesh import TetMesh  # noqa: E402

needs_display = pytest.mark.skipif(
    not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
         or os.environ.get("QT_QPA_PLATFORM") == "offscreen"), reason="no display (install Xvfb for pytest-xvfb)")


def touching_bruteforce(filled: np.ndarray) -> set[tuple[int, int]]:
    """Pairs of different labels on 6-neighbour voxels, by a loop over every voxel."""
    found = set()
    n = filled.shape[0]
    for z, y, x in itertools.product(range(n), repeat=3):
        for dz, dy, dx in ((1, 0, 0), (0, 1, 0), (0, 0, 1)):
            if z + dz < n and y + dy < n and x + dx < n:
                a, b = filled[z, y, x], filled[z + dz, y + dy, x + dx]
                if a != b:
                    found.add((min(a, b), max(a, b)))
    return found


def test_touching_pairs_match_a_voxel_loop():
    rng = np.random.default_rng(0)
    labels = rng.choice([1, 2, 3, 5], size=(7, 7, 7), p=[0.7, 0.1, 0.1, 0.1])
    labels[:, :, :3] = 1
    labels[:, :, 3:] = np.where(labels[:, :, 3:] == 1, 2, labels[:, :, 3:])
    assert touching_pairs(labels) == sorted(touching_bruteforce(labels))


def test_touching_pairs_fill_the_solvent_first():
    """Three blocks along x with gaps of solvent: after filling, 1 touches 2 and 2 touches 3 only."""
    labels = np.zeros((9, 9, 9), np.int64)
    labels[:, :, 0:2], labels[:, :, 4:5], labels[:, :, 7:9] = 1, 2, 3
    assert touching_pairs(labels) == [(1, 2), (2, 3)]


@pytest.fixture
def chain_state():
    """Segments 1, 2, 3 in a row along x (1–2 and 2–3 touch, 1–3 do not)."""
    labels = np.zeros((9, 9, 9), np.int64)
    labels[:, :, 0:3], labels[:, :, 3:6], labels[:, :, 6:9] = 1, 2, 3
    state = MeshState()
    state.set_labels(labels)
    return state


def test_fuse_text_and_checked_pairs_round_trip(chain_state):
    s = chain_state
    assert s.segments == [1, 2, 3] and s.pairs == [(1, 2), (2, 3)]
    s.set_fuse_text("1>2, 2>3")
    assert s.checked_pairs() == {(1, 2), (2, 3)}
    assert s.fuse_problem() == ""
    s.set_pair_checked((1, 2), False)
    assert s.fuse_text == "2>3"
    s.set_pair_checked((1, 2), True)        # the root stays 2
    assert s.fuse_text == "2>1, 2>3" and s.checked_pairs() == {(1, 2), (2, 3)}
    s.set_fuse_text(s.fuse_text)
    assert s.checked_pairs() == {(1, 2), (2, 3)} and s.fuse_problem() == ""
    assert s.tree_text().splitlines() == ["2", "└ 1", "└ 3"]


@pytest.mark.parametrize("text, words", [("1>3", "do not touch"), ("1>2, 2>1", "cycle"),
                                         ("1>2, 3>2", "not reached"), ("1>7", "not a segment"),
                                         ("1-2", "cannot read")])
def test_invalid_fuse_lists_give_the_reason(chain_state, text, words):
    chain_state.set_fuse_text(text)
    assert words in chain_state.fuse_problem()


# ---------------------------------------------------------------------------------------- GUI
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

    from flexview._napari._context import context_for
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
    gui, cli = TetMesh.load(out), TetMesh.load(tmp_path / "cli.npz")
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
    np.testing.assert_array_equal(TetMesh.load(path).cells, cut.cells)
