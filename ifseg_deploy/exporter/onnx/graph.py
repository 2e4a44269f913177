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

from ...model import SegOFA, grid_size
from ...model.segofa import stack_biases, unstack_biases
from ...postprocess.scores import grid_scores
from ...postprocess.upsample import upsample_argmax
from ...preprocess import normalize
from ...runtime.graph_contract import BIAS_INPUTS, GraphContract
from ...runtime.vocabulary import PreparedVocabulary
from .scene import synthetic_scene


class ExportGraph(nn.Module):
    """SegOFA's ``forward`` plus the contract's optional post-processing; inputs and outputs in contract order.

    A contract with ``bias_inputs`` makes the position biases graph inputs (``encoder_bias``,
    ``decoder_bias``, ``cross_bias`` after the vocabulary); otherwise the graph computes them.
    """

    def __init__(self, model: SegOFA, contract: GraphContract):
        super().__init__()
        self.model = model
        self.contract = contract

    def forward(self, images: Tensor, prompt_embeds: Tensor, class_embeds: Tensor, *rest: Tensor) -> Tuple[Tensor, ...]:
        biases = None
        if self.contract.bias_inputs:
            biases, rest = unstack_biases(*rest[:3]), rest[3:]
        logits, feats = self.model(images, prompt_embeds, class_embeds, biases=biases)
        outputs = [logits, feats]
        scores = logits
        if self.contract.knn_iters:
            _, scores = grid_scores(logits, feats, self.contract.knn_k, self.contract.knn_iters, backend="torch")
            outputs.append(scores)
        if self.contract.upsample:
            output_size = rest[0]
            grid = grid_size(images.shape[2], images.shape[3])
            outputs.append(upsample_argmax(scores, grid, (output_size[0], output_size[1])))
        return tuple(outputs)

    def inputs(
        self, images: Tensor, prompt_embeds: Tensor, class_embeds: Tensor, output_size: Optional[Tuple[int, int]] = None
    ) -> Dict[str, Tensor]:
        """The graph's inputs by name (:meth:`GraphContract.feeds`), with this shape's position biases
        from the PyTorch model when the graph takes them."""
        biases = None
        if self.contract.bias_inputs:
            with torch.inference_mode():
                stacked = stack_biases(self.model.position_biases(grid_size(*images.shape[2:]), prompt_embeds.shape[1]))
            biases = {
                name: t.clone() for name, t in zip(BIAS_INPUTS, stacked)
            }  # plain tensors, usable outside inference mode
        return self.contract.feeds(images, prompt_embeds, class_embeds, output_size, biases)


def sample_inputs(
    graph: ExportGraph, vocab: PreparedVocabulary, batch: int, height: int, width: int, seed: int = 0
) -> Dict[str, Tensor]:
    """Example inputs of ``graph``: ``batch`` photo-like scenes
    (:func:`~ifseg_deploy.exporter.onnx.scene.synthetic_scene`, seeds ``seed``, ``seed + 1``, ...) of
    ``height x width`` pixels, normalised as the model's input, the embeddings of a real category list, and an
    output size other than the input's."""
    images = torch.stack([normalize(synthetic_scene(height, width, seed + i)) for i in range(batch)])
    return graph.inputs(
        images,
        vocab.prompt_embeds.detach().float().cpu(),
        vocab.class_embeds.detach().float().cpu(),
        (height * 5 // 4, width * 3 // 4),
    )
