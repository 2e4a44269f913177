"""Position tables of OFA / SegOFA: bucket indices and the bilinear table resizes.

Everything here is a pure function of shapes (and of a lookup table), so it serves
training, runtime and ONNX export alike. Conventions follow the reference:
grid cells are flattened in raster order, ``F.interpolate(mode="bilinear",
align_corners=False)`` with an explicit ``size`` for every resize.
"""

from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..tracing import capturing_graph


def token_rel_index(length: int, bucket_size: int, max_position: int = 1024, device=None) -> Tensor:
    """Index into a token relative-position table for a text of ``length`` tokens, ``(L, L)``.

    Relative distances below ``bucket_size // 2`` get their own bucket, larger ones share
    log-spaced buckets up to ``max_position``.
    """
    pos = torch.arange(length, device=device)
    rel = pos[:, None] - pos[None, :]
    mid = bucket_size // 2
    abs_pos = torch.where((rel < mid) & (rel > -mid), torch.full_like(rel, mid - 1), rel.abs())
    log_pos = torch.ceil(torch.log(abs_pos / mid) / math.log((max_position - 1) / mid) * (mid - 1)) + mid
    bucket = torch.where(abs_pos <= mid, rel, log_pos.long() * torch.sign(rel))
    return bucket + bucket_size - 1


def grid_rel_index(grid: int, bucket_size: int, device=None) -> Tensor:
    """Index into a 2-D relative-position table for all cell pairs of a ``grid x grid`` grid.

    ``index[p, k] = (r_p - r_k + B - 1) * (2B - 1) + (c_p - c_k + B - 1)``, shape ``(grid^2, grid^2)``.
    """
    r = torch.arange(grid, device=device).repeat_interleave(grid)
    c = torch.arange(grid, device=device).repeat(grid)
    dr = r[:, None] - r[None, :] + bucket_size - 1
    dc = c[:, None] - c[None, :] + bucket_size - 1
    return dr * (2 * bucket_size - 1) + dc


def grid_position_ids(h: int, w: int, row_stride: int, device=None) -> Tensor:
    """Absolute position ids ``r * row_stride + c + 1`` of an ``h x w`` grid (0 is reserved), ``(h*w,)``."""
    r = torch.arange(h, device=device)[:, None]
    c = torch.arange(w, device=device)[None, :]
    return (r * row_stride + c + 1).reshape(-1)


def resize_grid_vectors(table: Tensor, grid: int, size: Tuple[int, int]) -> Tensor:
    """Bilinearly resize ``(grid*grid, C)`` per-cell vectors to an ``h x w`` grid, ``(h*w, C)``."""
    h, w = size
    if not capturing_graph() and (h, w) == (grid, grid):
        return table
    img = table.reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
    img = F.interpolate(img, size=(h, w), mode="bilinear", align_corners=False)
    return img.permute(0, 2, 3, 1).reshape(h * w, -1)


def pair_bias(table: Tensor, index: Tensor) -> Tensor:
    """Per-head bias of every index pair: ``table (n, H)`` looked up at ``index (Q, K)`` -> ``(H, Q, K)``,
    gathered head-major (contiguous, no transpose of the large result)."""
    return table.t()[:, index]


def _resize_last_axis(x: Tensor, grid: int, size: Tuple[int, int], lead: int) -> Tensor:
    """Resize the last axis of ``(H, Q, lead + g*g)`` over the grid, keeping the ``lead`` first entries."""
    h, w = size
    heads, q = x.shape[0], x.shape[1]
    # one-channel planes: ATen's CPU kernel converts many-channel NCHW inputs to channels-last first (3x slower)
    cells = F.interpolate(x[..., lead:].reshape(heads * q, 1, grid, grid), size=(h, w), mode="bilinear", align_corners=False)
    cells = cells.reshape(heads, q, h * w)
    return torch.cat([x[..., :lead], cells], dim=-1) if lead else cells


def _resize_middle_axis(x: Tensor, grid: int, size: Tuple[int, int], lead: int) -> Tensor:
    """Resize the query axis of ``(H, lead + g*g, K)`` over the grid, keeping the ``lead`` first rows.

    The key axis serves as the channels of a channels-last image (a view, no transpose): the
    interpolation reads and writes the ``(H, Q, K)`` layout directly.
    """
    h, w = size
    heads, k = x.shape[0], x.shape[2]
    planes = x[:, lead:].reshape(heads, grid, grid, k).permute(0, 3, 1, 2)
    cells = F.interpolate(planes, size=(h, w), mode="bilinear", align_corners=False)
    cells = cells.permute(0, 2, 3, 1).reshape(heads, h * w, k)
    return torch.cat([x[:, :lead], cells], dim=1) if lead else cells


def resize_pair_bias(bias: Tensor, grid: int, size: Tuple[int, int], key_first: bool, lead: int = 0) -> Tensor:
    """Resize a ``(H, lead + g*g, lead + g*g)`` cell-pair bias to ``(H, lead + h*w, lead + h*w)``.

    Both the query and the key axis are resized bilinearly over the grid; the ``lead`` first
    rows/columns (the decoder's BOS) are kept. ``key_first`` selects which axis goes first (the
    reference's encoder resizes keys first, its decoder queries first; the results agree up to
    float rounding). Neither axis is transposed in memory: the key axis is resized as planes,
    the query axis as a channels-last image (equal to the reference's layout up to float32
    rounding, bit for bit where the grid keeps its height).
    """
    if not capturing_graph() and tuple(size) == (grid, grid):
        return bias
    if key_first:
        return _resize_middle_axis(_resize_last_axis(bias, grid, size, lead), grid, size, lead)
    return _resize_last_axis(_resize_middle_axis(bias, grid, size, lead), grid, size, lead)
