"""Block coordinate descent and frequency marching schedules."""
import math

import pytest

from flexview.cli import join_negative_values
from flexview.train.config import TrainConfig
from flexview.train.schedule import Schedule


def test_blocks_alternate_flow_then_map():
    s = Schedule(20, flow_iters=3, map_iters=2, band_start_A=20, band_end_A=5)
    assert [s.block(i) for i in range(10)] == ["flow"] * 3 + ["map"] * 2 + ["flow"] * 3 + ["map"] * 2


def test_band_limit_rises_linearly_in_frequency_then_holds():
    s = Schedule(100, 1, 1, band_start_A=20.0, band_end_A=5.0, march_fraction=0.5)
    assert s.band_limit_A(0) == pytest.approx(20.0)
    assert 1 / s.band_limit_A(25) == pytest.approx(0.5 * (1 / 20 + 1 / 5))
    assert s.band_limit_A(50) == pytest.approx(5.0)
    assert s.band_limit_A(99) == pytest.approx(5.0)
    values = [s.band_limit_A(i) for i in range(100)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_cosine_learning_rate_holds_while_marching_then_falls_to_the_final_scale():
    s = Schedule(100, 1, 1, band_start_A=20.0, band_end_A=5.0, march_fraction=0.5,
                 lr_schedule="cosine", lr_final=0.1)
    assert s.band_limit_A(50) == pytest.approx(5.0)       # marching ends at iteration 50
    assert [s.lr_scale(i) for i in (0, 25, 50)] == [1.0, 1.0, 1.0]
    for it in (60, 75, 90):             # closed form: half cosine from 1 at it = 50 to 0.1 at the last, 99
        t = (it - 50) / 49
        assert s.lr_scale(it) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi * t)) / 2)
    assert s.lr_scale(99) == pytest.approx(0.1)
    values = [s.lr_scale(i) for i in range(100)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    constant = Schedule(100, 1, 1, 20.0, 5.0, 0.5, lr_schedule="constant", lr_final=0.1)
    assert {constant.lr_scale(i) for i in range(100)} == {1.0}


@pytest.mark.parametrize("change, field", [({"lr_schedule": "linear"}, "lr_schedule"),
                                           ({"lr_final": 0.0}, "lr_final"), ({"lr_final": 1.5}, "lr_final")])
def test_bad_learning_rate_schedule_is_refused(change, field):
    with pytest.raises(ValueError, match=field):
        TrainConfig(particles="p.star", consensus_map="m.mrc", **change)


def test_config_json_round_trip(tmp_path):
    cfg = TrainConfig(particles="p.star", consensus_map="m.mrc", box=32, epochs=3, latent_noise=0.2)
    cfg.to_json(tmp_path / "config.json")
    assert TrainConfig.from_json(tmp_path / "config.json") == cfg


@pytest.mark.parametrize("argv, expected", [
    (["generate", "R", "--z", "-0.5,1.2"], ["generate", "R", "--z=-0.5,1.2"]),
    (["generate", "R", "--z=-0.5,1.2"], ["generate", "R", "--z=-0.5,1.2"]),
    (["generate", "R", "--z", "0.5,-1"], ["generate", "R", "--z", "0.5,-1"]),
])
def test_negative_latent_values_reach_the_parser(argv, expected):
    assert join_negative_values(argv) == expected
