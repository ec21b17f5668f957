"""Mesh files (.npz): round trip, atomic write, and bad files refused naming the file and key."""
from __future__ import annotations

import numpy as np
import pytest

from flexview.errors import FlexviewInputError
from flexview.io import read_mesh, write_mesh
from flexview.model import TetMesh, build_regular_mesh

BOX, PX = 16, 2.0
FIELDS = ("vertices", "cells", "rigidity_weight", "pinned", "segment", "grid_origin", "grid_shape")


@pytest.fixture(scope="module")
def mesh() -> TetMesh:
    z, y, x = np.mgrid[:BOX, :BOX, :BOX] - BOX // 2
    density = np.exp(-(x**2 + y**2 + z**2) / (2 * 3.0**2))
    m = build_regular_mesh(density, PX, cells_across=4)
    m.pinned[::3] = True                      # values that a zero default would not reproduce
    m.segment[:] = np.arange(m.n_cells) % 3
    return m


def arrays(mesh: TetMesh, **changes) -> dict:
    """The arrays of a mesh file as written by hand (the documented keys)."""
    out = {name: getattr(mesh, name) for name in FIELDS}
    out.update(box=np.int64(mesh.box), pixel_size=np.float64(mesh.pixel_size),
               grid_spacing=np.float64(mesh.grid_spacing))
    out.update(changes)
    return {k: v for k, v in out.items() if v is not None}


def test_round_trip_keeps_every_field(mesh, tmp_path):
    path = tmp_path / "mesh.npz"
    write_mesh(path, mesh)
    back = read_mesh(path)
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(back, name), getattr(mesh, name))
        assert getattr(back, name).dtype == getattr(mesh, name).dtype
    assert (back.box, back.pixel_size, back.grid_spacing) == (mesh.box, mesh.pixel_size, mesh.grid_spacing)
    assert [p.name for p in tmp_path.iterdir()] == ["mesh.npz"]      # no temporary left over


def test_file_holds_the_documented_keys(mesh, tmp_path):
    write_mesh(tmp_path / "m.npz", mesh)
    with np.load(tmp_path / "m.npz", allow_pickle=False) as f:
        assert set(f.files) == set(arrays(mesh))
        np.testing.assert_array_equal(f["cells"], mesh.cells)
        assert int(f["box"]) == BOX and float(f["pixel_size"]) == PX


def test_a_mesh_without_grid_round_trips(mesh, tmp_path):
    bare = TetMesh(mesh.vertices, mesh.cells, mesh.rigidity_weight, mesh.pinned, mesh.segment, BOX, PX)
    write_mesh(tmp_path / "b.npz", bare)
    back = read_mesh(tmp_path / "b.npz")
    assert back.grid_origin is None and back.grid_spacing is None and back.grid_shape is None
    np.testing.assert_array_equal(back.vertices, mesh.vertices)


@pytest.mark.parametrize("change, field", [
    (dict(rigidity_weight=None), "rigidity_weight"),
    (dict(box=None), "box"),
    (dict(grid_shape=None), "grid_shape"),                # grid keys come all together or not at all
    (dict(segment=np.zeros(3, np.int64)), "segment"),     # wrong length
])
def test_bad_keys_are_named(mesh, tmp_path, change, field):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays(mesh, **change))
    with pytest.raises(FlexviewInputError) as err:
        read_mesh(path)
    assert err.value.field == field and err.value.path == str(path)


def test_out_of_range_cells_and_pickled_arrays_are_refused(mesh, tmp_path):
    cells = mesh.cells.copy()
    cells[0, 0] = mesh.n_vertices + 3
    np.savez(tmp_path / "range.npz", **arrays(mesh, cells=cells))
    with pytest.raises(FlexviewInputError, match="out of range"):
        read_mesh(tmp_path / "range.npz")
    np.savez(tmp_path / "obj.npz", **arrays(mesh, segment=np.array([{"a": 1}] * mesh.n_cells, dtype=object)))
    with pytest.raises(FlexviewInputError) as err:
        read_mesh(tmp_path / "obj.npz")
    assert err.value.field == "segment"


def test_unreadable_files_name_the_file(tmp_path):
    (tmp_path / "junk.npz").write_text("not a zip")
    np.save(tmp_path / "one.npy", np.zeros(3))
    for path in (tmp_path / "junk.npz", tmp_path / "one.npy", tmp_path / "absent.npz"):
        with pytest.raises(FlexviewInputError) as err:
            read_mesh(path)
        assert err.value.path == str(path)
