"""Inference-only rewrites of a loaded SegOFA: batch norm folded into the convolutions, and
per-stage reduced precision with weights converted once.

Both return the same network function up to float rounding; neither is used for training or
export (the folded backbone has no batch-norm buffers, the casts change the weights' dtype).
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor, nn

from .backbone import Bottleneck, FrozenBatchNorm2d, ResNetBackbone
from .segofa import SegOFA

#: Stages a reduced precision can be applied to, in pipeline order: the ResNet, then every
#: transformer linear layer (q/k/v/out projections and the FFN). LayerNorm, softmax, GELU,
#: the attention and its position-bias path and the class head always stay float32.
CAST_STAGES = ("backbone", "linears")
#: The stages of ``--precision bf16``: the backbone and the linear layers, where the matrix
#: products are; the logits then stay well inside an fp16 export's gate. Attention (SDPA) stays
#: float32: in bf16 it is slower on AVX512-BF16 CPUs.
BF16_STAGES: Tuple[str, ...] = ("backbone", "linears")


def fold_conv_bn(conv: nn.Conv2d, bn: FrozenBatchNorm2d) -> nn.Conv2d:
    """``bn(conv(x))`` as one convolution: ``W' = W * s``, ``b' = beta - mean * s`` with
    ``s = gamma / sqrt(var + eps)`` (per output channel). Exact up to float32 rounding."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        bias=True,
    ).to(conv.weight)
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        conv_bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
        fused.bias.copy_(bn.bias + (conv_bias - bn.running_mean) * scale)
    return fused.requires_grad_(False)


def fold_batchnorm(backbone: ResNetBackbone) -> ResNetBackbone:
    """Fold every frozen batch norm of the backbone into the convolution before it, in place
    (the batch norms become ``nn.Identity``). Returns ``backbone``."""
    pairs = [(backbone, "conv1", "bn1")]
    for module in backbone.modules():
        if isinstance(module, Bottleneck):
            pairs += [(module, f"conv{i}", f"bn{i}") for i in (1, 2, 3)]
            if module.downsample is not None:
                pairs.append((module.downsample, "0", "1"))
    for owner, conv, bn in pairs:
        bn_module = getattr(owner, bn)
        if isinstance(bn_module, FrozenBatchNorm2d):
            setattr(owner, conv, fold_conv_bn(getattr(owner, conv), bn_module))
            setattr(owner, bn, nn.Identity())
    return backbone


class CastIsland(nn.Module):
    """Runs ``module`` (its weights already in ``dtype``) on inputs cast to ``dtype``; returns
    float32. The weights are converted once, when the island is made, not on every call."""

    def __init__(self, module: nn.Module, dtype: torch.dtype, channels_last: bool = False):
        super().__init__()
        self.module = module.to(dtype)
        self.dtype = dtype
        self.channels_last = channels_last
        if channels_last:
            self.module.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> Tensor:
        x = x.to(self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.module(x).float()


def cast_stages(model: SegOFA, dtype: torch.dtype, stages: Tuple[str, ...] = BF16_STAGES) -> SegOFA:
    """Run the named :data:`CAST_STAGES` of ``model`` in ``dtype`` (in place; returns ``model``).

    ``backbone``: the whole ResNet (fold the batch norms first); ``linears``: every linear layer
    of the encoder / decoder transformer layers and the image projection. Activations between
    stages, LayerNorm, softmax, GELU and the attention-bias path stay float32.
    Raises ``ValueError`` for an unknown stage name.
    """
    unknown = set(stages) - set(CAST_STAGES)
    if unknown:
        raise ValueError(f"unknown stage(s) {sorted(unknown)}; choose from {CAST_STAGES}")
    if "backbone" in stages and not isinstance(model.backbone, CastIsland):
        model.backbone = CastIsland(model.backbone, dtype, channels_last=True)
    if "linears" in stages:
        model.encoder.image_proj = _cast_linear(model.encoder.image_proj, dtype)
        for layer in list(model.encoder.layers) + list(model.decoder.layers):
            for attn in (layer.self_attn, layer.encoder_attn):
                if attn is not None:
                    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
                        setattr(attn, name, _cast_linear(getattr(attn, name), dtype))
            layer.fc1 = _cast_linear(layer.fc1, dtype)
            layer.fc2 = _cast_linear(layer.fc2, dtype)
    return model


def _cast_linear(linear: nn.Module, dtype: torch.dtype) -> nn.Module:
    return linear if isinstance(linear, CastIsland) else CastIsland(linear, dtype)
