"""One entry point for every model file: ``ofa_*.pt``, IFSeg checkpoints and bundles.

Stored settings are never silently replaced: every one a file should carry but does not
(an IFSeg checkpoint's categories, prompt prefix, original patch size; any fairseq file's
attention scale) is named in one warning line with the default used, and collected in
:attr:`LoadedModel.defaults`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch
from torch import Tensor

from ..config import ArchConfig
from ..errors import IFSegError
from ..model import SegOFA
from ..text.normalize import normalize_name
from ..text.prompt import DEFAULT_PROMPT_PREFIX
from . import bundle, fairseq_layout
from .fairseq_config import StoredSettings, read_settings
from .safe_load import load_pickled_checkpoint

log = logging.getLogger(__name__)


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
    weights: str = "model"  # which weights were loaded: "model" (trained) or "ema" (fairseq's EMA copy)
    defaults: List[str] = field(default_factory=list)  # settings the file lacks, each with the default used

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


def _default(path: str, notes: List[str], text: str) -> None:
    """Record and say (one warning line) a setting replaced by its default."""
    notes.append(text)
    log.warning("%s %s", path, text)


def _stored_categories(path: str, settings: StoredSettings, rows: int, notes: List[str]) -> Optional[List[str]]:
    if settings.categories is None:
        _default(path, notes, "stores no category list; pass `categories` with the names it was trained on, in order")
        return None
    if len(settings.categories) != rows:
        _default(
            path,
            notes,
            f"stores {len(settings.categories)} category names but {rows} class embeddings; "
            "ignoring the names, pass `categories` with the names it was trained on",
        )
        return None
    return settings.categories


def _fairseq_defaults(path: str, kind: str, settings: StoredSettings, arch: ArchConfig, notes: List[str]) -> None:
    """Warn for every setting an OFA / IFSeg file should carry but does not."""
    if settings.attn_scale_factor is None:
        _default(path, notes, f"stores no attn_scale_factor; using OFA's default {arch.attn_scale_factor:g}")
    if kind != "ifseg":
        return  # a plain OFA file has no IFSeg settings: IFSeg's own (512 px, its prompt) apply to the fresh head
    if settings.orig_patch_image_size is None:
        _default(
            path,
            notes,
            f"stores no orig_patch_image_size; using its patch_image_size {arch.image_size} (from the seg tables)",
        )
    if settings.patch_image_size is not None and settings.patch_image_size // 16 != arch.seg_grid:
        _default(
            path,
            notes,
            f"stores patch_image_size {settings.patch_image_size} but its seg position tables are for "
            f"{arch.image_size}; using {arch.image_size}",
        )
    if settings.prompt_prefix is None:
        _default(path, notes, f"stores no prompt_prefix; using IFSeg's '{DEFAULT_PROMPT_PREFIX}'")


def _load_bundle(path: str) -> LoadedModel:
    state, class_embeds, meta = bundle.load_bundle(path)
    cfg = ArchConfig.from_dict(meta.get("arch", {}))
    model = SegOFA(cfg)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise IFSegError(
            f"{path}: bundle tensors do not match its architecture (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}); "
            "re-create the bundle"
        )
    notes: List[str] = []
    prompt = meta.get("prompt_prefix")
    if not isinstance(prompt, str):
        _default(path, notes, f"stores no prompt_prefix; using IFSeg's '{DEFAULT_PROMPT_PREFIX}'")
        prompt = DEFAULT_PROMPT_PREFIX
    categories = meta.get("categories")
    return LoadedModel(
        model=model.eval(),
        kind="bundle",
        path=path,
        categories=[normalize_name(c) for c in categories] if categories else None,
        class_embeds=class_embeds,
        prompt_prefix=prompt,
        stored_dtype=meta.get("dtype", "float32"),
        metadata=meta,
        defaults=notes,
    )


def load_model(path: str, seed: int = 0, weights: str = "model") -> LoadedModel:
    """Load a model file: an ifseg-deploy bundle, or a fairseq checkpoint in any layout fairseq's
    own loader reads (settings under ``cfg`` or ``args``, model-only files; see
    :mod:`.fairseq_config`).

    Args:
        path: ``.safetensors`` bundle, ``.pt`` checkpoint (``.pt.xz`` too).
        seed: seed of the fresh IFSeg-only tensors of a plain OFA checkpoint.
        weights: ``"model"`` (default): the trained weights, those fairseq's
            ``load_checkpoint_to_cpu`` returns and IFSeg validates and selects checkpoints with;
            ``"ema"``: fairseq's EMA copy in ``extra_state`` (what OFA's ``evaluate.py --ema-eval``
            uses). A file that also stores EMA weights gets one warning line naming the choice.

    Raises:
        IFSegError: a one-line reason on any bad input.
    """
    if bundle.is_bundle(path):
        if weights != "model":
            raise IFSegError(
                f"{path} is an ifseg-deploy bundle, which holds one set of weights; drop weights='{weights}'"
            )
        return _load_bundle(path)

    ckpt = load_pickled_checkpoint(path)
    sd = fairseq_layout.model_weights(ckpt, weights, path)
    if weights == "model" and fairseq_layout.ema_weights(ckpt) is not None:
        log.warning(
            "%s also stores EMA weights; using its trained weights (weights='model'), load with weights='ema' for the "
            "EMA ones",
            path,
        )
    settings = read_settings(ckpt)
    arch = fairseq_layout.infer_arch(sd, settings, path)
    model = SegOFA(arch)
    state, missing = fairseq_layout.convert_state_dict(sd, model.state_dict(), path)
    model.load_state_dict(state, strict=False)
    class_embeds = fairseq_layout.stored_class_embeddings(sd)
    kind = "ofa" if missing else "ifseg"
    notes: List[str] = []
    _fairseq_defaults(path, kind, settings, arch, notes)
    categories = None
    if missing:
        init_ifseg_parameters(model, missing, seed)
    else:
        if class_embeds is None:
            raise IFSegError(
                f"{path} has seg positions but no seg embedding; the IFSeg checkpoint is incomplete, download it again"
            )
        categories = _stored_categories(path, settings, class_embeds.shape[0], notes)
    prompt = settings.prompt_prefix if settings.prompt_prefix is not None else DEFAULT_PROMPT_PREFIX
    return LoadedModel(
        model=model.eval(),
        kind=kind,
        path=path,
        categories=categories,
        class_embeds=class_embeds,
        prompt_prefix=prompt,
        stored_dtype=_dtype_name(sd),
        weights=weights,
        defaults=notes,
    )
