"""Training health: pixel accuracy and mIoU on a fixed, seeded held-out set of artificial images.

The set depends only on the class list (its layout is drawn from a constant seed on the CPU,
whatever the training seed or device), so runs are comparable.

Scored on the model grid: the argmax of each cell's logits against the cell's class, i.e. the
"pixels" of the artificial image the model actually sees. (The 512x512 training target has
coarse-cell edges inside model cells that no model input reveals: even a perfect per-cell
predictor scores only ~80 % there with three classes, so that figure says little about health.)
``pixel_acc`` and ``miou`` come from the evaluation metrics (:mod:`ifseg_deploy.eval.metrics`,
the reference formula: areas summed over the set, IoU per class, mean over the classes present
in prediction or target).
"""

from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor

from ..eval.metrics import MetricAccumulator
from ..model import SegOFA
from .artificial import ArtificialImages, stream_seed

#: Key of the held-out stream (independent of any training seed).
HOLDOUT_KEY = 0x401D0
DEFAULT_HOLDOUT_SIZE = 32


@torch.no_grad()
def holdout_metrics(
    model: SegOFA,
    images: ArtificialImages,
    prompt_embeds: Tensor,
    class_embeds: Tensor,
    size: int = DEFAULT_HOLDOUT_SIZE,
    batch_size: int = 8,
) -> Dict[str, float]:
    """Evaluate ``model`` (in eval mode, restored afterwards) on ``size`` held-out artificial images."""
    was_training = model.training
    model.eval()
    n, g = images.num_classes, images.grid
    layout = images.sample_layout(size, stream_seed(HOLDOUT_KEY), rng_device="cpu")
    acc = MetricAccumulator(n)
    for start in range(0, size, batch_size):
        batch = images.render(layout[start : start + batch_size])
        logits = model.forward_tokens(batch.cell_embeds, (g, g), prompt_embeds, class_embeds)
        acc.update(logits.argmax(-1).cpu().numpy().ravel(), batch.cell_classes.cpu().numpy().ravel())
    model.train(was_training)
    scores = acc.scores()
    return {"pixel_acc": scores.aacc, "miou": scores.miou}
