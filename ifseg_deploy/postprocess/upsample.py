"""Bilinear up-sampling of grid scores to the original image size, then argmax.

Two ways to the same label map:

* ``dense`` - ``F.interpolate(mode="bilinear", align_corners=False)`` of every class, then argmax:
  the reference's own operations (classes in groups so huge images do not need ``N * H * W``
  floats at once). Used on CUDA, in captured / exported graphs and when the output is smaller
  than the grid.
* ``cells`` (CPU) - the argmax without full-resolution maps of the classes. Every output pixel
  lies in one *cell* of four neighbouring grid cells and its up-sampled scores are a convex
  combination of theirs. When one class wins at all four corners by more than the rounding of
  the interpolation (:data:`MARGIN` of the largest score), the difference to every other class is
  positive at the corners, hence everywhere in the cell: all its pixels take that class from a
  table look-up. Pixels of the other cells (class borders, ties) are computed from the scores
  with PyTorch's own CPU arithmetic (fused multiply-adds on float32 source indices and weights),
  so their values, and the whole label map, are bit-identical to ``dense`` on CPU
  (``tests/test_postprocess_fast.py`` checks both on random and tied maps). PyTorch's kernel
  takes other loops for some small outputs (a 64 x 64 image, say) and rounds differently there, so
  each size is checked once against ``F.interpolate`` on a probe (:func:`matches_pytorch`) and
  runs ``dense`` where it differs.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import IFSegError
from ..tracing import capturing_graph

#: Up-sampled elements materialised at once by ``dense``; classes are processed in groups under this bound.
MAX_ELEMENTS = 1 << 26
METHODS = ("auto", "dense", "cells")
#: A class wins a whole cell when it leads every other class at the four corners by more than this
#: fraction of the largest absolute score. Interpolating four corners in float32 errs by a few
#: units in the last place (~1e-7 relative), far below it.
MARGIN = 1e-5


def grid_to_image(scores: Tensor, grid: Tuple[int, int]) -> Tensor:
    """``(B, h*w, N)`` raster-order scores -> ``(B, N, h, w)``."""
    b, _, n = scores.shape
    return scores.transpose(1, 2).reshape(b, n, grid[0], grid[1])


def upsample_argmax(scores: Tensor, grid: Tuple[int, int], size: Tuple[int, int], method: str = "auto") -> Tensor:
    """Label map ``(B, H, W)`` (int64): argmax over the ``N`` classes of ``scores`` ``(B, h*w, N)``
    float32 (raster order over ``grid`` ``(h, w)``), bilinearly up-sampled to ``size`` ``(H, W)``
    pixels as the reference does (``F.interpolate(mode="bilinear", align_corners=False)``; ties keep
    the lowest class index, like ``argmax``).

    ``method`` (:data:`METHODS`): ``auto`` takes ``cells`` on CPU and ``dense`` elsewhere (see the
    module docstring; both give the same labels on CPU). ``cells`` falls back to ``dense`` where
    its shortcut does not hold (CUDA, an output smaller than the grid, non-finite scores).

    Raises:
        IFSegError: an unknown ``method``.
    """
    if method not in METHODS:
        raise IFSegError(f"unknown up-sampling method={method!r}; choose one of {', '.join(METHODS)}")
    x = grid_to_image(scores, grid)
    if capturing_graph():  # one resize of every class: the output size is a graph input
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False).argmax(dim=1)
    cells = (
        method != "dense"
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and size[0] >= grid[0]
        and size[1] >= grid[1]
        and x.shape[1] > 1
        and bool(torch.isfinite(x).all())
        and matches_pytorch(grid, size)
    )
    return _cells(x, size) if cells else _dense(x, size)


def _dense(x: Tensor, size: Tuple[int, int]) -> Tensor:
    """Argmax of ``F.interpolate`` of ``x`` ``(B, N, h, w)``, classes in groups of bounded memory."""
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


def source_weights(n_in: int, n_out: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(i0, i1, w0, w1)``, each ``(n_out,)``: output pixel ``o`` of a bilinear resize from ``n_in``
    to ``n_out >= n_in`` samples (``align_corners=False``) is ``w0[o] * in[i0[o]] + w1[o] * in[i1[o]]``.

    As PyTorch's CPU kernel computes them (``area_pixel_compute_source_index``): float32 scale
    ``n_in / n_out``, source ``scale * (o + 0.5) - 0.5`` with one rounding (a fused multiply-add,
    emulated exactly in float64), clamped at 0; ``w1`` its fraction, ``w0 = 1 - w1`` in float32.
    """
    scale = float(torch.tensor(n_in / n_out, dtype=torch.float32))
    src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * scale - 0.5).float().clamp_min(0)
    i0 = src.floor().long().clamp_max(n_in - 1)
    w1 = (src - i0).clamp(0, 1)
    return i0, (i0 + 1).clamp_max(n_in - 1), 1 - w1, w1


@lru_cache(maxsize=64)
def matches_pytorch(grid: Tuple[int, int], size: Tuple[int, int]) -> bool:
    """Whether :func:`source_weights` and :func:`_lerp` give exactly PyTorch's CPU bilinear values
    for ``grid`` ``(h, w)`` -> ``size`` ``(H, W)``, checked on a fixed random probe of two classes
    (once per pair of sizes: about one class's full-resolution up-sampling)."""
    x = torch.randn(1, 2, *grid, generator=torch.Generator().manual_seed(0))
    expected = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    y0, y1, hy0, hy1 = source_weights(grid[0], size[0])
    x0, x1, wx0, wx1 = source_weights(grid[1], size[1])
    cols = _lerp(x.index_select(3, x0), x.index_select(3, x1), wx0, wx1)
    return torch.equal(_lerp(cols.index_select(2, y0), cols.index_select(2, y1), hy0[:, None], hy1[:, None]), expected)


