"""Training on synthetic data with known motion: recovery, no invented motion, the run folder."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import flexview
from flexview.io import read_particles
from flexview.runfolder import RunFolder, read_log
from flexview.train import TrainConfig, TrainingSession

TRAIN = dict(box=24, epochs=6, batch_size=50, cells_across=6, lr_flow=0.01, checkpoint_every=1000,
             device="cpu")


def _train(dataset, out, **changes):
    values = dict(TRAIN, particles=str(dataset / "particles.star"),
                  consensus_map=str(dataset / "consensus.mrc"))
    values.update(changes)
    session = TrainingSession.start(TrainConfig(**values), out)
    session.run()
    return session


@pytest.fixture(scope="module")
def hinge_run(tmp_path_factory):
    from flexview.synth import make_dataset

    root = tmp_path_factory.mktemp("hinge")
    make_dataset(root / "data", kind="hinge", n_particles=400, box=32, snr=0.5, seed=1)
    return root / "data", _train(root / "data", root / "run")


@pytest.fixture(scope="module")
def rigid_run(tmp_path_factory):
    from flexview.synth import make_dataset

    root = tmp_path_factory.mktemp("rigid")
    make_dataset(root / "data", kind="rigid", n_particles=400, box=32, snr=0.5, seed=1)
    return root / "data", _train(root / "data", root / "run")


def _mean_displacement(session, z) -> float:
    """Mean displacement (Å) over the particles at the mask voxels, weighted by density."""
    model = session.trainer.model
    with torch.no_grad():
        pos = model.voxel_positions(torch.as_tensor(z))
        disp = (pos - model.canonical.masked_coords()).norm(dim=-1)
        w = model.canonical.masked_values().clamp_min(0)
        return float((disp * w).sum(dim=1).mean() / w.sum())


def test_latents_recover_the_hinge_motion(hinge_run):
    """The first latent axis (the largest deformation, after :meth:`principal_axes`) follows the
    hinge coordinate; the controls (the other true motion, the same latents shuffled, the second
    axis) show the threshold is not met by chance."""
    data, session = hinge_run
    z = session.trainer.latents.numpy()
    truth = np.load(data / "ground_truth" / "motion_coords.npy")         # (400, 2): hinge, twist

    def r(a, b):
        return abs(np.corrcoef(a, b)[0, 1])

    assert r(z[:, 0], truth[:, 0]) > 0.85
    shuffled = np.random.default_rng(0).permutation(z[:, 0])
    assert r(shuffled, truth[:, 0]) < 0.2
    assert r(z[:, 0], truth[:, 1]) < 0.3 and r(z[:, 1], truth[:, 0]) < 0.3


def test_rigid_data_gets_no_more_than_a_fraction_of_a_pixel_of_motion(rigid_run):
    _, session = rigid_run
    rigid = _mean_displacement(session, session.trainer.latents.numpy())
    assert rigid < 0.25 * session.trainer.data.pixel_size


def test_the_arm_moves_more_than_the_core(hinge_run):
    """Ground truth: only the arm and the twist domain move; the core is still."""
    from flexview.io.mrc import read_map
    from flexview.preprocess import fourier_crop_volume

    data, session = hinge_run
    model = session.trainer.model
    index = model.canonical.masked_index().numpy()

    def domain(name):
        mask, px = read_map(data / "ground_truth" / f"domain_{name}.mrc")
        small = np.asarray(fourier_crop_volume(mask, model.box, px)[0]) > 0.5
        return small.reshape(-1)[index]

    z = torch.as_tensor(session.trainer.latents.numpy())
    with torch.no_grad():
        disp = (model.voxel_positions(z) - model.canonical.masked_coords()).norm(dim=-1).mean(dim=0).numpy()
    arm, core = domain("arm"), domain("core") & ~domain("arm") & ~domain("twist")
    assert disp[arm].mean() > 1.5 * disp[core].mean()


def test_run_folder_contract(hinge_run):
    data, session = hinge_run
    folder = session.folder
    for path in (folder.config, folder.mesh, folder.mask, folder.flow, folder.canonical, folder.latents,
                 folder.latents_star, folder.log, folder.checkpoint, folder.calibration):
        assert path.is_file(), path
    state = torch.load(folder.flow, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    z = np.load(folder.latents, allow_pickle=False)
    assert z.shape == (400, 2) and z.dtype == np.float32
    star = read_particles(folder.latents_star)
    assert np.allclose(star.extra["flexviewLatent1"], z[:, 0], atol=1e-5)
    original = read_particles(data / "particles.star")
    assert np.allclose(star.rotations, original.rotations, atol=1e-6)
    log = read_log(folder.log)
    assert [r["iteration"] for r in log] == list(range(session.trainer.total_iters))
    cfg = TrainConfig.from_json(folder.config)
    assert cfg.box == 24 and cfg.versions["torch"] == torch.__version__


def test_load_run_generates_the_model_density(hinge_run):
    _, session = hinge_run
    run = flexview.load_run(session.folder.root)
    z = np.array([0.7, -0.3], dtype=np.float32)
    with torch.no_grad():
        expected = session.trainer.model.volume_at(torch.as_tensor(z)).numpy()
    assert np.allclose(run.generate(z), expected, atol=1e-5 * np.abs(expected).max())
    assert np.allclose(run.latents, session.trainer.latents.numpy())
    assert run.generate(z).shape == (24, 24, 24)


def test_half_set_training_embeds_the_other_half(tiny_flex_dataset, make_tiny_config, tmp_path):
    session = TrainingSession.start(make_tiny_config(tiny_flex_dataset, halves="A"), tmp_path / "run")
    session.run()
    particles = read_particles(tiny_flex_dataset / "particles.star")
    assert len(session.trainer.train_rows) == int((particles.half_set == 0).sum())
    z = np.load(RunFolder(tmp_path / "run").latents)
    assert z.shape == (len(particles), 2) and np.isfinite(z).all()


def test_resume_continues_exactly_where_the_checkpoint_left_off(tiny_flex_dataset, make_tiny_config, tmp_path):
    cfg = make_tiny_config(tiny_flex_dataset, epochs=2, checkpoint_every=1)
    full = TrainingSession.start(cfg, tmp_path / "full")
    full.run()
    part = TrainingSession.start(make_tiny_config(tiny_flex_dataset, epochs=2, checkpoint_every=1),
                                 tmp_path / "part")
    steps = part.iterate()
    for _ in range(3):
        next(steps)
    steps.close()                       # like Stop: checkpoint and outputs written
    resumed = TrainingSession.resume(tmp_path / "part")
    assert resumed.trainer.iteration == 3
    resumed.run()
    assert resumed.trainer.iteration == full.trainer.iteration
    assert torch.allclose(resumed.trainer.latents, full.trainer.latents, atol=1e-5)
    for a, b in zip(resumed.trainer.model.flow.parameters(), full.trainer.model.flow.parameters()):
        assert torch.allclose(a, b, atol=1e-5)
    log = read_log(RunFolder(tmp_path / "part").log)
    assert [r["iteration"] for r in log] == list(range(full.trainer.total_iters))


def test_optimisers_follow_the_learning_rate_schedule(tiny_flex_dataset, make_tiny_config, tmp_path):
    """Flow rate: ``lr_flow``; map rate: ``lr_map`` × the std of the initial canonical map (the
    masked consensus times the calibrated scale, read back from the run folder); both end at
    ``lr_final`` × their start."""
    from flexview.io.mrc import read_map

    cfg = make_tiny_config(tiny_flex_dataset, box=24, epochs=2, lr_final=0.2, lr_flow=3e-3, lr_map=0.05)
    session = TrainingSession.start(cfg, tmp_path / "run")
    trainer, folder = session.trainer, session.folder
    consensus, _ = read_map(tiny_flex_dataset / "consensus.mrc")       # already at box 24
    mask = read_map(folder.mask)[0] > 0.5
    scale = json.loads(folder.calibration.read_text())["map_scale"]
    map_std = float(np.where(mask, consensus, 0.0).astype(np.float64).std(ddof=1)) * scale
    records = session.run()
    assert records[-1].lr_scale == pytest.approx(0.2) and records[0].lr_scale == 1.0
    for opt, name, start in ((trainer.opt_flow, "flow", 3e-3), (trainer.opt_map, "map", 0.05 * map_std)):
        assert trainer.initial_lr[name] == pytest.approx(start, rel=1e-4)
        assert opt.param_groups[0]["lr"] == pytest.approx(0.2 * start, rel=1e-4)
    logged = [r["lr_scale"] for r in read_log(RunFolder(tmp_path / "run").log)]
    assert logged == pytest.approx([r.lr_scale for r in records]) and min(logged) < 1.0


def test_resume_refuses_changed_parameters(tiny_flex_dataset, make_tiny_config, tmp_path):
    from flexview.errors import FlexviewInputError

    TrainingSession.start(make_tiny_config(tiny_flex_dataset), tmp_path / "run").run()
    with pytest.raises(FlexviewInputError, match="box"):
        TrainingSession.resume(tmp_path / "run", {"box": 20})
    with pytest.raises(FlexviewInputError, match="run is already here.*--resume"):
        TrainingSession.start(make_tiny_config(tiny_flex_dataset), tmp_path / "run")


@pytest.mark.parametrize("dim", [1, 2])
def test_principal_axes_keep_every_deformation_and_order_axes(tiny_flex_dataset, make_tiny_config, tmp_path, dim):
    """Whitening + rotation of the latents is absorbed exactly by the flow's first layer; the new
    axes are uncorrelated with unit variance and ordered by deformation size."""
    session = TrainingSession.start(make_tiny_config(tiny_flex_dataset, epochs=1, latent_dim=dim,
                                                     latent_init="zeros"), tmp_path / "run")
    trainer = session.trainer
    g = torch.Generator().manual_seed(0)
    mix = torch.tensor([[2.0, 0.5], [0.0, 0.3]])[:dim, :dim]
    trainer.latents = torch.randn(len(trainer.latents), dim, generator=g) @ mix + 1.0
    with torch.no_grad():
        trainer.model.flow.net[-1].weight.mul_(1000.0)               # displacements of a few Å
    before = trainer.model.voxel_positions(trainer.latents[:20]).detach()
    sv = trainer.principal_axes()
    after = trainer.model.voxel_positions(trainer.latents[:20]).detach()
    moved = (before - trainer.model.canonical.masked_coords()).norm(dim=-1).max()
    assert moved > 0.5 and torch.allclose(before, after, atol=1e-3)
    z = trainer.latents[trainer.train_rows].double()
    np.testing.assert_allclose(torch.cov(z.T).numpy().reshape(dim, dim), np.eye(dim), atol=1e-6)
    assert len(sv) == dim and np.all(np.diff(sv) <= 0) and sv.min() >= 0
    once = trainer.latents.clone()
    trainer.principal_axes()                                          # already principal: no change
    assert torch.allclose(trainer.latents, once, atol=1e-4)
