"""PyTorch eager execution of SegOFA (CPU or CUDA, float32 or float16)."""

from __future__ import annotations

import time
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import Tensor

from ..errors import IFSegError
from ..model import SegOFA


def resolve_device(device: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto``/``""`` (CUDA when available); clear error otherwise."""
    if device in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.isdigit():
        device = f"cuda:{device}"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise IFSegError(f"unknown device '{device}'; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise IFSegError(f"device '{device}' requested but CUDA is not available; use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise IFSegError(f"device '{device}' is not supported; use cpu, cuda or cuda:N")
    return dev


class TorchBackend:
    """Runs the network; returns logits ``(B, hw, N)`` and features ``(B, hw, 1024)`` as float32."""

    name = "torch"

    def __init__(self, model: SegOFA, device: str = "cpu", half: bool = False):
        self.device = resolve_device(device)
        if half and self.device.type != "cuda":
            raise IFSegError("--half needs a CUDA device; float16 on CPU is slower and not supported")
        self.dtype = torch.float16 if half else torch.float32
        self.model = model.to(self.device, self.dtype).eval()

    def run(
        self, images: Tensor, prompt_embeds: Tensor, class_embeds: Tensor, timings: Optional[Dict[str, float]] = None
    ) -> Tuple[Tensor, Tensor]:
        """Forward pass; per-stage wall times (ms) are added to ``timings`` when given."""
        on_stage = None if timings is None else self._stage_timer(timings)
        with torch.inference_mode():
            logits, feats = self.model(
                images.to(self.device, self.dtype),
                prompt_embeds.to(self.device, self.dtype),
                class_embeds.to(self.device, self.dtype),
                on_stage,
            )
        return logits.float(), feats.float()

    def _stage_timer(self, timings: Dict[str, float]) -> Callable[[str], None]:
        """A callback adding the time since its previous call (or creation) to ``timings[stage]``."""
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        sync()
        last = [time.perf_counter()]

        def on_stage(name: str) -> None:
            sync()
            now = time.perf_counter()
            timings[name] = timings.get(name, 0.0) + (now - last[0]) * 1e3
            last[0] = now

        return on_stage
