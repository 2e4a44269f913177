"""IFSeg's surrogate decoder: BOS + encoder image outputs, causal, one parallel pass over the grid."""

from __future__ import annotations

from typing import List, Tuple

import torch
from torch import Tensor, nn

from ..config import ArchConfig
from ..tracing import capturing_graph
from .encoder import abs_position_bias
from .positions import (
    add_resized_offset_bias,
    grid_position_ids,
    grid_rel_index,
    offset_table,
    pair_bias,
    resize_grid_vectors,
    resize_pair_bias,
)
from .stochastic import Dropout
from .transformer import MASK_VALUE, layer_stack


def seg_rel_index(grid: int, device=None) -> Tensor:
    """Index into a seg relative-position table for BOS + a ``grid x grid`` grid, ``(1+g^2, 1+g^2)``.

    Grid cells use ``grid_rel_index`` with bucket size ``grid``; row 0 / column 0 (BOS) use the
    three extra rows at the end of the table.
    """
    n = (2 * grid - 1) ** 2 + 3
    cells = grid_rel_index(grid, grid, device)
    index = torch.full((grid * grid + 1, grid * grid + 1), n - 2, dtype=cells.dtype, device=device)
    index[0, :] = n - 3
    index[0, 0] = n - 1
    index[1:, 1:] = cells
    return index


class SurrogateDecoder(nn.Module):
    """Predicts a class for every grid cell in one causal pass.

    Input: the BOS embedding followed by the encoder's image outputs (raster order). Row ``t``
    of the output predicts cell ``t`` (it sees BOS and cells ``0..t-1``). The class head is a
    bias-free projection onto the class embeddings, which are passed in (run-time vocabulary).
    """

    #: The submodules :meth:`position_biases` reads (position tables, their norms and projections).
    POSITION_MODULES = (
        "embed_seg_positions",
        "seg_pos_ln",
        "self_pos_q_linear",
        "self_pos_k_linear",
        "cross_pos_q_linear",
        "cross_pos_k_linear",
        "seg_rel_pos_table_list",
    )

    def __init__(self, cfg: ArchConfig):
        super().__init__()
        c, eps, g = cfg.embed_dim, cfg.layer_norm_eps, cfg.seg_grid
        self.cfg = cfg
        self.layernorm_embedding = nn.LayerNorm(c, eps=eps)
        self.embed_seg_positions = nn.Embedding(g * g + 1, c)
        self.seg_pos_ln = nn.LayerNorm(c, eps=eps)
        self.self_pos_q_linear = nn.Linear(c, c)
        self.self_pos_k_linear = nn.Linear(c, c)
        self.cross_pos_q_linear = nn.Linear(c, c)
        self.cross_pos_k_linear = nn.Linear(c, c)
        self.pos_scaling = (cfg.head_dim * cfg.attn_scale_factor) ** -0.5
        self.layers = layer_stack(cfg, cfg.decoder_layers, cross_attention=True)
        self.layer_norm = nn.LayerNorm(c, eps=eps)
        self.seg_rel_pos_table_list = nn.ModuleList(
            nn.Embedding((2 * g - 1) ** 2 + 3, cfg.heads) for _ in range(cfg.decoder_layers)
        )
        self.dropout = Dropout(cfg.dropout)

    def target_positions(self, size: Tuple[int, int]) -> Tensor:
        """``[seg_pos[BOS]; seg grid table resized to h x w]``, ``(1 + h*w, C)``."""
        g = self.cfg.seg_grid
        weight = self.embed_seg_positions.weight
        grid = weight[grid_position_ids(g, g, g, weight.device)]
        return torch.cat([weight[:1], resize_grid_vectors(grid, g, size)], dim=0)

    def self_biases(self, size: Tuple[int, int], queries: Tensor) -> list:
        """Per-layer self-attention bias ``(1, H, 1+hw, 1+hw)``: absolute + relative + causal mask."""
        g, heads = self.cfg.seg_grid, self.cfg.heads
        t = queries.shape[0]
        abs_bias = abs_position_bias(
            self.self_pos_q_linear, self.self_pos_k_linear, queries, queries, heads, self.pos_scaling
        )
        causal = torch.triu(torch.full((t, t), MASK_VALUE, device=queries.device, dtype=abs_bias.dtype), diagonal=1)
        masked = abs_bias + causal  # shared by every layer; equal to (abs + rel) + causal wherever the mask is 0
        if capturing_graph():  # the traceable form
            index = seg_rel_index(g, queries.device)
            return [
                (masked + resize_pair_bias(pair_bias(table.weight, index), g, size, key_first=False, lead=1)).unsqueeze(
                    0
                )
                for table in self.seg_rel_pos_table_list
            ]
        biases = []
        n = (2 * g - 1) ** 2 + 3
        for table in self.seg_rel_pos_table_list:
            bias = masked.clone()
            bos = table.weight[n - 3 :].t()[:, :, None]  # (H, 3, 1): BOS -> cell, cell -> BOS, BOS -> BOS
            bias[:, 0, 1:] += bos[:, 0]
            bias[:, 1:, 0] += bos[:, 1]
            bias[:, 0, 0] += bos[:, 2, 0]
            add_resized_offset_bias(bias[:, 1:, 1:], offset_table(table.weight, g, g), g, size)
            biases.append(bias.unsqueeze(0))
        return biases

    def position_biases(self, size: Tuple[int, int], encoder_positions: Tensor) -> Tuple[List[Tensor], Tensor]:
        """Per-layer self-attention biases and the cross-attention bias ``(1, H, 1+hw, hw+L)``;
        they depend only on shapes, weights and the encoder's position embeddings."""
        queries = self.seg_pos_ln(self.target_positions(size))
        cross = abs_position_bias(
            self.cross_pos_q_linear,
            self.cross_pos_k_linear,
            queries,
            encoder_positions,
            self.cfg.heads,
            self.pos_scaling,
        ).unsqueeze(0)
        return self.self_biases(size, queries), cross

    def forward(
        self, encoder_out: Tensor, hw: int, bos: Tensor, class_embeds: Tensor, biases: Tuple[List[Tensor], Tensor]
    ) -> Tensor:
        """Decode all grid cells at once.

        Args:
            encoder_out: ``(B, h*w + L, C)``; hw: number of grid cells; bos: ``(C,)`` embedding of ``<s>``;
            class_embeds: ``(N, C)`` class (seg-token) embeddings; biases: from :meth:`position_biases`.
        Returns:
            logits ``(B, h*w, N)``: row ``t`` scores grid cell ``t``.
        """
        b = encoder_out.shape[0]
        self_biases, cross = biases
        x = torch.cat([bos.to(encoder_out.dtype).expand(b, 1, -1), encoder_out[:, :hw]], dim=1)
        x = self.dropout(self.layernorm_embedding(x))
        cross = cross.to(x.dtype)
        for layer, bias in zip(self.layers, self_biases):
            x = layer(x, bias.to(x.dtype), encoder_out, cross)
        x = self.layer_norm(x[:, :hw])
        return torch.matmul(x, class_embeds.to(x.dtype).t())
