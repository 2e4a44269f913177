"""The settings a fairseq / OFA / IFSeg checkpoint stores, found where fairseq's loader finds them.

fairseq's ``checkpoint_utils.load_checkpoint_to_cpu`` / ``_upgrade_state_dict`` (2021-2023)
read the run's settings from

* ``state["args"]``: the older flat ``argparse.Namespace`` (or a dict); when it is not None it
  wins, fairseq converts it into the ``cfg`` it uses;
* ``state["cfg"]``: a dict (``OmegaConf.to_container`` of the run's config) of sections
  ``task``, ``model``, ``ema``, ... each a dict or, for OFA / IFSeg models, an
  ``argparse.Namespace`` holding every parsed argument (so ``cfg["model"]`` also carries the
  task's values).

A model-only file (bare state dict, or ``{"model": ...}``) stores no settings.

IFSeg's names (``tasks/mm_tasks/segmentation.py``, ``run_scripts/IFSeg/*.sh``):
``category_list`` and ``prompt_prefix`` (task), ``patch_image_size`` /
``orig_patch_image_size`` (task and model), ``attn_scale_factor``, ``dropout``,
``encoder_drop_path_rate`` (model); fairseq's ``ema.store_ema``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Mapping, Optional

from ..text.normalize import normalize_name

#: Where a setting is looked for under ``cfg``, in order.
SECTIONS = ("task", "model")


def _get(container: Any, name: str) -> Any:
    if isinstance(container, Mapping):
        return container.get(name)
    return getattr(container, name, None)


def _number(value: Any) -> Optional[float]:
    """A stored number (int, float, NumPy scalar or numeric string); None otherwise."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class StoredSettings:
    """What a checkpoint's config says; None where it says nothing."""

    source: str  # "args", "cfg" or "none" (model-only file)
    categories: Optional[List[str]] = None
    prompt_prefix: Optional[str] = None  # "" is a real value (IFSeg's default when --prompt-prefix is not given)
    patch_image_size: Optional[int] = None
    orig_patch_image_size: Optional[int] = None
    attn_scale_factor: Optional[float] = None
    dropout: Optional[float] = None
    drop_path: Optional[float] = None
    store_ema: bool = False


def _lookup(ckpt: Mapping[str, Any], name: str, sections=SECTIONS) -> Any:
    args = ckpt.get("args")
    if args is not None:
        return _get(args, name)
    cfg = ckpt.get("cfg")
    if not isinstance(cfg, Mapping):
        return None
    for section in sections:
        value = _get(cfg.get(section), name)
        if value is not None:
            return value
    return None


def _categories(value: Any) -> Optional[List[str]]:
    """``"grass, cat"`` (IFSeg's comma-separated ``--category-list``) or a list -> normalised names."""
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, (list, tuple)) else None
    if items is None:
        return None
    names = [normalize_name(n) for n in items if isinstance(n, str)]
    names = [n for n in names if n]
    return names or None


def read_settings(ckpt: Mapping[str, Any]) -> StoredSettings:
    """The stored settings of a loaded checkpoint dictionary (see the module docstring)."""
    if ckpt.get("args") is not None:
        source = "args"
    elif isinstance(ckpt.get("cfg"), Mapping):
        source = "cfg"
    else:
        source = "none"
    prompt = _lookup(ckpt, "prompt_prefix")
    sizes = {k: _number(_lookup(ckpt, k)) for k in ("patch_image_size", "orig_patch_image_size")}
    store_ema = _lookup(ckpt, "store_ema", ("ema",))
    return StoredSettings(
        source=source,
        categories=_categories(_lookup(ckpt, "category_list")),
        prompt_prefix=" ".join(prompt.split()) if isinstance(prompt, str) else None,
        patch_image_size=int(sizes["patch_image_size"]) if sizes["patch_image_size"] else None,
        orig_patch_image_size=int(sizes["orig_patch_image_size"]) if sizes["orig_patch_image_size"] else None,
        attn_scale_factor=_number(_lookup(ckpt, "attn_scale_factor", ("model",))),
        dropout=_number(_lookup(ckpt, "dropout", ("model",))),
        drop_path=_number(_lookup(ckpt, "encoder_drop_path_rate", ("model",))),
        store_ema=bool(store_ema) if isinstance(store_ema, bool) else False,
    )
