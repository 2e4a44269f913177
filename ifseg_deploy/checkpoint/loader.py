"""One entry point for every model file: ``ofa_*.pt``, IFSeg checkpoints and bundles."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch
from torch import Tensor

from ..config import ArchConfig
from ..errors import IFSegError
from ..model import SegOFA
from ..text.prompt import DEFAULT_PROMPT_PREFIX
from . import bundle, fairseq_layout
from .safe_load import load_pickled_checkpoint


@dataclass
class LoadedModel:
    """A SegOFA model in float32 eval mode plus what its file says about it."""

    model: SegOFA
    kind: str  # "ofa" (plain OFA), "ifseg" (IFSeg fine-tuned) or "bundle" (ifseg-deploy)
    path: str
    categories: Optional[List[str]] = None
    class_embeds: Optional[Tensor] = None  # stored seg embedding (N, C), if any
    prompt_prefix: str = DEFAULT_PROMPT_PREFIX
    stored_dtype: str = "float32"
    metadata: Dict[str, Any] = field(default_factory=dict)

    @property
    def arch(self) -> ArchConfig:
        return self.model.cfg


def init_ifseg_parameters(model: SegOFA, keys: List[str], seed: int = 0) -> None:
    """Fresh values for the IFSeg-only tensors, as the reference builds them.

    Embeddings (seg positions, seg relative-position tables) ~ N(0, 0.02); LayerNorms (1, 0).
    """
    gen = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for key in keys:
            p = params[key]
            if key.startswith("decoder.seg_pos_ln."):
                p.fill_(1.0 if key.endswith("weight") else 0.0)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)


def _dtype_name(sd: Dict[str, Tensor]) -> str:
    floats = {str(v.dtype).replace("torch.", "") for v in sd.values() if v.is_floating_point()}
    return "/".join(sorted(floats)) or "float32"


def load_model(path: str, seed: int = 0) -> LoadedModel:
    """Load a model file; raises :class:`IFSegError` with a one-line reason on any bad input."""
    if bundle.is_bundle(path):
        state, class_embeds, meta = bundle.load_bundle(path)
        cfg = ArchConfig.from_dict(meta.get("arch", {}))
        model = SegOFA(cfg)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise IFSegError(f"{path}: bundle tensors do not match its architecture (missing {missing[:3]}, unexpected {unexpected[:3]})")
        return LoadedModel(
            model=model.eval(),
            kind="bundle",
            path=path,
            categories=meta.get("categories"),
            class_embeds=class_embeds,
            prompt_prefix=meta.get("prompt_prefix") or DEFAULT_PROMPT_PREFIX,
            stored_dtype=meta.get("dtype", "float32"),
            metadata=meta,
        )

    ckpt = load_pickled_checkpoint(path)
    sd = ckpt.get("model", ckpt)
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise IFSegError(f"{path} has no tensor state dict under 'model'; it is not an OFA/IFSeg checkpoint")
    cfg_obj = ckpt.get("cfg")
    what = path
    arch = fairseq_layout.infer_arch(sd, cfg_obj, what)
    model = SegOFA(arch)
    state, missing = fairseq_layout.convert_state_dict(sd, model.state_dict(), what)
    model.load_state_dict(state, strict=False)
    class_embeds = fairseq_layout.stored_class_embeddings(sd)
    if missing:
        init_ifseg_parameters(model, missing, seed)
        kind, categories = "ofa", None
    else:
        kind = "ifseg"
        categories = fairseq_layout.stored_categories(cfg_obj)
        if class_embeds is None:
            raise IFSegError(f"{path} has seg positions but no seg embedding; the IFSeg checkpoint is incomplete")
        if categories is not None and len(categories) != class_embeds.shape[0]:
            categories = None  # config disagrees with the tensors: trust the tensors, ask for names
    return LoadedModel(
        model=model.eval(),
        kind=kind,
        path=path,
        categories=categories,
        class_embeds=class_embeds,
        prompt_prefix=fairseq_layout.stored_prompt_prefix(cfg_obj) or DEFAULT_PROMPT_PREFIX,
        stored_dtype=_dtype_name(sd),
    )
