"""Atomic file writes: write to a temporary file beside the target, then rename."""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Iterator

from flexview.errors import FlexviewInputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# files get the permissions a plain open() would give them (mkstemp alone makes them private)
_FILE_MODE = 0o666 & ~_umask()
# errors of the disk rather than of a particular file: no space, quota, file size limit, read-only
_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}
TEMPORARY_SUFFIX = ".tmp"


def temporary_prefix(name: str) -> str:
    """Start of the name of the temporary files written for a target called ``name`` (cut so
    that a temporary name never exceeds the 255 bytes a file name may have where the target fits)."""
    return f".{name[:120]}."


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``path`` on success.

    On an exception the temporary file is removed and ``path`` is left untouched, so a
    half-written file never replaces a good one. An :class:`OSError` of the write itself (a
    read-only or full disk, a name too long, a folder that cannot be made) becomes a
    :class:`FlexviewInputError` naming ``path``; other errors pass through unchanged.
    """
    path = Path(path)
    tmp_path = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(path.name), suffix=TEMPORARY_SUFFIX, dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        os.chmod(tmp_path, _FILE_MODE)
        os.replace(tmp_path, path)
    except OSError as exc:
        if _is_write_error(exc, path, tmp_path):
            raise FlexviewInputError(f"cannot write the file ({exc.strerror or exc})", path) from exc
        raise
    finally:
        if tmp_path is not None:
            with contextlib.suppress(OSError):
                tmp_path.unlink()


def _is_write_error(exc: OSError, path: Path, tmp: Path | None) -> bool:
    """Whether ``exc`` comes from writing ``path`` (not from reading some input inside the block)."""
    if exc.errno in _DISK_ERRORS or exc.filename is None:
        return True
    named = {os.fspath(exc.filename)} | ({os.fspath(exc.filename2)} if exc.filename2 else set())
    ours = {str(path), str(tmp)} | {str(p) for p in path.parents}
    prefix = temporary_prefix(path.name)
    temporary = {n for n in named if Path(n).parent == path.parent and Path(n).name.startswith(prefix)}
    return bool(named & ours or temporary)          # (a temporary that could not be created has no tmp yet)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
