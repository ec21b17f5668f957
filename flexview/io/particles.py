"""The particle-set abstraction every part of flexview uses.

A :class:`ParticleSet` holds N particle images (read lazily from one or many stacks), a pose per
particle (RELION rotation matrix ``A`` and RELION origin in Å), CTF parameters, the half-set id,
the optics group and any extra per-particle columns, so a subset can be written back to STAR or
``.cs`` without losing a field. :func:`flexview.io.formats.read_particles` reads either format.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from flexview.errors import FlexviewInputError
from flexview.io.images import (ArrayImages, ImageSource, SignedImages, StackImages, StackReferences,
                                SubsetImages, stack_references)
from flexview.io.problems import is_file
from flexview.model.ctf import CTFParams

__all__ = ["ArrayImages", "ImageSource", "ParticleSet", "Sampling", "SignedImages", "StackImages",
           "StackReferences", "SubsetImages", "stack_references"]


@dataclass(frozen=True)
class Sampling:
    """Particles that share one pixel size (Å) and one box (px): ``rows`` (int array) of the set,
    from the optics groups ``groups``."""

    pixel_size: float
    box: int
    rows: np.ndarray
    groups: tuple[int, ...]

    @property
    def extent_A(self) -> float:
        return self.box * self.pixel_size


@dataclass
class ParticleSet:
    """N particles with poses, CTF, half sets and extra columns.

    Attributes
    ----------
    images : ImageSource or None
        Lazy access to the images, ``[n, box, box]`` float32.
    pixel_size : float
        Å per pixel of the images. For a set whose optics groups differ (see ``pixel_sizes``), the
        value of the reference group: the lowest optics-group number present, whose grid RELION
        3.1 also gives its reconstructions.
    box : int
        Image edge length in pixels (of the reference group for a mixed set).
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
    pixel_sizes : ndarray (N,) float64 or None
        Å per pixel of each particle when they differ (optics groups merged from several data
        sets); None when every particle has ``pixel_size``. Given, it sets ``pixel_size``.
    boxes : ndarray (N,) int64 or None
        Image edge in pixels of each particle when they differ; None when every particle has
        ``box``. Given, it sets ``box``. ``images.read`` returns one box per call: read the rows
        of each entry of :meth:`samplings` separately.
    problems : list of (str, FlexviewInputError)
        Values the reader found unusable (see :mod:`flexview.io.problems`), each filed under
        ``"images"``, ``"poses"``, ``"ctf"`` or ``"half_sets"``; :meth:`require` raises them.
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
    pixel_sizes: np.ndarray | None = None
    boxes: np.ndarray | None = None
    problems: list = field(default_factory=list)

    def __post_init__(self):
        n = len(self)
        self._set_sampling()
        if self.half_set is None:
            self.half_set = np.full(n, -1, dtype=np.int8)
        if self.optics_group is None:
            self.optics_group = np.ones(n, dtype=np.int64)
        if len(self.extra) == 0 and len(self.extra.columns) == 0:
            self.extra = pd.DataFrame(index=pd.RangeIndex(n))
        for name in ("rotations", "origins_A", "half_set", "optics_group", "pixel_sizes", "boxes"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"ParticleSet.{name} has {len(value)} rows, expected {n}")

    def __len__(self) -> int:
        for v in (self.images, self.rotations, self.ctf, self.half_set):
            if v is not None:
                return len(v)
        return len(self.extra)

    def _set_sampling(self) -> None:
        """Normalise ``pixel_sizes``/``boxes``: None when uniform; the scalars from the reference
        group (lowest optics-group number) otherwise."""
        n = len(self)
        if self.optics_group is None:
            self.optics_group = np.ones(n, dtype=np.int64)
        ref = int(np.argmin(self.optics_group)) if n else 0
        for name, scalar, dtype in (("pixel_sizes", "pixel_size", np.float64), ("boxes", "box", np.int64)):
            values = getattr(self, name)
            if values is None:
                continue
            values = np.asarray(values, dtype=dtype).reshape(-1)
            if n and len(values) == n:
                setattr(self, scalar, dtype(values[ref]).item())
            uniform = len(values) == n and not (values != values[:1]).any()
            setattr(self, name, None if uniform else values)

    @property
    def mixed(self) -> bool:
        """Whether the particles differ in pixel size or box."""
        return self.pixel_sizes is not None or self.boxes is not None

    def samplings(self) -> list["Sampling"]:
        """The particles grouped by (pixel size, box): one :class:`Sampling` per distinct pair,
        the reference group's first; a single entry for a uniform set."""
        n = len(self)
        px = np.full(n, float(self.pixel_size)) if self.pixel_sizes is None else self.pixel_sizes
        box = np.full(n, int(self.box), dtype=np.int64) if self.boxes is None else self.boxes
        pairs, inverse = np.unique(np.stack([px, box.astype(np.float64)], axis=1), axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        out = []
        for k, (p, b) in enumerate(pairs):
            rows = np.nonzero(inverse == k)[0]
            groups = tuple(int(g) for g in np.unique(self.optics_group[rows]))
            out.append(Sampling(float(p), int(b), rows, groups))
        reference = (float(self.pixel_size), int(self.box))
        return sorted(out, key=lambda s: ((s.pixel_size, s.box) != reference, min(s.groups)))

    @property
    def extent_A(self) -> float:
        """Edge of the images in Å (box × pixel size): the extent a map of these particles spans
        (of the reference group's images for a mixed set)."""
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
            pixel_sizes=take(self.pixel_sizes), boxes=take(self.boxes),
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
        ``'images'``, ``'half_sets'``: the first recorded problem of that part, else a message that
        it is absent; for ``'images'`` also when an image stack is not on disk."""
        checks = {"poses": self.has_poses, "ctf": self.has_ctf, "images": self.images is not None,
                  "half_sets": self.has_half_sets}
        field_names = REQUIRED_FIELDS.get(self.source_format, REQUIRED_FIELDS[""])
        for w in what:
            for aspect, error in self.problems:
                if aspect == w:
                    raise error
            if not checks[w]:
                raise FlexviewInputError(f"the particles have no {w.replace('_', ' ')}", self.source,
                                         field_names[w])
            if w == "images":
                _require_stacks(self.images, self.source)


# the field that holds each part of the data, named when the part is absent
REQUIRED_FIELDS = {
    "cryosparc": {"poses": "alignments3D/pose", "ctf": "ctf/df1_A", "images": "blob/path",
                  "half_sets": "alignments3D/split"},
    "relion-3.0": {"poses": "rlnAngleRot", "ctf": "rlnDefocusU", "images": "rlnImageName",
                   "half_sets": "rlnRandomSubset"},
    "": {"poses": "angles/origins", "ctf": "defocus", "images": "image name", "half_sets": "random subset"},
}
REQUIRED_FIELDS["relion-3.1"] = REQUIRED_FIELDS["relion-3.0"]


def _require_stacks(images: ImageSource, source: Path | None) -> None:
    """Raise :class:`FlexviewInputError` naming the first image stack that is not on disk."""
    refs = stack_references(images)
    missing = [] if refs is None else [p for p in refs.paths if not is_file(p)]
    if missing:
        while not isinstance(images, StackImages) and hasattr(images, "parent"):
            images = images.parent
        raise FlexviewInputError(f"{len(missing)} of {len(refs.paths)} image stacks not found, e.g. {missing[0]}",
                                 source, getattr(images, "field", "image name"))
