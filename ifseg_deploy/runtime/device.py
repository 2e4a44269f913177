"""One parser for every ``--device`` value."""

from __future__ import annotations

import torch

from ..errors import IFSegError


def parse_device(device: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N``, ``N`` (= ``cuda:N``) or ``auto`` / ``""`` (CUDA when available).

    Raises :class:`IFSegError` for an unknown name or a CUDA device on a machine without CUDA.
    """
    text = (device or "auto").strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text.isdigit():
        text = f"cuda:{text}"
    try:
        dev = torch.device(text)
    except RuntimeError:
        raise IFSegError(f"unknown device '{device}'; use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise IFSegError(f"device '{device}' is not supported; use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise IFSegError(f"device={device}: CUDA is not available; use device=cpu")
        if (dev.index or 0) >= torch.cuda.device_count():
            raise IFSegError(
                f"device '{device}' does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    return dev


def cuda_device(device: str) -> torch.device:
    """The CUDA device for a GPU-only runtime (TensorRT); ``auto`` / ``cpu`` are refused with the fix."""
    text = (device or "auto").strip().lower()
    if not torch.cuda.is_available():
        raise IFSegError("TensorRT engines need a CUDA GPU and a CUDA build of PyTorch; none is available here")
    dev = parse_device("cuda" if text == "auto" else text)
    if dev.type != "cuda":
        raise IFSegError(f"device={device} cannot run a TensorRT engine; use device=cuda (or cuda:N)")
    return dev
