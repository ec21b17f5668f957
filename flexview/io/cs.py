"""cryoSPARC ``.cs`` particle files (a NumPy structured array in NPY format).

=================================================  ==============================================
``.cs`` field(s)                                   ParticleSet field
=================================================  ==============================================
``blob/path`` (bytes), ``blob/idx`` (0-based)      ``images`` (lazy :class:`StackImages`)
``blob/sign``                                      -1: RELION contrast, images as stored;
                                                   +1: opposite contrast, images negated on read
``blob/psize_A``, ``blob/shape``                   ``pixel_size`` (Å), ``box``
``alignments3D/pose`` (rotation vector, rad)       ``rotations`` (RELION ``A`` = expm([r]×)ᵀ)
``alignments3D/shift`` (px of ``psize_A``)         ``origins_A`` = shift · psize_A (same sign)
``alignments3D/split`` (0/1)                       ``half_set``
``ctf/df1_A, df2_A, df_angle_rad, accel_kv,
cs_mm, amp_contrast, phase_shift_rad, bfactor,
scale``                                            ``ctf`` (angles converted to degrees)
``ctf/exp_group_id``                               ``optics_group``
``optics/<rln column>``                            further ``ParticleSet.optics`` columns
=================================================  ==============================================

Every other field is kept in ``ParticleSet.extra`` under its ``.cs`` name; a field with several
elements per particle (e.g. ``ctf/shift_A``, shape (2,)) becomes columns ``ctf/shift_A/0``,
``ctf/shift_A/1``, which :func:`flexview.io.cs_write.write_cs` joins again.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from flexview.errors import FlexviewInputError
from flexview.io.particles import ParticleSet, SignedImages, StackImages
from flexview.io.problems import Problems, check_ctf, in_all, is_file, load_refusal
from flexview.io.stacks import check_boxes, name_max, name_too_long, read_stack_headers
from flexview.io.tables import complete_optics, float32_to_decimal
from flexview.model.ctf import CTFParams
from flexview.model.pose import rotvec_to_matrix

# ctf field -> (CTFParams field, factor to CTFParams units, default: number, other cs field, or None = required)
CTF_FIELDS = {
    "ctf/df1_A": ("defocus_u_A", 1.0, None),
    "ctf/df2_A": ("defocus_v_A", 1.0, "ctf/df1_A"),
    "ctf/df_angle_rad": ("defocus_angle_deg", 180.0 / np.pi, 0.0),
    "ctf/accel_kv": ("voltage_kv", 1.0, None),
    "ctf/cs_mm": ("cs_mm", 1.0, None),
    "ctf/amp_contrast": ("amplitude_contrast", 1.0, None),
    "ctf/phase_shift_rad": ("phase_shift_deg", 180.0 / np.pi, 0.0),
    "ctf/bfactor": ("bfactor_A2", 1.0, 0.0),
    "ctf/scale": ("scale", 1.0, 1.0),
}
BLOB = ("blob/path", "blob/idx", "blob/shape", "blob/psize_A", "blob/sign")
ALIGN = ("alignments3D/pose", "alignments3D/shift", "alignments3D/psize_A", "alignments3D/split")
GROUP_FIELD = "ctf/exp_group_id"
OPTICS_PREFIX = "optics/"
# optics columns that other .cs fields already carry
OPTICS_MAPPED = ("rlnOpticsGroup", "rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast",
                 "rlnImagePixelSize", "rlnImageSize")


def read_cs(path: str | Path, project_dir: str | Path | None = None, *, validate: bool = False,
            strict: bool = True) -> ParticleSet:
    """Read a cryoSPARC ``.cs`` particle file.

    Parameters
    ----------
    path : str or Path
    project_dir : str or Path, optional
        The cryoSPARC project folder. ``blob/path`` values starting with ``>`` are relative to it;
        see :func:`resolve_blob_path` for the search order.
    validate : bool
        Also check that every stack exists, is square at the box size and holds every image.
    strict : bool
        Raise the first problem found in the values (see :mod:`flexview.io.problems`); when False
        they are kept in ``ParticleSet.problems``.

    Raises
    ------
    FlexviewInputError
        For a file that is not a structured NPY array, a field of the wrong type, or a ``blob/idx``
        that is not a whole number from 0, naming the file and the field.
    """
    path = Path(path)
    data = _load(path)
    problems = Problems(path)
    images, facts = _image_source(data, path, project_dir, problems)
    pixel_sizes = _pixel_sizes(data, path, problems, facts)
    boxes = _boxes(data, path, problems, facts, images)
    if images is not None:
        images.box = _stacks(images).box = int(boxes[0]) if (boxes == boxes[0]).all() else 0
    rotations = None
    if "alignments3D/pose" in data.dtype.names:
        rotations = rotvec_to_matrix(problems.finite(_field(data, "alignments3D/pose", path, 3), "poses",
                                                     "alignments3D/pose"))
    ctf = _ctf(data, path, problems)
    groups = _optics_groups(data, path)
    known = bool(np.isfinite(pixel_sizes).all())
    result = ParticleSet(
        images=images, pixel_size=float(pixel_sizes[0]) if known else 0.0, box=int(boxes[0]),
        rotations=rotations, origins_A=_origins(data, path, problems, pixel_sizes, rotations is not None), ctf=ctf,
        half_set=_half_sets(data, path, problems), optics_group=groups,
        optics=_optics_table(data, groups, pixel_sizes, boxes, ctf), extra=_extra(data), source=path,
        source_format="cryosparc", pixel_sizes=pixel_sizes if known else None, boxes=boxes,
        problems=problems.items)
    if strict:
        problems.raise_first()
    if validate and images is not None:
        _stacks(images).validate()
    return result


def _load(path: Path) -> np.ndarray:
    """The structured array of a ``.cs`` file (never unpickles)."""
    if not path.is_file():
        raise FlexviewInputError("file not found", path)
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:  # not NPY, truncated, or object dtype
        raise FlexviewInputError(f"not a readable cryoSPARC .cs file: {load_refusal(exc)}", path, "format") from exc
    if not isinstance(data, np.ndarray) or data.dtype.names is None or data.ndim != 1:
        raise FlexviewInputError("expected a one-dimensional structured array of particles", path, "dtype")
    if len(data) == 0:
        raise FlexviewInputError("the file holds no particles", path, "dtype")
    if "blob/path" in data.dtype.names and "blob/idx" not in data.dtype.names:
        raise FlexviewInputError("blob/path is given without the image numbers", path, "blob/idx")
    return data


def _field(data: np.ndarray, name: str, path: Path, width: int | None = None) -> np.ndarray:
    """A numeric field as float64, shape (N,) or (N, width); another type is an error."""
    values = data[name]
    if values.dtype.kind not in "biuf":
        raise FlexviewInputError(f"expected numbers, found dtype {values.dtype}", path, name)
    values = float32_to_decimal(values)
    shape = (len(data),) if width is None else (len(data), width)
    if values.shape != shape:
        raise FlexviewInputError(f"expected shape {shape[1:]} per particle, found {values.shape[1:]}", path, name)
    return values


def _image_source(data: np.ndarray, path: Path, project_dir, problems: Problems):
    """Lazy images (negated where ``blob/sign`` is +1) and what their stack headers say; (None,
    None) with a problem of ``images`` when the file has no ``blob/path``."""
    if "blob/path" not in data.dtype.names:
        problems.add("images", "no blob/path field: the file names no particle images", "blob/path")
        return None, None
    if data["blob/path"].dtype.kind not in "SU":
        raise FlexviewInputError(f"expected text, found dtype {data['blob/path'].dtype}", path, "blob/path")
    distinct, codes = np.unique(data["blob/path"], return_inverse=True)
    folder = Path(os.path.abspath(path)).parent
    limit = name_max(folder)
    for k, name in enumerate(distinct):
        too_long = name_too_long(_text(name).lstrip(">"), folder, limit)
        if too_long:
            raise FlexviewInputError(f"particle {int(np.argmax(codes == k)) + 1}: {too_long}", path, "blob/path")
    paths = [resolve_blob_path(_text(name), path, project_dir) for name in distinct]
    images = StackImages(paths, codes.reshape(-1), _indices(data, path), 0, field="blob/path")
    facts = read_stack_headers(images, problems, "blob/idx")
    if "blob/sign" not in data.dtype.names:
        return images, facts
    sign = problems.finite(_field(data, "blob/sign", path), "images", "blob/sign")
    if not np.isin(sign, (-1.0, 1.0)).all():
        problems.add("images", f"particle {int(np.argmax(~np.isin(sign, (-1.0, 1.0)))) + 1}: blob/sign must be "
                     "-1 or +1", "blob/sign")
        sign = np.where(sign == 1.0, 1.0, -1.0)
    return (images if (sign == -1).all() else SignedImages(images, -sign)), facts


def _indices(data: np.ndarray, path: Path) -> np.ndarray:
    """``blob/idx`` (0-based image numbers) as int64; anything but whole numbers from 0 is an error."""
    idx = _field(data, "blob/idx", path)
    bad = ~np.isfinite(idx) | (idx != np.round(idx)) | (idx < 0)
    if bad.any():
        row = int(np.argmax(bad))
        raise FlexviewInputError(f"particle {row + 1}: image index {idx[row]:g} is not a whole number from 0 "
                                 f"{in_all(int(bad.sum()))}", path, "blob/idx")
    return idx.astype(np.int64)


def _pixel_sizes(data: np.ndarray, path: Path, problems: Problems, facts) -> np.ndarray:
    """Å per pixel of each particle from ``blob/psize_A``, else the stack headers; NaN where unknown."""
    if "blob/psize_A" in data.dtype.names:
        values = problems.finite(_field(data, "blob/psize_A", path), "images", "blob/psize_A")
        problems.positive(values, "images", "blob/psize_A", "the pixel size")
        return np.where(np.isfinite(values) & (values > 0), values, np.nan)
    values = np.full(len(data), np.nan) if facts is None else np.where(facts.pixel_size > 0, facts.pixel_size,
                                                                       np.nan)
    if np.isnan(values).any():
        row = int(np.argmax(np.isnan(values)))
        problems.add("images", f"no pixel size: no blob/psize_A field, and no readable stack header gives one for "
                     f"particle {row + 1}", "blob/psize_A")
    return values


def _boxes(data: np.ndarray, path: Path, problems: Problems, facts, images) -> np.ndarray:
    """Image edge in pixels of each particle from ``blob/shape``, else its stack's (0 where unknown)."""
    if "blob/shape" not in data.dtype.names:
        return np.zeros(len(data), np.int64) if facts is None else facts.box.astype(np.int64)
    shape = problems.finite(_field(data, "blob/shape", path, 2), "images", "blob/shape")
    shape = np.nan_to_num(shape).astype(np.int64)
    if (shape[:, 0] != shape[:, 1]).any():
        row = int(np.argmax(shape[:, 0] != shape[:, 1]))
        problems.add("images", f"particle {row + 1}: the images are {shape[row, 1]} x {shape[row, 0]} pixels, "
                     "not square", "blob/shape")
    if images is not None:
        check_boxes(problems, _stacks(images), facts, shape[:, 0], "blob/shape")
    return shape[:, 0]


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def resolve_blob_path(name: str, cs_path: Path, project_dir: str | Path | None) -> Path:
    """Where a ``blob/path`` points.

    A leading ``>`` marks a path relative to the cryoSPARC project folder. Candidates, first
    existing wins (else the first candidate is returned, to be reported as missing):
    ``>`` paths: ``project_dir``, the ``.cs`` folder, then up to three of its parents;
    other relative paths: the ``.cs`` folder, ``project_dir``, then the parents.
    """
    in_project = name.startswith(">")
    rel = Path(name[1:] if in_project else name)
    if rel.is_absolute():
        return rel
    folder = Path(os.path.abspath(cs_path)).parent
    project = [Path(project_dir)] if project_dir else []
    near = [folder] + list(folder.parents)[:3]
    folders = project + near if in_project else near[:1] + project + near[1:]
    candidates = [Path(os.path.abspath(f / rel)) for f in folders]
    return next((c for c in candidates if is_file(c)), candidates[0])


