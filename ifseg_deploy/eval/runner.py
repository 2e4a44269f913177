"""Evaluation loops: a model over a dataset (reference protocol), or saved label maps."""

from __future__ import annotations

import sys
from typing import Iterable, Optional, Sequence, Tuple, TypeVar

import torch

from ..errors import IFSegError
from ..postprocess.upsample import upsample_argmax
from ..preprocess import read_image
from ..runtime.segmenter import Segmenter
from .datasets import DatasetSpec, Sample
from .labels import LabelMapping, read_label_map
from .metrics import MetricAccumulator

T = TypeVar("T")


def progress(items: Sequence[T], desc: str, enabled: bool = True) -> Iterable[T]:
    """Items with a progress bar, cleared when done. It goes to stdout (as mmsegmentation's test
    tool does) so that stderr holds nothing but the one-line error of a failed run."""
    from tqdm import tqdm

    with tqdm(items, desc=desc, unit="img", file=sys.stdout, leave=False, disable=not enabled, dynamic_ncols=True) as bar:
        yield from bar


def dataset_segmenter(spec: DatasetSpec, checkpoint: str, bpe_dir: Optional[str] = None, device: str = "cpu", half: bool = False,
                      knn_k: int = 3, knn_iters: int = 25, knn_backend: str = "auto") -> Segmenter:
    """A Segmenter on the dataset's fixed class list (word-list embeddings for hierarchical classes)."""
    return Segmenter.from_checkpoint(checkpoint, categories=spec.categories, bpe_dir=bpe_dir, device=device, half=half,
                                     class_words=spec.class_words, knn_k=knn_k, knn_iters=knn_iters, knn_backend=knn_backend)


def _check_same_size(a: Tuple[int, int], b: Tuple[int, int], what_a: str, what_b: str) -> None:
    if a != b:
        raise IFSegError(f"{what_a} is {a[1]}x{a[0]} but {what_b} is {b[1]}x{b[0]} (width x height); they must have the same size")


def evaluate_dataset(seg: Segmenter, samples: Sequence[Sample], mapping: LabelMapping, show_progress: bool = True
                     ) -> Tuple[MetricAccumulator, Optional[MetricAccumulator]]:
    """Whole-image inference at batch 1, label maps at the ORIGINAL size vs the remapped truth.

    Returns the accumulator of the Segmenter's labels (kNN-smoothed when its kNN is on) and,
    when kNN is on, the one of the plain (un-smoothed) prediction the reference also logs.
    """
    n = len(seg.categories)
    main = MetricAccumulator(n)
    plain = MetricAccumulator(n) if seg.knn_iters > 0 else None
    for s in progress(samples, "eval", show_progress):
        rgb = read_image(s.image)
        gt = read_label_map(s.label)
        _check_same_size(gt.shape, rgb.shape[:2], f"label map {s.label}", f"image {s.image}")
        gt = mapping.apply(gt, s.label)
        res = seg.segment(rgb)
        main.update(res.labels, gt)
        if plain is not None:
            h, w = res.grid
            logits = torch.from_numpy(res.logits).reshape(1, h * w, n)
            plain.update(upsample_argmax(logits, (h, w), gt.shape)[0].numpy(), gt)
    return main, plain


def evaluate_label_maps(pairs: Sequence[Tuple[str, str, str]], num_classes: int, ignore_index: int, show_progress: bool = True
                        ) -> MetricAccumulator:
    """Score saved predictions against ground truth; both use ``0..N-1`` plus ``ignore_index``."""
    mapping = LabelMapping.identity(num_classes, [ignore_index])
    acc = MetricAccumulator(num_classes)
    for _, pred_path, gt_path in progress(pairs, "eval", show_progress):
        pred, gt = read_label_map(pred_path), read_label_map(gt_path)
        _check_same_size(pred.shape, gt.shape, f"prediction {pred_path}", f"ground truth {gt_path}")
        acc.update(mapping.apply(pred, pred_path), mapping.apply(gt, gt_path))
    return acc
