"""The ifseg-deploy bundle: ONE ``.safetensors`` file, weights + JSON description in its header.

Header metadata key ``ifseg_deploy`` holds a JSON object with ``format`` (version),
``arch`` (:class:`ArchConfig` fields), ``categories``, ``prompt_prefix``, ``preprocessing``,
``provenance`` and any extra sections (training settings, metrics). Tensors are SegOFA's
state dict plus ``class_embeds`` ``(N, C)``.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Tuple

from torch import Tensor

from ..errors import IFSegError
from ..fileio import atomic_path

META_KEY = "ifseg_deploy"
FORMAT_VERSION = 1
CLASS_EMBEDS = "class_embeds"


def is_bundle(path: str) -> bool:
    return path.endswith(".safetensors")


def save_bundle(path: str, state: Dict[str, Tensor], class_embeds: Tensor, meta: Dict[str, Any]) -> None:
    """Write a bundle atomically (temp file + rename)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    tensors[CLASS_EMBEDS] = class_embeds.detach().contiguous().cpu()
    header = dict(meta, format=FORMAT_VERSION)
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata={META_KEY: json.dumps(header)})


def read_bundle_meta(path: str) -> Dict[str, Any]:
    """The JSON description of a bundle, without reading its tensors."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise IFSegError(f"{path} is not a readable safetensors file ({str(e).splitlines()[0][:120]})") from None
    if raw is None:
        raise IFSegError(f"{path} is a safetensors file but not an ifseg-deploy bundle (no '{META_KEY}' metadata)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError:
        raise IFSegError(f"{path}: the bundle description is not valid JSON; re-create the bundle") from None
    if int(meta.get("format", 0)) > FORMAT_VERSION:
        raise IFSegError(
            f"{path} was written by a newer ifseg-deploy (format {meta.get('format')}); upgrade ifseg-deploy"
        )
    return meta


def load_bundle(path: str) -> Tuple[Dict[str, Tensor], Optional[Tensor], Dict[str, Any]]:
    """Tensors (float32), stored class embeddings and description of a bundle."""
    from safetensors.torch import load_file

    if not os.path.isfile(path):
        raise IFSegError(f"bundle not found: {path}")
    meta = read_bundle_meta(path)
    try:
        tensors = load_file(path)
    except Exception as e:
        raise IFSegError(
            f"{path} is truncated or corrupt ({str(e).splitlines()[0][:120]}); re-create the bundle"
        ) from None
    class_embeds = tensors.pop(CLASS_EMBEDS, None)
    return (
        {k: v.float() for k, v in tensors.items()},
        (class_embeds.float() if class_embeds is not None else None),
        meta,
    )