def _origins(data: np.ndarray, path: Path, problems: Problems, pixel_sizes: np.ndarray,
             has_pose: bool) -> np.ndarray | None:
    """RELION origins in Å = ``alignments3D/shift`` (px) · ``alignments3D/psize_A`` (else the
    particle's pixel size), shape (N, 2)."""
    if "alignments3D/shift" not in data.dtype.names:
        return np.zeros((len(data), 2)) if has_pose else None
    scale = pixel_sizes
    if "alignments3D/psize_A" in data.dtype.names:
        scale = problems.finite(_field(data, "alignments3D/psize_A", path), "poses", "alignments3D/psize_A")
        problems.positive(scale, "poses", "alignments3D/psize_A", "the pixel size of the shifts")
    elif np.isnan(pixel_sizes).any():
        problems.add("poses", "shifts in pixels cannot be converted to Å without a pixel size", "alignments3D/shift")
    shift = problems.finite(_field(data, "alignments3D/shift", path, 2), "poses", "alignments3D/shift")
    return shift * scale[:, None]


def _half_sets(data: np.ndarray, path: Path, problems: Problems) -> np.ndarray:
    """``alignments3D/split`` (0/1); -1 where absent or unusable (a problem of ``half_sets``)."""
    if "alignments3D/split" not in data.dtype.names:
        return np.full(len(data), -1, dtype=np.int8)
    split = problems.finite(_field(data, "alignments3D/split", path), "half_sets", "alignments3D/split")
    good = np.isin(split, (0, 1))
    if not good.all():
        row = int(np.argmax(~good))
        problems.add("half_sets", f"particle {row + 1}: half-set split {split[row]:g} is not 0 or 1",
                     "alignments3D/split")
    return np.where(good, split, -1).astype(np.int8)


