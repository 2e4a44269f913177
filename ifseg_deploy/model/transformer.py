"""OFA's attention and pre-norm transformer layer (shared by the encoder and the decoder)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..tracing import capturing_graph
from .stochastic import Dropout, DropPath

#: Additive value for masked attention logits: finite (no -inf anywhere, FP16-safe) and
#: large enough that exp() underflows to exactly 0 in float32 and float16.
MASK_VALUE = -30000.0


class Attention(nn.Module):
    """Multi-head attention with an additive bias, ``(2d)^-0.5`` scaling and per-head output scales.

    ``logits = (x Wq + bq) * s @ (y Wk + bk)^T + bias``; the softmax runs in float32; each head's
    output is multiplied by ``c_attn[h]`` before ``out_proj``. In inference (no autograd, no graph
    capture) the same attention runs as one fused ``scaled_dot_product_attention`` call with the
    bias as its additive mask: equal up to float rounding (about 1e-6 relative) and faster on CPU.
    """

    def __init__(self, dim: int, heads: int, scale_factor: float = 2.0, dropout: float = 0.0):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.scaling = (self.head_dim * scale_factor) ** -0.5
        self.dropout = dropout
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.c_attn = nn.Parameter(torch.ones(heads))

    def _split(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.reshape(b, t, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: Tensor, memory: Tensor, bias: Tensor) -> Tensor:
        """``x (B, Tq, C)``, ``memory (B, Tk, C)``, ``bias`` broadcastable to ``(B, H, Tq, Tk)``."""
        q = self._split(self.q_proj(x) * self.scaling)
        k = self._split(self.k_proj(memory))
        v = self._split(self.v_proj(memory))
        if torch.is_inference_mode_enabled() and not capturing_graph():
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1.0)
        else:
            out = self.exact_attention(q, k, v, bias)
        out = out * self.c_attn.to(v.dtype)[:, None, None]
        b, _, t, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, t, -1))

    def exact_attention(self, q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
        """The reference's attention on scaled queries ``(B, H, Tq, D)``: explicit logits, float32 softmax."""
        logits = torch.matmul(q, k.transpose(-1, -2)) + bias
        probs = torch.softmax(logits.float(), dim=-1).to(v.dtype)
        probs = F.dropout(probs, self.dropout, self.training)
        return torch.matmul(probs, v)


def _gelu(x: Tensor) -> Tensor:
    return F.gelu(x.float()).to(x.dtype)


class TransformerLayer(nn.Module):
    """OFA pre-norm layer: self-attention, optional cross-attention, FFN with an inner LayerNorm.

    Every sub-block is ``x + DropPath(Dropout(post_ln(block(pre_ln(x)))))``, except the FFN whose
    LayerNorm sits on the hidden activation: ``fc2(ffn_ln(GELU(fc1(LN(x)))))``.
    """

    def __init__(
        self,
        dim: int,
        ffn_dim: int,
        heads: int,
        cross_attention: bool,
        scale_factor: float = 2.0,
        dropout: float = 0.1,
        drop_path: float = 0.0,
        eps: float = 1e-5,
    ):
        super().__init__()
        self.self_attn = Attention(dim, heads, scale_factor)
        self.self_attn_layer_norm = nn.LayerNorm(dim, eps=eps)
        self.self_attn_ln = nn.LayerNorm(dim, eps=eps)
        if cross_attention:
            self.encoder_attn = Attention(dim, heads, scale_factor)
            self.encoder_attn_layer_norm = nn.LayerNorm(dim, eps=eps)
            self.cross_attn_ln = nn.LayerNorm(dim, eps=eps)
        else:
            self.encoder_attn = None
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.ffn_layernorm = nn.LayerNorm(ffn_dim, eps=eps)
        self.fc2 = nn.Linear(ffn_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim, eps=eps)
        self.dropout = Dropout(dropout)
        self.drop_path = DropPath(drop_path)

    def _residual(self, x: Tensor, y: Tensor) -> Tensor:
        return x + self.drop_path(self.dropout(y))

    def forward(
        self,
        x: Tensor,
        self_bias: Tensor,
        memory: Optional[Tensor] = None,
        cross_bias: Optional[Tensor] = None,
    ) -> Tensor:
        h = self.self_attn_layer_norm(x)
        x = self._residual(x, self.self_attn_ln(self.self_attn(h, h, self_bias)))
        if self.encoder_attn is not None:
            h = self.encoder_attn_layer_norm(x)
            x = self._residual(x, self.cross_attn_ln(self.encoder_attn(h, memory, cross_bias)))
        h = _gelu(self.fc1(self.final_layer_norm(x)))
        return self._residual(x, self.fc2(self.ffn_layernorm(h)))


def layer_stack(cfg, count: int, cross_attention: bool) -> nn.ModuleList:
    """``count`` layers with drop-path rates rising linearly from 0 to ``cfg.drop_path``."""
    rates = torch.linspace(
        0, cfg.drop_path, count, device="cpu"
    ).tolist()  # plain numbers, also when built on the meta device
    return nn.ModuleList(
        TransformerLayer(
            cfg.embed_dim,
            cfg.ffn_dim,
            cfg.heads,
            cross_attention,
            cfg.attn_scale_factor,
            cfg.dropout,
            r,
            cfg.layer_norm_eps,
        )
        for r in rates
    )
