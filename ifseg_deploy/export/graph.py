"""The exported network: SegOFA with the vocabulary as an input, plus optional in-graph post-processing.

Inputs (float32):
  ``images (B, 3, H, W)``        normalised RGB, any size the reference preprocessing produces;
  ``prompt_embeds (1, L, C)``    token embeddings of the prompt (host side: tokenizer + table);
  ``class_embeds (N, C)``        class (seg-token) embeddings;
  ``output_size (2,)`` int64     only with in-graph up-sampling: the original ``(H0, W0)``.
Outputs (float32 unless noted):
  ``logits (B, h*w, N)``, ``features (B, h*w, 1024)`` (always, so host kNN stays possible);
  ``knn_probs (B, h*w, N)``      with in-graph kNN smoothing;
  ``labels (B, H0, W0)`` int64   with in-graph up-sampling + argmax (of ``knn_probs`` when present,
                                 else of the logits, as the host path).
The decoder runs over all grid cells in one pass (causal mask), so the graph has no loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..model import SegOFA, grid_size
from ..postprocess.knn import neighbours_torch, propagate
from ..postprocess.upsample import grid_to_image
from ..runtime.vocabulary import PreparedVocabulary

IMAGES, PROMPT, CLASSES, OUTPUT_SIZE = "images", "prompt_embeds", "class_embeds", "output_size"
LOGITS, FEATURES, KNN_PROBS, LABELS = "logits", "features", "knn_probs", "labels"
FEATURE_DIM = 1024


@dataclass(frozen=True)
class GraphSpec:
    """What goes into the graph besides the network itself."""

    knn_k: int = 3
    knn_iters: int = 0  # 0: kNN smoothing stays on the host
    upsample: bool = False  # in-graph bilinear up-sampling + argmax to ``output_size``

    @property
    def input_names(self) -> List[str]:
        return [IMAGES, PROMPT, CLASSES] + ([OUTPUT_SIZE] if self.upsample else [])

    @property
    def output_names(self) -> List[str]:
        return [LOGITS, FEATURES] + ([KNN_PROBS] if self.knn_iters else []) + ([LABELS] if self.upsample else [])

    def dynamic_axes(self, dynamic_image: bool) -> Dict[str, Dict[int, str]]:
        """Symbolic dimensions: the vocabulary is always dynamic; batch and image size with ``dynamic_image``."""
        cells = {0: "batch", 1: "cells"} if dynamic_image else {}
        axes: Dict[str, Dict[int, str]] = {PROMPT: {1: "prompt_len"}, CLASSES: {0: "classes"}, LOGITS: {**cells, 2: "classes"}}
        if dynamic_image:
            axes[IMAGES] = {0: "batch", 2: "height", 3: "width"}
            axes[FEATURES] = dict(cells)
        if self.knn_iters:
            axes[KNN_PROBS] = {**cells, 2: "classes"}
        if self.upsample:
            axes[LABELS] = {**({0: "batch"} if dynamic_image else {}), 1: "out_height", 2: "out_width"}
        return axes

    def to_dict(self) -> Dict[str, object]:
        return {"knn": "in-graph" if self.knn_iters else "host", "knn_k": self.knn_k, "knn_iters": self.knn_iters,
                "upsample": "in-graph" if self.upsample else "host"}


class ExportGraph(nn.Module):
    """SegOFA's ``forward`` plus the optional post-processing, in one traceable module."""

    def __init__(self, model: SegOFA, spec: GraphSpec):
        super().__init__()
        self.model = model
        self.spec = spec

    def forward(self, images: Tensor, prompt_embeds: Tensor, class_embeds: Tensor, output_size: Tensor = None) -> Tuple[Tensor, ...]:
        logits, feats = self.model(images, prompt_embeds, class_embeds)
        outputs = [logits, feats]
        scores = logits
        if self.spec.knn_iters:
            neighbours = neighbours_torch(feats, self.spec.knn_k)
            scores = propagate(torch.softmax(logits, dim=-1), neighbours, self.spec.knn_iters)
            outputs.append(scores)
        if self.spec.upsample:
            grid = grid_size(images.shape[2], images.shape[3])
            up = F.interpolate(grid_to_image(scores, grid), size=(output_size[0], output_size[1]), mode="bilinear", align_corners=False)
            outputs.append(up.argmax(dim=1))
        return tuple(outputs)


def sample_inputs(spec: GraphSpec, vocab: PreparedVocabulary, batch: int, height: int, width: int, seed: int = 0) -> Dict[str, Tensor]:
    """Example inputs: seeded random images in [-1, 1] and the embeddings of a real category list."""
    gen = torch.Generator().manual_seed(seed)
    feeds = {
        IMAGES: torch.rand(batch, 3, height, width, generator=gen) * 2 - 1,
        PROMPT: vocab.prompt_embeds.detach().float().cpu(),
        CLASSES: vocab.class_embeds.detach().float().cpu(),
    }
    if spec.upsample:
        feeds[OUTPUT_SIZE] = torch.tensor([height * 5 // 4, width * 3 // 4], dtype=torch.int64)
    return feeds