def _lerp(a: Tensor, b: Tensor, w0: Tensor, w1: Tensor) -> Tensor:
    """``w0 * a + w1 * b`` rounded as PyTorch's CPU bilinear kernel rounds it: ``fma(w0, a, w1 * b)``."""
    return torch.addcmul(w1 * b, w0, a)


def _cells(x: Tensor, size: Tuple[int, int]) -> Tensor:
    """The ``cells`` method (module docstring) on ``x`` ``(B, N, h, w)`` float32 CPU, ``N >= 2``."""
    return torch.stack([_cells_one(image, size) for image in x]) if len(x) > 1 else _cells_one(x[0], size)[None]


def _cells_one(x: Tensor, size: Tuple[int, int]) -> Tensor:
    """:func:`_cells` of one image ``(N, h, w)`` -> ``(H, W)``: a table look-up for the pixels of won
    cells, then the pixels of mixed cells all at once over their few candidate classes."""
    n, h, w = x.shape
    height, width = size
    y0, _, hy0, hy1 = source_weights(h, height)  # the second row of a cell row i is r1[i]
    x0, x1, wx0, wx1 = source_weights(w, width)
    tol = MARGIN * float(x.abs().max())
    last = x.permute(1, 2, 0).contiguous()  # (h, w, N) channels last: one cell's classes adjacent
    # cell (i, j) spans grid rows i, i + 1 and columns j, j + 1 (the last row / column: itself alone)
    r1 = torch.arange(1, h + 1).clamp_max_(h - 1)
    c1 = torch.arange(1, w + 1).clamp_max_(w - 1)

    def corners(t: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:  # each (h, w, ...)
        below = t.index_select(0, r1)
        return t, below, t.index_select(1, c1), below.index_select(1, c1)

    # one class wins the whole cell when it leads every other one by more than tol at each corner:
    # their difference is then positive at the corners, hence at every pixel between them
    top2 = last.topk(2, dim=2)
    lead = top2.indices[..., 0]
    m = corners((top2.values[..., 0] - top2.values[..., 1]) > tol)
    c = corners(lead)
    sure = m[0] & m[1] & m[2] & m[3] & (c[1] == lead) & (c[2] == lead) & (c[3] == lead)
    # the label of each (cell row, output column); -1 where the cell is mixed
    table = torch.where(sure, lead, -1).index_select(1, x0)  # (h, W)
    # a class can win somewhere in a cell only if its highest corner reaches the lowest corner of some
    # class (each pixel's score lies between its class's corners, up to rounding far below tol): the
    # cells' candidates, ascending (ties keep the lowest class, as argmax), padded with the first
    v = corners(last)
    low = torch.minimum(torch.minimum(v[0], v[1]), torch.minimum(v[2], v[3]))
    high = torch.maximum(torch.maximum(v[0], v[1]), torch.maximum(v[2], v[3]))
    candidate = (high >= low.amax(2, keepdim=True) - tol) & ~sure[..., None]
    k = max(1, int(candidate.sum(2).amax()))
    rows_of = torch.bincount(y0, minlength=h)  # output rows per cell row (y0 is sorted)
    mixed_cols = table < 0
    if int(mixed_cols.sum(1).mul(rows_of).sum()) * k * 4 > height * width * n:
        return _dense(x[None], size)[0]  # scores with little structure (noise): nothing to save
    order = torch.where(candidate, torch.arange(n), n).sort(dim=2).values[..., :k]
    order = torch.where(order < n, order, order[..., :1]).view(h * w, k)
    labels = table.index_select(0, y0)  # (H, W): every pixel of a won cell is done
    pairs = mixed_cols.nonzero()  # (P, 2): (cell row, output column) of each mixed cell column
    if not len(pairs):
        return labels
    i, xs = pairs[:, 0], pairs[:, 1]
    classes = order.index_select(0, x0.index_select(0, xs) + i * w)  # (P, k) candidates
    flat = last.view(-1)
    xa, xb = x0.index_select(0, xs)[:, None] * n, x1.index_select(0, xs)[:, None] * n
    wa, wb = wx0.index_select(0, xs)[:, None], wx1.index_select(0, xs)[:, None]

    def across(row: Tensor) -> Tensor:  # (P, k): grid row ``row`` interpolated across columns, as the kernel does
        at = (row * (w * n))[:, None] + classes
        return _lerp(flat.take(at + xa), flat.take(at + xb), wa, wb)

    top, bottom = across(i), across(r1.index_select(0, i))
    # then down the rows: every output row of each pair's band (the rows y with y0[y] == its cell row)
    first_row = rows_of.cumsum(0) - rows_of
    counts = rows_of.index_select(0, i)
    pair = torch.repeat_interleave(torch.arange(len(pairs)), counts)  # (M,) one entry per pixel
    ys = torch.arange(len(pair)) + (first_row.index_select(0, i) - (counts.cumsum(0) - counts)).index_select(0, pair)
    values = _lerp(
        top.index_select(0, pair),
        bottom.index_select(0, pair),
        hy0.index_select(0, ys)[:, None],
        hy1.index_select(0, ys)[:, None],
    )
    # argmax returns the first of equal maxima: the lowest candidate class, as argmax over all classes
    labels[ys, xs.index_select(0, pair)] = classes.index_select(0, pair).gather(1, values.argmax(1, keepdim=True))[:, 0]
    return labels
