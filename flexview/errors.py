"""Errors that flexview raises for bad user input."""
from __future__ import annotations

from pathlib import Path


class FlexviewInputError(ValueError):
    """Bad input data: names the file and, where known, the field at fault.

    Parameters
    ----------
    message : str
        What is wrong, in words a user understands.
    path : str or Path, optional
        The file that holds the bad data.
    field : str, optional
        The column, header field or parameter at fault (e.g. ``rlnDefocusU``).
    """

    def __init__(self, message: str, path: str | Path | None = None, field: str | None = None):
        self.path = None if path is None else str(path)
        self.field = field
        self.message = message
        parts = []
        if self.path:
            parts.append(self.path)
        if field:
            parts.append(f"field '{field}'")
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)
