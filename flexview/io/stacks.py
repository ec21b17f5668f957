"""What the image stacks named by a particle file say about its particles, from their headers.

Each stack's MRC header is read (and checked, see :func:`flexview.io.mrc.read_header`), never its
data: the number of images, their edge and the voxel size. A particle whose image number is past
the end of its stack, a stack whose images are not square, or one whose edge differs from the
particle's box is a problem of ``images`` (see :mod:`flexview.io.problems`); so is a stack whose
header is unreadable. Stacks that are not on disk are left to :meth:`ParticleSet.require`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flexview.errors import FlexviewInputError
from flexview.io.mrc import stack_header
from flexview.io.particles import StackImages
from flexview.io.problems import Problems, in_all, is_file


@dataclass
class StackFacts:
    """Per particle: the edge (px, 0 where unknown) and voxel size (Å, NaN where unknown) that its
    stack's header gives, and whether that header was read."""

    box: np.ndarray
    pixel_size: np.ndarray
    known: np.ndarray


def read_stack_headers(images: StackImages, problems: Problems, index_field: str) -> StackFacts:
    """Read every stack header; record unreadable stacks, image numbers past the end (naming
    ``index_field``, the field that holds them) and non-square images as problems of ``images``."""
    count = len(images.paths)
    n_images = np.full(count, -1, dtype=np.int64)
    nx = np.zeros(count, dtype=np.int64)
    ny = np.zeros(count, dtype=np.int64)
    px = np.full(count, np.nan)
    for f, path in enumerate(images.paths):
        if not is_file(path):
            continue
        try:
            n_images[f], ny[f], nx[f], px[f] = stack_header(path)
        except FlexviewInputError as exc:
            problems.add_error("images", exc)
    file_index = images.file_index
    known = n_images[file_index] >= 0
    _past_end(problems, images, known, n_images, index_field)
    square = known & (nx[file_index] != ny[file_index])
    if square.any():
        row = int(np.argmax(square))
        f = file_index[row]
        problems.add_error("images", FlexviewInputError(f"the images are {nx[f]} x {ny[f]} pixels, not square",
                                                        images.paths[f], "nx, ny"))
    return StackFacts(np.where(known, nx[file_index], 0), np.where(known, px[file_index], np.nan), known)


def _past_end(problems: Problems, images: StackImages, known: np.ndarray, n_images: np.ndarray,
              field: str) -> None:
    beyond = known & (images.slice_index >= n_images[images.file_index])
    if beyond.any():
        row = int(np.argmax(beyond))
        f = images.file_index[row]
        problems.add("images", f"{problems.where(row)}: image {images.slice_index[row] + 1} is past the end of "
                     f"{images.paths[f]}, which holds {n_images[f]} {in_all(int(beyond.sum()))}", field)


def check_boxes(problems: Problems, images: StackImages, facts: StackFacts, boxes: np.ndarray, field: str) -> None:
    """A problem when the metadata box of a particle differs from its stack's image edge."""
    differ = facts.known & (boxes != facts.box)
    if differ.any():
        row = int(np.argmax(differ))
        problems.add("images", f"{problems.where(row)}: {field} says {boxes[row]} px but its stack "
                     f"{images.paths[images.file_index[row]]} holds {facts.box[row]} px images", field)


def name_max(folder: Path) -> int:
    """The longest file name (bytes) the file system of ``folder`` allows (255 when it cannot say)."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX")) if folder.is_dir() else 255
    except (OSError, ValueError):
        return 255


def name_too_long(name: str, folder: Path, limit: int) -> str | None:
    """Why no file system could hold the stack ``name`` under ``folder`` (a part longer than
    ``limit`` bytes, or a path of 4096 bytes or more), or None."""
    longest = max((len(part.encode("utf-8", "surrogateescape")) for part in Path(name).parts), default=0)
    if longest > limit:
        return f"the stack name has a part of {longest} bytes; file names may have at most {limit}"
    if len(os.path.join(str(folder), name).encode("utf-8", "surrogateescape")) >= 4096:
        return "the stack path is longer than the 4096 bytes a path may have"
    return None
