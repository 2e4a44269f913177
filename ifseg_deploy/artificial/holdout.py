"""The fixed, seeded held-out set of artificial images and its scores (pixel accuracy, mIoU).

The set depends only on the class list, the model grid and the coarse-grid limit (its layout
is drawn from a constant seed on the CPU, whatever the training seed or device), so a
training run, a reloaded bundle and an exported graph all score the same images.

Scored on the model grid: the argmax of each cell's logits against the cell's class, i.e. the
"pixels" of the artificial image the model actually sees. (The 512x512 training target has
coarse-cell edges inside model cells that no model input reveals: even a perfect per-cell
predictor scores only ~80 % there with three classes, so that figure says little about health.)
``pixel_acc`` and ``miou`` come from the evaluation metrics (:mod:`ifseg_deploy.eval.metrics`,
the reference formula: areas summed over the set, IoU per class, mean over the classes present
in prediction or target).
"""

from __future__ import annotations

from typing import Callable, Dict

from torch import Tensor

from ..eval.metrics import MetricAccumulator
from .images import ArtificialImages, stream_seed

#: Key of the held-out stream (independent of any training seed).
HOLDOUT_KEY = 0x401D0
DEFAULT_HOLDOUT_SIZE = 32

#: ``(B, g*g, C)`` image tokens (the cells' word embeddings, raster order) -> ``(B, g*g, N)`` class logits.
TokenPredictor = Callable[[Tensor], Tensor]


def score_holdout(
    predict: TokenPredictor, images: ArtificialImages, size: int = DEFAULT_HOLDOUT_SIZE, batch_size: int = 8
) -> Dict[str, float]:
    """``{"pixel_acc", "miou"}`` (fractions in 0..1) of ``predict`` on the first ``size`` held-out
    images of ``images`` (their grid), scored ``batch_size`` images at a time."""
    n = images.num_classes
    layout = images.sample_layout(size, stream_seed(HOLDOUT_KEY), rng_device="cpu")
    acc = MetricAccumulator(n)
    for start in range(0, size, batch_size):
        batch = images.render(layout[start : start + batch_size])
        logits = predict(batch.cell_embeds)
        acc.update(logits.argmax(-1).cpu().numpy().ravel(), batch.cell_classes.cpu().numpy().ravel())
    scores = acc.scores()
    return {"pixel_acc": scores.aacc, "miou": scores.miou}
