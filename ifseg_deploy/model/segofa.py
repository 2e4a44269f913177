"""SegOFA: ResNet backbone -> encoder (with the category prompt) -> surrogate decoder -> class logits.

One module definition serves training (``forward_tokens`` on artificial cells), the runtime
and ONNX export (``forward`` on images). The vocabulary is an input: prompt embeddings and
class embeddings are computed by the caller from the frozen token-embedding table
(``embed_prompt`` / ``class_embeddings``), so categories can change without touching weights.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import torch
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

    def embed_prompt(self, token_ids: Sequence[int]) -> Tensor:
        """Token embeddings of a prompt, ``(1, L, C)``."""
        ids = torch.as_tensor(list(token_ids), dtype=torch.long, device=self.embed_tokens.weight.device)
        return self.embed_tokens(ids).unsqueeze(0)

    def class_embeddings(self, token_lists: Sequence[Sequence[int]]) -> Tensor:
        """Class embeddings = mean token embedding of each class name, ``(N, C)`` (IFSeg's init)."""
        weight = self.embed_tokens.weight
        rows = [weight[torch.as_tensor(list(ids), dtype=torch.long, device=weight.device)].float().mean(0) for ids in token_lists]
        return torch.stack(rows).to(weight.dtype)

    def forward_tokens(self, image_tokens: Tensor, size: Tuple[int, int], prompt_embeds: Tensor, class_embeds: Tensor) -> Tensor:
        """Class logits ``(B, h*w, N)`` for image tokens ``(B, h*w, C)`` (projected features or artificial cells)."""
        encoded, positions = self.encoder(image_tokens, size, prompt_embeds)
        return self.decoder(encoded, positions, size, self.embed_tokens.weight[BOS], class_embeds)

    def forward(self, images: Tensor, prompt_embeds: Tensor, class_embeds: Tensor) -> Tuple[Tensor, Tensor]:
        """Segment a batch.

        Args:
            images: ``(B, 3, H, W)`` RGB normalised to [-1, 1].
            prompt_embeds: ``(1 or B, L, C)`` from :meth:`embed_prompt`.
            class_embeds: ``(N, C)`` from :meth:`class_embeddings` or a checkpoint.
        Returns:
            logits ``(B, h*w, N)`` and the backbone features ``(B, h*w, 1024)`` (for kNN smoothing),
            both in raster order of the ``h x w = ceil(H/16) x ceil(W/16)`` grid.
        """
        feats = self.backbone(images)
        size = (feats.shape[2], feats.shape[3])
        feats = feats.flatten(2).transpose(1, 2)
        logits = self.forward_tokens(self.encoder.image_proj(feats), size, prompt_embeds, class_embeds)
        return logits, feats
