"""SegOFA: ResNet backbone -> encoder (with the category prompt) -> surrogate decoder -> class logits.

One module definition serves training (``forward_tokens`` on artificial cells), the runtime
and ONNX export (``forward`` on images). The vocabulary is an input: prompt embeddings and
class embeddings are computed by the caller from the frozen token-embedding table
(:class:`ifseg_deploy.runtime.vocabulary.Vocabulary`), so categories can change without
touching weights.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Dict, Hashable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..config import ArchConfig
from ..tracing import capturing_graph
from .backbone import ResNetBackbone
from .decoder import SurrogateDecoder
from .encoder import Encoder

BOS, PAD, EOS, UNK = 0, 1, 2, 3


def _compiling() -> bool:
    """True while ``torch.compile`` traces (``torch.compiler.is_compiling``, PyTorch 2.3 and later)."""
    is_compiling = getattr(torch.compiler, "is_compiling", None)
    return bool(is_compiling is not None and is_compiling())


class BiasCache:
    """Keeps the last ``size`` results of a shape-only computation, in inference mode only.

    Entries are keyed by the caller's shape key and the dtype and device of the watched submodules'
    parameters (``.to()``, ``.half()``), and stamped with each parameter's identity and version counter
    (an optimiser step, ``load_state_dict`` or a replaced parameter invalidates them). No data
    pointers: ``torch.compile`` cannot trace them. Training (autograd), graph capture (ONNX export)
    and ``torch.compile`` tracing always recompute, so a compiled graph computes the biases itself.
    The one cache of position biases: the model's own and the runtime's for graphs that take them as
    inputs (:class:`ifseg_deploy.runtime.position_feeds.PositionFeeds`).
    """

    def __init__(self, owner: nn.Module, submodules: Sequence[str], size: int = 2):
        self._owner = [owner]  # a list: not registered as a submodule
        self._submodules = tuple(submodules)
        self._size = size
        self._entries: "OrderedDict[Hashable, Tuple[tuple, Any]]" = OrderedDict()

    def _parameters(self) -> List[nn.Parameter]:
        owner = self._owner[0]
        return [p for name in self._submodules for p in getattr(owner, name).parameters()]

    def get(self, key: Hashable, build: Callable[[], Any]) -> Any:
        """``build()``, or its kept result for ``key`` (a hashable of shapes) while the weights are unchanged."""
        if not torch.is_inference_mode_enabled() or capturing_graph() or _compiling():
            return build()
        params = self._parameters()
        key = (key, tuple(sorted({(str(p.dtype), str(p.device)) for p in params})))
        stamp = tuple((id(p), p._version) for p in params)
        hit = self._entries.get(key)
        if hit is not None and hit[0] == stamp:
            self._entries.move_to_end(key)
            return hit[1]
        value = build()
        self._entries[key] = (stamp, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)
        return value


#: Position biases of one input shape: per-layer encoder biases ``(1, H, T, T)`` (``T = h*w + L``), and
#: the decoder's per-layer self-attention biases ``(1, H, 1+hw, 1+hw)`` with its cross-attention bias
#: ``(1, H, 1+hw, T)``.
PositionBiases = Tuple[List[Tensor], Tuple[List[Tensor], Tensor]]


def stack_biases(biases: PositionBiases) -> Tuple[Tensor, Tensor, Tensor]:
    """:data:`PositionBiases` as three tensors: ``(Le, H, T, T)``, ``(Ld, H, 1+hw, 1+hw)``, ``(H, 1+hw, T)``."""
    enc, (dec, cross) = biases
    return torch.cat(enc), torch.cat(dec), cross[0]


def unstack_biases(encoder: Tensor, decoder: Tensor, cross: Tensor) -> PositionBiases:
    """The inverse of :func:`stack_biases` (views, no copies)."""
    return [b.unsqueeze(0) for b in encoder.unbind(0)], (
        [b.unsqueeze(0) for b in decoder.unbind(0)],
        cross.unsqueeze(0),
    )


def position_state(model: nn.Module) -> Dict[str, Tensor]:
    """The parameters :meth:`SegOFA.position_biases` reads (the encoder's and decoder's
    ``POSITION_MODULES``), keyed as in ``model.state_dict()``; a few MB."""
    return {
        f"{part}.{name}.{key}": value
        for part in ("encoder", "decoder")
        for name in getattr(model, part).POSITION_MODULES
        for key, value in getattr(getattr(model, part), name).state_dict().items()
    }


def grid_size(height: int, width: int) -> Tuple[int, int]:
    """Feature grid of the stride-16 backbone for an ``height x width`` input: ``ceil(x / 16)``."""
    return (height - 1) // 16 + 1, (width - 1) // 16 + 1


class SegOFA(nn.Module):
    """The IFSeg segmentation model (reference semantics, plain PyTorch)."""

    def __init__(self, cfg: ArchConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = ResNetBackbone(cfg.resnet_blocks)
        self.encoder = Encoder(cfg)
        self.decoder = SurrogateDecoder(cfg)
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.embed_dim, padding_idx=PAD)
        self._bias_cache = BiasCache(self, ("encoder", "decoder"))

    def position_biases(self, size: Tuple[int, int], text_len: int) -> PositionBiases:
        """Encoder and decoder attention biases of a grid size and prompt length.

        They depend only on shapes and weights, so in inference mode the last few are kept
        (:class:`BiasCache`): a video stream at a fixed resolution computes them once.
        """

        def build():
            positions, enc = self.encoder.position_biases(size, text_len)
            return enc, self.decoder.position_biases(size, positions)

        return self._bias_cache.get((tuple(size), text_len), build)

    def forward_tokens(
        self,
        image_tokens: Tensor,
        size: Tuple[int, int],
        prompt_embeds: Tensor,
        class_embeds: Tensor,
        on_stage: Optional[Callable[[str], None]] = None,
        biases: Optional[PositionBiases] = None,
    ) -> Tensor:
        """Class logits ``(B, h*w, N)`` for image tokens ``(B, h*w, C)`` (projected features or artificial cells);
        ``biases``: this shape's :meth:`position_biases` when the caller has them (an exported graph's inputs)."""
        enc_biases, dec_biases = biases if biases is not None else self.position_biases(size, prompt_embeds.shape[1])
        encoded = self.encoder(image_tokens, prompt_embeds, enc_biases)
        if on_stage is not None:
            on_stage("encoder")
        logits = self.decoder(encoded, size[0] * size[1], self.embed_tokens.weight[BOS], class_embeds, dec_biases)
        if on_stage is not None:
            on_stage("decoder")
        return logits

    def forward(
        self,
        images: Tensor,
        prompt_embeds: Tensor,
        class_embeds: Tensor,
        on_stage: Optional[Callable[[str], None]] = None,
        biases: Optional[PositionBiases] = None,
    ) -> Tuple[Tensor, Tensor]:
        """Segment a batch.

        Args:
            images: ``(B, 3, H, W)`` RGB normalised to [-1, 1].
            prompt_embeds: ``(1 or B, L, C)`` token embeddings of the prompt.
            class_embeds: ``(N, C)`` class (seg-token) embeddings.
            on_stage: called with "backbone", "encoder", "decoder" as each stage ends (timing).
            biases: the input shape's :meth:`position_biases`, when given from outside (else computed / cached).
        Returns:
            logits ``(B, h*w, N)`` and the backbone features ``(B, h*w, 1024)`` (for kNN smoothing),
            both in raster order of the ``h x w = ceil(H/16) x ceil(W/16)`` grid.
        """
        feats = self.backbone(images)
        size = (feats.shape[2], feats.shape[3])
        feats = feats.flatten(2).transpose(1, 2)
        if on_stage is not None:
            on_stage("backbone")
        logits = self.forward_tokens(
            self.encoder.image_proj(feats), size, prompt_embeds, class_embeds, on_stage, biases
        )
        return logits, feats
