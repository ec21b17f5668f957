"""Strict readers: every corrupt MRC, STAR or .cs file is refused naming the file and the field;
every file that parses is read, and ``flexview info`` reports its problems as warnings (exit 0)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from flexview.errors import FlexviewInputError
from flexview.io import open_stack, read_cs, read_map, read_particles, read_star, stack_header, write_map, write_stack
from flexview.io.mrc import read_header

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")



def expect_error(call, path: Path, field: str) -> FlexviewInputError:
    """``call()`` raises a FlexviewInputError naming ``path`` and ``field``."""
    with pytest.raises(FlexviewInputError) as err:
        call()
    assert err.value.field == field, str(err.value)
    assert err.value.path == str(path) and f"field '{field}'" in str(err.value)
    return err.value


def line_of(path: Path, text: str) -> int:
    """1-based number of the first line of ``path`` that contains ``text`` (an independent count)."""
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


# ---------------------------------------------------------------------------------------------
# MRC
# ---------------------------------------------------------------------------------------------

STACK = np.arange(4 * 8 * 8, dtype=np.float32).reshape(4, 8, 8) / 7.0


def patched(folder: Path, name: str, offset: int, value, dtype: str = "<i4") -> Path:
    """A copy of a good 4 x 8 x 8 float32 stack with the header word at ``offset`` replaced."""
    path = folder / name
    write_stack(path, STACK, 1.5)
    raw = bytearray(path.read_bytes())
    raw[offset:offset + np.dtype(dtype).itemsize] = np.array(value, dtype).tobytes()
    path.write_bytes(bytes(raw))
    return path


# header word offsets (MRC2014): nx 0, ny 4, nz 8, mode 12, mz 36, cella.x 40, ispg 88, nsymbt 92
MRC_CASES = {
    "float32 data, header says mode 1": (12, 1, "mode", "as mode 2"),
    "mode 99": (12, 99, "mode", "mode 99"),
    "nx 0": (0, 0, "nx", "nx is 0"),
    "nz negative": (8, -3, "nz", "nz is -3"),
    "nsymbt negative": (92, -5, "nsymbt", "negative"),
    "negative voxel size": (40, -3.0, "cella", "negative"),
    "complex mode 4 (half the size)": (8, 2, "mode", "complex"),
}


@pytest.mark.parametrize("case", sorted(MRC_CASES))
def test_corrupt_mrc_headers(tmp_path, case):
    offset, value, field, words = MRC_CASES[case]
    path = patched(tmp_path, "s.mrcs", offset, value, "<f4" if field == "cella" else "<i4")
    if case.startswith("complex"):  # 4 x 8 x 8 float32 = 2 x 8 x 8 complex64, sizes agree
        raw = bytearray(path.read_bytes())
        raw[12:16] = np.array(4, "<i4").tobytes()
        path.write_bytes(bytes(raw))
    for call in (lambda: open_stack(path), lambda: read_map(path)):
        err = expect_error(call, path, field)
        assert words in str(err)


@pytest.mark.parametrize("size, words", [(1024 + 100, "truncated"), (3, "fewer than the 1024-byte"),
                                         (1024 + 4 * 8 * 8 * 4 + 3, "describes")])
def test_mrc_file_size_must_match_header(tmp_path, size, words):
    path = tmp_path / "s.mrcs"
    write_stack(path, STACK, 1.5)
    raw = path.read_bytes()
    path.write_bytes(raw[:size] if size < len(raw) else raw + b"\0" * (size - len(raw)))
    err = expect_error(lambda: stack_header(path), path, "file size")
    assert words in str(err)


def test_volume_stack_needs_mz_dividing_nz(tmp_path):
    path = patched(tmp_path, "v.mrc", 88, 401)  # ispg 401: a stack of volumes
    raw = bytearray(path.read_bytes())
    raw[36:40] = np.array(0, "<i4").tobytes()
    path.write_bytes(bytes(raw))
    expect_error(lambda: read_map(path), path, "mz")


def test_non_cubic_map_refused_where_a_map_is_needed(tmp_path):
    write_map(tmp_path / "v.mrc", np.zeros((4, 6, 8), np.float32), 2.0)
    assert read_map(tmp_path / "v.mrc")[0].shape == (4, 6, 8)
    err = expect_error(lambda: read_map(tmp_path / "v.mrc", cubic=True), tmp_path / "v.mrc", "nx, ny, nz")
    assert "nx = 8, ny = 6, nz = 4" in str(err)


def test_nan_map_refused(tmp_path):
    volume = np.zeros((4, 4, 4), np.float32)
    volume[1, 2, 3] = np.inf
    write_map(tmp_path / "v.mrc", volume, 1.0)
    expect_error(lambda: read_map(tmp_path / "v.mrc"), tmp_path / "v.mrc", "data")


def test_stacks_stay_memory_mapped_and_exact(tmp_path):
    write_stack(tmp_path / "s.mrcs", STACK, 1.5)
    data = open_stack(tmp_path / "s.mrcs")
    assert isinstance(data, np.memmap) or isinstance(data.base, np.memmap)
    np.testing.assert_array_equal(data, STACK)
    assert stack_header(tmp_path / "s.mrcs") == (4, 8, 8, 1.5)


def test_header_quirks_of_other_programs_are_read(tmp_path):
    """No MAP identifier and a zero machine stamp (as in real files), and big-endian data."""
    path = tmp_path / "s.mrcs"
    write_stack(path, STACK, 1.5)
    raw = bytearray(path.read_bytes())
    raw[208:216] = bytes(8)  # map identifier and machine stamp
    path.write_bytes(bytes(raw))
    np.testing.assert_array_equal(open_stack(path), STACK)
    with mrcfile.new(tmp_path / "be.mrc") as m:
        m.set_data(STACK.astype(">f4"))
    assert read_header(tmp_path / "be.mrc").shape == (4, 8, 8)
    np.testing.assert_array_equal(read_map(tmp_path / "be.mrc")[0], STACK)


def test_info_refuses_a_corrupt_stack_with_exit_2(run_info, tmp_path):
    path = patched(tmp_path, "s.mrcs", 12, 1)
    code, out, err = run_info(path)
    assert code == 2 and out == "" and "Traceback" not in err
    assert str(path) in err and "field 'mode'" in err


# ---------------------------------------------------------------------------------------------
# STAR: structure (refused, exit 2 in info too)
# ---------------------------------------------------------------------------------------------

OPTICS = ("data_optics\nloop_\n_rlnOpticsGroup\n_rlnVoltage\n_rlnSphericalAberration\n_rlnAmplitudeContrast\n"
          "_rlnImagePixelSize\n_rlnImageSize\n1 300 2.7 0.1 2.0 8\n\n")


def star(folder: Path, loop: str, optics: str = OPTICS, name: str = "p.star") -> Path:
    path = folder / name
    path.write_text(optics + "data_particles\nloop_\n" + loop.strip() + "\n")
    return path


STRUCTURE_CASES = {
    "duplicated column": ("_rlnImageName\n_rlnDefocusU\n_rlnDefocusU\n1@s.mrcs 1 2", "rlnDefocusU",
                          "_rlnDefocusU", "appears twice"),
    "row with too few values": ("_rlnImageName\n_rlnDefocusU\n_rlnDefocusV\n1@s.mrcs 1 2\n2@s.mrcs 1",
                                "rlnDefocusV", "2@s.mrcs", "2 values for the 3 columns"),
    "row with too many values": ("_rlnImageName\n_rlnDefocusU\n1@s.mrcs 1\n2@s.mrcs 1 2", "data_particles",
                                 "2@s.mrcs", "3 values for the 2 columns"),
    "unparsable number": ("_rlnImageName\n_rlnDefocusU\n1@s.mrcs 1e4\n2@s.mrcs 1.2.3e4", "rlnDefocusU",
                          "2@s.mrcs", "'1.2.3e4' is not a number"),
    "image number 2.7": ("_rlnImageName\n2.7@s.mrcs", "rlnImageName", "2.7@", "whole numbers"),
    "image number 0": ("_rlnImageName\n1@s.mrcs\n0@s.mrcs", "rlnImageName", "0@", "whole numbers"),
    "no stack after @": ("_rlnImageName\n1@", "rlnImageName", "1@", "image number@stack"),
    "300-character stack name": ("_rlnImageName\n1@" + "s" * 300 + ".mrcs", "rlnImageName", "1@s",
                                 "file names may have at most"),
}


@pytest.mark.parametrize("case", sorted(STRUCTURE_CASES))
def test_malformed_star_named_by_column_and_line(tmp_path, run_info, case):
    loop, field, marker, words = STRUCTURE_CASES[case]
    path = star(tmp_path, loop)
    err = expect_error(lambda: read_star(path, strict=False), path, field)
    assert words in str(err) and f"line {line_of(path, marker)}" in str(err)
    code, out, text = run_info(path)
    assert code == 2 and out == "" and "Traceback" not in text
    assert str(path) in text and f"field '{field}'" in text


@pytest.mark.parametrize("text, field, words", [
    ("loop_\n_rlnImageName\n1@s.mrcs\n", "data_", "line 1: 'loop_' comes before any data_"),
    ("", "data_", "no data_ block"),
    ("data_particles\nloop_\n_rlnImageName\n1@s.mrcs\n\ndata_particles\nloop_\n_rlnImageName\n2@s.mrcs\n",
     "data_particles", "line 6: data_particles appears a second time"),
    ("data_optics\n_rlnVoltage\n", "rlnVoltage", "line 2: label rlnVoltage needs exactly one value"),
    ("data_particles\nloop_\n_rlnImageName\n1@s.mrcs\n_rlnDefocusU 3\n", "data_particles", "line 5: a second"),
    ("\0\0binary", "data_", "binary"),
])
def test_broken_star_structure(tmp_path, text, field, words):
    path = tmp_path / "p.star"
    path.write_text(text)
    err = expect_error(lambda: read_star(path, strict=False), path, field)
    assert words in str(err)


def test_line_numbers_skip_comments_and_blank_lines(tmp_path):
    path = star(tmp_path, "_rlnImageName\n_rlnDefocusU\n1@s.mrcs 1e4\n# a comment\n\n2@s.mrcs 1e4\n3@s.mrcs abc")
    err = expect_error(lambda: read_star(path), path, "rlnDefocusU")
    assert f"line {line_of(path, '3@s.mrcs')} (particle 3)" in str(err)


# ---------------------------------------------------------------------------------------------
# STAR: values that parse but cannot be used (train refuses, info warns)
# ---------------------------------------------------------------------------------------------

POSE = "_rlnImageName\n_rlnAngleRot\n_rlnAngleTilt\n_rlnAnglePsi\n_rlnDefocusU\n_rlnDefocusV\n"
VALUE_CASES = {
    "negative defocus": (POSE + "1@s.mrcs 1 2 3 15000 14000\n2@s.mrcs 1 2 3 -5000 14000", "ctf", "rlnDefocusU",
                         "defocus must be positive"),
    "zero defocus V": (POSE + "1@s.mrcs 1 2 3 15000 0", "ctf", "rlnDefocusV", "defocus must be positive"),
    "NaN angle": (POSE + "1@s.mrcs 1 nan 3 15000 14000", "poses", "rlnAngleTilt", "NaN or infinite"),
    "infinite defocus": (POSE + "1@s.mrcs 1 2 3 inf 14000", "ctf", "rlnDefocusU", "NaN or infinite"),
    "origins in Å and px disagree": (
        "_rlnImageName\n_rlnAngleRot\n_rlnAngleTilt\n_rlnAnglePsi\n_rlnOriginXAngst\n_rlnOriginYAngst\n"
        "_rlnOriginX\n_rlnOriginY\n1@s.mrcs 1 2 3 2.0 4.0 1.0 2.0\n2@s.mrcs 1 2 3 2.0 4.0 1.5 2.0",
        "poses", "rlnOriginXAngst", "disagree by up to 0.5 px"),
    "CTF-premultiplied": ("_rlnImageName\n_rlnCtfDataAreCtfPremultiplied\n1@s.mrcs 1", "images",
                          "rlnCtfDataAreCtfPremultiplied", "premultiplied"),
    "random subset 3": ("_rlnImageName\n_rlnRandomSubset\n1@s.mrcs 1\n2@s.mrcs 3", "half_sets", "rlnRandomSubset",
                        "random subset 3"),
}


@pytest.mark.parametrize("case", sorted(VALUE_CASES))
def test_unusable_values_refused_for_training_and_warned_by_info(tmp_path, run_info, case):
    loop, aspect, field, words = VALUE_CASES[case]
    path = star(tmp_path, loop)
    err = expect_error(lambda: read_particles(path), path, field)  # strict: what train and reconstruct call
    assert words in str(err)
    lenient = read_particles(path, strict=False)
    assert [(a, e.field) for a, e in lenient.problems] == [(aspect, field)]
    expect_error(lambda: lenient.require(aspect), path, field)
    code, out, text = run_info(path)
    assert code == 0 and "problems: 1" in out
    assert "warning" in text and f"field '{field}'" in text and words in text and "Traceback" not in text


def test_origins_that_agree_are_read_in_angstrom(tmp_path):
    path = star(tmp_path, "_rlnImageName\n_rlnAngleRot\n_rlnAngleTilt\n_rlnAnglePsi\n_rlnOriginXAngst\n"
                          "_rlnOriginYAngst\n_rlnOriginX\n_rlnOriginY\n1@s.mrcs 1 2 3 2.0 -4.01 1.0 -2.0")
    p = read_star(path)  # 0.005 px apart at 2 Å/px: within 0.01 px
    np.testing.assert_allclose(p.origins_A, [[2.0, -4.01]])


def test_missing_amplitude_contrast_warned_by_info_refused_for_training(tmp_path, run_info):
    optics = OPTICS.replace("_rlnAmplitudeContrast\n", "").replace("2.7 0.1 2.0", "2.7 2.0")
    path = star(tmp_path, POSE + "1@s.mrcs 1 2 3 15000 14000", optics)
    err = expect_error(lambda: read_particles(path), path, "rlnAmplitudeContrast")
    assert "RELION" in str(err)
    code, out, text = run_info(path)
    assert code == 0 and "CTF: incomplete (no rlnAmplitudeContrast)" in out and "missing: CTF" in out
    assert "field 'rlnAmplitudeContrast'" in text
    expect_error(lambda: read_particles(path, strict=False).require("ctf"), path, "rlnAmplitudeContrast")


def test_no_pixel_size_and_no_stack(tmp_path, run_info):
    optics = "data_optics\nloop_\n_rlnOpticsGroup\n_rlnVoltage\n_rlnSphericalAberration\n_rlnAmplitudeContrast\n" \
             "1 300 2.7 0.1\n\n"
    path = star(tmp_path, POSE + "1@gone.mrcs 1 2 3 15000 14000", optics)
    err = expect_error(lambda: read_particles(path), path, "rlnImagePixelSize")
    assert "no pixel size" in str(err)
    code, out, text = run_info(path)
    assert code == 0 and "pixel size: unknown" in out and "box: unknown" in out
    assert "missing: images, half sets, pixel size" in out
    assert "field 'rlnImagePixelSize'" in text and "gone.mrcs" in text


def test_two_optics_groups_of_different_pixel_size(tmp_path, run_info):
    optics = OPTICS.replace("1 300 2.7 0.1 2.0 8\n", "1 300 2.7 0.1 1.24 8\n2 300 2.7 0.1 1.25 8\n")
    path = star(tmp_path, "_rlnImageName\n_rlnOpticsGroup\n1@s.mrcs 1\n2@s.mrcs 2\n3@s.mrcs 2", optics)
    p = read_particles(path)
    assert p.pixel_size == 1.24 and p.pixel_sizes.tolist() == [1.24, 1.25, 1.25] and p.boxes is None
    code, out, text = run_info(path)
    assert code == 0 and text.count("warning") == 1  # only the missing stack
    assert "pixel size: 1.2400 to 1.2500 Å (differs between optics groups)" in out
    assert "group 1 (opticsGroup1): 1 particles, 1.2400 Å/px, box 8" in out
    assert "group 2 (opticsGroup2): 2 particles, 1.2500 Å/px, box 8" in out


def test_stack_problems_found_from_headers(tmp_path, run_info):
    folder = tmp_path
    patched(folder, "bad.mrcs", 12, 1)  # its header does not describe its data
    path = star(folder, "_rlnImageName\n1@bad.mrcs")
    expect_error(lambda: read_particles(path), folder / "bad.mrcs", "mode")
    code, out, text = run_info(path)
    assert code == 0 and "problems: 1" in out and "field 'mode'" in text


def test_missing_stacks_refused_by_require(tmp_path):
    path = star(tmp_path, POSE + "1@gone.mrcs 1 2 3 15000 14000")
    p = read_particles(path)
    err = expect_error(lambda: p.require("images"), path, "rlnImageName")
    assert "gone.mrcs" in str(err)


# ---------------------------------------------------------------------------------------------
# cryoSPARC .cs
# ---------------------------------------------------------------------------------------------

def cs_file(folder: Path, n: int = 2, drop=(), **fields) -> Path:
    base = {"blob/path": np.array([b"s.mrcs"] * n), "blob/idx": np.arange(n, dtype=np.uint32),
            "blob/shape": np.tile(np.array([8, 8], np.uint32), (n, 1)), "blob/psize_A": np.full(n, 2.0, np.float32),
            "ctf/df1_A": np.full(n, 15000, np.float32), "ctf/accel_kv": np.full(n, 300, np.float32),
            "ctf/cs_mm": np.full(n, 2.7, np.float32), "ctf/amp_contrast": np.full(n, 0.1, np.float32)}
    base.update({k.replace("__", "/"): np.asarray(v) for k, v in fields.items()})
    base = {k: v for k, v in base.items() if k not in drop}
    array = np.empty(n, dtype=[(k, v.dtype, v.shape[1:]) for k, v in base.items()])
    for k, v in base.items():
        array[k] = v
    path = folder / "p.cs"
    with open(path, "wb") as fh:
        np.save(fh, array)
    return path


@pytest.mark.parametrize("idx, words", [(np.array([0, 2.7]), "image index 2.7"),
                                        (np.array([0, -1], np.int32), "image index -1")])
def test_cs_blob_idx_must_be_a_whole_number_from_0(tmp_path, run_info, idx, words):
    path = cs_file(tmp_path, blob__idx=idx)
    err = expect_error(lambda: read_cs(path, strict=False), path, "blob/idx")
    assert words in str(err) and "particle 2" in str(err)
    code, _, text = run_info(path)
    assert code == 2 and "field 'blob/idx'" in text


def test_cs_blob_idx_past_the_end_of_its_stack(tmp_path, run_info):
    write_stack(tmp_path / "s.mrcs", STACK[:2], 2.0)
    path = cs_file(tmp_path, blob__idx=np.array([1, 2], np.uint32))
    err = expect_error(lambda: read_cs(path), path, "blob/idx")
    assert "particle 2: image 3 is past the end" in str(err)
    code, _, text = run_info(path)
    assert code == 0 and "image 3 is past the end" in text


@pytest.mark.parametrize("drop, field, summary", [
    (("blob/path", "blob/idx"), "blob/path", "missing: poses, images, half sets"),
    (("blob/psize_A",), "blob/psize_A", "missing: poses, images, half sets, pixel size"),
    (("ctf/amp_contrast",), "ctf/amp_contrast", "missing: poses, CTF, images, half sets"),
])
def test_cs_missing_fields(tmp_path, run_info, drop, field, summary):
    path = cs_file(tmp_path, drop=drop)
    expect_error(lambda: read_cs(path), path, field)
    code, out, text = run_info(path)
    assert code == 0 and summary in out and f"field '{field}'" in text


def test_absent_parts_are_named_by_the_format_field(tmp_path):
    cs = read_cs(cs_file(tmp_path))
    for part, field in (("poses", "alignments3D/pose"), ("half_sets", "alignments3D/split")):
        expect_error(lambda: cs.require(part), tmp_path / "p.cs", field)
    path = star(tmp_path, "_rlnImageName\n1@s.mrcs")
    for part, field in (("poses", "rlnAngleRot"), ("ctf", "rlnDefocusU"), ("half_sets", "rlnRandomSubset")):
        expect_error(lambda: read_star(path).require(part), path, field)


def test_cs_stack_that_does_not_exist(tmp_path, run_info):
    path = cs_file(tmp_path, blob__path=np.array([b"nowhere/s.mrcs"] * 2))
    p = read_cs(path)
    err = expect_error(lambda: p.require("images"), path, "blob/path")
    assert "nowhere" in str(err)
    code, out, text = run_info(path)
    assert code == 0 and "1 missing" in out and "blob/path" in text


def test_cs_negative_defocus_and_long_name(tmp_path):
    path = cs_file(tmp_path, ctf__df1_A=np.array([15000, -100], np.float32))
    expect_error(lambda: read_cs(path), path, "ctf/df1_A")
    path = cs_file(tmp_path, blob__path=np.array([b"x" * 300 + b".mrcs"] * 2))
    err = expect_error(lambda: read_cs(path), path, "blob/path")
    assert "at most" in str(err)


# ---------------------------------------------------------------------------------------------
# real files
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, lines", [
    ("relion31.star", ["particles: 5", "group 1 (opticsGroup1): 5 particles, 2.8060 Å/px, box 256", "missing: nothing"]),
    ("empiar_10076_7.star", ["particles: 7", "1.3100 Å/px, box 320", "missing: poses, half sets"]),
    ("empiar_10076_7.cs", ["particles: 7", "1.3100 Å/px, box 320", "missing: poses, half sets"]),
    ("cryosparc_J2_particles_exported.cs", ["particles: 22", "1.3450 Å/px, box 300"]),
    ("relion31.mrcs", ["kind: image stack", "shape: 5 x 256 x 256"]),
    ("empiar_10076_7.mrc", ["shape: 7 x 320 x 320"]),
])
def test_real_files_read(shared_data, run_info, name, lines):
    code, out, text = run_info(shared_data / "formats" / name)
    assert code == 0
    assert "problems: 0" in out or name.endswith((".mrc", ".mrcs"))
    for line in lines:
        assert line in out
    assert "Traceback" not in text


def real_variant(shared_data: Path, folder: Path, old: str, new: str) -> Path:
    """relion31.star with ``old`` replaced by ``new``, beside a copy of its stack."""
    source = shared_data / "formats"
    shutil.copy(source / "relion31.mrcs", folder / "relion31.mrcs")
    text = (source / "relion31.star").read_text()
    assert old in text
    path = folder / "variant.star"
    path.write_text(text.replace(old, new))
    return path


def test_real_file_variants(shared_data, tmp_path, run_info):
    group = "           1 opticsGroup1     0.100000     0.010000   300.000000     2.806000     1.403000          256"
    two = real_variant(shared_data, tmp_path, group + "            2 \n", group.replace("2.806000", "1.240000")
                       + "            2 \n" + group.replace("1 opticsGroup1", "2 opticsGroup2")
                       .replace("2.806000", "1.250000") + "            2 \n")
    two.write_text(two.read_text().replace("000002@relion31.mrcs            1", "000002@relion31.mrcs            2"))
    code, out, _ = run_info(two)
    assert code == 0 and "optics groups: 2" in out and "1.2400 Å/px" in out and "1.2500 Å/px" in out
    no_q0 = real_variant(shared_data, tmp_path, "_rlnAmplitudeContrast #3 \n", "")
    no_q0.write_text(no_q0.read_text().replace("opticsGroup1     0.100000 ", "opticsGroup1 "))
    code, out, text = run_info(no_q0)
    assert code == 0 and "CTF: incomplete (no rlnAmplitudeContrast)" in out and "rlnAmplitudeContrast" in text
    os.remove(tmp_path / "relion31.mrcs")
    bare = real_variant(shared_data, tmp_path, "_rlnImagePixelSize #6 \n", "")
    bare.write_text(bare.read_text().replace("300.000000     2.806000 ", "300.000000 "))
    os.remove(tmp_path / "relion31.mrcs")
    code, out, text = run_info(bare)
    assert code == 0 and "pixel size: unknown" in out and "rlnImagePixelSize" in text


# ---------------------------------------------------------------------------------------------
# mesh files
# ---------------------------------------------------------------------------------------------

def mesh_arrays(**changes) -> dict:
    """The arrays of a one-cell mesh file, with ``changes`` (None removes a key)."""
    out = {"vertices": np.array([[0, 0, 0], [4, 0, 0], [0, 4, 0], [0, 0, 4]], np.float64),
           "cells": np.array([[0, 1, 2, 3]], np.int64), "rigidity_weight": np.ones(1),
           "pinned": np.zeros(4, bool), "segment": np.zeros(1, np.int64), "box": np.int64(16),
           "pixel_size": np.float64(2.0)}
    out.update(changes)
    return {k: v for k, v in out.items() if v is not None}


@pytest.mark.parametrize("change, field, words", [
    (dict(cells=np.array([[0, 1, 2, 3.0]])), "cells", "expected integers"),
    (dict(cells=np.array([[0, 1, 2, 9]], np.int64)), "cells", "out of range"),
    (dict(cells=np.array([[0, -1, 2, 3]], np.int64)), "cells", "at least 0"),
    (dict(vertices=np.array([[0, 0, 0], [4, 0, 0], [0, np.nan, 0], [0, 0, 4]])), "vertices", "NaN"),
    (dict(vertices=np.zeros((4, 2))), "vertices", "expected shape ('N', 3)"),
    (dict(pinned=np.zeros(4)), "pinned", "expected booleans"),
    (dict(rigidity_weight=np.array([-1.0])), "rigidity_weight", "at least 0"),
    (dict(box=np.float64(16.5)), "box", "expected one number (integers)"),
    (dict(pixel_size=np.float64(np.nan)), "pixel_size", "positive"),
    (dict(segment=np.array(["a"])), "segment", "expected integers"),
])
def test_bad_mesh_arrays_named(tmp_path, change, field, words):
    from flexview.io import read_mesh

    path = tmp_path / "m.npz"
    np.savez(path, **mesh_arrays(**change))
    err = expect_error(lambda: read_mesh(path), path, field)
    assert words in str(err)
    np.savez(path, **mesh_arrays())
    assert read_mesh(path).n_cells == 1


def test_cs_box_from_stack_header_with_opposite_sign(tmp_path):
    write_stack(tmp_path / "s.mrcs", STACK[:2], 2.0)
    p = read_cs(cs_file(tmp_path, drop=("blob/shape",), blob__sign=np.array([1.0, -1.0], np.float32)))
    assert p.box == 8 and p.images.box == 8
    np.testing.assert_array_equal(p.images.read(slice(None)), STACK[:2] * np.array([-1, 1])[:, None, None])


def test_mixed_groups_survive_star_and_cs_round_trips(tmp_path):
    from flexview.io import write_cs, write_star

    write_stack(tmp_path / "a.mrcs", STACK[:2], 1.24)
    write_stack(tmp_path / "b.mrcs", np.zeros((1, 10, 10), np.float32), 1.25)
    optics = OPTICS.replace("1 300 2.7 0.1 2.0 8\n", "1 300 2.7 0.1 1.24 8\n2 300 2.7 0.1 1.25 10\n")
    path = star(tmp_path, "_rlnImageName\n_rlnOpticsGroup\n_rlnAngleRot\n_rlnAngleTilt\n_rlnAnglePsi\n"
                          "_rlnOriginX\n_rlnOriginY\n1@a.mrcs 1 0 0 0 1 0\n1@b.mrcs 2 0 0 0 1 0\n2@a.mrcs 1 0 0 0 0 1",
                optics)
    p = read_star(path, validate=True)
    assert p.pixel_sizes.tolist() == [1.24, 1.25, 1.24] and p.boxes.tolist() == [8, 10, 8]
    np.testing.assert_allclose(p.origins_A, [[1.24, 0], [1.25, 0], [0, 1.24]])  # px · each group's pixel size
    write_star(tmp_path / "out.star", p)
    write_cs(tmp_path / "out.cs", p)
    for back in (read_star(tmp_path / "out.star", validate=True), read_cs(tmp_path / "out.cs", validate=True)):
        np.testing.assert_allclose(back.pixel_sizes, p.pixel_sizes, rtol=1e-6)
        assert back.boxes.tolist() == [8, 10, 8]
        np.testing.assert_allclose(back.origins_A, p.origins_A, atol=1e-5)
