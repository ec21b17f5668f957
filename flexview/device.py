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
    try:
        device = torch.device(name)
    except RuntimeError:
        raise FlexviewInputError(f"not a torch device: {name!r}", field="--device") from None
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise FlexviewInputError(f"there is no GPU {device.index}: this machine has {torch.cuda.device_count()} "
                                 f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})", field="--device")
    return device
