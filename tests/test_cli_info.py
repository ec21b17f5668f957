"""``flexview info`` through :func:`flexview.cli.main`."""
from __future__ import annotations

import numpy as np
import pytest

from flexview import cli
from flexview.io import ParticleSet, write_cs, write_map, write_stack, write_star
from flexview.io.particles import SignedImages

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")



def test_relion31_summary(run_info, shared_data):
    code, out, err = run_info(shared_data / "formats" / "relion31.star")
    assert code == 0 and err == ""
    for line in ("particles: 5", "box: 256 px", "pixel size: 2.8060 Å", "poses: present", "CTF: present",
                 "half sets: present (5 / 0)", "optics groups: 1", "0 missing"):
        assert line in out
    assert "300 kV, Cs 0.01 mm" in out


def test_cryosparc_export_with_missing_stacks(run_info, shared_data):
    code, out, err = run_info(shared_data / "formats" / "cryosparc_J2_particles_exported.cs")
    assert code == 0
    assert "particles: 22" in out and "poses: absent" in out and "CTF: present" in out
    assert "1 missing" in out and "blob sign: -1" in out
    assert "warning" in err and "blob/path" in err and "_ali_DW.mrcs" in err
    code, _, err = run_info(shared_data / "formats" / "cryosparc_J2_particles_exported.cs", "--validate")
    assert code == 2 and "blob/path" in err


def test_synthetic_groups_halves_and_flipped_sign(run_info, tmp_path, particle_set):
    particles, _ = particle_set
    write_star(tmp_path / "p.star", particles)
    code, out, _ = run_info(tmp_path / "p.star", "--validate")
    assert code == 0
    assert "particles: 6" in out and "half sets: present (3 / 3)" in out and "optics groups: 2" in out
    assert "group 1 (grid1): 3 particles, 2.0000 Å/px, box 16, 300 kV" in out
    assert "group 2 (grid2): 3 particles, 2.0000 Å/px, box 16, 200 kV" in out
    flipped = ParticleSet(images=SignedImages(particles.images, [-1, 1, 1, -1, 1, 1]), pixel_size=2.0, box=16)
    write_cs(tmp_path / "f.cs", flipped)
    code, out, _ = run_info(tmp_path / "f.cs")
    assert code == 0 and "blob sign: +1 (opposite contrast) for 2 particles" in out


def test_map_and_stack_statistics(run_info, tmp_path):
    rng = np.random.default_rng(0)
    volume = rng.normal(2.0, 3.0, (8, 10, 12)).astype(np.float32)
    write_map(tmp_path / "v.mrc", volume, 1.25)
    code, out, _ = run_info(tmp_path / "v.mrc")
    assert code == 0
    assert "kind: volume" in out and "shape: 8 x 10 x 12 (z, y, x)" in out and "voxel size: 1.2500 Å" in out
    for name, value in (("min", volume.min()), ("max", volume.max()), ("mean", volume.astype(np.float64).mean())):
        shown = float(next(line for line in out.splitlines() if line.startswith(name + ":")).split(":")[1])
        assert shown == pytest.approx(value, rel=1e-5)
    write_stack(tmp_path / "s.mrcs", volume[:3], 2.0)
    code, out, _ = run_info(tmp_path / "s.mrcs")
    assert code == 0 and "kind: image stack" in out and "(n, y, x)" in out


@pytest.mark.parametrize("name, content, field", [
    ("bad.star", "data_optics\nloop_\n_rlnOpticsGroup\n1\n", "data_particles"),
    ("bad.star", "data_\nloop_\n_rlnImageName\n_rlnAngleRot\n_rlnDetectorPixelSize\n_rlnMagnification\n"
                 "1@x.mrcs 3 5 10000\n", "rlnAngleTilt"),
    ("bad.cs", "not numpy", "format"),
    ("bad.txt", "hello", "file name"),
])
def test_malformed_files_exit_2_naming_file_and_field(run_info, tmp_path, name, content, field):
    (tmp_path / name).write_text(content)
    code, out, err = run_info(tmp_path / name)
    assert code == 2 and out == ""
    assert str(tmp_path / name) in err and f"field '{field}'" in err


def test_nan_in_map_is_a_warning(run_info, tmp_path):
    volume = np.zeros((4, 4, 4), np.float32)
    volume[1, 2, 3] = np.nan
    volume[0, 0, 0] = 5.0
    write_map(tmp_path / "n.mrc", volume, 1.0)
    code, out, err = run_info(tmp_path / "n.mrc")
    assert code == 0 and "non-finite values: 1" in out and "max: 5" in out
    assert "warning" in err and "n.mrc" in err and "field 'data'" in err and "1 value is NaN" in err


def test_missing_file_exits_2(run_info, tmp_path):
    code, _, err = run_info(tmp_path / "absent.star")
    assert code == 2 and "absent.star" in err and "not found" in err
