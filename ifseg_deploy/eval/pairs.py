"""Pairing saved prediction label maps with ground-truth label maps by file stem."""

from __future__ import annotations

import os
from typing import List, Tuple

from ..errors import IFSegError

#: Suffixes stripped from ground-truth stems (mmsegmentation's COCO-Stuff files).
GT_SUFFIXES = ("_labelTrainIds",)
#: Suffix of the label maps ``ifseg-deploy segment`` writes.
PRED_SUFFIX = "_labels"


def _key(stem: str) -> str:
    for s in GT_SUFFIXES:
        if stem.endswith(s):
            return stem[: -len(s)]
    return stem


def pair_label_maps(pred_dir: str, gt_dir: str) -> List[Tuple[str, str, str]]:
    """``(key, pred_path, gt_path)`` for every ``*.png`` in ``gt_dir``, sorted.

    The prediction for ground truth ``<stem>.png`` (or ``<key>_labelTrainIds.png``) is
    ``<key>_labels.png`` (as written by ``segment``) or ``<key>.png`` / ``<stem>.png`` in
    ``pred_dir``; other files there (overlays, raw scores) are ignored. A ground truth without
    exactly one prediction is an error.
    """
    for name, folder in (("pred_dir", pred_dir), ("gt_dir", gt_dir)):
        if not os.path.isdir(folder):
            raise IFSegError(f"`{name}` folder not found: {folder}")
    gts = sorted(f for f in os.listdir(gt_dir) if f.lower().endswith(".png") and not f.startswith("."))
    if not gts:
        raise IFSegError(f"no ground-truth label maps (*.png) in {gt_dir}")
    preds = set(os.listdir(pred_dir))
    out = []
    for gt in gts:
        stem = gt[:-4]
        key = _key(stem)
        found = sorted({n for n in (f"{key}{PRED_SUFFIX}.png", f"{key}.png", f"{stem}.png") if n in preds})
        if not found:
            raise IFSegError(f"no prediction for {gt} in {pred_dir} (looked for {key}{PRED_SUFFIX}.png or {key}.png)")
        if len(found) > 1:
            raise IFSegError(f"{pred_dir} holds several predictions for {gt} ({', '.join(found)}); keep one")
        out.append((key, os.path.join(pred_dir, found[0]), os.path.join(gt_dir, gt)))
    return out
