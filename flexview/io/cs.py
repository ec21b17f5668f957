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
``ctf/shift_A/1``, which :func:`write_cs` joins again.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from flexview.errors import FlexviewInputError
from flexview.io._atomic import atomic_path
from flexview.io.mrc import stack_header
from flexview.io.particles import ParticleSet, SignedImages, StackImages, stack_references
from flexview.io.tables import complete_optics, float32_to_decimal, relative_path
from flexview.model.ctf import CTFParams
from flexview.model.pose import matrix_to_rotvec, rotvec_to_matrix

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


# ----------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------

def read_cs(path: str | Path, project_dir: str | Path | None = None, *, validate: bool = False) -> ParticleSet:
    """Read a cryoSPARC ``.cs`` particle file.

    Parameters
    ----------
    path : str or Path
    project_dir : str or Path, optional
        The cryoSPARC project folder. ``blob/path`` values starting with ``>`` are relative to it;
        see :func:`resolve_blob_path` for the search order.
    validate : bool
        Also check that every stack exists, is square at the box size and holds every image.
    """
    path = Path(path)
    data = _load(path)
    pixel_size = _uniform(data, "blob/psize_A", path, positive=True)
    images = _image_source(data, path, project_dir, pixel_size)
    rotations = None
    if "alignments3D/pose" in data.dtype.names:
        rotations = rotvec_to_matrix(_finite(data, "alignments3D/pose", path))
    ctf = _ctf(data, path)
    groups = _optics_groups(data, path)
    result = ParticleSet(
        images=images, pixel_size=pixel_size, box=images.box, rotations=rotations,
        origins_A=_origins(data, path, pixel_size, rotations is not None), ctf=ctf,
        half_set=_half_sets(data, path), optics_group=groups,
        optics=_optics_table(data, groups, pixel_size, images.box, ctf),
        extra=_extra(data), source=path, source_format="cryosparc")
    if validate:
        _stacks(images).validate()
    return result


def _load(path: Path) -> np.ndarray:
    """The structured array of a ``.cs`` file (never unpickles)."""
    if not path.is_file():
        raise FlexviewInputError("file not found", path)
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:  # not NPY, truncated, or object dtype
        raise FlexviewInputError(f"not a readable cryoSPARC .cs file ({exc})", path, "format") from exc
    if not isinstance(data, np.ndarray) or data.dtype.names is None or data.ndim != 1:
        raise FlexviewInputError("expected a one-dimensional structured array of particles", path, "dtype")
    for name in ("blob/path", "blob/idx", "blob/psize_A"):
        if name not in data.dtype.names:
            raise FlexviewInputError("required field is missing", path, name)
    if len(data) == 0:
        raise FlexviewInputError("the file holds no particles", path, "blob/path")
    return data


def _field(data: np.ndarray, name: str, path: Path, width: int | None = None) -> np.ndarray:
    """A numeric field as float64, shape (N,) or (N, width)."""
    values = data[name]
    if values.dtype.kind not in "biuf":
        raise FlexviewInputError(f"expected numbers, found dtype {values.dtype}", path, name)
    values = float32_to_decimal(values)
    shape = (len(data),) if width is None else (len(data), width)
    if values.shape != shape:
        raise FlexviewInputError(f"expected shape {shape[1:]} per particle, found {values.shape[1:]}", path, name)
    return values


def _finite(data: np.ndarray, name: str, path: Path) -> np.ndarray:
    """A numeric field that must be finite; vectors keep their per-particle width."""
    width = {"alignments3D/pose": 3, "alignments3D/shift": 2, "blob/shape": 2}.get(name)
    values = _field(data, name, path, width)
    if not np.isfinite(values).all():
        row = int(np.argmax(~np.isfinite(values.reshape(len(data), -1)).all(axis=1)))
        raise FlexviewInputError(f"particle {row + 1} has a NaN or infinite value", path, name)
    return values


def _uniform(data: np.ndarray, name: str, path: Path, *, positive: bool = False) -> float:
    """A scalar field that must hold one value for the whole set."""
    values = _finite(data, name, path)
    if positive and not (values > 0).all():
        raise FlexviewInputError("must be positive", path, name)
    if not np.allclose(values, values[0], rtol=1e-5, atol=0):
        raise FlexviewInputError(f"one value is needed for the whole set, found {values.min():g} to "
                                 f"{values.max():g} (mixed pixel sizes are not supported)", path, name)
    return float(values[0])