def _ctf(data: np.ndarray, path: Path, problems: Problems) -> CTFParams | None:
    """CTF parameters when ``ctf/df1_A`` is present, else None (also when a required field is
    missing: a problem of ``ctf``)."""
    if "ctf/df1_A" not in data.dtype.names:
        return None
    values: dict[str, np.ndarray] = {}
    fields: dict[str, str] = {}
    for name, (attr, factor, default) in CTF_FIELDS.items():
        if name in data.dtype.names:
            values[attr], fields[attr] = _field(data, name, path) * factor, name
        elif default is None:
            problems.add("ctf", "the CTF needs this field", name)
        else:
            values[attr] = values[CTF_FIELDS[default][0]] if isinstance(default, str) else default
    if any(a == "ctf" and e.field in CTF_FIELDS and CTF_FIELDS[e.field][2] is None for a, e in problems.items):
        return None
    result = CTFParams(**values)
    check_ctf(result, problems, fields)
    return result


def _optics_groups(data: np.ndarray, path: Path) -> np.ndarray:
    """Optics groups (≥ 1) from ``ctf/exp_group_id``, shifted by one when it counts from 0."""
    if GROUP_FIELD not in data.dtype.names:
        return np.ones(len(data), dtype=np.int64)
    groups = _field(data, GROUP_FIELD, path)
    if not (np.isfinite(groups) & (groups == np.round(groups))).all():
        raise FlexviewInputError("expected whole numbers", path, GROUP_FIELD)
    groups = groups.astype(np.int64)
    return groups + 1 if len(groups) and groups.min() < 1 else groups


