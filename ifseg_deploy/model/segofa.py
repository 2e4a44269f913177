"""SegOFA: ResNet backbone -> encoder (with the category prompt) -> surrogate decoder -> class logits.

One module definition serves training (``forward_tokens`` on artificial cells), the runtime
and ONNX export (``forward`` on images). The vocabulary is an input: prompt embeddings and
class embeddings are computed by the caller from the frozen token-embedding table
(:class:`ifseg_deploy.runtime.vocabulary.Vocabulary`), so categories can change without
touching weights.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

from torch import Tensor, nn

from ..config import ArchConfig
from .backbone import ResNetBackbone
from .decoder import SurrogateDecoder
from .encoder import Encoder

BOS, PAD, EOS, UNK = 0, 1, 2, 3


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

    def forward_tokens(
        self,
        image_tokens: Tensor,
        size: Tuple[int, int],
        prompt_embeds: Tensor,
        class_embeds: Tensor,
        on_stage: Optional[Callable[[str], None]] = None,
    ) -> Tensor:
        """Class logits ``(B, h*w, N)`` for image tokens ``(B, h*w, C)`` (projected features or artificial cells)."""
        encoded, positions = self.encoder(image_tokens, size, prompt_embeds)
        if on_stage is not None:
            on_stage("encoder")
        logits = self.decoder(encoded, positions, size, self.embed_tokens.weight[BOS], class_embeds)
        if on_stage is not None:
            on_stage("decoder")
        return logits

    def forward(
        self, images: Tensor, prompt_embeds: Tensor, class_embeds: Tensor, on_stage: Optional[Callable[[str], None]] = None
    ) -> Tuple[Tensor, Tensor]:
        """Segment a batch.

        Args:
            images: ``(B, 3, H, W)`` RGB normalised to [-1, 1].
            prompt_embeds: ``(1 or B, L, C)`` token embeddings of the prompt.
            class_embeds: ``(N, C)`` class (seg-token) embeddings.
            on_stage: called with "backbone", "encoder", "decoder" as each stage ends (timing).
        Returns:
            logits ``(B, h*w, N)`` and the backbone features ``(B, h*w, 1024)`` (for kNN smoothing),
            both in raster order of the ``h x w = ceil(H/16) x ceil(W/16)`` grid.
        """
        feats = self.backbone(images)
        size = (feats.shape[2], feats.shape[3])
        feats = feats.flatten(2).transpose(1, 2)
        if on_stage is not None:
            on_stage("backbone")
        logits = self.forward_tokens(self.encoder.image_proj(feats), size, prompt_embeds, class_embeds, on_stage)
        return logits, feats
