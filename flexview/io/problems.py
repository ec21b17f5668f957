"""Problems the particle readers find in values that parse but cannot be used.

A file whose text or structure cannot be read is refused at once. A value that reads but is
wrong — a NaN angle, a defocus of −5000 Å, two origins that disagree, a missing amplitude
contrast, an image number past the end of its stack — is recorded instead, as a
:class:`~flexview.errors.FlexviewInputError` naming the file and the field, filed under the part
of the data it spoils (``images``, ``poses``, ``ctf`` or ``half_sets``). ``flexview info`` prints
them as warnings; a reader called with ``strict=True`` (the default) raises the first, and
:meth:`ParticleSet.require` raises the first of each part it is asked for.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from flexview.errors import FlexviewInputError
from flexview.model.ctf import CTFParams

ASPECTS = ("images", "poses", "ctf", "half_sets")


class Problems:
    """Collects ``(aspect, FlexviewInputError)`` pairs for one file, one per (aspect, field).

    Parameters
    ----------
    path : Path
        The metadata file, named in every error.
    where : callable, optional
        Row (0-based) → words locating it, e.g. ``"line 12 (particle 3)"``.
    """

    def __init__(self, path: Path, where: Callable[[int], str] | None = None):
        self.path = path
        self.items: list[tuple[str, FlexviewInputError]] = []
        self._where = where or (lambda row: f"particle {row + 1}")

    def where(self, row: int) -> str:
        return self._where(int(row))

    def add(self, aspect: str, message: str, field: str) -> None:
        if aspect not in ASPECTS:
            raise ValueError(f"unknown aspect {aspect!r}")
        if not any(a == aspect and e.field == field for a, e in self.items):
            self.items.append((aspect, FlexviewInputError(message, self.path, field)))

    def add_error(self, aspect: str, error: FlexviewInputError) -> None:
        """Record an error found in another file (e.g. an image stack), naming that file."""
        if not any(a == aspect and e.field == error.field and e.path == error.path for a, e in self.items):
            self.items.append((aspect, error))

    def finite(self, values: np.ndarray, aspect: str, field: str) -> np.ndarray:
        """``values`` unchanged; a problem when one (of a row) is NaN or infinite."""
        bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1) if len(values) else np.zeros(0, bool)
        if bad.any():
            row = int(np.argmax(bad))
            self.add(aspect, f"{self.where(row)} has a NaN or infinite value {in_all(int(bad.sum()))}",
                     field)
        return values

    def positive(self, values: np.ndarray, aspect: str, field: str, what: str) -> None:
        """A problem when a finite value is zero or negative."""
        bad = np.isfinite(values) & (values <= 0)
        if bad.any():
            row = int(np.argmax(bad))
            self.add(aspect, f"{what} must be positive: {self.where(row)} has {values[row]:g} "
                     f"{in_all(int(bad.sum()))}", field)

    def raise_first(self) -> None:
        if self.items:
            raise self.items[0][1]


def check_ctf(ctf: CTFParams, problems: Problems, fields: dict[str, str]) -> None:
    """Record CTF values the image model cannot use.

    Defocus (RELION convention: positive = underfocus) and voltage must be positive, amplitude
    contrast in [0, 1), every value finite. ``fields`` maps CTFParams names to the file's field names.
    """
    for name, field in fields.items():
        problems.finite(getattr(ctf, name), "ctf", field)
    for name, what in (("defocus_u_A", "defocus"), ("defocus_v_A", "defocus"), ("voltage_kv", "the voltage")):
        if name in fields:
            problems.positive(getattr(ctf, name), "ctf", fields[name], what)
    w = ctf.amplitude_contrast
    bad = np.isfinite(w) & ((w < 0) | (w >= 1))
    if bad.any() and "amplitude_contrast" in fields:
        row = int(np.argmax(bad))
        problems.add("ctf", f"amplitude contrast must be at least 0 and below 1: {problems.where(row)} has "
                     f"{w[row]:g}", fields["amplitude_contrast"])


def in_all(count: int) -> str:
    """``"(1 particle in all)"`` or ``"(N particles in all)"``."""
    return f"({count} particle{'' if count == 1 else 's'} in all)"


def problem_lines(items: list[tuple[str, FlexviewInputError]]) -> list[str]:
    """One line per problem: ``[aspect] field 'X': message`` (the file name left out)."""
    out = []
    for aspect, err in items:
        text = str(err)
        prefix = f"{err.path}: " if err.path else ""
        out.append(f"[{aspect.replace('_', ' ')}] {text[len(prefix):] if text.startswith(prefix) else text}")
    return out


def load_refusal(exc: Exception) -> str:
    """Why :func:`numpy.load` (with ``allow_pickle=False``) refused a file, without numpy's advice to
    load it unsafely."""
    if "pickle" in str(exc).lower():
        return ("it is not a NumPy array file, or it holds Python objects, which could only be read by "
                "unpickling (flexview never unpickles)")
    return str(exc)


def is_file(path: Path) -> bool:
    """``path.is_file()``, False (not an exception) for a name the system refuses (too long)."""
    try:
        return Path(path).is_file()
    except OSError:
        return False
