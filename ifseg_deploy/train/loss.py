"""IFSeg's image-free loss: grid logits bilinearly up-sampled to the target size, then cross-entropy.

``upsampled_cross_entropy`` equals ``F.cross_entropy(F.interpolate(logits, (H, W), bilinear,
align_corners=False), target)`` (mean over all pixels) but never materialises the ``B x N x H x W``
up-sampled scores: the up-sampling is a separable linear map (two small interpolation matrices,
taken from ``F.interpolate`` itself), applied to bands of output rows whose loss and gradient are
computed in turn (forward and backward each hold one band). Always float32, also under autocast.
"""

from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..model import SegOFA

#: Up-sampled score elements per band (float32: 64 MiB per tensor).
BAND_ELEMENTS = 1 << 24


def interpolation_matrix(in_size: int, out_size: int, device=None) -> Tensor:
    """``(out, in)`` matrix of 1-D linear interpolation with ``align_corners=False``."""
    eye = torch.eye(in_size, device=device, dtype=torch.float32)[:, None, :]
    return F.interpolate(eye, size=out_size, mode="linear", align_corners=False)[:, 0, :].t().contiguous()


def _bands(batch: int, classes: int, height: int, width: int) -> List[Tuple[slice, slice]]:
    rows = max(1, min(height, BAND_ELEMENTS // max(1, classes * width)))
    samples = max(1, BAND_ELEMENTS // max(1, classes * height * width)) if rows == height else 1
    return [
        (slice(b, b + samples), slice(y, y + rows)) for b in range(0, batch, samples) for y in range(0, height, rows)
    ]


class _UpsampledCE(torch.autograd.Function):
    """Sum over pixels of ``CE(A_h X A_w^T, target)`` for ``X (B, N, h, w)``, band by band."""

    @staticmethod
    def forward(ctx, x: Tensor, target: Tensor, a_h: Tensor, a_w: Tensor) -> Tensor:
        total = x.new_zeros(())
        for bs, ys in _bands(x.shape[0], x.shape[1], target.shape[1], target.shape[2]):
            up = torch.matmul(torch.matmul(a_h[ys], x[bs]), a_w.t())
            total += F.cross_entropy(up, target[bs, ys], reduction="sum")
        ctx.save_for_backward(x, target, a_h, a_w)
        return total

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, target, a_h, a_w = ctx.saved_tensors
        grad = torch.zeros_like(x)
        for bs, ys in _bands(x.shape[0], x.shape[1], target.shape[1], target.shape[2]):
            g = torch.softmax(torch.matmul(torch.matmul(a_h[ys], x[bs]), a_w.t()), dim=1)
            g.scatter_add_(1, target[bs, None, ys], torch.full_like(g[:, :1], -1.0))
            grad[bs] += torch.matmul(torch.matmul(a_h[ys].t(), g), a_w)
        return grad * grad_out, None, None, None


def upsampled_cross_entropy(logits: Tensor, targets: Tensor, grid: Tuple[int, int]) -> Tensor:
    """Mean pixel cross-entropy of raster-order grid logits ``(B, h*w, N)`` against ``targets (B, H, W)``."""
    b, _, n = logits.shape
    h, w = grid
    height, width = targets.shape[1:]
    with torch.autocast(logits.device.type, enabled=False):
        x = logits.float().transpose(1, 2).reshape(b, n, h, w)
        a_h = interpolation_matrix(h, height, logits.device)
        a_w = interpolation_matrix(w, width, logits.device)
        total = _UpsampledCE.apply(x, targets.long(), a_h, a_w)
    return total / (b * height * width)


def imfree_loss(
    model: SegOFA, cell_embeds: Tensor, targets: Tensor, prompt_embeds: Tensor, class_embeds: Tensor
) -> Tensor:
    """The reference image-free loss of one artificial batch.

    Args:
        model: the SegOFA model (its mode, dropout and drop-path decide stochasticity).
        cell_embeds: ``(B, g*g, C)`` artificial cell embeddings on the model's seg grid ``g``.
        targets: ``(B, 16g, 16g)`` class per pixel.
        prompt_embeds: ``(1 or B, L, C)``; class_embeds: ``(N, C)`` (frozen seg embedding).
    """
    g = model.cfg.seg_grid
    logits = model.forward_tokens(cell_embeds, (g, g), prompt_embeds, class_embeds)
    return upsampled_cross_entropy(logits, targets, (g, g))
