"""Malformed input: every case raises FlexviewInputError naming the file and the field."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flexview.errors import FlexviewInputError
from flexview.io import read_cs, read_particles, read_star, write_stack

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

OPTICS = """
data_optics
loop_
_rlnOpticsGroup
_rlnVoltage
_rlnSphericalAberration
_rlnAmplitudeContrast
_rlnImagePixelSize
_rlnImageSize
1 300 2.7 0.1 2.0 16
"""


def star(folder: Path, particles: str, optics: str = OPTICS) -> Path:
    """A STAR file with ``optics`` and a data_particles block whose loop body is ``particles``."""
    path = folder / "p.star"
    path.write_text(optics + "\ndata_particles\nloop_\n" + particles.strip() + "\n")
    return path


def expect_error(call, path: Path, field: str) -> FlexviewInputError:
    with pytest.raises(FlexviewInputError) as err:
        call()
    assert err.value.field == field, str(err.value)
    assert str(path) in str(err.value) and field in str(err.value)
    return err.value


# ---------------------------------------------------------------------------------------------
# STAR
# ---------------------------------------------------------------------------------------------

STAR_CASES = {
    "no image name": ("_rlnDefocusU\n10000", "rlnImageName"),
    "rot without psi": ("_rlnImageName\n_rlnAngleRot\n_rlnAngleTilt\n1@s.mrcs 10 20", "rlnAnglePsi"),
    "tilt without rot": ("_rlnImageName\n_rlnAngleTilt\n_rlnAnglePsi\n1@s.mrcs 10 20", "rlnAngleRot"),
    "origin x without y": ("_rlnImageName\n_rlnOriginXAngst\n1@s.mrcs 1.0", "rlnOriginYAngst"),
    "non-numeric defocus": ("_rlnImageName\n_rlnDefocusU\n1@s.mrcs 10000\n2@s.mrcs abc", "rlnDefocusU"),
    "NaN tilt": ("_rlnImageName\n_rlnAngleRot\n_rlnAngleTilt\n_rlnAnglePsi\n1@s.mrcs 1 nan 3", "rlnAngleTilt"),
    "Inf defocus": ("_rlnImageName\n_rlnDefocusU\n_rlnDefocusV\n1@s.mrcs 1000 inf", "rlnDefocusV"),
    "unknown optics group": ("_rlnImageName\n_rlnOpticsGroup\n1@s.mrcs 1\n2@s.mrcs 7", "rlnOpticsGroup"),
    "random subset 3": ("_rlnImageName\n_rlnRandomSubset\n1@s.mrcs 3", "rlnRandomSubset"),
    "image number not a number": ("_rlnImageName\nabc@s.mrcs", "rlnImageName"),
    "image number zero": ("_rlnImageName\n0@s.mrcs", "rlnImageName"),
    "premultiplied per particle": ("_rlnImageName\n_rlnCtfDataAreCtfPremultiplied\n1@s.mrcs 1",
                                   "rlnCtfDataAreCtfPremultiplied"),
    "phase flipped": ("_rlnImageName\n_rlnCtfDataArePhaseFlipped\n1@s.mrcs 1", "rlnCtfDataArePhaseFlipped"),
}


@pytest.mark.parametrize("case", sorted(STAR_CASES))
def test_bad_star_columns(tmp_path, case):
    body, field = STAR_CASES[case]
    path = star(tmp_path, body)
    expect_error(lambda: read_star(path), path, field)


def test_premultiplied_in_optics(tmp_path):
    optics = OPTICS.replace("_rlnImageSize\n", "_rlnImageSize\n_rlnCtfDataAreCtfPremultiplied\n").replace(
        "2.0 16", "2.0 16 1")
    path = star(tmp_path, "_rlnImageName\n1@s.mrcs", optics)
    err = expect_error(lambda: read_star(path), path, "rlnCtfDataAreCtfPremultiplied")
    assert "premultiplied" in str(err)


@pytest.mark.parametrize("sizes, pixel_sizes, boxes", [
    (("2.0 16", "2.0 20"), None, [16, 20]),
    (("2.0 16", "1.0 16"), [2.0, 1.0], None),
])
def test_mixed_optics_groups_are_read_per_particle(tmp_path, sizes, pixel_sizes, boxes):
    optics = ("data_optics\nloop_\n_rlnOpticsGroup\n_rlnImagePixelSize\n_rlnImageSize\n"
              f"1 {sizes[0]}\n2 {sizes[1]}\n")
    path = star(tmp_path, "_rlnImageName\n_rlnOpticsGroup\n1@s.mrcs 1\n2@s.mrcs 2", optics)
    one_group = tmp_path / "one.star"  # only the groups in use matter
    one_group.write_text(path.read_text().replace("2@s.mrcs 2", "2@s.mrcs 1"))
    uniform = read_star(one_group)
    assert len(uniform) == 2 and uniform.pixel_sizes is None and uniform.boxes is None
    p = read_star(path)
    assert (p.pixel_size, p.box) == (2.0, 16)  # the lowest optics group's
    assert (None if p.pixel_sizes is None else p.pixel_sizes.tolist()) == pixel_sizes
    assert (None if p.boxes is None else p.boxes.tolist()) == boxes
    assert p.optics["rlnImagePixelSize"].tolist() == [2.0, float(sizes[1].split()[0])]
    assert p.optics["rlnImageSize"].tolist() == [16, int(sizes[1].split()[1])]


def test_mixed_pixel_size_relion30(tmp_path):
    path = tmp_path / "p.star"
    path.write_text("data_\nloop_\n_rlnImageName\n_rlnDetectorPixelSize\n_rlnMagnification\n"
                    "1@s.mrcs 5 10000\n2@s.mrcs 5 20000\n")
    p = read_star(path)
    assert p.pixel_sizes.tolist() == [5.0, 2.5] and sorted(set(p.optics_group)) == [1, 2]


@pytest.mark.parametrize("text, field", [
    ("this is not a STAR file\n", "data_"),
    ("", "data_"),
    (OPTICS, "data_particles"),
])
def test_not_a_particle_star(tmp_path, text, field):
    path = tmp_path / "p.star"
    path.write_text(text)
    expect_error(lambda: read_star(path), path, field)


def test_unknown_suffix(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("x")
    expect_error(lambda: read_particles(path), path, "file name")


# ---------------------------------------------------------------------------------------------
# image stacks
# ---------------------------------------------------------------------------------------------

def good_star(folder: Path, image_size: int = 16, numbers=(1, 2)) -> Path:
    body = "_rlnImageName\n" + "\n".join(f"{i}@s.mrcs" for i in numbers)
    return star(folder, body, OPTICS.replace("2.0 16", f"2.0 {image_size}"))


def test_missing_stack_reads_metadata_then_fails_on_validate(tmp_path):
    path = good_star(tmp_path)
    p = read_star(path)  # metadata alone is fine
    assert p.images.missing() == [tmp_path / "s.mrcs"]
    expect_error(p.images.validate, tmp_path / "s.mrcs", "rlnImageName")
    expect_error(lambda: p.images.read(0), tmp_path / "s.mrcs", "rlnImageName")
    expect_error(lambda: read_star(path, validate=True), tmp_path / "s.mrcs", "rlnImageName")


def test_index_past_end_of_stack(tmp_path):
    write_stack(tmp_path / "s.mrcs", np.zeros((2, 16, 16), np.float32), 2.0)
    path = good_star(tmp_path, numbers=(1, 3))
    err = expect_error(lambda: read_star(path), path, "rlnImageName")  # the stack header is read at once
    assert "image 3 is past the end" in str(err) and "holds 2" in str(err)
    expect_error(lambda: read_star(path, strict=False, validate=True), tmp_path / "s.mrcs", "image index")
    expect_error(lambda: read_star(path, strict=False).images.read(1), tmp_path / "s.mrcs", "image index")


def test_non_square_images(tmp_path):
    write_stack(tmp_path / "s.mrcs", np.zeros((2, 16, 20), np.float32), 2.0)
    path = good_star(tmp_path)
    err = expect_error(lambda: read_star(path), tmp_path / "s.mrcs", "nx, ny")
    assert "square" in str(err)
    err = expect_error(lambda: read_star(path, strict=False, validate=True), tmp_path / "s.mrcs", "image shape")
    assert "square" in str(err)


def test_box_differs_from_metadata(tmp_path):
    write_stack(tmp_path / "s.mrcs", np.zeros((2, 20, 20), np.float32), 2.0)
    path = good_star(tmp_path, image_size=16)
    err = expect_error(lambda: read_star(path), path, "rlnImageSize")
    assert "16 px" in str(err) and "20 px" in str(err)
    expect_error(lambda: read_star(path, strict=False, validate=True), tmp_path / "s.mrcs", "image shape")
    expect_error(lambda: read_star(path, strict=False).images.read(0), tmp_path / "s.mrcs", "image shape")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_pixels(tmp_path, bad):
    images = np.zeros((2, 16, 16), np.float32)
    images[1, 3, 4] = bad
    write_stack(tmp_path / "s.mrcs", images, 2.0)
    p = read_star(good_star(tmp_path))
    p.images.read(0)  # the clean image reads
    expect_error(lambda: p.images.read(slice(None)), tmp_path / "s.mrcs", "image")


# ---------------------------------------------------------------------------------------------
# .cs
# ---------------------------------------------------------------------------------------------

def cs_file(folder: Path, n: int = 2, drop=(), **replace) -> Path:
    fields = {"blob/path": np.array([b"s.mrcs"] * n), "blob/idx": np.arange(n, dtype=np.uint32),
              "blob/shape": np.tile(np.array([16, 16], np.uint32), (n, 1)),
              "blob/psize_A": np.full(n, 2.0, np.float32), "blob/sign": np.full(n, -1.0, np.float32),
              "alignments3D/pose": np.zeros((n, 3), np.float32), "alignments3D/split": np.zeros(n, np.uint32)}
    fields.update({k.replace("__", "/"): np.asarray(v) for k, v in replace.items()})
    fields = {k: v for k, v in fields.items() if k not in drop}
    array = np.empty(n, dtype=[(k, v.dtype, v.shape[1:]) for k, v in fields.items()])
    for k, v in fields.items():
        array[k] = v
    path = folder / "p.cs"
    with open(path, "wb") as fh:
        np.save(fh, array)
    return path


CS_CASES = {
    "missing blob/path": (dict(drop=("blob/path",)), "blob/path"),
    "non-square shape": (dict(blob__shape=np.array([[16, 20], [16, 20]], np.uint32)), "blob/shape"),
    "sign zero": (dict(blob__sign=np.zeros(2, np.float32)), "blob/sign"),
    "NaN pose": (dict(alignments3D__pose=np.array([[0, 0, 0], [0, np.nan, 0]], np.float32)), "alignments3D/pose"),
    "split 2": (dict(alignments3D__split=np.array([0, 2], np.uint32)), "alignments3D/split"),
    "ctf without voltage": (dict(ctf__df1_A=np.full(2, 1e4, np.float32)), "ctf/accel_kv"),
    "text pixel size": (dict(blob__psize_A=np.array([b"2.0", b"2.0"])), "blob/psize_A"),
}


@pytest.mark.parametrize("case", sorted(CS_CASES))
def test_bad_cs_fields(tmp_path, case):
    kwargs, field = CS_CASES[case]
    path = cs_file(tmp_path, **kwargs)
    expect_error(lambda: read_cs(path), path, field)


def test_cs_missing_stack_and_index_past_end(tmp_path):
    path = cs_file(tmp_path, blob__idx=np.array([0, 5], np.uint32))
    p = read_cs(path)
    expect_error(p.images.validate, tmp_path / "s.mrcs", "blob/path")
    write_stack(tmp_path / "s.mrcs", np.zeros((2, 16, 16), np.float32), 2.0)
    err = expect_error(lambda: read_cs(path), path, "blob/idx")
    assert "image 6 is past the end" in str(err)
    expect_error(lambda: read_cs(path, strict=False, validate=True), tmp_path / "s.mrcs", "image index")


def test_cs_mixed_box_and_pixel_size_are_read_per_particle(tmp_path):
    p = read_cs(cs_file(tmp_path, blob__shape=np.array([[16, 16], [20, 20]], np.uint32),
                        blob__psize_A=np.array([2.0, 1.0], np.float32)))
    assert p.boxes.tolist() == [16, 20] and p.pixel_sizes.tolist() == [2.0, 1.0]


@pytest.mark.parametrize("content, field", [
    (b"not an npy file at all", "format"),
    (None, "format"),  # an object array: loading it would need pickle, which is refused
    (np.zeros((3, 3)), "dtype"),
])
def test_unreadable_cs(tmp_path, content, field):
    path = tmp_path / "p.cs"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        array = np.array([{"a": 1}], dtype=object) if content is None else content
        with open(path, "wb") as fh:
            np.save(fh, array, allow_pickle=True)
    expect_error(lambda: read_cs(path), path, field)
