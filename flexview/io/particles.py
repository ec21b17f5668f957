"""The particle-set abstraction every part of flexview uses.

A :class:`ParticleSet` holds N particle images (read lazily from one or many stacks), a pose per
particle (RELION rotation matrix ``A`` and RELION origin in Å), CTF parameters, the half-set id,
the optics group and any extra per-particle columns, so a subset can be written back to STAR or
``.cs`` without losing a field. :func:`flexview.io.formats.read_particles` reads either format.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from flexview.errors import FlexviewInputError
from flexview.io.mrc import open_stack
from flexview.model.ctf import CTFParams


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
        Expected image edge in pixels (0 when unknown, e.g. every stack is missing).
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
        return [p for p in self.paths if not p.is_file()]

    def describe(self, i):
        return f"{self.paths[self.file_index[i]]} (image {self.slice_index[i] + 1})"

    def _stack(self, f: int) -> np.ndarray:
        if f not in self._open:
            if not self.paths[f].is_file():
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
            if stack.shape[-1] != self.box:
                raise FlexviewInputError(f"box {stack.shape[-1]} differs from the expected {self.box}",
                                         path, "image shape")
            used = self.slice_index[self.file_index == f]
            if used.size and (used.max() >= stack.shape[0] or used.min() < 0):
                raise FlexviewInputError(
                    f"image index {used.max() + 1} is past the end of a stack of {stack.shape[0]}",
                    path, "image index")

    def _read(self, idx):
        out = np.empty((len(idx), self.box, self.box), dtype=np.float32)
        files = self.file_index[idx]
        for f in np.unique(files):
            sel = np.nonzero(files == f)[0]
            stack = self._stack(int(f))
            if stack.shape[-2:] != (self.box, self.box):
                raise FlexviewInputError(f"images are {stack.shape[-1]} x {stack.shape[-2]}, expected "
                                         f"{self.box} x {self.box}", self.paths[f], "image shape")
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


@dataclass
class ParticleSet:
    """N particles with poses, CTF, half sets and extra columns.

    Attributes
    ----------
    images : ImageSource or None
        Lazy access to the images, ``[n, box, box]`` float32.
    pixel_size : float
        Å per pixel of the images.
    box : int
        Image edge length in pixels.
    rotations : ndarray (N, 3, 3) or None
        RELION matrices ``A`` (reference → particle frame).
    origins_A : ndarray (N, 2) or None
        RELION origin ``(x, y)`` in Å: the particle centre sits at image centre − origin.
    ctf : CTFParams or None
    half_set : ndarray (N,) int8
        0 or 1, or -1 where unknown.
    optics_group : ndarray (N,) int
        Optics-group number of each particle (1-based as in RELION).
    optics : DataFrame
        One row per optics group, RELION ``data_optics`` columns.
    extra : DataFrame
        Further per-particle columns (original metadata, latent coordinates), N rows.
    source : Path or None
        The metadata file this set came from.
    source_format : str
        Layout of that file: ``"relion-3.0"``, ``"relion-3.1"``, ``"cryosparc"`` or ``""``.
    """

    images: ImageSource | None
    pixel_size: float
    box: int
    rotations: np.ndarray | None = None
    origins_A: np.ndarray | None = None
    ctf: CTFParams | None = None
    half_set: np.ndarray | None = None
    optics_group: np.ndarray | None = None
    optics: pd.DataFrame = field(default_factory=pd.DataFrame)
    extra: pd.DataFrame = field(default_factory=pd.DataFrame)
    source: Path | None = None
    source_format: str = ""

    def __post_init__(self):
        n = len(self)
        if self.half_set is None:
            self.half_set = np.full(n, -1, dtype=np.int8)
        if self.optics_group is None:
            self.optics_group = np.ones(n, dtype=np.int64)
        if len(self.extra) == 0 and len(self.extra.columns) == 0:
            self.extra = pd.DataFrame(index=pd.RangeIndex(n))
        for name in ("rotations", "origins_A", "half_set", "optics_group"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"ParticleSet.{name} has {len(value)} rows, expected {n}")

    def __len__(self) -> int:
        for v in (self.images, self.rotations, self.ctf, self.half_set):
            if v is not None:
                return len(v)
        return len(self.extra)

    @property
    def extent_A(self) -> float:
        """Edge of the images in Å (box × pixel size): the extent a map of these particles spans."""
        return self.box * self.pixel_size

    @property
    def has_poses(self) -> bool:
        return self.rotations is not None and self.origins_A is not None

    @property
    def has_ctf(self) -> bool:
        return self.ctf is not None

    @property
    def has_half_sets(self) -> bool:
        return bool(np.all(self.half_set >= 0))

    def subset(self, index) -> "ParticleSet":
        """The particles selected by ``index`` (int array, slice or bool mask), every field kept."""
        rows = np.arange(len(self))[index]

        def take(a):
            return None if a is None else a[rows]

        return replace(
            self,
            images=None if self.images is None else self.images.subset(rows),
            rotations=take(self.rotations), origins_A=take(self.origins_A),
            ctf=None if self.ctf is None else self.ctf.subset(rows),
            half_set=take(self.half_set), optics_group=take(self.optics_group),
            extra=self.extra.iloc[rows].reset_index(drop=True),
        )

    def with_columns(self, **columns) -> "ParticleSet":
        """A copy with extra per-particle columns added (e.g. ``latent_1=z[:, 0]``)."""
        extra = self.extra.copy()
        for name, values in columns.items():
            values = np.asarray(values)
            if len(values) != len(self):
                raise ValueError(f"column {name} has {len(values)} rows, expected {len(self)}")
            extra[name] = values
        return replace(self, extra=extra)

    def require(self, *what: str) -> None:
        """Raise :class:`FlexviewInputError` unless the set has each of ``'poses'``, ``'ctf'``,
        ``'images'``, ``'half_sets'``."""
        checks = {"poses": self.has_poses, "ctf": self.has_ctf, "images": self.images is not None,
                  "half_sets": self.has_half_sets}
        field_names = {"poses": "angles/origins", "ctf": "defocus", "images": "image name",
                       "half_sets": "random subset"}
        for w in what:
            if not checks[w]:
                raise FlexviewInputError(f"the particles have no {w.replace('_', ' ')}", self.source,
                                         field_names[w])
