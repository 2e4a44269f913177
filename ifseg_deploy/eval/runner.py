"""Evaluation of a model over a dataset (the reference protocol)."""

from __future__ import annotations

import sys
from typing import Iterable, Optional, Sequence, Tuple, TypeVar

import torch

from ..postprocess.upsample import upsample_argmax
from ..preprocess import read_image
from ..runtime.segmenter import Segmenter
from .datasets import DatasetSpec, Sample
from .labels import LabelMapping, check_same_size, read_label_map
from .metrics import MetricAccumulator

T = TypeVar("T")


def progress(items: Sequence[T], desc: str, enabled: bool = True) -> Iterable[T]:
    """Items with a progress bar, cleared when done. It goes to stdout (as mmsegmentation's test
    tool does) so that stderr holds nothing but the one-line error of a failed run."""
    from tqdm import tqdm

    with tqdm(
        items, desc=desc, unit="img", file=sys.stdout, leave=False, disable=not enabled, dynamic_ncols=True
    ) as bar:
        yield from bar


def dataset_segmenter(
    spec: DatasetSpec,
    checkpoint: str,
    bpe_dir: Optional[str] = None,
    device: str = "cpu",
    precision: Optional[str] = None,
    knn_k: int = 3,
    knn_iters: int = 25,
    knn_backend: str = "auto",
) -> Segmenter:
    """A Segmenter on the dataset's fixed class list (word-list embeddings for hierarchical classes)."""
    return Segmenter.load(
        checkpoint,
        categories=spec.categories,
        bpe_dir=bpe_dir,
        device=device,
        precision=precision,
        class_words=spec.class_words,
        knn_k=knn_k,
        knn_iters=knn_iters,
        knn_backend=knn_backend,
    )


def evaluate_dataset(
    seg: Segmenter, samples: Sequence[Sample], mapping: LabelMapping, show_progress: bool = True
) -> Tuple[MetricAccumulator, Optional[MetricAccumulator]]:
    """Whole-image inference at batch 1, label maps at the ORIGINAL size vs the remapped truth.

    Returns the accumulator of the Segmenter's labels (kNN-smoothed when its kNN is on) and,
    when kNN is on, the one of the plain (un-smoothed) prediction the reference also logs.
    """
    n = len(seg.categories)
    main = MetricAccumulator(n)
    plain = MetricAccumulator(n) if seg.knn_iters > 0 else None
    for s in progress(samples, "eval", show_progress):
        rgb = read_image(s.image, exif=False)  # label maps are aligned with the stored pixels
        gt = read_label_map(s.label)
        check_same_size(gt.shape, rgb.shape[:2], f"label map {s.label}", f"image {s.image}")
        gt = mapping.apply(gt, s.label)
        res = seg.segment(rgb)
        main.update(res.labels, gt)
        if plain is not None:
            h, w = res.grid
            logits = torch.from_numpy(res.logits).reshape(1, h * w, n)
            plain.update(upsample_argmax(logits, (h, w), gt.shape)[0].numpy(), gt)
    return main, plain
