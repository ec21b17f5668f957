"""RELION STAR reader: shared real-world files, generated files of each layout, defaults."""
from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
import pytest

from flexview.io import read_particles, read_star, write_stack
from flexview.model.pose import euler_to_matrix

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # mrcfile on old headers


def parse_loops(path: Path) -> dict[str, dict[str, list[str]]]:
    """Minimal independent STAR parser: block name → column → list of text values (loops only)."""
    blocks: dict[str, dict[str, list[str]]] = {}
    block, labels = None, []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("data_"):
            block, labels = line[5:], []
            blocks[block] = {}
        elif line.startswith("loop_"):
            labels = []
        elif line.startswith("_"):
            labels.append(line.split()[0][1:])
            blocks[block][labels[-1]] = []
        else:
            for label, value in zip(labels, line.split()):
                blocks[block][label].append(value)
    return blocks


def column(table: dict[str, list[str]], name: str) -> np.ndarray:
    return np.array([float(v) for v in table[name]])


def write_text(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n")
    return path


# ---------------------------------------------------------------------------------------------
# shared real-world files
# ---------------------------------------------------------------------------------------------

def test_relion31_shared_file(shared_data):
    path = shared_data / "formats" / "relion31.star"
    p = read_star(path)
    raw = parse_loops(path)["particles"]
    assert len(p) == 5 and p.box == 256 and p.pixel_size == pytest.approx(2.806)
    assert p.source_format == "relion-3.1"
    expected = euler_to_matrix(column(raw, "rlnAngleRot"), column(raw, "rlnAngleTilt"), column(raw, "rlnAnglePsi"))
    np.testing.assert_allclose(p.rotations, expected, atol=1e-12)
    np.testing.assert_allclose(p.origins_A[:, 0], column(raw, "rlnOriginXAngst"))
    np.testing.assert_allclose(p.origins_A[:, 1], column(raw, "rlnOriginYAngst"))
    np.testing.assert_allclose(p.ctf.defocus_u_A, column(raw, "rlnDefocusU"))
    np.testing.assert_allclose(p.ctf.defocus_angle_deg, column(raw, "rlnDefocusAngle"))
    np.testing.assert_allclose(p.ctf.voltage_kv, 300.0)
    np.testing.assert_allclose(p.ctf.cs_mm, 0.01)
    np.testing.assert_array_equal(p.half_set, column(raw, "rlnRandomSubset") - 1)
    assert list(p.extra["rlnMicrographName"]) == raw["rlnMicrographName"]
    assert "rlnCoordinateX" in p.extra and "rlnDefocusU" not in p.extra
    assert p.optics["rlnMicrographOriginalPixelSize"].iloc[0] == pytest.approx(1.403)
    with mrcfile.open(shared_data / "formats" / "relion31.mrcs", permissive=True) as m:
        np.testing.assert_array_equal(p.images.read(slice(None)), m.data)
    p.images.validate()


def test_relion30_shared_file(shared_data):
    path = shared_data / "formats" / "empiar_10076_7.star"
    p = read_particles(path, validate=True)
    assert p.source_format == "relion-3.0"
    assert len(p) == 7 and p.box == 320
    assert p.pixel_size == pytest.approx(5 * 1e4 / 38168)
    assert p.rotations is None and p.origins_A is None and not p.has_half_sets
    raw = parse_loops(path)[""]
    np.testing.assert_allclose(p.ctf.defocus_v_A, column(raw, "rlnDefocusV"))
    np.testing.assert_allclose(p.ctf.amplitude_contrast, 0.07)
    assert list(p.optics["rlnOpticsGroup"]) == [1]
    with mrcfile.open(shared_data / "formats" / "empiar_10076_7.mrc", permissive=True) as m:
        np.testing.assert_array_equal(p.images.read([6, 0]), m.data[[6, 0]])


def test_conventions_relion30_equals_relion31(shared_data):
    a = read_star(shared_data / "conventions" / "particles.star")
    b = read_star(shared_data / "conventions" / "particles_relion30.star")
    assert (a.source_format, b.source_format) == ("relion-3.1", "relion-3.0")
    assert a.pixel_size == b.pixel_size == 1.5 and a.box == b.box == 64
    np.testing.assert_allclose(b.rotations, a.rotations, atol=1e-12)
    np.testing.assert_allclose(b.origins_A, a.origins_A, atol=1e-9)  # 3.0 origins are pixels × 1.5
    np.testing.assert_array_equal(b.half_set, a.half_set)
    np.testing.assert_allclose(b.ctf.defocus_angle_deg, a.ctf.defocus_angle_deg)
    rows = [0, 499, 999]
    np.testing.assert_array_equal(a.images.read(rows), b.images.read(rows))


# ---------------------------------------------------------------------------------------------
# generated files
# ---------------------------------------------------------------------------------------------

OPTICS_TWO_GROUPS = """
data_optics
loop_
_rlnOpticsGroup
_rlnOpticsGroupName
_rlnVoltage
_rlnSphericalAberration
_rlnAmplitudeContrast
_rlnImagePixelSize
_rlnImageSize
_rlnImageDimensionality
1 g1 300 2.7 0.1 2.0 16 2
2 g2 200 2.0 0.07 2.0 16 2
"""


def test_relion31_generated_two_groups_and_overrides(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.normal(size=(3, 16, 16)).astype(np.float32)
    write_stack(tmp_path / "s.mrcs", images, 2.0)
    star = write_text(tmp_path / "p.star", OPTICS_TWO_GROUPS + """
data_particles
loop_
_rlnImageName
_rlnAngleRot
_rlnAngleTilt
_rlnAnglePsi
_rlnOriginXAngst
_rlnOriginYAngst
_rlnDefocusU
_rlnOpticsGroup
_rlnVoltage
_rlnMicrographName
000003@s.mrcs 10 20 30 1.5 -2.5 12000 1 300 m1
000001@s.mrcs 40 50 60 0 0 13000 2 200 m2
000002@s.mrcs 70 80 90 -1 1 14000 2 120 m3
""")
    p = read_star(star, validate=True)
    np.testing.assert_array_equal(p.optics_group, [1, 2, 2])
    np.testing.assert_allclose(p.ctf.voltage_kv, [300, 200, 120])  # per-particle override wins
    np.testing.assert_allclose(p.ctf.cs_mm, [2.7, 2.0, 2.0])
    np.testing.assert_allclose(p.ctf.amplitude_contrast, [0.1, 0.07, 0.07])
    np.testing.assert_allclose(p.ctf.defocus_v_A, p.ctf.defocus_u_A)  # rlnDefocusV absent → U
    np.testing.assert_allclose(p.ctf.defocus_angle_deg, 0.0)
    np.testing.assert_allclose(p.ctf.scale, 1.0)
    np.testing.assert_allclose(p.ctf.bfactor_A2, 0.0)
    np.testing.assert_allclose(p.origins_A, [[1.5, -2.5], [0, 0], [-1, 1]])
    np.testing.assert_allclose(p.rotations[1], euler_to_matrix(40, 50, 60))
    np.testing.assert_array_equal(p.half_set, -1)
    np.testing.assert_array_equal(p.images.read(slice(None)), images[[2, 0, 1]])
    assert list(p.extra.columns) == ["rlnMicrographName"]
    assert list(p.optics["rlnOpticsGroupName"]) == ["g1", "g2"]


def test_relion30_generated_origins_in_pixels(tmp_path):
    write_stack(tmp_path / "s.mrcs", np.zeros((2, 16, 16), np.float32), 3.0)
    star = write_text(tmp_path / "p.star", """
data_images
loop_
_rlnImageName
_rlnAngleRot
_rlnAngleTilt
_rlnAnglePsi
_rlnOriginX
_rlnOriginY
_rlnDefocusU
_rlnDefocusV
_rlnDefocusAngle
_rlnVoltage
_rlnSphericalAberration
_rlnAmplitudeContrast
_rlnMagnification
_rlnDetectorPixelSize
_rlnRandomSubset
1@s.mrcs 0 90 0 2.0 -1.0 15000 14000 30 300 2.7 0.1 50000 15 2
2@s.mrcs 0 90 0 0.5 0.25 15000 14000 30 300 2.7 0.1 50000 15 1
""")
    p = read_star(star)
    assert p.pixel_size == pytest.approx(3.0)  # 15 µm · 1e4 / 50000
    assert p.box == 16  # from the stack header
    np.testing.assert_allclose(p.origins_A, np.array([[2.0, -1.0], [0.5, 0.25]]) * 3.0)
    np.testing.assert_array_equal(p.half_set, [1, 0])
    assert p.optics["rlnImagePixelSize"].iloc[0] == pytest.approx(3.0)


def test_2d_only_psi_gives_no_rotations(tmp_path):
    star = write_text(tmp_path / "p.star", OPTICS_TWO_GROUPS + """
data_particles
loop_
_rlnImageName
_rlnAnglePsi
_rlnOriginXAngst
_rlnOriginYAngst
_rlnOpticsGroup
1@missing.mrcs 45 1 2 1
""")
    p = read_star(star)
    assert p.rotations is None and not p.has_poses and p.ctf is None
    np.testing.assert_allclose(p.origins_A, [[1, 2]])
    assert list(p.extra["rlnAnglePsi"]) == [45]
    assert p.images.missing() == [tmp_path / "missing.mrcs"]


def test_stacks_found_through_project_dir(tmp_path):
    project = tmp_path / "project"
    images = np.arange(2 * 16 * 16, dtype=np.float32).reshape(2, 16, 16)
    write_stack(project / "Extract" / "s.mrcs", images, 2.0)
    (tmp_path / "elsewhere").mkdir()
    star = write_text(tmp_path / "elsewhere" / "p.star", OPTICS_TWO_GROUPS + """
data_particles
loop_
_rlnImageName
_rlnOpticsGroup
000002@Extract/s.mrcs 1
""")
    assert read_star(star).images.missing()  # not next to the star file
    p = read_star(star, project_dir=project)
    assert p.images.missing() == []
    np.testing.assert_array_equal(p.images.read(0), images[1])


def test_single_optics_group_without_particle_column(tmp_path):
    star = write_text(tmp_path / "p.star", """
data_optics
loop_
_rlnOpticsGroup
_rlnImagePixelSize
_rlnImageSize
_rlnVoltage
_rlnSphericalAberration
_rlnAmplitudeContrast
4 1.2 32 300 2.7 0.1

data_particles
loop_
_rlnImageName
_rlnDefocusU
1@x.mrcs 10000
""")
    p = read_star(star)
    np.testing.assert_array_equal(p.optics_group, [4])
    assert p.box == 32 and p.pixel_size == pytest.approx(1.2)
    assert p.ctf.voltage_kv[0] == 300
