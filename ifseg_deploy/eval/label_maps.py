"""Scoring saved prediction label maps against ground-truth label maps (``eval --pred-dir --gt-dir``)."""

from __future__ import annotations

from typing import Sequence, Tuple

from .labels import LabelMapping, check_same_size, read_label_map
from .metrics import MetricAccumulator
from .runner import progress


def evaluate_label_maps(
    pairs: Sequence[Tuple[str, str, str]],
    num_classes: int,
    pred_mapping: LabelMapping,
    gt_mapping: LabelMapping,
    show_progress: bool = True,
) -> MetricAccumulator:
    """Areas of ``(key, pred_path, gt_path)`` pairs, each file mapped to class indices ``0..N-1``.

    ``pred_mapping`` reads the predictions (``segment`` writes ``0..N-1``; the ignore value means
    "no class"), ``gt_mapping`` the ground truth as the dataset stores it (e.g.
    :meth:`LabelMapping.reduce_zero_label` for ADE20K). Raises :class:`IFSegError` on a file that
    is not a label map, a value outside its mapping, or a size mismatch.
    """
    acc = MetricAccumulator(num_classes)
    for _, pred_path, gt_path in progress(pairs, "eval", show_progress):
        pred, gt = read_label_map(pred_path), read_label_map(gt_path)
        check_same_size(pred.shape, gt.shape, f"prediction {pred_path}", f"ground truth {gt_path}")
        acc.update(pred_mapping.apply(pred, pred_path), gt_mapping.apply(gt, gt_path))
    return acc
