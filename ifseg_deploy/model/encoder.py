"""OFA's multimodal encoder: image tokens then prompt tokens, position biases, pre-norm layers."""

from __future__ import annotations

from typing import List, Tuple

import torch
from torch import Tensor, nn

from ..config import ArchConfig
from ..errors import IFSegError
from ..tracing import capturing_graph
from .positions import (
    add_resized_offset_bias,
    grid_position_ids,
    grid_rel_index,
    offset_table,
    pair_bias,
    resize_grid_vectors,
    resize_pair_bias,
    token_rel_index,
)
from .stochastic import Dropout
from .transformer import layer_stack


def abs_position_bias(
    q_proj: nn.Linear, k_proj: nn.Linear, queries: Tensor, keys: Tensor, heads: int, scaling: float
) -> Tensor:
    """``(Q Wq + bq) * s @ (K Wk + bk)^T`` per head: ``(Tq, C), (Tk, C) -> (H, Tq, Tk)``."""
    tq, tk = queries.shape[0], keys.shape[0]
    q = (q_proj(queries) * scaling).reshape(tq, heads, -1).transpose(0, 1)
    k = k_proj(keys).reshape(tk, heads, -1).transpose(0, 1)
    return torch.matmul(q, k.transpose(-1, -2))


def grid_addressable(cfg: ArchConfig, h: int, w: int) -> bool:
    """Whether OFA's image position table can address an ``h x w`` grid.

    Grids of at most ``encoder_grid**2`` cells index the table directly, cell ``(r, c)`` at
    ``r * image_bucket_size + c + 1`` (OFA's ``image_position_idx``), so a tall, thin grid runs past
    its ``image_bucket_size**2 + 1`` rows; larger grids are resized from the whole table and always fit.
    """
    g, stride = cfg.encoder_grid, cfg.image_bucket_size
    return h * w > g * g or (h - 1) * stride + w < stride * stride + 1


