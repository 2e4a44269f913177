"""Read the fairseq state-dict layout of official OFA and IFSeg checkpoints.

The architecture is inferred from tensor shapes (widths, layer counts, heads from the
relative-position tables, ResNet depth from the stage-3 block count); the stored settings
(:mod:`.fairseq_config`) are read only for values no tensor carries (the encoder's original
patch size, attention scale, dropout rates).

Weights: ``state["model"]`` (or a bare state dict), or fairseq's EMA copy in
``state["extra_state"]["ema"]`` (``"ema_fp32_params"`` preferred when present, as OFA's
trainer does with ``use_ema_weights_to_init_param``).
"""

from __future__ import annotations

import math
import re
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
from torch import Tensor

from ..config import ArchConfig
from ..errors import IFSegError
from .fairseq_config import StoredSettings

#: Tensors IFSeg adds to OFA; a plain OFA checkpoint lacks them and gets them freshly initialised.
IFSEG_ONLY_PREFIXES = ("decoder.embed_seg_positions.", "decoder.seg_pos_ln.", "decoder.seg_rel_pos_table_list.")


def _count(sd: Mapping[str, Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd for m in [rx.match(k)] if m})


def _require(sd: Mapping[str, Tensor], key: str, what: str) -> Tensor:
    if key not in sd:
        raise IFSegError(
            f"{what} is not an OFA/IFSeg checkpoint (no '{key}'); pass an ofa_*.pt, IFSeg or ifseg-deploy file"
        )
    return sd[key]


def infer_arch(
    sd: Mapping[str, Tensor], settings: StoredSettings = StoredSettings("none"), what: str = "the checkpoint"
) -> ArchConfig:
    """Infer the :class:`ArchConfig` of a fairseq-layout OFA / SegOFA state dict.

    Settings the checkpoint does not store keep :class:`ArchConfig`'s defaults (OFA's); the
    encoder grid of an IFSeg checkpoint without ``orig_patch_image_size`` is its seg grid.
    """
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
    orig = settings.orig_patch_image_size if seg_rows is not None else None
    stored = dict(attn_scale_factor=settings.attn_scale_factor, dropout=settings.dropout, drop_path=settings.drop_path)
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
        encoder_grid=orig // 16 if orig and orig >= 16 else seg_grid,
        seg_grid=seg_grid,
        **{k: v for k, v in stored.items() if v is not None},
    )


def reference_key(ours: str) -> str:
    """The fairseq key a parameter of :class:`SegOFA` is stored under."""
    if ours.startswith("backbone."):
        return "encoder.embed_images." + ours[len("backbone.") :]
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
            raise IFSegError(
                f"{what}: '{src}' has shape {tuple(value.shape)}, expected {tuple(ref.shape)}; the file is inconsistent"
            )
        out[key] = value.to(torch.float32)
    return out, missing


def stored_class_embeddings(sd: Mapping[str, Tensor]) -> Optional[Tensor]:
    """The IFSeg seg-token embedding (tied class head), or None for a plain OFA checkpoint."""
    for key in ("decoder.seg_projection.weight", "decoder.seg_embed_tokens.weight", "encoder.seg_embed_tokens.weight"):
        if key in sd:
            return sd[key].to(torch.float32)
    return None


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())
    )


def ema_weights(ckpt: Mapping[str, Any]) -> Optional[Mapping[str, Tensor]]:
    """fairseq's EMA copy of the weights (``extra_state["ema_fp32_params"]`` or ``["ema"]``), if stored."""
    extra = ckpt.get("extra_state")
    if not isinstance(extra, Mapping):
        return None
    for key in ("ema_fp32_params", "ema"):
        if _is_state_dict(extra.get(key)):
            return extra[key]
    return None


def model_weights(ckpt: Mapping[str, Any], weights: str, what: str) -> Mapping[str, Tensor]:
    """The state dict to load: ``weights="model"`` (``ckpt["model"]`` or a bare state dict) or
    ``"ema"`` (:func:`ema_weights`).

    Raises:
        IFSegError: no tensor state dict, or ``"ema"`` requested from a file without EMA weights.
    """
    if weights not in ("model", "ema"):
        raise IFSegError(
            f"unknown weights '{weights}'; choose 'model' (the trained weights) or 'ema' (fairseq's EMA copy)"
        )
    if weights == "ema":
        ema = ema_weights(ckpt)
        if ema is None:
            raise IFSegError(
                f"{what} stores no EMA weights (extra_state['ema']); load its trained weights (weights='model')"
            )
        return ema
    sd = ckpt["model"] if "model" in ckpt else ckpt
    if not _is_state_dict(sd):
        raise IFSegError(
            f"{what} has no tensor state dict under 'model'; it is not an OFA/IFSeg checkpoint, pass an ofa_*.pt, "
            "IFSeg checkpoint or .safetensors bundle"
        )
    return sd
