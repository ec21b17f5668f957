"""``flexview generate``: convected density at chosen latent coordinates."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from flexview.errors import FlexviewInputError


def register(sub) -> None:
    p = sub.add_parser("generate", help="write the density of a trained run at latent coordinates",
                       description="Write the convected density at --z, or a series along one latent axis.")
    p.add_argument("run", help="run folder written by `flexview train`")
    p.add_argument("--z", help="latent coordinates, comma separated, e.g. --z -0.5,1.2")
    p.add_argument("--axis", type=int, help="latent axis (0-based) for a volume series")
    p.add_argument("--frames", type=int, default=41, help="volumes in the series (default 41)")
    p.add_argument("--range", type=float, default=1.5, dest="extent",
                   help="series spans ± this many standard deviations of the axis (default 1.5)")
    p.add_argument("--out", required=True, help="output .mrc (with --z) or folder (with --axis)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.set_defaults(func=run)


def parse_latent(text: str, dim: int) -> np.ndarray:
    """``"-0.5,1.2"`` → array([-0.5, 1.2]); checks the count against the run's latent dimension."""
    try:
        values = np.array([float(v) for v in text.replace(" ", "").split(",") if v != ""], dtype=np.float32)
    except ValueError as exc:
        raise FlexviewInputError(f"cannot read latent coordinates {text!r}", field="--z") from exc
    if values.size != dim:
        raise FlexviewInputError(f"--z has {values.size} values but the run has {dim} latent dimensions",
                                 field="--z")
    return values


def write_series(run_obj, axis: int, frames: int, extent: float, out: Path) -> list[Path]:
    """Write ``frames`` volumes along ``axis`` as ``out/frame_000.mrc`` ... plus ``out/latents.csv``."""
    from flexview.run import write_volume_series

    points = run_obj.axis_values(axis, frames, extent)
    return write_volume_series(out, (run_obj.generate(z) for z in points), points, run_obj.pixel_size)


def run(args) -> int:
    from flexview.io.mrc import write_map
    from flexview.run import load_run

    if (args.z is None) == (args.axis is None):
        raise FlexviewInputError("give exactly one of --z and --axis", field="--z/--axis")
    run_obj = load_run(args.run, device=args.device)
    if args.z is not None:
        z = parse_latent(args.z, run_obj.config.latent_dim)
        write_map(args.out, run_obj.generate(z), run_obj.pixel_size)
        print(f"wrote {args.out} (z = {', '.join(f'{v:g}' for v in z)}, box {run_obj.box}, "
              f"{run_obj.pixel_size:.3f} Å/voxel)")
        return 0
    paths = write_series(run_obj, args.axis, args.frames, args.extent, Path(args.out))
    print(f"wrote {len(paths)} volumes along latent axis {args.axis} (± {args.extent} sd) to {args.out}")
    return 0