def addressable_grid(cfg: ArchConfig, h: int, w: int) -> Tuple[int, int]:
    """The smallest ``(h, w')`` grid with ``w' >= w`` that :func:`grid_addressable` accepts: a grid
    too tall for the table becomes one with more than ``encoder_grid**2`` cells (resized table)."""
    if grid_addressable(cfg, h, w):
        return h, w
    return h, max(w, cfg.encoder_grid**2 // h + 1)


def check_input_shape(cfg: ArchConfig, size: Tuple[int, int], text_len: int) -> None:
    """Reject grids the image position table cannot address and prompts longer than the text table."""
    h, w = size
    if not grid_addressable(cfg, h, w):
        raise IFSegError(
            f"a {h}x{w} feature grid is too elongated for OFA's image position table; crop the image closer to square"
        )
    if text_len > cfg.max_text_positions:
        raise IFSegError(
            f"the prompt has {text_len} tokens, more than the {cfg.max_text_positions} the model supports; use fewer "
            f"categories"
        )


class Encoder(nn.Module):
    """Embeds image tokens and prompt embeddings and runs the encoder layers.

    Image tokens come first, then text. Positions enter only as attention biases: an absolute
    part shared by all layers and a per-layer relative part on the image-image and text-text
    blocks.
    """

    #: The submodules :meth:`position_biases` reads (position tables, their norms and projections).
    POSITION_MODULES = (
        "embed_image_positions",
        "image_pos_ln",
        "embed_positions",
        "pos_ln",
        "pos_q_linear",
        "pos_k_linear",
        "token_rel_pos_table_list",
        "image_rel_pos_table_list",
    )

    def __init__(self, cfg: ArchConfig):
        super().__init__()
        c, eps = cfg.embed_dim, cfg.layer_norm_eps
        self.cfg = cfg
        self.image_proj = nn.Linear(1024, c)
        self.type_embedding = nn.Embedding(2, c)
        self.layernorm_embedding = nn.LayerNorm(c, eps=eps)
        self.patch_layernorm_embedding = nn.LayerNorm(c, eps=eps)
        self.embed_positions = nn.Embedding(cfg.max_text_positions, c)
        self.embed_image_positions = nn.Embedding(cfg.image_bucket_size**2 + 1, c)
        self.pos_ln = nn.LayerNorm(c, eps=eps)
        self.image_pos_ln = nn.LayerNorm(c, eps=eps)
        self.pos_q_linear = nn.Linear(c, c)
        self.pos_k_linear = nn.Linear(c, c)
        self.pos_scaling = (cfg.head_dim * cfg.attn_scale_factor) ** -0.5
        self.layers = layer_stack(cfg, cfg.encoder_layers, cross_attention=False)
        self.layer_norm = nn.LayerNorm(c, eps=eps)
        self.token_rel_pos_table_list = nn.ModuleList(
            nn.Embedding(2 * cfg.token_bucket_size - 1, cfg.heads) for _ in range(cfg.encoder_layers)
        )
        self.image_rel_pos_table_list = nn.ModuleList(
            nn.Embedding((2 * cfg.image_bucket_size - 1) ** 2 + 3, cfg.heads) for _ in range(cfg.encoder_layers)
        )
        self.dropout = Dropout(cfg.dropout)

    def image_positions(self, size: Tuple[int, int]) -> Tensor:
        """Absolute image position vectors of an ``h x w`` grid, ``(h*w, C)`` (before their LayerNorm).

        Grids of more than ``encoder_grid**2`` cells get the resized ``encoder_grid`` table,
        smaller ones a direct lookup. A traced graph computes both and selects at run time.
        """
        h, w = size
        g, stride = self.cfg.encoder_grid, self.cfg.image_bucket_size
        device = self.embed_image_positions.weight.device
        if capturing_graph():
            last = torch.tensor(self.embed_image_positions.num_embeddings - 1, device=device)
            ids = torch.minimum(
                grid_position_ids(h, w, stride, device), last
            )  # Min, not an integer Clip: TensorRT-friendly
            resized = resize_grid_vectors(self.embed_image_positions(grid_position_ids(g, g, stride, device)), g, size)
            return torch.where(torch.as_tensor(h * w > g * g), resized, self.embed_image_positions(ids))
        if h * w > g * g:
            table = self.embed_image_positions(grid_position_ids(g, g, stride, device))
            return resize_grid_vectors(table, g, size)
        return self.embed_image_positions(grid_position_ids(h, w, stride, device))

    def position_embeddings(self, size: Tuple[int, int], text_len: int) -> Tensor:
        """``[image_pos_ln(image positions); pos_ln(text positions)]``, ``(h*w + L, C)``."""
        if not capturing_graph():
            check_input_shape(self.cfg, size, text_len)
        text = self.embed_positions.weight[:text_len]
        return torch.cat([self.image_pos_ln(self.image_positions(size)), self.pos_ln(text)], dim=0)

    def layer_biases(self, size: Tuple[int, int], text_len: int, positions: Tensor) -> List[Tensor]:
        """Per-layer attention bias ``(1, H, T, T)``: shared absolute part + that layer's relative part."""
        hw = size[0] * size[1]
        device = positions.device
        abs_bias = abs_position_bias(
            self.pos_q_linear, self.pos_k_linear, positions, positions, self.cfg.heads, self.pos_scaling
        )
        g, bucket = self.cfg.encoder_grid, self.cfg.image_bucket_size
        txt_index = token_rel_index(text_len, self.cfg.token_bucket_size, device=device)
        biases = []
        for img_table, txt_table in zip(self.image_rel_pos_table_list, self.token_rel_pos_table_list):
            txt = pair_bias(txt_table.weight, txt_index)
            if capturing_graph():  # the traceable form and one static block structure for the graph
                img = resize_pair_bias(
                    pair_bias(img_table.weight, grid_rel_index(g, bucket, device)), g, size, key_first=True
                )
                heads = img.shape[0]
                top = torch.cat([img, img.new_zeros(heads, hw, text_len)], dim=-1)
                bottom = torch.cat([txt.new_zeros(heads, text_len, hw), txt], dim=-1)
                bias = abs_bias + torch.cat([top, bottom], dim=1)
            else:  # the same sums, added in place to the diagonal blocks (no zero blocks, no copies)
                bias = abs_bias.clone()
                add_resized_offset_bias(bias[:, :hw, :hw], offset_table(img_table.weight, bucket, g), g, size)
                bias[:, hw:, hw:] += txt
            biases.append(bias.unsqueeze(0))
        return biases

    def position_biases(self, size: Tuple[int, int], text_len: int) -> Tuple[Tensor, List[Tensor]]:
        """Everything that depends only on shapes and weights: the position embeddings
        ``(h*w + L, C)`` and the per-layer attention biases."""
        positions = self.position_embeddings(size, text_len)
        return positions, self.layer_biases(size, text_len, positions)

    def forward(self, image_tokens: Tensor, prompt_embeds: Tensor, biases: List[Tensor]) -> Tensor:
        """Encode.

        Args:
            image_tokens: ``(B, h*w, C)`` image features after ``image_proj`` (or artificial cells).
            prompt_embeds: ``(B or 1, L, C)`` token embeddings of the prompt.
            biases: per-layer attention biases from :meth:`position_biases`.
        Returns:
            encoder output ``(B, h*w + L, C)`` after the final LayerNorm.
        """
        b = image_tokens.shape[0]
        x_img = self.patch_layernorm_embedding(image_tokens + self.type_embedding.weight[1])
        x_txt = self.layernorm_embedding(prompt_embeds + self.type_embedding.weight[0])
        x = self.dropout(torch.cat([x_img, x_txt.expand(b, -1, -1)], dim=1))
        for layer, bias in zip(self.layers, biases):
            x = layer(x, bias.to(x.dtype))
        return self.layer_norm(x)
