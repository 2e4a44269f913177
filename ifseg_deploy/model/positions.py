"""Position tables of OFA / SegOFA: bucket indices and the bilinear table resizes.

Everything here is a pure function of shapes (and of a lookup table), so it serves
training, runtime and ONNX export alike. Conventions follow the reference:
grid cells are flattened in raster order, ``F.interpolate(mode="bilinear",
align_corners=False)`` with an explicit ``size`` for every resize.
"""

from __future__ import annotations

import functools
import math
from typing import List, Tuple

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
    cells = F.interpolate(
        x[..., lead:].reshape(heads * q, 1, grid, grid), size=(h, w), mode="bilinear", align_corners=False
    )
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


def bilinear_matrix(n_in: int, n_out: int) -> Tensor:
    """The ``(n_out, n_in)`` matrix of a 1-D ``F.interpolate(mode="bilinear", align_corners=False)``
    resize (the identity when ``n_in == n_out``): PyTorch's own weights, read off a resized identity."""
    eye = torch.eye(n_in).reshape(n_in, 1, 1, n_in)
    return F.interpolate(eye, size=(1, n_out), mode="bilinear", align_corners=False).reshape(n_in, n_out).t()


@functools.lru_cache(maxsize=16)
def offset_kernel(n_in: int, n_out: int) -> Tensor:
    """``K[i, i', d] = sum over r - r' = d - (n_in - 1) of A[i, r] A[i', r']`` for the resize matrix ``A``
    of :func:`bilinear_matrix`: how much relative offset ``d`` contributes to the resized cell pair
    ``(i, i')``, ``(n_out, n_out, 2 n_in - 1)`` on the CPU (cached; do not modify). At most three
    offsets per pair are non-zero."""
    a = bilinear_matrix(n_in, n_out)
    pairs = (a[:, None, :, None] * a[None, :, None, :]).reshape(n_out * n_out, n_in * n_in)
    r = torch.arange(n_in)
    onehot = F.one_hot((r[:, None] - r[None, :] + n_in - 1).reshape(-1), 2 * n_in - 1).to(pairs.dtype)
    return (pairs @ onehot).reshape(n_out, n_out, 2 * n_in - 1)


@functools.lru_cache(maxsize=16)
def _row_taps(n_in: int, n_out: int) -> List[Tuple[Tensor, Tensor, List[bool], List[bool]]]:
    """The non-zero offsets of :func:`offset_kernel` as up to three taps ``(offset index (n_out, n_out),
    weight (n_out, n_out), row has a non-zero weight, row's weights are all one)``."""
    kh = offset_kernel(n_in, n_out)
    first = (kh != 0).to(torch.uint8).argmax(-1)  # the smallest offset with a non-zero weight
    padded = F.pad(kh, (0, 2))
    taps = []
    for a in range(3):
        wt = padded.gather(-1, (first + a)[..., None])[..., 0]
        used = (wt != 0).any(-1).tolist()
        if any(used):
            taps.append(((first + a).clamp(max=2 * n_in - 2), wt, used, (wt == 1).all(-1).tolist()))
    return taps


def add_resized_offset_bias(out: Tensor, offsets: Tensor, grid: int, size: Tuple[int, int]) -> Tensor:
    """Add the relative-position bias of a ``grid x grid`` table, resized to ``h x w``, to ``out`` in place.

    Exact reformulation of ``resize_pair_bias(pair_bias(table, grid_rel_index(grid, B)), grid, size)``
    (equal up to float32 rounding): a bias that depends only on the 2-D offset ``(dr, dc)`` between
    two cells, bilinearly resized on both the query and the key axis, is
    ``sum_{dr,dc} Kh[i,i',dr] Kw[j,j',dc] E[dr,dc]`` with the :func:`offset_kernel` ``K`` of each axis.
    The column sum is a small matrix product on the ``(2g-1, 2g-1)`` table, the row sum gathers at
    most three of its rows per cell pair; nothing of size ``g^2 x g^2`` is formed, so a new input
    size costs one pass over the output instead of two image resizes of it.

    Args:
        out: ``(H, h*w, h*w)`` view to add to (the cell block of an attention bias; any strides
            that split into rows and columns).
        offsets: ``(H, 2*grid - 1, 2*grid - 1)`` bias per head and offset ``(dr + g - 1, dc + g - 1)``.
        grid: the table's grid ``g``; size: the ``(h, w)`` grid of the input.
    Returns:
        ``out``.
    """
    h, w = size
    heads, device = offsets.shape[0], offsets.device
    if (h, w) == (grid, grid):  # no resize: a plain lookup
        out += pair_bias(offsets.reshape(heads, -1).t(), grid_rel_index(grid, grid, device))
        return out
    kw = offset_kernel(grid, w).to(device, offsets.dtype)
    span = 2 * grid - 1
    cols = torch.matmul(offsets.reshape(heads * span, span), kw.reshape(w * w, span).t()).reshape(heads, span, w, w)
    taps = [(idx.to(device), wt.to(device, offsets.dtype), used, ones) for idx, wt, used, ones in _row_taps(grid, h)]
    out5 = out.view(heads, h, w, h, w)
    for i in range(h):
        acc = None
        for idx, wt, used, ones in taps:
            if not used[i]:
                continue
            term = cols[:, idx[i]]  # (H, h', w, w')
            if not ones[i]:
                term = term * wt[i][None, :, None, None]
            acc = term if acc is None else acc.add_(term)
        out5[:, i] += acc.permute(0, 2, 1, 3)
    return out


def offset_table(table: Tensor, bucket_size: int, grid: int) -> Tensor:
    """The ``(H, 2g-1, 2g-1)`` offsets of a ``grid x grid`` grid in a 2-D relative table ``(n, H)``
    laid out as :func:`grid_rel_index` (``(2B-1)^2`` offset entries first)."""
    span = 2 * bucket_size - 1
    lo = bucket_size - grid
    return table[: span * span].t().reshape(-1, span, span)[:, lo : lo + 2 * grid - 1, lo : lo + 2 * grid - 1]
