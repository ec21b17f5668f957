"""Checks on output paths, made before any work starts: nothing flexview did not write is overwritten.

An output **file** (``generate --z OUT.mrc``, ``mesh --out OUT.npz``) may be written when it
does not exist yet, or when it is a file flexview wrote: an MRC file whose header labels
(MRC2014 words 57–256) carry the word ``flexview``, or a mesh archive with the arrays of
:mod:`flexview.io.meshfile`. An output **folder** may be new, empty, or a folder the same
command wrote before: its marker file is there and every entry in it has one of the names that
command writes. Anything else is refused with a :class:`FlexviewInputError` naming the path and
the option, and left as it was.
"""
from __future__ import annotations

import fnmatch
import os
from pathlib import Path

import numpy as np

from flexview.errors import FlexviewInputError

MRC_HEADER_BYTES = 1024
MRC_LABELS = slice(224, 1024)        # ten 80-character labels
MRC_LABEL_WORD = b"flexview"         # flexview.io.mrc.write_map labels every map it writes
MESH_KEYS = ("vertices", "cells", "box", "pixel_size")


def check_output_file(path: str | Path, field: str = "--out", *, ours=None) -> Path:
    """``path`` as a Path when a file may be written there.

    ``ours(path) -> bool`` tells whether an existing file is one flexview wrote (and may be
    replaced); None: an existing file is always refused.

    Raises
    ------
    FlexviewInputError
        Naming ``path`` and ``field``: the path is a folder, lies under a file, has a name too
        long for the file system, or is an existing file flexview did not write.
    """
    path = Path(path)
    _check_parents(path, field)
    _check_name(path, field)
    if path.is_dir():
        raise FlexviewInputError("is a folder; give the name of a file to write", path, field)
    if path.exists() and not (path.is_file() and ours is not None and ours(path)):
        raise FlexviewInputError("exists and was not written by flexview; it is left as it is: "
                                 "choose another name or delete it", path, field)
    return path


def check_output_folder(path: str | Path, field: str = "--out", *, marker: str | None = None,
                        names: tuple[str, ...] = ()) -> Path:
    """``path`` as a Path when a folder of outputs may be written there.

    A folder that exists must be empty, or hold ``marker`` (a file name) and only entries whose
    names match one of ``names`` (shell patterns such as ``frame_*.mrc``): an earlier output of
    the same command, which may be replaced. ``marker`` None: an existing folder must be empty.

    Raises
    ------
    FlexviewInputError
        Naming the path and ``field``: the path is a file or lies under one, or is a folder
        holding files that are not this command's outputs (the first such entry is named).
    """
    path = Path(path)
    _check_parents(path, field)
    _check_name(path, field)
    if path.exists() and not path.is_dir():
        raise FlexviewInputError("is a file, but a folder is needed here", path, field)
    entries = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    if not entries:
        return path
    foreign = [name for name in entries if not any(fnmatch.fnmatchcase(name, pat) for pat in names)]
    if marker is None or not (path / marker).is_file() or foreign:
        example = (foreign or entries)[0]
        raise FlexviewInputError(f"folder is not empty and is not a flexview output (it holds {example!r}); "
                                 "it is left as it is: choose a new or empty folder", path, field)
    return path


def written_by_flexview(path: str | Path) -> bool:
    """Whether ``path`` is an MRC file labelled by flexview or a flexview mesh archive."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(MRC_HEADER_BYTES)
    except OSError:
        return False
    if head[:2] == b"PK":
        return _is_mesh_archive(path)
    return len(head) == MRC_HEADER_BYTES and head[208:211] == b"MAP" and MRC_LABEL_WORD in head[MRC_LABELS]


def _is_mesh_archive(path: Path) -> bool:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return all(key in archive.files for key in MESH_KEYS)
    except (OSError, ValueError, AttributeError):
        return False


def _check_parents(path: Path, field: str) -> None:
    """Refuse a path under an existing file (``out.mrc/x``)."""
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise FlexviewInputError(f"cannot write here: {parent} is a file, not a folder", path, field)
            return


def _check_name(path: Path, field: str) -> None:
    """Refuse a name longer than the file system holds (ENAMETOOLONG)."""
    folder = next((p for p in path.absolute().parents if p.is_dir()), Path("/"))
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    for part in path.parts:
        if len(part.encode()) > limit:
            raise FlexviewInputError(f"a name of {len(part.encode())} bytes is too long (at most {limit} here)",
                                     path, field)
