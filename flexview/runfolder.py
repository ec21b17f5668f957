"""The run folder: the files a training run leaves for later steps, other machines and reviewers.

``config.json`` (written first: it marks the folder as a flexview run), ``status.json`` (how the
run stands: ``training``, ``stopped``, ``failed`` or ``complete``), ``mesh.npz``, ``mask.mrc``,
``calibration.json``, ``checkpoints/latest.pt`` (written once set-up is done and then every few
iterations), ``log.csv``, ``cache/``, and the outputs of a run that ended: ``flow.pt`` (state
dict), ``canonical.mrc``, ``latents.npy`` (M × K float32, input particle order),
``latents.star``. Every file is written atomically. Training writes the folder; reconstruction,
:func:`flexview.run.load_run` and the app read it through :class:`RunFolder`.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
from pickle import UnpicklingError  # what torch.load(weights_only=True) raises; never unpickles
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from flexview.errors import FlexviewInputError
from flexview.io._atomic import TEMPORARY_SUFFIX, atomic_path, temporary_prefix, write_text_atomic

LATENT_COLUMN = "flexviewLatent{}"


@dataclass(frozen=True)
class RunFolder:
    """Paths of the files in a run folder."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    config = property(lambda s: s.root / "config.json")
    mesh = property(lambda s: s.root / "mesh.npz")
    mask = property(lambda s: s.root / "mask.mrc")
    flow = property(lambda s: s.root / "flow.pt")
    canonical = property(lambda s: s.root / "canonical.mrc")
    latents = property(lambda s: s.root / "latents.npy")
    latents_star = property(lambda s: s.root / "latents.star")
    calibration = property(lambda s: s.root / "calibration.json")
    log = property(lambda s: s.root / "log.csv")
    status = property(lambda s: s.root / "status.json")
    checkpoints = property(lambda s: s.root / "checkpoints")
    cache = property(lambda s: s.root / "cache")

    @property
    def outputs(self) -> tuple[Path, ...]:
        """The files written when a run ends (or is stopped)."""
        return self.flow, self.canonical, self.latents, self.latents_star

    @property
    def checkpoint(self) -> Path:
        return self.checkpoints / "latest.pt"


def save_torch(path: Path, obj) -> None:
    """``torch.save`` atomically (tensors, dicts and numbers only: loadable with weights_only).

    Serialised in memory first, so that a full disk is an ordinary write error naming ``path``."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def load_torch(path: Path):
    """What :func:`save_torch` wrote, on the CPU; never unpickles arbitrary objects.

    A file that holds Python objects other than tensors, numbers, strings and containers, or
    that is not a readable torch file, is a :class:`FlexviewInputError` naming ``path``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise FlexviewInputError("file not found", path) from None
    except UnpicklingError as exc:
        if "GLOBAL" in str(exc) or "Unsupported global" in str(exc):
            reason = ("it holds Python code or objects, not only tensors and numbers; flexview "
                      "loads only what it writes itself")
        else:
            reason = "not a torch file written by flexview"
        raise FlexviewInputError(f"refused: {reason}", path) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise FlexviewInputError(f"cannot read the file: it is damaged or truncated "
                                 f"({type(exc).__name__})", path) from None


def check_state(state, reference, path: Path, name: str = "") -> None:
    """Check that ``state`` (as :func:`load_torch` returned it) has the keys and tensor shapes of
    ``reference`` (what the run would save now); raises :class:`FlexviewInputError` naming
    ``path`` and the first entry that differs (``flow.net.0.weight``, ``latents``)."""
    if isinstance(reference, dict):
        if not isinstance(state, dict):
            raise FlexviewInputError("is not a dictionary of saved values", path, name or "checkpoint")
        for key, value in reference.items():
            field = f"{name}.{key}" if name else str(key)
            if key not in state:
                raise FlexviewInputError("is missing: the checkpoint was not written by this run",
                                         path, field)
            check_state(state[key], value, path, field)
    elif isinstance(reference, torch.Tensor):
        if not isinstance(state, torch.Tensor):
            raise FlexviewInputError("is not a tensor", path, name)
        if tuple(state.shape) != tuple(reference.shape):
            raise FlexviewInputError(f"has shape {tuple(state.shape)} but this run needs "
                                     f"{tuple(reference.shape)}: the checkpoint belongs to another "
                                     "run or configuration", path, name)


