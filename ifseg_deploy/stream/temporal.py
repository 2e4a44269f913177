"""Temporal smoothing of video labels: an exponential moving average of the grid probabilities.

Per grid cell, ``p_t = m * p_{t-1} + (1 - m) * q_t`` where ``q_t`` are the frame's (kNN-smoothed)
class probabilities. The average only carries over where the scene did not change: a cell whose
feature vector moved away from the previous frame's (cosine similarity below ``cell_threshold``)
takes the new probabilities as they are, and a scene cut (mean similarity over the grid below
``cut_threshold``, or a new grid size) resets the whole average. The features are the ones the
kNN smoothing uses (the ResNet backbone's per-cell features), so no extra network work is done.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

#: Weight of the running average (0 = off). At 0.6, a cell's label follows a lasting change within ~3 frames.
MOMENTUM = 0.6
#: Cells whose features are less similar than this to the previous frame restart from the new frame.
CELL_THRESHOLD = 0.9
#: Mean similarity below this is a scene cut: the whole average restarts.
CUT_THRESHOLD = 0.6


class TemporalSmoother:
    """Callable ``probs_transform(probs, features) -> probs`` for :meth:`Segmenter.postprocess`.

    Frames must arrive in display order (one smoother per video).

    Args:
        momentum: weight of the running average in [0, 1).
        cell_threshold: per-cell cosine similarity under which a cell is not averaged.
        cut_threshold: mean cosine similarity under which the average restarts (scene cut).
    """

    def __init__(
        self, momentum: float = MOMENTUM, cell_threshold: float = CELL_THRESHOLD, cut_threshold: float = CUT_THRESHOLD
    ):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1) (got {momentum})")
        self.momentum = momentum
        self.cell_threshold = cell_threshold
        self.cut_threshold = cut_threshold
        self.cuts = 0  # scene cuts detected (resets after the first frame)
        self._probs: Optional[torch.Tensor] = None
        self._features: Optional[torch.Tensor] = None

    def reset(self) -> None:
        """Forget the history (next frame starts a new average)."""
        self._probs = self._features = None

    def __call__(self, probs: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Smooth ``probs`` ``(B, hw, N)`` float given ``features`` ``(B, hw, C)``; the B frames are
        consecutive. Returns ``(B, hw, N)`` probabilities (rows still sum to 1)."""
        out = []
        for q, f in zip(probs, F.normalize(features.float(), dim=-1)):
            out.append(self._step(q, f))
        return torch.stack(out)

    def _step(self, q: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        prev_p, prev_f = self._probs, self._features
        self._features = f
        if prev_p is None or prev_p.shape != q.shape or prev_f.shape != f.shape:
            self._probs = q
            return q
        sim = (f * prev_f).sum(-1)  # (hw,) cosine similarity per cell
        if sim.mean().item() < self.cut_threshold:
            self.cuts += 1
            self._probs = q
            return q
        m = torch.where(sim >= self.cell_threshold, self.momentum, 0.0).to(q.dtype).unsqueeze(-1)
        self._probs = m * prev_p.to(q) + (1 - m) * q
        return self._probs
