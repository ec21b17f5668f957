"""Output-path rules (flexview.io.outputs), the latent bounds of ``generate`` and the CLI's
report of a failed read or write."""
from __future__ import annotations

import errno

import numpy as np
import pytest

import flexview
from flexview.cli import describe_os_error, main
from flexview.errors import FlexviewInputError
from flexview.io.mrc import read_map, write_map
from flexview.io.outputs import check_output_file, check_output_folder, written_by_flexview


def test_an_output_file_may_be_new_or_flexviews_own(tmp_path, tiny_flex_run):
    own = tmp_path / "own.mrc"
    write_map(own, np.zeros((4, 4, 4)), 1.0)
    assert check_output_file(tmp_path / "new.mrc") == tmp_path / "new.mrc"
    assert check_output_file(own, ours=written_by_flexview) == own
    assert written_by_flexview(tiny_flex_run / "mesh.npz") and written_by_flexview(tiny_flex_run / "canonical.mrc")
    (tmp_path / "mine.mrc").write_bytes(own.read_bytes()[:200] + b"\0" * (own.stat().st_size - 200))
    (tmp_path / "notes.txt").write_text("mine")
    for path, words in [(tmp_path / "mine.mrc", "not written by flexview"), (tmp_path, "is a folder"),
                        (tmp_path / "notes.txt" / "v.mrc", "is a file, not a folder"),
                        (tmp_path / ("v" * 300), "too long")]:
        with pytest.raises(FlexviewInputError, match=words) as err:
            check_output_file(path, ours=written_by_flexview)
        assert err.value.path == str(path) and err.value.field == "--out"
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_an_output_folder_may_be_new_empty_or_the_same_commands(tmp_path):
    names = ("frame_*.mrc", "latents.csv")
    (tmp_path / "empty").mkdir()
    assert check_output_folder(tmp_path / "new", names=names, marker="latents.csv") == tmp_path / "new"
    assert check_output_folder(tmp_path / "empty", names=names, marker="latents.csv") == tmp_path / "empty"
    ours, half, foreign = tmp_path / "ours", tmp_path / "half", tmp_path / "foreign"
    for folder, files in [(ours, ["frame_000.mrc", "latents.csv"]), (half, ["frame_000.mrc"]),
                          (foreign, ["latents.csv", "notes.txt"])]:
        folder.mkdir()
        for name in files:
            (folder / name).write_text("x")
    assert check_output_folder(ours, names=names, marker="latents.csv") == ours
    for folder, words in [(half, "frame_000.mrc"), (foreign, "notes.txt")]:
        with pytest.raises(FlexviewInputError, match=words):
            check_output_folder(folder, names=names, marker="latents.csv")
    with pytest.raises(FlexviewInputError, match="is a file"):
        check_output_folder(foreign / "notes.txt", names=names)


def test_generate_accepts_latents_within_ten_spreads_of_the_median(tiny_flex_run):
    run = flexview.load_run(tiny_flex_run)
    spread = np.maximum(run.latents.std(axis=0), 1.0)
    high = np.median(run.latents, axis=0) + 10.0 * spread
    inside, outside = high - 1e-3, high + 1e-3
    assert np.allclose(run.latent_point(inside), inside)
    with pytest.raises(FlexviewInputError, match="latent axis 0") as err:
        run.latent_point([outside[0], inside[1]])
    assert err.value.field == "z"
    with pytest.raises(FlexviewInputError, match="finite"):
        run.generate([np.nan, 0.0])


def test_a_series_replaces_the_series_it_wrote_before(tiny_flex_run, tmp_path):
    out = tmp_path / "series"
    assert main(["generate", str(tiny_flex_run), "--axis", "1", "--frames", "4", "--out", str(out)]) == 0
    assert main(["generate", str(tiny_flex_run), "--axis", "0", "--frames", "2", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["frame_000.mrc", "frame_001.mrc", "latents.csv"]
    run = flexview.load_run(tiny_flex_run)
    assert np.allclose(read_map(out / "frame_001.mrc")[0], run.generate(run.axis_values(0, 2, 1.5)[1]), atol=1e-6)
    assert len((out / "latents.csv").read_text().splitlines()) == 3


def test_a_failed_read_or_write_names_the_file_or_the_output():
    named = OSError(errno.EROFS, "Read-only file system", "/data/run/flow.pt")
    assert describe_os_error(named, "run") == "/data/run/flow.pt: Read-only file system"
    unnamed = OSError(errno.ENOSPC, "No space left on device")
    assert describe_os_error(unnamed, "out") == "out: No space left on device (while writing the output)"
