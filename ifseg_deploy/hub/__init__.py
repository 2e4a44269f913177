"""Official models by name (``ofa-tiny`` ... ``ofa-huge``, ``ifseg-web-demo``) and OFA's BPE files,
downloaded once into the user cache; ``IFSEG_MIRROR`` / ``IFSEG_OFFLINE`` for air-gapped machines.
See ``docs/models.md``."""

from .cache import CachedModel, cache_dir, cached_models
from .names import MODELS, ModelFile
from .resolve import bpe_folder, offline_mode, resolve_checkpoint

__all__ = [
    "MODELS",
    "CachedModel",
    "ModelFile",
    "bpe_folder",
    "cache_dir",
    "cached_models",
    "offline_mode",
    "resolve_checkpoint",
]