def save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` atomically, without pickling."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)


def write_log(path: Path, rows: list[dict]) -> None:
    """The per-iteration log as CSV (whole file rewritten atomically)."""
    if not rows:
        return
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())


def read_log(path: Path) -> list[dict]:
    """Rows of ``log.csv`` with numbers parsed (empty when there is no log)."""
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def _number(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def write_json(path: Path, data: dict) -> None:
    """``data`` as indented JSON, atomically."""
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


# ---------------------------------------------------------------------- what a folder holds
# the names a run folder may hold (files and folders flexview writes there); split-halves
# training writes split.json, half_A and half_B beside nothing else
RUN_NAMES = frozenset({"config.json", "status.json", "mesh.npz", "mask.mrc", "flow.pt", "canonical.mrc",
                       "latents.npy", "latents.star", "calibration.json", "log.csv", "checkpoints", "cache"})
_CONFIG_SIGNATURE = {"particles", "consensus_map", "box", "latent_dim"}


def is_run_config(path: Path) -> bool:
    """Whether ``path`` is a ``config.json`` written by flexview (a JSON object with the training
    parameters' names)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and _CONFIG_SIGNATURE <= data.keys()


def is_temporary(name: str, names=RUN_NAMES) -> bool:
    """Whether ``name`` is a temporary file an interrupted atomic write of one of ``names`` left."""
    return name.endswith(TEMPORARY_SUFFIX) and any(name.startswith(temporary_prefix(n)) for n in names)


def folder_kind(root: Path, *, option: str = "--out", allowed=RUN_NAMES) -> str:
    """What ``root`` is: ``"new"`` (absent), ``"empty"`` (a folder holding nothing, or only
    temporary files flexview left), or ``"run"`` (its ``config.json`` is flexview's).

    Anything else (a file, a folder holding files flexview did not write) is a
    :class:`FlexviewInputError` naming ``root`` and ``option``: flexview never writes there.
    """
    root = Path(root)
    try:
        if not root.exists():
            return "new"
        if not root.is_dir():
            raise FlexviewInputError("is a file, not a folder: give a new or empty folder", root, option)
        names = sorted(p.name for p in root.iterdir())
    except OSError as exc:
        raise FlexviewInputError(f"cannot use this folder ({exc.strerror or exc})", root, option) from None
    config = root / "config.json"
    if config.is_file():
        if is_run_config(config):
            return "run"
        raise FlexviewInputError("is not a flexview run configuration (damaged, or written by another "
                                 "program); nothing was written: give a new or empty folder", config, option)
    foreign = [n for n in names if not is_temporary(n, allowed)]
    if not foreign:
        return "empty"
    shown = ", ".join(foreign[:3]) + (", …" if len(foreign) > 3 else "")
    raise FlexviewInputError(f"the folder holds files flexview did not write ({shown}); nothing was "
                             "written: give a new or empty folder", root, option)


def remove_temporaries(folder: RunFolder) -> None:
    """Delete the temporary files interrupted writes left in ``folder`` and its sub-folders."""
    for where in (folder.root, folder.checkpoints, folder.cache):
        if where.is_dir():
            for path in where.iterdir():
                if path.is_file() and path.name.endswith(TEMPORARY_SUFFIX) and path.name.startswith("."):
                    with contextlib.suppress(OSError):
                        path.unlink()


def remove_run_files(folder: RunFolder, *, remove_root: bool) -> None:
    """Undo a set-up that did not finish: delete the files flexview writes in a run folder (and
    ``folder.root`` itself when ``remove_root`` and it is left empty); nothing else is touched."""
    remove_temporaries(folder)
    for sub in (folder.checkpoints, folder.cache):
        if sub.is_dir():
            for path in sub.iterdir():
                if path.name.startswith(("latest.", "particles_")) and path.is_file():
                    with contextlib.suppress(OSError):
                        path.unlink()
    for name in sorted(RUN_NAMES):
        path = folder.root / name
        with contextlib.suppress(OSError):
            path.rmdir() if path.is_dir() else path.unlink()
    if remove_root:
        with contextlib.suppress(OSError):
            folder.root.rmdir()


# ---------------------------------------------------------------------- status
def read_status(folder: RunFolder) -> dict:
    """``status.json`` as a dict (empty when absent or unreadable: a run from before it existed)."""
    try:
        data = json.loads(folder.status.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_status(folder: RunFolder, state: str, **info) -> None:
    """Record how the run stands: ``state`` and JSON-ready ``info`` (iterations, the error)."""
    write_json(folder.status, {"state": state, **info})


# ---------------------------------------------------------------------- paths in config.json
def resolve_relative_paths(raw: dict, names, config_path: Path) -> dict:
    """``raw`` (a loaded ``config.json``) with the relative paths of the fields ``names`` made
    absolute.

    Runs store absolute paths; older ones stored them as typed, relative to the folder they were
    started in, which was not recorded. Each is looked up in the run folder's parent and up to
    three folders above it, then in the current folder; the first where it exists wins. A path
    found nowhere is left as it is, for the reader of that input to report.
    """
    run = Path(config_path).absolute().parent
    bases = [*list(run.parents)[:4], Path.cwd()]
    out = dict(raw)
    for name in names:
        value = out.get(name)
        if not isinstance(value, str) or not value or Path(value).is_absolute():
            continue
        for base in bases:
            if (base / value).exists():
                out[name] = str((base / value).resolve())
                break
    return out
