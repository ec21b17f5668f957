"""Shared pytest fixtures. Engineers append fixtures here; keep each one small and documented."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` next to the repository root; the test is skipped when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA


def make_particle_set(folder: Path, n: int = 6, box: int = 16, pixel_size: float = 2.0, seed: int = 0,
                      groups: tuple[int, ...] = (1, 2)):
    """A small ParticleSet whose images live in two ``.mrcs`` stacks under ``folder``.

    Random poses (one at tilt 0, the gimbal-lock case), origins in Å, CTF with per-group voltage,
    alternating half sets, optics groups cycling through ``groups``, and extra columns
    (``rlnMicrographName`` text, ``rlnCoordinateX`` float). Returns ``(particles, images)`` with
    ``images`` the ``[n, box, box]`` float32 pixels as written.
    """
    from flexview.io.mrc import write_stack
    from flexview.io.particles import ParticleSet, StackImages
    from flexview.model.ctf import CTFParams
    from flexview.model.pose import euler_to_matrix, random_rotations

    import pandas as pd

    rng = np.random.default_rng(seed)
    folder = Path(folder)
    images = rng.normal(size=(n, box, box)).astype(np.float32)
    half = n // 2
    write_stack(folder / "stacks" / "a.mrcs", images[:half], pixel_size)
    write_stack(folder / "stacks" / "b.mrcs", images[half:], pixel_size)
    file_index = np.r_[np.zeros(half, int), np.ones(n - half, int)]
    slice_index = np.r_[np.arange(half), np.arange(n - half)]
    source = StackImages([folder / "stacks" / "a.mrcs", folder / "stacks" / "b.mrcs"], file_index,
                         slice_index, box)
    rotations = random_rotations(n, rng)
    rotations[0] = euler_to_matrix(30.0, 0.0, 0.0)
    group = np.array([groups[i % len(groups)] for i in range(n)])
    voltage = np.where(group == groups[0], 300.0, 200.0)
    defocus_u = rng.uniform(10000, 25000, n)
    ctf = CTFParams(defocus_u_A=defocus_u, defocus_v_A=defocus_u - rng.uniform(0, 1000, n),
                    defocus_angle_deg=rng.uniform(-180, 180, n), voltage_kv=voltage, cs_mm=2.7,
                    amplitude_contrast=0.1, phase_shift_deg=rng.uniform(0, 90, n), bfactor_A2=rng.uniform(0, 50, n),
                    scale=rng.uniform(0.5, 1.5, n))
    optics = pd.DataFrame({"rlnOpticsGroup": sorted(set(groups)),
                           "rlnOpticsGroupName": [f"grid{g}" for g in sorted(set(groups))],
                           "rlnMicrographOriginalPixelSize": 1.0})
    extra = pd.DataFrame({"rlnMicrographName": [f"mic_{i // 2:03d}.mrc" for i in range(n)],
                          "rlnCoordinateX": rng.uniform(0, 4000, n)})
    particles = ParticleSet(images=source, pixel_size=pixel_size, box=box, rotations=rotations,
                            origins_A=rng.uniform(-5, 5, (n, 2)), ctf=ctf,
                            half_set=(np.arange(n) % 2).astype(np.int8), optics_group=group, optics=optics,
                            extra=extra)
    return particles, images


@pytest.fixture
def particle_set(tmp_path):
    """``(particles, images)`` from :func:`make_particle_set` in a fresh temporary folder."""
    return make_particle_set(tmp_path)


@pytest.fixture
def make_particles():
    """The :func:`make_particle_set` factory, for tests that need several sets or other sizes."""
    return make_particle_set


@pytest.fixture(scope="session")
def tiny_flex_dataset(tmp_path_factory):
    """A tiny synthetic hinge data set written by :func:`flexview.synth.make_dataset`
    (40 particles, box 24, SNR 1): its folder holds particles.star/.cs/.mrcs and consensus.mrc."""
    from flexview.synth import make_dataset

    folder = tmp_path_factory.mktemp("tiny_flex_dataset")
    make_dataset(folder, kind="hinge", n_particles=40, box=24, snr=1.0, seed=3)
    return folder


def tiny_train_config(dataset: Path, **changes):
    """A TrainConfig that trains on ``dataset`` in a second or two (box 16, 1 epoch, CPU)."""
    from flexview.train import TrainConfig

    values = dict(particles=str(dataset / "particles.star"), consensus_map=str(dataset / "consensus.mrc"),
                  box=16, epochs=1, batch_size=20, cells_across=6, hidden=16, layers=3, device="cpu",
                  checkpoint_every=1)
    values.update(changes)
    return TrainConfig(**values)


@pytest.fixture(scope="session")
def tiny_flex_run(tiny_flex_dataset, tmp_path_factory) -> Path:
    """A run folder trained for one epoch on :func:`tiny_flex_dataset` (K = 2)."""
    from flexview.train import TrainingSession

    out = tmp_path_factory.mktemp("tiny_flex_run") / "run"
    TrainingSession.start(tiny_train_config(tiny_flex_dataset), out).run()
    return out


@pytest.fixture
def make_tiny_config():
    """The :func:`tiny_train_config` factory: ``make_tiny_config(dataset_folder, **changes)``."""
    return tiny_train_config


@pytest.fixture
def run_info(monkeypatch, capsys):
    """Run ``flexview info ARGS`` in-process; returns (exit code, stdout, stderr).

    Only the info command is registered, so these tests do not depend on other commands.
    """
    from flexview import cli

    monkeypatch.setattr(cli, "COMMANDS", ["info"])

    def run(*args):
        code = cli.main(["info", *map(str, args)])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