def _optics_table(data: np.ndarray, groups: np.ndarray, pixel_sizes: np.ndarray, boxes: np.ndarray,
                  ctf: CTFParams | None) -> pd.DataFrame:
    """One RELION optics row per group: CTF constants, pixel size, box and ``optics/*`` fields."""
    used = np.unique(groups)
    first = np.array([np.argmax(groups == g) for g in used], dtype=np.int64)
    optics = pd.DataFrame({"rlnOpticsGroup": used})
    if ctf is not None:
        optics["rlnVoltage"] = ctf.voltage_kv[first]
        optics["rlnSphericalAberration"] = ctf.cs_mm[first]
        optics["rlnAmplitudeContrast"] = ctf.amplitude_contrast[first]
    for name in data.dtype.names:
        if name.startswith(OPTICS_PREFIX) and data[name].ndim == 1:
            optics[name[len(OPTICS_PREFIX):]] = _column(data[name])[first]
    return complete_optics(optics, pixel_sizes[first], boxes[first])


def _column(values: np.ndarray) -> np.ndarray:
    """A scalar field as a column: bytes decoded to str."""
    if values.dtype.kind == "S":
        return np.char.decode(values, "utf-8").astype(object)
    return values


def _extra(data: np.ndarray) -> pd.DataFrame:
    """Every field not mapped onto a ParticleSet field; vector fields split into ``name/i`` columns."""
    mapped = set(BLOB) | set(ALIGN) | set(CTF_FIELDS) | {GROUP_FIELD}
    columns: dict[str, np.ndarray] = {}
    for name in data.dtype.names:
        if name in mapped or name.startswith(OPTICS_PREFIX):
            continue
        values = data[name]
        if values.ndim == 1:
            columns[name] = _column(values)
        else:
            flat = values.reshape(len(data), -1)
            columns.update({f"{name}/{i}": flat[:, i] for i in range(flat.shape[1])})
    return pd.DataFrame(columns, index=pd.RangeIndex(len(data)))


def _stacks(images) -> StackImages:
    return images.parent if isinstance(images, SignedImages) else images
