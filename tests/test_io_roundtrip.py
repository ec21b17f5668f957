"""Writers: star → subset → .cs → star keeps every field; paths, atomicity, refusals."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flexview.errors import FlexviewInputError
from flexview.io import (ArrayImages, ParticleSet, read_cs, read_star, stack_references, write_cs, write_stack,
                         write_star)
from flexview.io.particles import SignedImages
from flexview.model.ctf import CTFParams

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

CTF_FIELDS = ("defocus_u_A", "defocus_v_A", "defocus_angle_deg", "voltage_kv", "cs_mm", "amplitude_contrast",
              "phase_shift_deg", "bfactor_A2", "scale")


def assert_same_particles(a: ParticleSet, b: ParticleSet, *, extra_columns=None) -> None:
    """Every mapped field to float32 precision, the image references and the chosen extra columns."""
    assert len(a) == len(b) and a.box == b.box
    assert a.pixel_size == pytest.approx(b.pixel_size, rel=1e-6)
    np.testing.assert_allclose(a.rotations, b.rotations, atol=1e-6)
    np.testing.assert_allclose(a.origins_A, b.origins_A, atol=1e-5)
    for name in CTF_FIELDS:
        np.testing.assert_allclose(getattr(a.ctf, name), getattr(b.ctf, name), rtol=1e-6, atol=1e-4)
    np.testing.assert_array_equal(a.half_set, b.half_set)
    np.testing.assert_array_equal(a.optics_group, b.optics_group)
    ra, rb = stack_references(a.images), stack_references(b.images)
    assert [ra.paths[i].resolve() for i in ra.file_index] == [rb.paths[i].resolve() for i in rb.file_index]
    np.testing.assert_array_equal(ra.slice_index, rb.slice_index)
    np.testing.assert_array_equal(a.images.read(slice(None)), b.images.read(slice(None)))
    for name in extra_columns if extra_columns is not None else a.extra.columns:
        left, right = a.extra[name].to_numpy(), b.extra[name].to_numpy()
        if pd.api.types.is_numeric_dtype(a.extra[name]):
            np.testing.assert_allclose(right.astype(float), left.astype(float), rtol=1e-9)
        else:
            assert list(map(str, left)) == list(map(str, right))


def chain(particles: ParticleSet, folder) -> tuple[ParticleSet, ParticleSet]:
    """write_cs → read_cs → write_star → read_star."""
    write_cs(folder / "out" / "a.cs", particles)
    via_cs = read_cs(folder / "out" / "a.cs")
    write_star(folder / "out" / "b.star", via_cs)
    return via_cs, read_star(folder / "out" / "b.star")


def test_synthetic_set_survives_star_cs_star(tmp_path, particle_set):
    particles, images = particle_set
    write_star(tmp_path / "start.star", particles)
    start = read_star(tmp_path / "start.star")
    assert_same_particles(particles, start)
    np.testing.assert_array_equal(start.images.read(slice(None)), images)
    subset = start.subset([5, 0, 3, 2]).with_columns(latent_1=[0.5, -1.25, 1e-7, 3.0], latent_2=[1, 2, 3, 4.5])
    via_cs, end = chain(subset, tmp_path)
    assert_same_particles(subset, via_cs)
    assert_same_particles(subset, end)
    # the .cs writer adds a uid per particle, carried from then on like any extra column
    assert list(end.extra.columns) == ["uid", "rlnMicrographName", "rlnCoordinateX", "latent_1", "latent_2"]
    optics = end.optics.set_index("rlnOpticsGroup")
    assert list(optics["rlnOpticsGroupName"]) == ["grid1", "grid2"]
    assert list(optics["rlnVoltage"]) == [300.0, 200.0]
    assert list(optics["rlnMicrographOriginalPixelSize"]) == [1.0, 1.0]


def test_shared_relion31_subset_round_trip(tmp_path, shared_data):
    start = read_star(shared_data / "formats" / "relion31.star")
    subset = start.subset([4, 1]).with_columns(latent_1=[0.25, -0.75])
    _, end = chain(subset, tmp_path)
    assert_same_particles(subset, end)
    assert end.optics["rlnMicrographOriginalPixelSize"].iloc[0] == pytest.approx(1.403)


def test_cs_fields_survive_cs_star_cs(tmp_path, shared_data):
    start = read_cs(shared_data / "conventions" / "particles.cs").subset(np.arange(0, 1000, 97))
    write_star(tmp_path / "a.star", start)
    write_cs(tmp_path / "b.cs", read_star(tmp_path / "a.star"))
    end = read_cs(tmp_path / "b.cs")
    assert_same_particles(start, end)
    raw = np.load(tmp_path / "b.cs", allow_pickle=False)
    assert raw["ctf/shift_A"].shape == (len(start), 2)  # vector fields joined again
    assert list(raw["ctf/type"]) == [b"imported"] * len(start)
    original = np.load(shared_data / "conventions" / "particles.cs", allow_pickle=False)
    np.testing.assert_array_equal(raw["uid"], original["uid"][np.arange(0, 1000, 97)])
    np.testing.assert_allclose(raw["alignments3D/shift"], original["alignments3D/shift"][np.arange(0, 1000, 97)],
                               atol=1e-5)


def test_image_names_relative_to_star_folder(tmp_path, particle_set):
    particles, _ = particle_set
    write_star(tmp_path / "sub" / "p.star", particles)
    text = (tmp_path / "sub" / "p.star").read_text()
    assert "000001@../stacks/a.mrcs" in text and "000003@../stacks/b.mrcs" in text
    write_star(tmp_path / "q.star", particles, image_root=tmp_path / "stacks")
    assert "000002@a.mrcs" in (tmp_path / "q.star").read_text()
    assert read_star(tmp_path / "q.star", project_dir=tmp_path / "stacks").images.missing() == []


def test_cs_keeps_its_name_and_leaves_no_temporary(tmp_path, particle_set):
    particles, _ = particle_set
    write_cs(tmp_path / "x.cs", particles)
    write_star(tmp_path / "x.star", particles)
    names = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
    assert names == ["x.cs", "x.star"]
    np.load(tmp_path / "x.cs", allow_pickle=False)  # a plain NPY structured array


def test_write_refuses_images_without_files(tmp_path, particle_set):
    particles, images = particle_set
    in_memory = ParticleSet(images=ArrayImages(images), pixel_size=2.0, box=16)
    for writer, field in ((write_star, "rlnImageName"), (write_cs, "blob/path")):
        with pytest.raises(FlexviewInputError) as err:
            writer(tmp_path / "x", in_memory)
        assert err.value.field == field
    assert not (tmp_path / "x").exists()


def test_opposite_contrast_round_trips_in_cs_and_is_refused_in_star(tmp_path, particle_set):
    particles, images = particle_set
    factors = np.where(np.arange(len(particles)) % 3 == 0, -1.0, 1.0)
    flipped = ParticleSet(images=SignedImages(particles.images, factors), pixel_size=2.0, box=16,
                          ctf=particles.ctf)
    write_cs(tmp_path / "f.cs", flipped)
    back = read_cs(tmp_path / "f.cs")
    np.testing.assert_array_equal(np.load(tmp_path / "f.cs")["blob/sign"], -factors)
    np.testing.assert_array_equal(back.images.read(slice(None)), images * factors[:, None, None])
    with pytest.raises(FlexviewInputError) as err:
        write_star(tmp_path / "f.star", back)
    assert "contrast" in str(err.value)


def test_minimal_set_without_poses_ctf_or_halves(tmp_path):
    write_stack(tmp_path / "s.mrcs", np.ones((3, 16, 16), np.float32), 1.0)
    from flexview.io import StackImages

    minimal = ParticleSet(images=StackImages([tmp_path / "s.mrcs"], [0, 0, 0], [2, 1, 0], 16), pixel_size=1.0,
                          box=16)
    for name, writer, reader in (("m.star", write_star, read_star), ("m.cs", write_cs, read_cs)):
        writer(tmp_path / name, minimal)
        back = reader(tmp_path / name)
        assert back.rotations is None and back.ctf is None and not back.has_half_sets
        np.testing.assert_array_equal(stack_references(back.images).slice_index, [2, 1, 0])


def test_per_particle_voltage_inside_a_group_is_kept(tmp_path, particle_set):
    particles, _ = particle_set
    ctf = CTFParams(**{name: getattr(particles.ctf, name) for name in CTF_FIELDS})
    ctf.voltage_kv = np.linspace(100, 300, len(particles))
    varied = ParticleSet(images=particles.images, pixel_size=2.0, box=16, ctf=ctf)
    write_star(tmp_path / "v.star", varied)
    np.testing.assert_allclose(read_star(tmp_path / "v.star").ctf.voltage_kv, ctf.voltage_kv)
