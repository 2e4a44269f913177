"""From decoder logits to the scores a label map is taken from: one rule for the host path, the
exported graph and evaluation."""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from .knn import knn_smooth


def grid_scores(
    logits: Tensor, features: Tensor, k: int = 3, iters: int = 25, backend: str = "auto"
) -> Tuple[Tensor, Tensor]:
    """``(probs, scores)`` of the grid cells, each ``(B, h*w, N)`` float32.

    ``probs`` is the softmax of ``logits``, kNN-smoothed over ``features (B, h*w, C)`` when
    ``iters > 0``. ``scores`` is what the label map is the argmax of (after bilinear up-sampling):
    the smoothed probabilities with kNN, the raw logits without, as in the reference's evaluation.
    """
    probs = torch.softmax(logits.float(), dim=-1)
    if iters == 0:
        return probs, logits
    smoothed = knn_smooth(probs, features, k, iters, backend)
    return smoothed, smoothed
