"""One parameter table: the command line, the napari form and config.json agree with the
dataclass defaults, and every refused value is refused in one place, naming the field (or,
through the command line, the option the user typed)."""
from __future__ import annotations

import argparse
import json
import math
import os
import re
from dataclasses import asdict, fields

import pytest

from flexview.cli import main
from flexview.commands import reconstruct as reconstruct_command
from flexview.commands import train as train_command
from flexview.commands._params import build, given_params
from flexview.errors import FlexviewInputError
from flexview.params import ParameterError, format_value, parse_text, table
from flexview.recon.pipeline import ReconOptions
from flexview.train.config import TrainConfig

TABLES = {"train": (TrainConfig, train_command), "reconstruct": (ReconOptions, reconstruct_command)}


def command_parser(command: str) -> argparse.ArgumentParser:
    sub = argparse.ArgumentParser().add_subparsers()
    TABLES[command][1].register(sub)
    return sub.choices[command]


def help_blocks(text: str) -> dict[str, str]:
    """``{"--box": "N training box … (px; default 64)", "lr_flow": "X: …"}`` from --help output:
    one entry per option line and per ``NAME=VALUE`` line of the epilogue, continuation lines
    joined, white space normalised."""
    blocks, key = {}, None
    for line in text.splitlines():
        start = re.match(r"^  (--[\w-]+|[a-z_A]+=)(.*)", line)
        if start:
            key = start.group(1).rstrip("=")
            blocks[key] = start.group(2)
        elif key and line.startswith("   "):
            blocks[key] += " " + line.strip()
        else:
            key = None
    return {k: " ".join(v.split()) for k, v in blocks.items()}


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


# ------------------------------------------------------------------ defaults agree


def test_the_issue_examples_show_the_true_defaults(capsys):
    """The drift reported against ``flexview train --help``: rigidity 0.1, latent init linearised."""
    assert TrainConfig().rigidity_weight == 0.1 and TrainConfig().latent_init == "linearised"
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    blocks = help_blocks(capsys.readouterr().out)
    assert blocks["--rigidity"].endswith("(≥ 0; default 0.1)")
    assert blocks["--latent-init"].endswith("(default linearised)")
    assert blocks["--box"].endswith("(px; ≥ 8 and even; default 64)")
    assert blocks["lr_flow"].endswith("(> 0; default 0.001)")


@pytest.mark.parametrize("command", list(TABLES))
def test_help_states_every_default_and_it_parses_back_to_the_dataclass_default(command, capsys):
    cls = TABLES[command][0]
    with pytest.raises(SystemExit):
        main([command, "--help"])
    blocks = help_blocks(capsys.readouterr().out)
    for row in table(cls).values():
        if row.param.hidden or (row.param.cli and not row.param.cli.startswith("--")):
            assert row.param.cli not in blocks and row.name not in blocks
            continue
        block = blocks[row.param.cli or row.name]
        if row.default == "":
            assert block.endswith("(required)")
            continue
        found = re.search(r"default ([^;()]+)\)$", block)
        assert found, block
        shown = found.group(1)
        if row.kind is bool:       # a flag: "turn off: … (default on)"
            assert shown == format_value(row.default) and block.startswith("turn off" if row.default else "turn on")
        else:
            assert parse_text(row, shown) == row.default, (row.name, shown)
        if row.param.unit:
            assert f"({row.param.unit};" in block


@pytest.mark.parametrize("command", list(TABLES))
def test_parser_defaults_are_the_dataclass_defaults(command):
    cls = TABLES[command][0]
    parser = command_parser(command)
    positional = ["run"] if command == "reconstruct" else []
    args = parser.parse_args([*positional, "--out", "x"])
    options = [row for row in table(cls).values() if row.param.cli and row.param.cli.startswith("--")]
    assert len(options) >= 12
    for row in options:
        assert parser.get_default(row.name) == row.default, row.name
        assert getattr(args, row.name) == row.default, row.name
    assert given_params(args, cls) == {}
    assert build(cls, given_params(args, cls)) == cls()


