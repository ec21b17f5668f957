"""``flexview generate``: convected density at chosen latent coordinates."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from flexview.commands._params import as_options, check_option
from flexview.errors import FlexviewInputError

# argument of the engine (flexview.run) → the option that sets it
OPTIONS = {"z": "--z", "axis": "--axis", "frames": "--frames", "extent": "--range"}
SERIES_MARKER = "latents.csv"
SERIES_FILES = ("frame_*.mrc", SERIES_MARKER)


def register(sub) -> None:
    from flexview.run import LATENT_SPREADS, SERIES_EXTENT, SERIES_FRAMES

    p = sub.add_parser("generate", help="write the density of a trained run at latent coordinates",
                       description="Write the convected density at --z, or a series along one latent axis.")
    p.add_argument("run", help="run folder written by `flexview train`")
    p.add_argument("--z", help="latent coordinates, comma separated, e.g. --z -0.5,1.2: one finite value per "
                               f"latent axis, each within {LATENT_SPREADS:g} spreads of the particles' median")
    p.add_argument("--axis", type=int, help="latent axis (0-based) for a volume series")
    p.add_argument("--frames", type=int, default=41,
                   help=f"volumes in the series ({SERIES_FRAMES[0]} to {SERIES_FRAMES[1]}; default 41)")
    p.add_argument("--range", type=float, default=1.5, dest="extent",
                   help="series spans ± this many standard deviations of the axis "
                        f"(0 < range ≤ {SERIES_EXTENT:g}; default 1.5)")
    p.add_argument("--out", required=True,
                   help="output .mrc (with --z) or folder (with --axis); an existing one is replaced only "
                        "when flexview wrote it")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.set_defaults(func=run)


def parse_latent(text: str) -> np.ndarray:
    """``"-0.5,1.2"`` → array([-0.5, 1.2]) (float64); the run checks the count and the values."""
    try:
        values = [float(v) for v in text.replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise FlexviewInputError(f"cannot read latent coordinates {text!r}: expected numbers separated by "
                                 "commas", field="--z") from None
    if not values:
        raise FlexviewInputError("no latent coordinates given", field="--z")
    return np.array(values, dtype=np.float64)


def write_series(run_obj, axis: int, frames: int, extent: float, out: Path) -> list[Path]:
    """Write ``frames`` volumes along ``axis`` as ``out/frame_000.mrc`` ... plus ``out/latents.csv``;
    frames left in ``out`` by a longer earlier series are removed."""
    from flexview.run import write_volume_series

    points = run_obj.axis_values(axis, frames, extent)
    paths = write_volume_series(out, (run_obj.generate(z) for z in points), points, run_obj.pixel_size)
    for stale in sorted(set(Path(out).glob("frame_*.mrc")) - set(paths)):
        stale.unlink()
    return paths


def check_args(args) -> np.ndarray | None:
    """Every check that needs no run: one of --z/--axis, the device, the series and the output;
    returns the values of --z (None for a series)."""
    from flexview.device import resolve_device
    from flexview.io.outputs import check_output_file, check_output_folder, written_by_flexview
    from flexview.run import check_series
    from flexview.train.config import TrainConfig

    if (args.z is None) == (args.axis is None):
        raise FlexviewInputError("give exactly one of --z and --axis", field="--z/--axis")
    resolve_device(check_option(TrainConfig, "device", args.device, "--device"))
    if args.z is not None:
        values = parse_latent(args.z)
        check_output_file(args.out, ours=written_by_flexview)
        return values
    with as_options(OPTIONS):
        check_series(1, 0, args.frames, args.extent)           # the axis is checked against the run
    check_output_folder(args.out, marker=SERIES_MARKER, names=SERIES_FILES)
    return None


def run(args) -> int:
    from flexview.io.mrc import write_map
    from flexview.run import load_run

    values = check_args(args)
    run_obj = load_run(args.run, device=args.device)
    if values is not None:
        with as_options(OPTIONS):
            z = run_obj.latent_point(values)
        write_map(args.out, run_obj.generate(z), run_obj.pixel_size)
        print(f"wrote {args.out} (z = {', '.join(f'{v:g}' for v in z)}, box {run_obj.box}, "
              f"{run_obj.pixel_size:.3f} Å/voxel)")
        return 0
    with as_options(OPTIONS):
        run_obj.axis_values(args.axis, args.frames, args.extent)
    paths = write_series(run_obj, args.axis, args.frames, args.extent, Path(args.out))
    print(f"wrote {len(paths)} volumes along latent axis {args.axis} (± {args.extent} sd) to {args.out}")
    return 0
