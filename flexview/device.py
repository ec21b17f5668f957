"""Which torch device a computation runs on."""
from __future__ import annotations

import torch

from flexview.errors import FlexviewInputError


def resolve_device(name: str) -> torch.device:
    """``"auto"`` → CUDA when present, else CPU; otherwise the named device (``"cpu"``,
    ``"cuda"``, ``"cuda:1"`` ...), refused with :class:`FlexviewInputError` (field ``--device``)
    when it names CUDA on a machine without a GPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FlexviewInputError("CUDA was requested but no GPU is available", field="--device")
    return torch.device(name)
