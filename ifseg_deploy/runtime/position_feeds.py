"""Position biases for graphs that take them as inputs: computed once per input shape on the host.

The attention biases of SegOFA depend only on the input's grid size, the prompt length and a few
MB of weights (position tables, their norms and projections). A dynamic graph that computed them
itself would redo that on every frame; an exported graph instead takes them as inputs
(:data:`~.graph_contract.BIAS_INPUTS`), and this class computes them with the model's own code
(:meth:`SegOFA.position_biases`, its fast eager form) from the weights stored in the side file,
keeping the last few shapes resident.
"""

from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch import Tensor, nn

from ..config import ArchConfig
from ..errors import IFSegError
from ..model import grid_size
from ..model.decoder import SurrogateDecoder
from ..model.encoder import Encoder
from ..model.segofa import BiasCache, position_state, stack_biases
from .graph_contract import BIAS_INPUTS

#: Input shapes whose biases stay resident (a stream has one; alternating sizes two).
CACHED_SHAPES = 2


class PositionFeeds:
    """``feeds(images, prompt_embeds)`` -> the :data:`BIAS_INPUTS` tensors of that input shape.

    Built from the position parameters of a side file (:func:`ifseg_deploy.model.segofa.position_state`).
    The encoder / decoder are created on the ``meta`` device and only their position modules get
    real weights, so no transformer layer is allocated. Results are float32 on ``device``, cached
    for the last :data:`CACHED_SHAPES` ``(grid, prompt length)`` keys.
    """

    def __init__(self, arch: ArchConfig, state: Dict[str, Tensor], device: torch.device = torch.device("cpu")):
        parts = nn.Module()  # "encoder." / "decoder." keys, as in the side file
        with torch.device("meta"):
            parts.encoder, parts.decoder = Encoder(arch), SurrogateDecoder(arch)
        wanted = position_state(parts)
        missing = sorted(set(wanted) - set(state))
        if missing:
            raise IFSegError(
                f"the side file lacks the position weights {missing[0]} (and {len(missing) - 1} more) that this "
                "graph needs as inputs; re-export with ifseg-deploy export"
            )
        parts.load_state_dict({k: state[k].float() for k in wanted}, strict=False, assign=True)
        for part in (parts.encoder, parts.decoder):
            for name in part.POSITION_MODULES:
                getattr(part, name).to(device)
        self.encoder, self.decoder = parts.encoder, parts.decoder
        self.device = device
        self._cache = BiasCache(parts, ("encoder", "decoder"), CACHED_SHAPES)

    def biases(self, grid: Tuple[int, int], text_len: int) -> Dict[str, Tensor]:
        """The three bias inputs of an ``h x w`` feature grid and an ``L``-token prompt:
        ``encoder_bias (Le, H, T, T)``, ``decoder_bias (Ld, H, 1+hw, 1+hw)``, ``cross_bias (H, 1+hw, T)``,
        ``T = hw + L``."""
        key = (tuple(grid), int(text_len))

        def build() -> Dict[str, Tensor]:
            positions, enc = self.encoder.position_biases(key[0], key[1])
            return dict(
                zip(
                    BIAS_INPUTS,
                    (t.contiguous() for t in stack_biases((enc, self.decoder.position_biases(key[0], positions)))),
                )
            )

        with torch.inference_mode():
            return self._cache.get(key, build)

    def feeds(self, images: Tensor, prompt_embeds: Tensor) -> Dict[str, Tensor]:
        """:meth:`biases` for ``images (B, 3, H, W)`` and ``prompt_embeds (1, L, C)``."""
        return self.biases(grid_size(*images.shape[2:]), prompt_embeds.shape[1])
