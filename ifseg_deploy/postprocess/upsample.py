"""Bilinear up-sampling of grid scores to the original image size, then argmax."""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..tracing import capturing_graph

#: Up-sampled elements materialised at once; classes are processed in groups under this bound.
MAX_ELEMENTS = 1 << 26


def grid_to_image(scores: Tensor, grid: Tuple[int, int]) -> Tensor:
    """``(B, h*w, N)`` raster-order scores -> ``(B, N, h, w)``."""
    b, _, n = scores.shape
    return scores.transpose(1, 2).reshape(b, n, grid[0], grid[1])


def upsample_argmax(scores: Tensor, grid: Tuple[int, int], size: Tuple[int, int]) -> Tensor:
    """Label map ``(B, H, W)`` (int64): argmax over classes of the bilinearly up-sampled scores.

    ``F.interpolate(mode="bilinear", align_corners=False)`` per class, exactly as the reference;
    classes are processed in groups so huge images do not need ``N * H * W`` floats at once
    (ties keep the lowest class index, like ``argmax``).
    """
    x = grid_to_image(scores, grid)
    if capturing_graph():  # one resize of every class: the output size is a graph input
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False).argmax(dim=1)
    b, n = x.shape[:2]
    group = max(1, MAX_ELEMENTS // max(1, b * size[0] * size[1]))
    best_val = best_idx = None
    for c0 in range(0, n, group):
        up = F.interpolate(x[:, c0 : c0 + group], size=size, mode="bilinear", align_corners=False)
        idx = up.argmax(dim=1, keepdim=True)
        val = up.gather(1, idx)[:, 0]
        idx = idx[:, 0] + c0
        if best_val is None:
            best_val, best_idx = val, idx
        else:
            better = val > best_val
            best_val = torch.where(better, val, best_val)
            best_idx = torch.where(better, idx, best_idx)
    return best_idx
