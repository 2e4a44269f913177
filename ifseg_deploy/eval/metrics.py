"""mIoU / mAcc / aAcc accumulated over a whole dataset, as the reference criterion computes them.

Per image, on pixels whose ground truth is not ignored: ``I_c`` = pixels predicted ``c`` whose
truth is ``c``, ``P_c`` = pixels predicted ``c``, ``L_c`` = pixels whose truth is ``c``,
``U_c = P_c + L_c - I_c``. The four vectors are SUMMED over the dataset (exact int64 counts;
the reference sums float32 histograms), then ``IoU_c = I_c / U_c``, ``Acc_c = I_c / L_c``,
``mIoU`` / ``mAcc`` = mean over classes where the ratio is defined (``U_c = 0`` resp.
``L_c = 0`` gives NaN and is skipped; present-but-missed classes count as 0) and
``aAcc = sum(I) / sum(L)`` (= the reference's ``sum(I) / sum(P)`` whenever every scored pixel
has a prediction).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

#: Ground-truth value of ignored pixels / prediction value of pixels without a class.
IGNORE = -1


@dataclass
class ClassScores:
    """Dataset-level areas and ratios; ratios are NaN where undefined."""

    intersect: np.ndarray  # (N,) int64
    union: np.ndarray
    pred: np.ndarray
    label: np.ndarray
    iou: np.ndarray  # (N,) float64
    acc: np.ndarray
    miou: float
    macc: float
    aacc: float

    def to_dict(self, names: Optional[Sequence[str]] = None) -> Dict[str, object]:
        """JSON-ready summary (NaN -> None)."""

        def num(x: float) -> Optional[float]:
            return None if np.isnan(x) else float(x)

        per_class: List[Dict[str, object]] = []
        for c in range(len(self.iou)):
            per_class.append(
                dict(
                    index=c,
                    name=names[c] if names else str(c),
                    iou=num(self.iou[c]),
                    acc=num(self.acc[c]),
                    intersect=int(self.intersect[c]),
                    union=int(self.union[c]),
                    pred=int(self.pred[c]),
                    label=int(self.label[c]),
                )
            )
        return dict(mIoU=num(self.miou), mAcc=num(self.macc), aAcc=num(self.aacc), per_class=per_class)


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else float("nan")


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.maximum(b, 1), np.nan)


class MetricAccumulator:
    """Sums per-class areas over images; :meth:`scores` gives the dataset metrics."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.intersect = np.zeros(num_classes, np.int64)
        self.pred = np.zeros(num_classes, np.int64)
        self.label = np.zeros(num_classes, np.int64)
        self.images = 0

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Add one image: ``pred``, ``gt`` integer maps of equal shape with values in
        ``0..N-1`` or :data:`IGNORE` (ignored truth / no prediction)."""
        if pred.shape != gt.shape:
            raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
        n = self.num_classes
        valid = gt != IGNORE
        p, g = pred[valid].astype(np.int64), gt[valid].astype(np.int64)
        self.intersect += np.bincount(g[p == g], minlength=n)
        self.pred += np.bincount(p[p != IGNORE], minlength=n)
        self.label += np.bincount(g, minlength=n)
        self.images += 1

    def scores(self) -> ClassScores:
        union = self.pred + self.label - self.intersect
        iou = _ratio(self.intersect, union)
        acc = _ratio(self.intersect, self.label)
        total = self.label.sum()
        aacc = float(self.intersect.sum() / total) if total else float("nan")
        return ClassScores(
            self.intersect.copy(),
            union,
            self.pred.copy(),
            self.label.copy(),
            iou,
            acc,
            _nanmean(iou),
            _nanmean(acc),
            aacc,
        )
