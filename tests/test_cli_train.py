"""The train / generate / demo commands, end to end on tiny data."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

import flexview
from flexview.cli import main
from flexview.io import read_particles
from flexview.io.mrc import read_map
from flexview.runfolder import read_log


@pytest.fixture(scope="module")
def cli_train(tiny_flex_dataset, tmp_path_factory):
    """A run trained by ``flexview train`` and what the command printed on stdout."""
    out = tmp_path_factory.mktemp("cli") / "run"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["train", str(tiny_flex_dataset / "particles.star"), "--map",
                     str(tiny_flex_dataset / "consensus.mrc"), "--out", str(out), "--box", "16", "--epochs", "1",
                     "--batch-size", "20", "--cells-across", "6", "--device", "cpu", "--set", "hidden=16",
                     "--set", "layers=3"])
    assert code == 0
    return out, printed.getvalue()


@pytest.fixture(scope="module")
def cli_run(cli_train):
    return cli_train[0]


def test_train_prints_a_summary_and_writes_the_run(cli_train, tiny_flex_dataset):
    """The summary states the run that was written: folder, particle count, box, pixel size,
    iterations (one log row each, epochs × ⌈particles / batch⌉), Nyquist band limit, the last
    data term of log.csv and the latents' spread."""
    out, printed = cli_train
    run = flexview.load_run(out)
    assert run.config.box == 16 and run.config.hidden == 16 and run.latents.shape[1] == 2
    particles = read_particles(tiny_flex_dataset / "particles.star")
    n = len(particles)
    log = read_log(out / "log.csv")
    pixel_size_A = particles.pixel_size * particles.box / 16          # Fourier-cropped to box 16
    assert len(log) == 1 * -(-n // 20)
    lines = dict(line.split(": ", 1) for line in printed.splitlines() if ": " in line)
    assert lines["run folder"] == str(out)
    assert lines["particles"] == f"{n}  training box: 16  pixel size: {pixel_size_A:.3f} Å"
    assert lines["iterations"] == f"{len(log)}  final band limit: {2 * pixel_size_A:.2f} Å"
    assert lines["final data term"].startswith(f"{log[-1]['data']:.5g}  rigidity: ")
    assert float(lines["final data term"].split()[-1]) == pytest.approx(log[-1]["rigidity"], rel=1e-2)
    assert lines["latent std per axis"] == ", ".join(f"{s:.3f}" for s in run.latents.std(axis=0))


@pytest.mark.parametrize("spelling", [["--z", "-0.5,1.2"], ["--z=-0.5,1.2"], ["--z", "-0.5, 1.2"]])
def test_generate_accepts_negative_latents_in_every_spelling(cli_run, tmp_path, spelling):
    out = tmp_path / "vol.mrc"
    assert main(["generate", str(cli_run), *spelling, "--out", str(out)]) == 0
    volume, voxel = read_map(out)
    run = flexview.load_run(cli_run)
    assert np.allclose(volume, run.generate([-0.5, 1.2]), atol=1e-6)
    assert voxel == pytest.approx(run.pixel_size, rel=1e-5)


def test_generate_series_along_an_axis(cli_run, tmp_path):
    out = tmp_path / "series"
    assert main(["generate", str(cli_run), "--axis", "1", "--frames", "5", "--range", "1.5", "--out", str(out)]) == 0
    frames = sorted(out.glob("frame_*.mrc"))
    assert len(frames) == 5
    run = flexview.load_run(cli_run)
    points = run.axis_values(1, 5, 1.5)
    assert np.allclose(read_map(frames[-1])[0], run.generate(points[-1]), atol=1e-6)
    assert points[-1, 1] - points[0, 1] == pytest.approx(3.0 * run.latents[:, 1].std(), rel=1e-4)


def test_generate_refuses_the_wrong_number_of_latents(cli_run, tmp_path, capsys):
    assert main(["generate", str(cli_run), "--z", "0.1,0.2,0.3", "--out", str(tmp_path / "v.mrc")]) == 2
    assert "--z" in capsys.readouterr().err
    assert not (tmp_path / "v.mrc").exists()


def test_train_resume_with_a_different_box_is_refused(cli_run, capsys):
    assert main(["train", "--out", str(cli_run), "--resume", "--box", "20"]) == 2
    assert "box" in capsys.readouterr().err


def test_demo_runs_headless(tmp_path):
    assert main(["demo", "--out", str(tmp_path), "--particles", "200", "--epochs", "1", "--no-gui",
                 "--device", "cpu"]) == 0
    assert len(list((tmp_path / "series").glob("frame_*.mrc"))) == 21
    assert (tmp_path / "run" / "latents.npy").is_file()
