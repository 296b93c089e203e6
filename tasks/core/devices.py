"""Which torch device a recipe's work runs on (``device: auto | cpu | cuda``)."""

from __future__ import annotations

import torch


def resolve_device(name: str | None) -> torch.device:
    """``auto`` (or nothing): a CUDA device when there is one; ``cuda`` refuses a machine without."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("recipe asks for device 'cuda' but no CUDA device is available")
    return torch.device(name)


def uses_gpu(device: str | None) -> bool:
    """Whether work for this device setting runs on a CUDA device (it then carries the `gpu` tag)."""
    return device == "cuda" or (device in (None, "auto") and torch.cuda.is_available())
