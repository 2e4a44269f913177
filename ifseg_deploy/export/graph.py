"""The exported network: SegOFA with the vocabulary as an input, plus optional in-graph
post-processing, as one traceable module. Names, shapes and options are the
:class:`~ifseg_deploy.runtime.graph_contract.GraphContract`'s; the post-processing is the host's
own (:func:`~ifseg_deploy.postprocess.scores.grid_scores`, :func:`~ifseg_deploy.postprocess.upsample.upsample_argmax`).
The decoder runs over all grid cells in one pass (causal mask), so the graph has no loop.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from ..model import SegOFA, grid_size
from ..postprocess.scores import grid_scores
from ..postprocess.upsample import upsample_argmax
from ..preprocess import normalize
from ..runtime.graph_contract import GraphContract
from ..runtime.vocabulary import PreparedVocabulary
from .scene import synthetic_scene


class ExportGraph(nn.Module):
    """SegOFA's ``forward`` plus the contract's optional post-processing; outputs in contract order."""

    def __init__(self, model: SegOFA, contract: GraphContract):
        super().__init__()
        self.model = model
        self.contract = contract

    def forward(self, images: Tensor, prompt_embeds: Tensor, class_embeds: Tensor,
                output_size: Optional[Tensor] = None) -> Tuple[Tensor, ...]:
        logits, feats = self.model(images, prompt_embeds, class_embeds)
        outputs = [logits, feats]
        scores = logits
        if self.contract.knn_iters:
            _, scores = grid_scores(logits, feats, self.contract.knn_k, self.contract.knn_iters, backend="torch")
            outputs.append(scores)
        if self.contract.upsample:
            grid = grid_size(images.shape[2], images.shape[3])
            outputs.append(upsample_argmax(scores, grid, (output_size[0], output_size[1])))
        return tuple(outputs)


def sample_inputs(contract: GraphContract, vocab: PreparedVocabulary, batch: int, height: int, width: int,
                  seed: int = 0) -> Dict[str, Tensor]:
    """Example inputs: ``batch`` photo-like scenes (:func:`~ifseg_deploy.export.scene.synthetic_scene`,
    seeds ``seed``, ``seed + 1``, ...) of ``height x width`` pixels, normalised as the model's input,
    the embeddings of a real category list, and an output size other than the input's."""
    images = torch.stack([normalize(synthetic_scene(height, width, seed + i)) for i in range(batch)])
    return contract.feeds(images, vocab.prompt_embeds.detach().float().cpu(), vocab.class_embeds.detach().float().cpu(),
                           (height * 5 // 4, width * 3 // 4))