def _image_source(data: np.ndarray, path: Path, project_dir, pixel_size: float):
    """Lazy images; negated where ``blob/sign`` is +1."""
    distinct, codes = np.unique(data["blob/path"], return_inverse=True)
    paths = [resolve_blob_path(_text(name), path, project_dir) for name in distinct]
    images = StackImages(paths, codes, _field(data, "blob/idx", path).astype(np.int64), _box(data, path, paths),
                         field="blob/path")
    if "blob/sign" not in data.dtype.names:
        return images
    sign = _finite(data, "blob/sign", path)
    if not np.isin(sign, (-1.0, 1.0)).all():
        raise FlexviewInputError("blob/sign must be -1 or +1", path, "blob/sign")
    return images if (sign == -1).all() else SignedImages(images, -sign)


def _box(data: np.ndarray, path: Path, paths: list[Path]) -> int:
    """Image edge in pixels from ``blob/shape``, else from the first stack found (0 if none)."""
    if "blob/shape" not in data.dtype.names:
        found = next((p for p in paths if p.is_file()), None)
        return stack_header(found)[2] if found else 0
    shape = _finite(data, "blob/shape", path).astype(np.int64)
    if (shape[:, 0] != shape[:, 1]).any():
        raise FlexviewInputError("images are not square", path, "blob/shape")
    if (shape[:, 0] != shape[0, 0]).any():
        raise FlexviewInputError(f"mixed box sizes ({shape.min()} and {shape.max()} px) in one set", path,
                                 "blob/shape")
    return int(shape[0, 0])


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
    return next((c for c in candidates if c.is_file()), candidates[0])


def _origins(data: np.ndarray, path: Path, pixel_size: float, has_pose: bool) -> np.ndarray | None:
    """RELION origins in Å = ``alignments3D/shift`` (px) · ``alignments3D/psize_A``."""
    if "alignments3D/shift" not in data.dtype.names:
        return np.zeros((len(data), 2)) if has_pose else None
    scale = pixel_size
    if "alignments3D/psize_A" in data.dtype.names:
        scale = _finite(data, "alignments3D/psize_A", path)[:, None]
    return _finite(data, "alignments3D/shift", path) * scale


def _half_sets(data: np.ndarray, path: Path) -> np.ndarray:
    """``alignments3D/split`` (0/1), or -1 for every particle when absent."""
    if "alignments3D/split" not in data.dtype.names:
        return np.full(len(data), -1, dtype=np.int8)
    split = _finite(data, "alignments3D/split", path)
    if not np.isin(split, (0, 1)).all():
        raise FlexviewInputError("half-set split must be 0 or 1", path, "alignments3D/split")
    return split.astype(np.int8)


def _ctf(data: np.ndarray, path: Path) -> CTFParams | None:
    """CTF parameters when ``ctf/df1_A`` is present, else None."""
    if "ctf/df1_A" not in data.dtype.names:
        return None
    values: dict[str, np.ndarray] = {}
    for name, (attr, factor, default) in CTF_FIELDS.items():
        if name in data.dtype.names:
            values[attr] = _finite(data, name, path) * factor
        elif default is None:
            raise FlexviewInputError("the CTF needs this field", path, name)
        else:
            values[attr] = values[CTF_FIELDS[default][0]] if isinstance(default, str) else default
    return CTFParams(**values)


def _optics_groups(data: np.ndarray, path: Path) -> np.ndarray:
    """Optics groups (≥ 1) from ``ctf/exp_group_id``, shifted by one when it counts from 0."""
    if GROUP_FIELD not in data.dtype.names:
        return np.ones(len(data), dtype=np.int64)
    groups = _finite(data, GROUP_FIELD, path).astype(np.int64)
    return groups + 1 if len(groups) and groups.min() < 1 else groups


def _optics_table(data: np.ndarray, groups: np.ndarray, pixel_size: float, box: int,
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
    return complete_optics(optics, pixel_size, box)


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


# ----------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------

def write_cs(path: str | Path, particles: ParticleSet) -> None:
    """Write ``particles`` as a cryoSPARC ``.cs`` file, atomically.

    ``blob/path`` is written relative to the ``.cs`` folder where possible; ``blob/sign`` is -1
    (RELION contrast) except for images read with ``blob/sign`` +1. Extra columns become further
    fields (text as fixed-width bytes; ``name/0, name/1, ...`` columns join into one vector field).
    """
    path = Path(path)
    fields = {"uid": _uids(particles)}
    fields.update(_blob_fields(particles, path))
    fields.update(_ctf_fields(particles))
    fields.update(_alignment_fields(particles))
    fields.update(_optics_fields(particles))
    for name, values in _extra_fields(particles.extra.drop(columns=["uid"], errors="ignore")).items():
        if name in fields:
            raise FlexviewInputError("an extra column has the name of a mapped .cs field", path, name)
        fields[name] = values
    array = np.empty(len(particles), dtype=[(k, v.dtype, v.shape[1:]) for k, v in fields.items()])
    for name, values in fields.items():
        array[name] = values
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)


