"""cryoSPARC .cs reader: shared files, the three-format conventions set, generated arrays."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flexview.errors import FlexviewInputError
from flexview.io import read_cs, read_particles, read_star, write_stack
from flexview.io.particles import SignedImages

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def rodrigues(rotvec: np.ndarray) -> np.ndarray:
    """exp([r]×) = I + sin θ K + (1 − cos θ) K² for each rotation vector (independent of scipy)."""
    out = []
    for r in np.asarray(rotvec, dtype=np.float64):
        theta = np.linalg.norm(r)
        if theta == 0:
            out.append(np.eye(3))
            continue
        x, y, z = r / theta
        k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
        out.append(np.eye(3) + np.sin(theta) * k + (1 - np.cos(theta)) * k @ k)
    return np.array(out)


def cs_array(n: int, **fields) -> np.ndarray:
    """A structured array with the given fields (name → values of shape (n, ...))."""
    values = {k: np.asarray(v) for k, v in fields.items()}
    out = np.empty(n, dtype=[(k, v.dtype, v.shape[1:]) for k, v in values.items()])
    for k, v in values.items():
        out[k] = v
    return out


def save_cs(path: Path, array: np.ndarray) -> Path:
    with open(path, "wb") as fh:
        np.save(fh, array)
    return path


def blob_fields(n: int, name: bytes = b"s.mrcs", box: int = 16, psize: float = 2.0, sign: float = -1.0):
    return {"uid": np.arange(1, n + 1, dtype=np.uint64), "blob/path": np.array([name] * n),
            "blob/idx": np.arange(n, dtype=np.uint32), "blob/shape": np.tile(np.array([box, box], np.uint32), (n, 1)),
            "blob/psize_A": np.full(n, psize, np.float32), "blob/sign": np.full(n, sign, np.float32)}


# ---------------------------------------------------------------------------------------------
# shared files
# ---------------------------------------------------------------------------------------------

def test_empiar_cs_matches_star(shared_data):
    star = read_star(shared_data / "formats" / "empiar_10076_7.star")
    cs = read_cs(shared_data / "formats" / "empiar_10076_7.cs", validate=True)
    assert cs.source_format == "cryosparc" and len(cs) == 7 and cs.box == 320
    assert cs.pixel_size == pytest.approx(star.pixel_size, rel=1e-6)
    assert cs.rotations is None and not cs.has_half_sets
    for name in ("defocus_u_A", "defocus_v_A", "defocus_angle_deg", "voltage_kv", "cs_mm", "amplitude_contrast"):
        np.testing.assert_allclose(getattr(cs.ctf, name), getattr(star.ctf, name), rtol=1e-6, atol=1e-5)
    assert not isinstance(cs.images, SignedImages)  # blob/sign −1: RELION contrast
    np.testing.assert_array_equal(cs.images.read(slice(None)), star.images.read(slice(None)))
    assert list(cs.extra["ctf/type"]) == ["imported"] * 7
    assert {"ctf/shift_A/0", "ctf/shift_A/1", "uid"} <= set(cs.extra.columns)


def test_cryosparc_export_without_3d_poses(shared_data):
    path = shared_data / "formats" / "cryosparc_J2_particles_exported.cs"
    p = read_particles(path)
    assert len(p) == 22 and p.box == 300 and p.pixel_size == pytest.approx(1.345, rel=1e-6)
    assert p.rotations is None and p.origins_A is None and not p.has_poses and p.has_ctf
    assert not p.has_half_sets
    assert "alignments2D/pose" in p.extra and "alignments2D/shift/1" in p.extra
    missing = p.images.missing()
    assert len(missing) == 1 and missing[0].name.endswith("_ali_DW.mrcs")
    with pytest.raises(FlexviewInputError) as err:
        p.images.validate()
    assert err.value.field == "blob/path" and missing[0].name in str(err.value)


def test_conventions_three_formats_agree(shared_data):
    folder = shared_data / "conventions"
    sets = [read_star(folder / "particles.star"), read_star(folder / "particles_relion30.star"),
            read_cs(folder / "particles.cs")]
    ref = sets[0]
    for p in sets[1:]:
        assert p.pixel_size == ref.pixel_size and p.box == ref.box
        np.testing.assert_allclose(p.rotations, ref.rotations, atol=1e-6)
        np.testing.assert_allclose(p.origins_A, ref.origins_A, atol=1e-5)
        np.testing.assert_array_equal(p.half_set, ref.half_set)
        for name in ("defocus_u_A", "defocus_v_A", "defocus_angle_deg", "voltage_kv", "cs_mm", "amplitude_contrast",
                     "phase_shift_deg", "bfactor_A2", "scale"):
            np.testing.assert_allclose(getattr(p.ctf, name), getattr(ref.ctf, name), rtol=1e-6, atol=1e-4)
        rows = [0, 1, 500, 999]
        np.testing.assert_array_equal(p.images.read(rows), ref.images.read(rows))
    # the .cs rotation vectors against an independent Rodrigues formula: A = expm([r]×)ᵀ
    raw = np.load(folder / "particles.cs", allow_pickle=False)
    np.testing.assert_allclose(rodrigues(raw["alignments3D/pose"][:50]).transpose(0, 2, 1), ref.rotations[:50],
                               atol=1e-6)


# ---------------------------------------------------------------------------------------------
# generated arrays
# ---------------------------------------------------------------------------------------------

def test_generated_cs_fields_map_onto_particle_set(tmp_path):
    n = 4
    rng = np.random.default_rng(3)
    images = rng.normal(size=(n, 16, 16)).astype(np.float32)
    write_stack(tmp_path / "s.mrcs", images, 2.0)
    pose = rng.normal(size=(n, 3)).astype(np.float32)
    shift = rng.uniform(-3, 3, (n, 2)).astype(np.float32)
    fields = blob_fields(n) | {
        "ctf/accel_kv": np.full(n, 300, np.float32), "ctf/cs_mm": np.full(n, 2.7, np.float32),
        "ctf/amp_contrast": np.full(n, 0.1, np.float32), "ctf/df1_A": np.full(n, 15000, np.float32),
        "ctf/df2_A": np.full(n, 14000, np.float32), "ctf/df_angle_rad": np.full(n, np.pi / 6, np.float32),
        "ctf/phase_shift_rad": np.full(n, np.pi / 2, np.float32), "ctf/exp_group_id": np.zeros(n, np.uint32),
        "alignments3D/pose": pose, "alignments3D/shift": shift,
        "alignments3D/psize_A": np.full(n, 4.0, np.float32),  # aligned at a coarser pixel size
        "alignments3D/split": np.array([0, 1, 1, 0], np.uint32),
        "alignments3D/error": np.arange(n, dtype=np.float32)}
    p = read_cs(save_cs(tmp_path / "p.cs", cs_array(n, **fields)), validate=True)
    np.testing.assert_allclose(p.rotations, rodrigues(pose).transpose(0, 2, 1), atol=1e-6)
    np.testing.assert_allclose(p.origins_A, shift * 4.0, rtol=1e-6)  # same sign as RELION, × psize
    np.testing.assert_array_equal(p.half_set, [0, 1, 1, 0])
    np.testing.assert_allclose(p.ctf.defocus_angle_deg, 30.0, rtol=1e-6)
    np.testing.assert_allclose(p.ctf.phase_shift_deg, 90.0, rtol=1e-6)
    np.testing.assert_allclose(p.ctf.scale, 1.0)
    np.testing.assert_array_equal(p.optics_group, 1)  # exp_group_id 0 → group 1
    np.testing.assert_array_equal(p.images.read(slice(None)), images)
    np.testing.assert_array_equal(p.extra["alignments3D/error"], np.arange(n))


def test_blob_sign_plus_one_negates_images(tmp_path):
    images = np.random.default_rng(4).normal(size=(3, 16, 16)).astype(np.float32)
    write_stack(tmp_path / "s.mrcs", images, 2.0)
    fields = blob_fields(3)
    fields["blob/sign"] = np.array([1, -1, 1], np.float32)
    p = read_cs(save_cs(tmp_path / "p.cs", cs_array(3, **fields)))
    assert isinstance(p.images, SignedImages)
    np.testing.assert_array_equal(p.images.read(slice(None)), images * np.array([-1, 1, -1])[:, None, None])
    np.testing.assert_array_equal(p.subset([2]).images.read(0), -images[2])


def test_project_relative_blob_paths(tmp_path):
    project = tmp_path / "P1"
    images = np.random.default_rng(5).normal(size=(2, 16, 16)).astype(np.float32)
    write_stack(project / "J1" / "imported" / "s.mrcs", images, 2.0)
    (project / "J3").mkdir()
    path = save_cs(project / "J3" / "particles.cs", cs_array(2, **blob_fields(2, b">J1/imported/s.mrcs")))
    # found through the parent of the job folder without naming the project
    p = read_cs(path)
    assert p.images.missing() == []
    np.testing.assert_array_equal(p.images.read(slice(None)), images)
    # and through project_dir when the .cs file lives elsewhere
    (tmp_path / "export").mkdir()
    moved = save_cs(tmp_path / "export" / "particles.cs", np.load(path, allow_pickle=False))
    assert read_cs(moved).images.missing()
    assert read_cs(moved, project_dir=project).images.missing() == []


def test_float32_fields_read_as_short_decimals(tmp_path):
    from flexview.io.tables import float32_to_decimal

    values = np.random.default_rng(6).normal(0, 1000, (500, 3)).astype(np.float32)
    decimal = float32_to_decimal(values)
    assert decimal.shape == values.shape
    np.testing.assert_array_equal(decimal.astype(np.float32), values)  # the same float32 numbers
    assert all(len(f"{v:.15g}".lstrip("-").replace(".", "").lstrip("0")) <= 9 for v in decimal.ravel())
    fields = blob_fields(2, psize=2.806)
    p = read_cs(save_cs(tmp_path / "p.cs", cs_array(2, **fields)))
    assert p.pixel_size == 2.806  # not 2.8059999942779541
