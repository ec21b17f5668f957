"""Lazily read particle images: from MRC stacks on disk, from memory, a subset, or sign-flipped.

An :class:`ImageSource` returns float32 images ``[n, box, box]`` for selected rows and refuses
NaN or infinite pixels, naming the stack. :func:`stack_references` gives the stack file and image
number of every image, for writing STAR or ``.cs`` files that point at the same stacks.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from flexview.errors import FlexviewInputError
from flexview.io.mrc import open_stack
from flexview.io.problems import is_file


class ImageSource:
    """Lazily read particle images. Subclasses implement :meth:`_read` and ``__len__``."""

    box: int

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def read(self, index) -> np.ndarray:
        """Images selected by ``index`` (int, slice, int array or bool mask) as float32 ``[n, y, x]``.

        Raises :class:`FlexviewInputError` naming the stack when a pixel is NaN or infinite.
        """
        idx = np.arange(len(self))[index]
        scalar = np.ndim(idx) == 0
        idx = np.atleast_1d(idx)
        out = self._read(idx)
        if not np.isfinite(out).all():
            bad = idx[~np.isfinite(out).all(axis=(1, 2))][0]
            raise FlexviewInputError(f"particle {bad} has NaN or infinite pixels", self.describe(bad), "image")
        return out[0] if scalar else out

    def describe(self, i: int) -> str:
        return f"image {i}"

    def subset(self, index) -> "ImageSource":
        return SubsetImages(self, np.arange(len(self))[index])

    def _read(self, idx: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class ArrayImages(ImageSource):
    """Images already in memory (synthetic data, tests): ``array`` shape (N, box, box)."""

    def __init__(self, array: np.ndarray):
        self.array = np.asarray(array, dtype=np.float32)
        self.box = self.array.shape[-1]

    def __len__(self) -> int:
        return len(self.array)

    def _read(self, idx):
        return np.array(self.array[idx], dtype=np.float32)


class SubsetImages(ImageSource):
    """A view of selected rows of another source."""

    def __init__(self, parent: ImageSource, rows: np.ndarray):
        self.parent, self.rows, self.box = parent, np.asarray(rows), parent.box

    def __len__(self) -> int:
        return len(self.rows)

    def _read(self, idx):
        return self.parent._read(self.rows[idx])

    def describe(self, i):
        return self.parent.describe(self.rows[i])


class StackImages(ImageSource):
    """Images in MRC stacks on disk, memory-mapped, never fully loaded.

    Parameters
    ----------
    paths : sequence of Path
        The distinct stack files.
    file_index : int array (N,)
        For each particle, which entry of ``paths`` holds it.
    slice_index : int array (N,)
        0-based image index inside that stack.
    box : int
        Expected image edge in pixels; 0 when unknown (e.g. every stack is missing) or when the
        stacks differ in box (merged optics groups): each stack's own edge is then used, and one
        :meth:`read` must select images of a single edge.
    field : str
        Metadata field that names the stacks (``rlnImageName``, ``blob/path``), used in errors.
    """

    def __init__(self, paths: Sequence[Path], file_index, slice_index, box: int, *,
                 field: str = "image name"):
        self.paths = [Path(p) for p in paths]
        self.file_index = np.asarray(file_index, dtype=np.int64)
        self.slice_index = np.asarray(slice_index, dtype=np.int64)
        self.box = int(box)
        self.field = field
        self._open: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.file_index)

    def missing(self) -> list[Path]:
        """Stack files that do not exist."""
        return [p for p in self.paths if not is_file(p)]

    def describe(self, i):
        return f"{self.paths[self.file_index[i]]} (image {self.slice_index[i] + 1})"

    def _stack(self, f: int) -> np.ndarray:
        if f not in self._open:
            if not is_file(self.paths[f]):
                raise FlexviewInputError("image stack not found", self.paths[f], self.field)
            self._open[f] = open_stack(self.paths[f])
        return self._open[f]

    def validate(self) -> None:
        """Check every stack exists, is square at ``box`` and holds every referenced index.

        Raises :class:`FlexviewInputError` naming the stack and the field at fault.
        """
        for path in self.missing():
            raise FlexviewInputError("image stack not found", path, self.field)
        if self.slice_index.size and self.slice_index.min() < 0:
            bad = int(np.argmin(self.slice_index))
            raise FlexviewInputError(f"image index {self.slice_index[bad] + 1} is not a valid image number",
                                     self.paths[self.file_index[bad]], "image index")
        for f, path in enumerate(self.paths):
            stack = self._stack(f)
            if stack.shape[-2] != stack.shape[-1]:
                raise FlexviewInputError(f"images are not square ({stack.shape[-1]} x {stack.shape[-2]})",
                                         path, "image shape")
            if self.box and stack.shape[-1] != self.box:
                raise FlexviewInputError(f"box {stack.shape[-1]} differs from the expected {self.box}",
                                         path, "image shape")
            used = self.slice_index[self.file_index == f]
            if used.size and (used.max() >= stack.shape[0] or used.min() < 0):
                raise FlexviewInputError(
                    f"image index {used.max() + 1} is past the end of a stack of {stack.shape[0]}",
                    path, "image index")

    def _read(self, idx):
        files = self.file_index[idx]
        box = self.box or (self._stack(int(files[0])).shape[-1] if len(idx) else 0)
        out = np.empty((len(idx), box, box), dtype=np.float32)
        for f in np.unique(files):
            sel = np.nonzero(files == f)[0]
            stack = self._stack(int(f))
            if stack.shape[-2:] != (box, box):
                raise FlexviewInputError(f"images are {stack.shape[-1]} x {stack.shape[-2]}, expected "
                                         f"{box} x {box}" + ("" if self.box else " like the other images read "
                                                            "with them"), self.paths[f], "image shape")
            slices = self.slice_index[idx[sel]]
            if slices.max() >= stack.shape[0]:
                raise FlexviewInputError(
                    f"image index {slices.max() + 1} is past the end of a stack of {stack.shape[0]}",
                    self.paths[f], "image index")
            out[sel] = stack[slices]
        return out


class SignedImages(ImageSource):
    """Images of another source multiplied by a per-particle factor of +1 or -1.

    Used for cryoSPARC ``blob/sign = +1`` stacks, whose contrast is opposite to the RELION
    convention flexview uses: those images are multiplied by -1 when read.
    """

    def __init__(self, parent: ImageSource, factors):
        self.parent, self.box = parent, parent.box
        self.factors = np.asarray(factors, dtype=np.float32)
        if len(self.factors) != len(parent):
            raise ValueError(f"{len(self.factors)} factors for {len(parent)} images")

    def __len__(self) -> int:
        return len(self.parent)

    def _read(self, idx):
        return self.parent._read(idx) * self.factors[idx][:, None, None]

    def describe(self, i):
        return self.parent.describe(i)


@dataclass
class StackReferences:
    """Where each particle image lives on disk.

    Attributes
    ----------
    paths : list of Path
        Distinct stack files (only those used).
    file_index, slice_index : int arrays (N,)
        Entry of ``paths`` and 0-based image number of each particle.
    factor : float32 array (N,)
        +1, or -1 where the stored image must be negated to follow the RELION convention.
    """

    paths: list[Path]
    file_index: np.ndarray
    slice_index: np.ndarray
    factor: np.ndarray


def stack_references(images: ImageSource | None) -> StackReferences | None:
    """Stack file and image number of every image of ``images``; None for in-memory images."""
    if images is None:
        return None
    found = _references(images, np.arange(len(images)))
    if found is None:
        return None
    paths, file_index, slice_index, factor = found
    used, file_index = np.unique(file_index, return_inverse=True)
    return StackReferences([paths[i] for i in used], file_index.astype(np.int64), slice_index,
                           factor.astype(np.float32))


def _references(src: ImageSource, rows: np.ndarray):
    if isinstance(src, StackImages):
        return src.paths, src.file_index[rows], src.slice_index[rows], np.ones(len(rows))
    if isinstance(src, SubsetImages):
        return _references(src.parent, src.rows[rows])
    if isinstance(src, SignedImages):
        found = _references(src.parent, rows)
        return None if found is None else (*found[:3], found[3] * src.factors[rows])
    return None