def _uids(particles: ParticleSet) -> np.ndarray:
    """Existing ``uid`` values, else fresh random 63-bit ids."""
    if "uid" in particles.extra.columns:
        return particles.extra["uid"].to_numpy(np.uint64)
    return np.random.default_rng().integers(1, 2**63 - 1, size=len(particles), dtype=np.int64).astype(np.uint64)


def _blob_fields(particles: ParticleSet, path: Path) -> dict[str, np.ndarray]:
    refs = stack_references(particles.images)
    if refs is None:
        raise FlexviewInputError("the images are not in stack files on disk; write them with write_stack first",
                                 path, "blob/path")
    root = Path(os.path.abspath(path)).parent
    names = np.array([relative_path(p, root).encode("utf-8") for p in refs.paths], dtype=bytes)
    n = len(particles)
    return {
        "blob/path": names[refs.file_index],
        "blob/idx": refs.slice_index.astype(np.uint32),
        "blob/shape": np.tile(np.array([particles.box, particles.box], dtype=np.uint32), (n, 1)),
        "blob/psize_A": np.full(n, particles.pixel_size, dtype=np.float32),
        "blob/sign": (-refs.factor).astype(np.float32),
    }


def _ctf_fields(particles: ParticleSet) -> dict[str, np.ndarray]:
    out = {GROUP_FIELD: np.asarray(particles.optics_group).astype(np.uint32)}
    if particles.ctf is not None:
        for name, (attr, factor, _) in CTF_FIELDS.items():
            out[name] = (getattr(particles.ctf, attr) / factor).astype(np.float32)
    return out


def _alignment_fields(particles: ParticleSet) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    n = len(particles)
    if particles.rotations is not None:
        out["alignments3D/pose"] = matrix_to_rotvec(particles.rotations).astype(np.float32)
    if particles.origins_A is not None:
        out["alignments3D/shift"] = (particles.origins_A / particles.pixel_size).astype(np.float32)
    if out:
        out["alignments3D/psize_A"] = np.full(n, particles.pixel_size, dtype=np.float32)
    if particles.has_half_sets and n:
        out["alignments3D/split"] = particles.half_set.astype(np.uint32)
    return out


def _optics_fields(particles: ParticleSet) -> dict[str, np.ndarray]:
    """Optics columns no other field carries, repeated per particle as ``optics/<column>``."""
    optics = particles.optics
    if "rlnOpticsGroup" not in optics.columns:
        return {}
    rows = optics.set_index("rlnOpticsGroup").reindex(np.asarray(particles.optics_group))
    columns = [c for c in rows.columns if c not in OPTICS_MAPPED]
    return {OPTICS_PREFIX + c: _as_field(rows[c]) for c in columns}


def _extra_fields(extra: pd.DataFrame) -> dict[str, np.ndarray]:
    """Extra columns as fields; ``name/0 .. name/k-1`` are joined into one (N, k) field."""
    out: dict[str, np.ndarray] = {}
    groups: dict[str, list[tuple[int, str]]] = {}
    for column in extra.columns:
        match = re.fullmatch(r"(.+)/(\d+)", str(column))
        if match:
            groups.setdefault(match.group(1), []).append((int(match.group(2)), column))
        else:
            out[str(column)] = _as_field(extra[column])
    for name, parts in groups.items():
        parts.sort()
        if [i for i, _ in parts] == list(range(len(parts))) and name not in out:
            out[name] = np.stack([extra[c].to_numpy() for _, c in parts], axis=1)
        else:
            out.update({c: _as_field(extra[c]) for _, c in parts})
    return out


def _as_field(column: pd.Series) -> np.ndarray:
    """A DataFrame column as a fixed-width NumPy array (text → UTF-8 bytes)."""
    if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
        return column.to_numpy()
    text = [("" if pd.isna(v) else str(v)).encode("utf-8") for v in column]
    width = max([len(t) for t in text] + [1])
    return np.array(text, dtype=f"S{width}")
