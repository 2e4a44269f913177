"""Read the fairseq state-dict layout of official OFA and IFSeg checkpoints.

The architecture is inferred from tensor shapes (widths, layer counts, heads from the
relative-position tables, ResNet depth from the stage-3 block count); the pickled config is
read only for values no tensor carries (the encoder's original patch size, attention scale).
"""

from __future__ import annotations

import math
import re
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
from torch import Tensor

from ..config import ArchConfig
from ..errors import IFSegError

#: Tensors IFSeg adds to OFA; a plain OFA checkpoint lacks them and gets them freshly initialised.
IFSEG_ONLY_PREFIXES = ("decoder.embed_seg_positions.", "decoder.seg_pos_ln.", "decoder.seg_rel_pos_table_list.")


def _cfg_value(cfg: Any, section: str, name: str) -> Any:
    """``cfg[section].name`` from a fairseq cfg dict (section may be a dict or a Namespace)."""
    if not isinstance(cfg, Mapping):
        return None
    sec = cfg.get(section)
    if isinstance(sec, Mapping):
        return sec.get(name)
    return getattr(sec, name, None)


def _count(sd: Mapping[str, Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd for m in [rx.match(k)] if m})


def _require(sd: Mapping[str, Tensor], key: str, what: str) -> Tensor:
    if key not in sd:
        raise IFSegError(f"{what} is not an OFA/IFSeg checkpoint (no '{key}'); pass an ofa_*.pt, IFSeg or ifseg-deploy file")
    return sd[key]


def infer_arch(sd: Mapping[str, Tensor], cfg: Any = None, what: str = "the checkpoint") -> ArchConfig:
    """Infer the :class:`ArchConfig` of a fairseq-layout OFA / SegOFA state dict."""
    c = _require(sd, "encoder.layer_norm.weight", what).shape[0]
    ffn = _require(sd, "encoder.layers.0.fc1.weight", what).shape[0]
    heads = _require(sd, "encoder.token_rel_pos_table_list.0.weight", what).shape[1]
    embed = sd.get("encoder.embed_tokens.weight", sd.get("decoder.embed_tokens.weight"))
    if embed is None:
        raise IFSegError(f"{what} has no token embedding table; it is not an OFA/IFSeg checkpoint")
    blocks = tuple(_count(sd, rf"encoder\.embed_images\.layer{i}\.(\d+)\.conv1\.weight") for i in (1, 2, 3))
    if min(blocks) == 0:
        raise IFSegError(f"{what} has no ResNet backbone (encoder.embed_images); it is not an OFA/IFSeg checkpoint")
    token_rows = sd["encoder.token_rel_pos_table_list.0.weight"].shape[0]
    image_rows = _require(sd, "encoder.image_rel_pos_table_list.0.weight", what).shape[0]
    image_bucket = int(round((math.sqrt(image_rows - 3) + 1) / 2))
    seg_rows = sd.get("decoder.seg_rel_pos_table_list.0.weight")
    if seg_rows is not None:
        seg_grid = int(round((math.sqrt(seg_rows.shape[0] - 3) + 1) / 2))
    else:
        seg_grid = 32  # IFSeg fine-tunes at patch_image_size 512 whatever OFA was pre-trained at
    orig = _cfg_value(cfg, "model", "orig_patch_image_size") if seg_rows is not None else None
    scale = _cfg_value(cfg, "model", "attn_scale_factor")
    dropout = _cfg_value(cfg, "model", "dropout")
    drop_path = _cfg_value(cfg, "model", "encoder_drop_path_rate")
    return ArchConfig(
        embed_dim=int(c),
        ffn_dim=int(ffn),
        encoder_layers=_count(sd, r"encoder\.layers\.(\d+)\."),
        decoder_layers=_count(sd, r"decoder\.layers\.(\d+)\."),
        heads=int(heads),
        resnet_blocks=blocks,
        vocab_size=int(embed.shape[0]),
        max_text_positions=int(_require(sd, "encoder.embed_positions.weight", what).shape[0]),
        token_bucket_size=int((token_rows + 1) // 2),
        image_bucket_size=image_bucket,
        encoder_grid=int(orig) // 16 if isinstance(orig, int) and orig >= 16 else seg_grid,
        seg_grid=seg_grid,
        attn_scale_factor=float(scale) if isinstance(scale, (int, float)) else 2.0,
        dropout=float(dropout) if isinstance(dropout, (int, float)) else 0.1,
        drop_path=float(drop_path) if isinstance(drop_path, (int, float)) else 0.1,
    )


def reference_key(ours: str) -> str:
    """The fairseq key a parameter of :class:`SegOFA` is stored under."""
    if ours.startswith("backbone."):
        return "encoder.embed_images." + ours[len("backbone."):]
    if ours == "embed_tokens.weight":
        return "encoder.embed_tokens.weight"
    if ours.startswith("encoder.layers."):
        return ours.replace(".self_attn_ln.", ".attn_ln.")
    return ours


def convert_state_dict(
    sd: Mapping[str, Tensor], target: Mapping[str, Tensor], what: str = "the checkpoint"
) -> Tuple[Dict[str, Tensor], list]:
    """Map a fairseq state dict onto SegOFA's keys (float32).

    Returns the converted dict and the list of IFSeg-only keys that were absent (plain OFA);
    any other missing key is an error.
    """
    out: Dict[str, Tensor] = {}
    missing = []
    for key, ref in target.items():
        src = reference_key(key)
        value = sd.get(src)
        if value is None and key == "embed_tokens.weight":
            value = sd.get("decoder.embed_tokens.weight")
        if value is None:
            if src.startswith(IFSEG_ONLY_PREFIXES):
                missing.append(key)
                continue
            raise IFSegError(f"{what} lacks '{src}'; it is not a complete OFA/IFSeg checkpoint")
        if tuple(value.shape) != tuple(ref.shape):
            raise IFSegError(f"{what}: '{src}' has shape {tuple(value.shape)}, expected {tuple(ref.shape)}; the file is inconsistent")
        out[key] = value.to(torch.float32)
    return out, missing


def stored_class_embeddings(sd: Mapping[str, Tensor]) -> Optional[Tensor]:
    """The IFSeg seg-token embedding (tied class head), or None for a plain OFA checkpoint."""
    for key in ("decoder.seg_projection.weight", "decoder.seg_embed_tokens.weight", "encoder.seg_embed_tokens.weight"):
        if key in sd:
            return sd[key].to(torch.float32)
    return None


def stored_categories(cfg: Any) -> Optional[list]:
    """``--category-list`` of an IFSeg run, if the checkpoint's config has it."""
    text = _cfg_value(cfg, "task", "category_list")
    if not isinstance(text, str) or not text.strip():
        return None
    return [c.strip() for c in text.split(",")]


def stored_prompt_prefix(cfg: Any) -> Optional[str]:
    text = _cfg_value(cfg, "task", "prompt_prefix")
    return text if isinstance(text, str) and text.strip() else None
