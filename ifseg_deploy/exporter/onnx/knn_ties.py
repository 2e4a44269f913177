"""Where two correct runtimes may legitimately differ in kNN smoothing, so verification leaves it out.

Each runtime ranks neighbours by cosine similarities it computes in float32 from its own
features. Where a cell's k-th and (k+1)-th most similar cells are closer than the two runtimes'
similarity errors, either may keep either cell: the neighbour sets of such a *near-tied* cell
are not determined by the model, and neither are the smoothed probabilities of every cell whose
propagation passes through it. Those cells (and the pixels bilinearly up-sampled from them)
are masked out of the comparison; every other cell's neighbour set is the same in both
runtimes, so its probabilities must agree.

The error of a similarity is bounded per cell by the difference of the two runtimes' features
(measured here, in float64) plus float32 rounding: :data:`ROUNDING_UNITS` times ``sqrt(C) * 2**-24``
for ``C`` channels, the probabilistic error bound of a float32 dot product (Higham & Mary,
"A new approach to probabilistic rounding error analysis", SIAM J. Sci. Comput. 2019). The
largest errors measured on the dev fixture's 1024-channel features were 0.88 of these units
(ONNX Runtime CPU) and 0.9 (PyTorch CPU), so the bound holds them with a margin of more than 3.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F

#: Float32 rounding of a unit-vector dot product of C terms, in units of 2^-24 * sqrt(C).
ROUNDING_UNITS = 3.0


def _unit(features: np.ndarray) -> np.ndarray:
    f = features.astype(np.float64)
    return f / np.maximum(np.linalg.norm(f, axis=-1, keepdims=True), 1e-12)


def near_tied_cells(ref_features: np.ndarray, out_features: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """``(near_tied (B, hw) bool, neighbours (B, hw, k') int64)`` for features ``(B, hw, C)``.

    ``neighbours`` are the ``k' = min(k, hw)`` most similar cells by the reference features
    (float64, the cell itself included); a cell is near-tied when its k'-th and (k'+1)-th
    similarities differ by no more than twice the bound on either runtime's similarity error.
    """
    b, hw, c = ref_features.shape
    k = min(k, hw)
    rounding = ROUNDING_UNITS * np.sqrt(c) * 2.0**-24
    tied = np.zeros((b, hw), dtype=bool)
    neighbours = np.zeros((b, hw, k), dtype=np.int64)
    for i in range(b):
        ref, out = _unit(ref_features[i]), _unit(out_features[i])
        sims = ref @ ref.T
        order = np.argsort(-sims, axis=-1, kind="stable")
        neighbours[i] = order[:, :k]
        if k == hw:  # every cell is a neighbour: nothing to choose
            continue
        ranked = np.take_along_axis(sims, order[:, k - 1 : k + 1], axis=-1)
        error = np.abs(out @ out.T - sims).max(axis=-1) + rounding
        tied[i] = ranked[:, 0] - ranked[:, 1] <= 2 * error
    return tied, neighbours


def undetermined_cells(near_tied: np.ndarray, neighbours: np.ndarray, iters: int) -> np.ndarray:
    """``(B, hw)`` bool: cells whose smoothed probabilities after ``iters`` propagation passes
    depend on a near-tied cell's neighbour set (the first pass reads the near-tied cells' own sets;
    each later pass adds the cells with an undetermined neighbour)."""
    batch = np.arange(near_tied.shape[0])[:, None, None]
    bad = near_tied.copy()
    for _ in range(max(iters - 1, 0)):
        bad = near_tied | bad[batch, neighbours].any(axis=-1)
    return bad


def undetermined_pixels(cells: np.ndarray, grid: Tuple[int, int], size: Tuple[int, int]) -> np.ndarray:
    """``(B, H, W)`` bool: pixels whose bilinear up-sampling (``align_corners=False``, as
    :func:`~ifseg_deploy.postprocess.upsample.upsample_argmax`) gives weight to a masked cell."""
    grid_mask = torch.from_numpy(cells.astype(np.float32)).reshape(cells.shape[0], 1, *grid)
    return F.interpolate(grid_mask, size=size, mode="bilinear", align_corners=False)[:, 0].numpy() > 0
