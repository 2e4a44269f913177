"""Which parameters image-free training updates (the reference script's freezing flags).

Frozen: the shared token embedding (``--freeze-encoder/decoder-embedding``), the ResNet and
``image_proj`` (``--freeze-entire-resnet``; image-free training never runs them). The seg
embedding (``--freeze-seg-embedding``) is not a parameter here: class embeddings are an input.
Everything else trains, including every LayerNorm, bias, position table and ``c_attn``.
"""

from __future__ import annotations

from typing import List

from torch import nn

FROZEN_PREFIXES = ("backbone.", "encoder.image_proj.", "embed_tokens.")


def is_trainable(name: str) -> bool:
    """Whether parameter ``name`` (SegOFA naming) is updated by image-free training."""
    return not name.startswith(FROZEN_PREFIXES)


def freeze_for_imfree(model: nn.Module) -> List[str]:
    """Set ``requires_grad`` per the reference recipe; return the trainable names in module order."""
    names = []
    for name, p in model.named_parameters():
        p.requires_grad_(is_trainable(name))
        if p.requires_grad:
            names.append(name)
    return names
