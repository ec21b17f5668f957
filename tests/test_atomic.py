"""Atomic writes: a failed write never damages the file that was there."""
import os

import numpy as np
import pytest

from flexview.io._atomic import atomic_path, write_text_atomic
from flexview.io.mrc import read_map, write_map


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "map.mrc"
    write_map(target, np.ones((4, 4, 4), np.float32), 2.0)
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half a file")
            raise RuntimeError("disk full")
    volume, voxel = read_map(target)
    assert np.all(volume == 1) and voxel == 2.0
    assert [p.name for p in tmp_path.iterdir()] == ["map.mrc"]


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        import importlib

        import flexview.io._atomic as atomic

        importlib.reload(atomic)
        atomic.write_text_atomic(tmp_path / "a.txt", "x")
        assert oct((tmp_path / "a.txt").stat().st_mode & 0o777) == oct(0o644)
    finally:
        os.umask(old)


def test_text_round_trip(tmp_path):
    write_text_atomic(tmp_path / "b" / "c.json", "{}\n")
    assert (tmp_path / "b" / "c.json").read_text() == "{}\n"
