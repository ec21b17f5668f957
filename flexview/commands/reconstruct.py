"""``flexview reconstruct``: high-resolution half maps from a trained run, FSC and post-processing."""
from __future__ import annotations

from flexview.errors import FlexviewInputError


def register(sub) -> None:
    p = sub.add_parser(
        "reconstruct", help="high-resolution canonical map (per half set, full box) with FSC",
        description="Freeze a run's flow and latents, solve each half set's canonical map at the full "
                    "box by full-batch L-BFGS, and compare with the rigid (noflex) reconstruction.")
    p.add_argument("run", help="run folder (or split-halves folder) written by `flexview train`")
    p.add_argument("particles", nargs="?",
                   help="particles (.star or .cs) the run was trained on (default: the run's)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--mask", help="soft mask (.mrc) for the masked FSC, B-factor fit and weighting")
    p.add_argument("--labels", help="label volume (.mrc) of regions for the split-halves deformation error")
    p.add_argument("--iters", type=int, default=20, help="L-BFGS iterations per half map (default 20)")
    p.add_argument("--box", default="full", help="reconstruction box: full (default) or a size in pixels")
    p.add_argument("--no-noflex", dest="noflex", action="store_false",
                   help="skip the rigid (noflex) baseline half maps")
    p.add_argument("--no-recentre", dest="recentre", action="store_false",
                   help="keep the canonical conformation training left the map in, instead of the "
                        "particles' median conformation")
    p.add_argument("--symmetry", help="symmetrise the half maps, e.g. C4 or D7 (axis z)")
    p.add_argument("--bfactor", type=float,
                   help="B-factor (Å²) applied to map_sharp.mrc, negative sharpens (default: Guinier fit)")
    p.add_argument("--tikhonov", type=float, default=0.0,
                   help="weight of ‖V‖² relative to the mean Hessian (default 0)")
    p.add_argument("--ctf-pad", type=int, default=2,
                   help="apply the CTF on a grid this many times the box, so that signal it moves out of "
                        "the box is lost as in an extracted particle (default 2)")
    p.add_argument("--chunk", type=int, help="particles per chunk (default 32 on CPU, 128 on a GPU)")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto (default: the GPU when present)")
    p.add_argument("--project-dir", help="folder that relative image paths are resolved against")
    p.set_defaults(func=run)


def parse_box(text: str) -> int | None:
    """``"full"`` → None, ``"256"`` → 256."""
    if str(text).lower() == "full":
        return None
    try:
        return int(text)
    except ValueError as exc:
        raise FlexviewInputError(f"--box must be 'full' or a number of pixels, not {text!r}",
                                 field="--box") from exc


def run(args) -> int:
    from flexview.recon.pipeline import ReconOptions, reconstruct_run

    opts = ReconOptions(iters=args.iters, box=parse_box(args.box), mask=args.mask, labels=args.labels,
                        noflex=args.noflex, recentre=args.recentre, symmetry=args.symmetry,
                        bfactor=args.bfactor, tikhonov=args.tikhonov, ctf_pad=args.ctf_pad, chunk=args.chunk,
                        device=args.device, project_dir=args.project_dir)
    summary = reconstruct_run(args.run, args.particles, args.out, opts, log=print)
    res = summary["resolution_A"]
    print(f"output folder: {args.out}")
    print(f"box {summary['box']}, {summary['pixel_size']:.3f} Å/px; training Nyquist "
          f"{summary['training_nyquist_A']:.2f} Å")
    print(f"flexview resolution (FSC 0.143): {res['flex']:.2f} Å"
          + (f" (global {res['flex_global']:.2f} Å)" if res.get("flex_masked") else ""))
    if "noflex" in res:
        print(f"noflex resolution (FSC 0.143):   {res['noflex']:.2f} Å"
              + (f" (global {res['noflex_global']:.2f} Å)" if res.get("noflex_masked") else ""))
    print(f"B-factor applied to map_sharp.mrc: {summary['bfactor_applied_A2']:.1f} Å² "
          f"({summary['bfactor_source']})")
    err = summary.get("deformation_error_A")
    if err:
        for group, regions in err.items():
            text = ", ".join(f"{name} {v['error']['median']:.2f} Å" for name, v in regions.items())
            print(f"deformation error between the half models, median ({group}): {text}")
    return 0
