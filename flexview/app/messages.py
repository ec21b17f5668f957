"""Text shown to the user when an action fails."""
from __future__ import annotations

from flexview.errors import FlexviewInputError


def error_text(exc: BaseException) -> str:
    """A one-line message for the user: the flexview input error as written, else type and text."""
    if isinstance(exc, FlexviewInputError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