def test_the_options_users_scripts_use_are_kept():
    parser = command_parser("train")
    spelled = {s for action in parser._actions for s in action.option_strings}
    assert {"--map", "--mask", "--mesh", "--project-dir", "--box", "--latent-dim", "--epochs", "--batch-size",
            "--device", "--seed", "--kernel", "--cells-across", "--cell-size", "--rigidity", "--latent-init",
            "--halves", "--checkpoint-every", "--set", "--out", "--resume", "--split-halves"} <= spelled
    parser = command_parser("reconstruct")
    spelled = {s for action in parser._actions for s in action.option_strings}
    assert {"--iters", "--box", "--mask", "--labels", "--no-noflex", "--no-recentre", "--symmetry", "--bfactor",
            "--tikhonov", "--chunk", "--device", "--project-dir", "--out"} <= spelled


def test_given_holds_only_what_was_typed_even_when_it_equals_the_default():
    parser = command_parser("train")
    args = parser.parse_args(["p.star", "--out", "x", "--epochs", "20", "--cell-size", "12.5", "--set",
                              "search_at=never", "--set", "lr_flow=5e-4"])
    assert given_params(args, TrainConfig) == {"epochs": 20, "cell_size_A": 12.5, "search_at": None,
                                               "lr_flow": 5e-4}


def test_reconstruct_words_negative_numbers_and_flags():
    parser = command_parser("reconstruct")
    args = parser.parse_args(["run", "--out", "x", "--box", "full", "--bfactor", "-50", "--no-noflex",
                              "--set", "kernel=cubic", "--symmetry", "d7"])
    opts = build(ReconOptions, given_params(args, ReconOptions))
    assert opts == ReconOptions(box=None, bfactor=-50.0, noflex=False, kernel="cubic", symmetry="d7")
    args = parser.parse_args(["run", "--out", "x", "--box", "128", "--no-recentre", "--chunk", "automatic"])
    assert given_params(args, ReconOptions) == {"box": 128, "recentre": False, "chunk": None}


# ------------------------------------------------------------------ config.json


def test_config_json_round_trips_to_an_equal_config(tmp_path):
    changed = {}
    for row in table(TrainConfig).values():       # a value other than the default for every field
        if row.kind is int:
            changed[row.name] = row.default + (2 if row.param.multiple_of else 1)
        elif row.kind is float and row.name != "lr_final" and row.name != "march_fraction":
            changed[row.name] = 0.375 if row.name == "search_at" else (row.default or 1.0) * 1.5
        elif row.param.choices:
            changed[row.name] = row.param.choices[-1]
    cfg = TrainConfig(**changed, lr_final=0.125, march_fraction=0.5, particles="p.star", consensus_map="m.mrc",
                      mask="mask.mrc", versions={"flexview": "0"})
    cfg.to_json(tmp_path / "config.json")
    back = TrainConfig.from_json(tmp_path / "config.json")
    assert back == cfg and back != TrainConfig()
    assert {f.name for f in fields(TrainConfig) if getattr(back, f.name) == getattr(TrainConfig(), f.name)} \
        == {"project_dir", "mesh"}


def test_an_older_config_json_without_newer_fields_still_loads(tmp_path):
    old = {k: v for k, v in asdict(TrainConfig(particles="p.star", consensus_map="m.mrc", box=32)).items()
           if k not in ("lr_schedule", "lr_final", "latent_estimate", "search_at", "log_every")}
    (tmp_path / "config.json").write_text(json.dumps(old))
    cfg = TrainConfig.from_json(tmp_path / "config.json")
    assert cfg.box == 32 and cfg.lr_final == 0.05 and cfg.lr_schedule == "cosine"


def test_a_config_json_with_a_refused_value_names_file_and_field(tmp_path):
    raw = asdict(TrainConfig())
    raw["batch_size"] = 0
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(FlexviewInputError) as err:
        TrainConfig.from_json(tmp_path / "config.json")
    assert "config.json" in str(err.value) and err.value.field == "batch_size"


# ------------------------------------------------------------------ validation

