"""``flexview reconstruct``: high-resolution half maps from a trained run, FSC and post-processing."""
from __future__ import annotations

import argparse
import textwrap

from flexview.commands._params import add_param_options, build, given_params, set_epilog
from flexview.recon.pipeline import ReconOptions

# what `flexview reconstruct` writes in --out (summary.json last)
OUTPUTS = ("half_A.mrc", "half_B.mrc", "noflex_half_A.mrc", "noflex_half_B.mrc", "map.mrc", "map_sharp.mrc",
           "support_mask.mrc", "fsc.csv", "fsc.png", "deformation_error.csv", "summary.json")


def register(sub) -> None:
    p = sub.add_parser(
        "reconstruct", help="high-resolution canonical map (per half set, full box) with FSC",
        description=textwrap.fill("Freeze a run's flow and latents, solve each half set's canonical map "
                                  "at the full box by full-batch L-BFGS, and compare with the rigid "
                                  "(noflex) reconstruction.", 80),
        epilog=set_epilog(ReconOptions), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="run folder (or split-halves folder) written by `flexview train`")
    p.add_argument("particles", nargs="?",
                   help="particles (.star or .cs) the run was trained on (default: the run's)")
    p.add_argument("--out", required=True, help="output folder")
    add_param_options(p, ReconOptions, example="memory=40")
    p.set_defaults(func=run)


def run(args) -> int:
    from flexview.io.outputs import check_output_folder
    from flexview.recon.pipeline import reconstruct_run

    opts = build(ReconOptions, given_params(args, ReconOptions))
    check_output_folder(args.out, marker="summary.json", names=OUTPUTS)
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
