"""The ``flexview`` command line: one sub-command per module in :mod:`flexview.commands`.

Each command module defines ``register(subparsers)``, which adds its parser and sets
``func(args) -> int`` as the parser default. Commands are thin layers over the engine.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from flexview._version import __version__
from flexview.errors import FlexviewInputError

COMMANDS = ["info", "synth", "mesh", "train", "generate", "reconstruct", "demo"]
# options whose value may start with "-" (a negative number): "--z -0.5,1.2" works like "--z=-0.5,1.2"
NEGATIVE_VALUE_OPTIONS = {"--z"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flexview", description="3D Flexible Refinement for cryo-EM.")
    parser.add_argument("--version", action="version", version=f"flexview {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"flexview.commands.{name}").register(sub)
    return parser


def join_negative_values(argv: list[str]) -> list[str]:
    """Glue ``--z -0.5,1.2`` into ``--z=-0.5,1.2`` so argparse does not take the value for an option."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in NEGATIVE_VALUE_OPTIONS and i + 1 < len(argv) and argv[i + 1].startswith("-"):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code.

    0: done. 2: refused input (:class:`FlexviewInputError`) or a file that could not be read or
    written (:class:`OSError`: a read-only or full disk, a name too long), reported on one line
    that names the file. 130: interrupted (Ctrl-C). Any other exception is a bug and keeps its
    traceback.
    """
    argv = join_negative_values(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except FlexviewInputError as exc:
        print(f"flexview {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"flexview {args.command}: error: {describe_os_error(exc, getattr(args, 'out', None))}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"flexview {args.command}: interrupted", file=sys.stderr)
        return 130


def describe_os_error(exc: OSError, out=None) -> str:
    """``PATH: reason`` for a failed read or write; the output folder ``out`` stands in for a
    missing file name (an error raised by a write that does not name its file)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
    if names:
        return f"{' -> '.join(names)}: {reason}"
    return f"{out}: {reason} (while writing the output)" if out else reason


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