TRAIN_REFUSED = [
    ("box", 6), ("box", 31), ("box", "abc"), ("box", 64.0), ("box", True), ("epochs", 0), ("batch_size", 0),
    ("checkpoint_every", 0), ("log_every", 0), ("cells_across", 0), ("latent_dim", 0), ("hidden", 0),
    ("layers", 0), ("rigidity_weight", -0.1), ("latent_noise", -1.0), ("prior_weight", -1.0),
    ("lr_flow", 0.0), ("lr_flow", math.nan), ("lr_map", -1e-3), ("lr_map", math.inf), ("lr_final", 0.0),
    ("lr_final", 1.5), ("march_fraction", -0.1), ("march_fraction", 1.1), ("search_at", 0.0),
    ("search_at", 1.0), ("latent_search", -1), ("mask_dilate_A", -1.0), ("cell_size_A", 0.0),
    ("band_start_A", 0.0), ("band_end_A", -5.0), ("rigidity_samples", 0), ("latent_steps", -1),
    ("fixed_latent_epochs", -1), ("flow_iters", 0), ("map_iters", -1), ("latent_step", 0.0), ("seed", -1),
    ("kernel", "quadratic"), ("latent_inference", "newton"), ("latent_estimate", "median"),
    ("lr_schedule", "step"), ("halves", "C"), ("device", "gpu"), ("device", "cuda:x"),
    ("latent_init", "random"), ("mask_threshold", math.nan), ("particles", None), ("mask", 3),
    ("versions", "1.0"),
]


@pytest.mark.parametrize("name, value", TRAIN_REFUSED)
def test_train_config_refuses_a_bad_value_naming_the_field(name, value):
    with pytest.raises(ParameterError) as err:
        TrainConfig(**{name: value})
    assert err.value.name == name and f"'{name}'" in str(err.value)


RECON_REFUSED = [("iters", 0), ("box", 7), ("box", 4), ("memory", 0), ("chunk", 0),
                 ("tikhonov", -1.0), ("noise_particles", 0), ("probe_particles", 0), ("bfactor", math.nan),
                 ("symmetry", "X3"), ("symmetry", "C0"), ("kernel", "nearest"), ("device", "tpu"),
                 ("noflex", "no"), ("seed", -2)]


@pytest.mark.parametrize("name, value", RECON_REFUSED)
def test_recon_options_refuse_a_bad_value_naming_the_field(name, value):
    with pytest.raises(ParameterError) as err:
        ReconOptions(**{name: value})
    assert err.value.name == name


@pytest.mark.parametrize("cls, values", [
    (TrainConfig, dict(box=8, lr_final=1.0, march_fraction=0.0, latent_search=0, latent_steps=0, map_iters=0,
                       rigidity_weight=0.0, device="cuda:1", latent_init="start.npy", search_at=0.5,
                       mask_threshold=-0.2, cell_size_A=1e-3)),
    (TrainConfig, dict(latent_init="components.cs", march_fraction=1.0, device="cpu", halves="B")),
    (ReconOptions, dict(box=8, symmetry=" c4 ", bfactor=-80.0, chunk=1, kernel="linear", device="cuda")),
])
def test_values_on_the_bounds_are_accepted(cls, values):
    obj = cls(**values)
    assert {k: getattr(obj, k) for k in values} == values


def test_an_integer_given_for_a_float_is_stored_as_a_float():
    cfg = TrainConfig(rigidity_weight=1, mask_threshold=0)
    assert type(cfg.rigidity_weight) is float and type(cfg.mask_threshold) is float


TRAIN_CLI_REFUSED = [
    (["--batch-size", "0"], "--batch-size"), (["--epochs", "-1"], "--epochs"), (["--box", "abc"], "--box"),
    (["--box", "31"], "--box"), (["--rigidity", "-1"], "--rigidity"), (["--rigidity", "nan"], "--rigidity"),
    (["--kernel", "quadratic"], "--kernel"), (["--device", "gpu"], "--device"),
    (["--latent-init", "random"], "--latent-init"), (["--halves", "C"], "--halves"),
    (["--cell-size", "0"], "--cell-size"), (["--checkpoint-every", "0"], "--checkpoint-every"),
    (["--latent-dim", "0"], "--latent-dim"), (["--seed", "1.5"], "--seed"),
    (["--set", "box=abc"], "--set box"), (["--set", "lr_flow=nan"], "--set lr_flow"),
    (["--set", "lr_final=0"], "--set lr_final"), (["--set", "search_at=1"], "--set search_at"),
    (["--set", "march_fraction=2"], "--set march_fraction"), (["--set", "hidden=0"], "--set hidden"),
    (["--set", "latent_inference=newton"], "--set latent_inference"), (["--set", "nonsense=1"], "--set"),
    (["--set", "versions=x"], "--set"), (["--set", "lr_flow"], "--set"),
]


