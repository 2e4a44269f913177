"""Training health: the model's pixel accuracy and mIoU on the fixed held-out set of artificial
images (:mod:`ifseg_deploy.artificial.holdout`), computed with ``forward_tokens`` on the model grid."""

from __future__ import annotations

from typing import Callable, Dict, Optional

import torch
from torch import Tensor

from ..artificial.holdout import DEFAULT_HOLDOUT_SIZE, score_holdout
from ..artificial.images import ArtificialImages
from ..model import SegOFA

__all__ = ["DEFAULT_HOLDOUT_SIZE", "holdout_metrics"]


@torch.no_grad()
def holdout_metrics(
    model: SegOFA,
    images: ArtificialImages,
    prompt_embeds: Tensor,
    class_embeds: Tensor,
    size: int = DEFAULT_HOLDOUT_SIZE,
    batch_size: int = 8,
    before_batch: Optional[Callable[[int], object]] = None,
) -> Dict[str, float]:
    """Evaluate ``model`` (in eval mode, restored afterwards) on ``size`` held-out artificial images:
    ``{"pixel_acc", "miou"}`` as fractions in 0..1.

    ``before_batch(n)`` is called before each batch of ``n`` images (progress; an exception it
    raises abandons the scoring)."""
    was_training = model.training
    model.eval()
    g = images.grid

    def predict(tokens: Tensor) -> Tensor:
        if before_batch is not None:
            before_batch(tokens.shape[0])
        return model.forward_tokens(tokens, (g, g), prompt_embeds, class_embeds)

    try:
        return score_holdout(predict, images, size, batch_size)
    finally:
        model.train(was_training)
