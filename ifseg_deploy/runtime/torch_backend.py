"""PyTorch eager execution of SegOFA (CPU or CUDA, float32 or float16)."""

from __future__ import annotations

import time
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import Tensor

from ..checkpoint import load_model
from ..errors import IFSegError
from ..model import SegOFA
from ..preprocess import Preprocessing
from .backend import Backend, Capabilities, ModelInfo
from .device import parse_device
from .graph_contract import FEATURES, LOGITS


class TorchBackend(Backend):
    """Runs the PyTorch model; reports ``backbone``, ``encoder`` and ``decoder`` stage times."""

    name = "torch"

    def __init__(self, model: SegOFA, device: str = "cpu", half: bool = False):
        dev = parse_device(device)
        if half and dev.type != "cuda":
            raise IFSegError("--half needs a CUDA device; float16 on CPU is slower and not supported")
        self.dtype = torch.float16 if half else torch.float32
        self.model = model.to(dev, self.dtype).eval()
        self.arch = model.cfg
        self.capabilities = Capabilities(device=dev, precision="fp16" if half else "fp32", stages=("backbone", "encoder", "decoder"))

    @classmethod
    def open(cls, path: str, device: str = "auto", half: bool = False, **options) -> Tuple["TorchBackend", ModelInfo]:
        """A checkpoint or bundle (:func:`ifseg_deploy.checkpoint.load_model`) on ``device``."""
        if options:
            raise IFSegError(f"{', '.join(sorted(options))} do(es) not apply to PyTorch checkpoints; they are for exported models (--engine)")
        loaded = load_model(path)
        backend = cls(loaded.model, device, half)
        pre = Preprocessing.from_dict(loaded.metadata.get("preprocessing"), Preprocessing(loaded.arch.image_size, 4 * loaded.arch.image_size))
        info = ModelInfo(path, loaded.kind, loaded.arch, backend.model.embed_tokens.weight, loaded.prompt_prefix,
                         loaded.categories, loaded.class_embeds, pre)
        return backend, info

    def _forward(self, images: Tensor, prompt_embeds: Tensor, class_embeds: Tensor,
                 output_size: Optional[Tuple[int, int]], timings: Dict[str, float]) -> Dict[str, Tensor]:
        dev = self.device
        with torch.inference_mode():
            logits, feats = self.model(images.to(dev, self.dtype), prompt_embeds.to(dev, self.dtype),
                                       class_embeds.to(dev, self.dtype), self._stage_timer(timings))
        return {LOGITS: logits, FEATURES: feats}

    def _stage_timer(self, timings: Dict[str, float]) -> Callable[[str], None]:
        """A callback adding the time since its previous call (or creation) to ``timings[stage]``."""
        self.synchronize()
        last = [time.perf_counter()]

        def on_stage(name: str) -> None:
            self.synchronize()
            now = time.perf_counter()
            timings[name] = timings.get(name, 0.0) + (now - last[0]) * 1e3
            last[0] = now

        return on_stage