@pytest.mark.parametrize("extra, option", TRAIN_CLI_REFUSED)
def test_train_command_refuses_a_bad_value_naming_the_option(extra, option, tmp_path, capsys):
    """Refused before any work starts: the particle and map files do not even exist."""
    code, err = run_cli(["train", str(tmp_path / "p.star"), "--map", str(tmp_path / "m.mrc"),
                         "--out", str(tmp_path / "run"), *extra], capsys)
    assert code == 2
    assert option in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


RECON_CLI_REFUSED = [(["--iters", "0"], "--iters"), (["--box", "7"], "--box"), (["--box", "big"], "--box"),
                     (["--symmetry", "X3"], "--symmetry"),
                     (["--tikhonov", "-1"], "--tikhonov"), (["--chunk", "0"], "--chunk"),
                     (["--device", "tpu"], "--device"), (["--set", "memory=0"], "--set memory"),
                     (["--set", "kernel=nearest"], "--set kernel")]


@pytest.mark.parametrize("extra, option", RECON_CLI_REFUSED)
def test_reconstruct_command_refuses_a_bad_value_naming_the_option(extra, option, tmp_path, capsys):
    code, err = run_cli(["reconstruct", str(tmp_path / "run"), "--out", str(tmp_path / "out"), *extra], capsys)
    assert code == 2
    assert option in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ the napari form

qt = pytest.mark.skipif(
    not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
         or os.environ.get("QT_QPA_PLATFORM") == "offscreen"), reason="no display (install Xvfb for pytest-xvfb)")


@pytest.fixture
def form(qtbot):
    pytest.importorskip("qtpy")
    pytest.importorskip("pytestqt")
    from flexview._napari._config_form import ConfigForm

    return ConfigForm()


@qt
def test_every_form_default_is_the_dataclass_default(form):
    from qtpy.QtWidgets import QComboBox, QLineEdit, QSpinBox

    visible = {row.name for row in table(TrainConfig).values() if not row.param.hidden}
    assert set(form.widgets) == visible
    assert form.values() == {k: v for k, v in asdict(TrainConfig()).items() if k in visible}
    for name, w in form.widgets.items():
        row = table(TrainConfig)[name]
        shown = {QSpinBox: lambda: w.value(), QComboBox: lambda: w.currentText(),
                 QLineEdit: lambda: w.text() or w.placeholderText()}.get(type(w), lambda: w.text())()
        if row.default is None:
            assert shown in ("", row.param.none)
        elif row.default != "":
            assert parse_text(row, str(shown)) == row.default
        tip = (w.edit if hasattr(w, "edit") else w).toolTip()
        assert tip.startswith(row.param.help), name


@qt
def test_form_ranges_and_choices_come_from_the_table(form):
    box, epochs, kernel, device = (form.widgets[n] for n in ("box", "epochs", "kernel", "device"))
    assert (box.minimum(), box.singleStep()) == (8, 2)
    assert epochs.minimum() == 1 and form.widgets["latent_search"].minimum() == 0
    assert [kernel.itemText(i) for i in range(kernel.count())] == ["linear", "cubic"] and not kernel.isEditable()
    assert [device.itemText(i) for i in range(device.count())] == ["auto", "cpu", "cuda"] and device.isEditable()
    assert form.widgets["latent_init"].isEditable()
    assert form.widgets["mask"].edit.placeholderText() == "automatic"


@qt
def test_form_reads_back_what_it_is_given_and_refuses_naming_the_field(form):
    cfg = TrainConfig(particles="p.star", consensus_map="m.mrc", box=32, lr_flow=1.2345678e-4, search_at=0.3,
                      device="cuda:1", latent_init="z.npy", kernel="cubic", mask_threshold=None)
    form.set_values(asdict(cfg))
    assert form.config() == cfg
    form.widgets["lr_flow"].setText("nan")
    with pytest.raises(ParameterError) as err:
        form.config()
    assert err.value.name == "lr_flow"
    form.widgets["lr_flow"].setText("1e-3")
    form.widgets["box"].setValue(33)
    with pytest.raises(ParameterError) as err:
        form.config()
    assert err.value.name == "box"
