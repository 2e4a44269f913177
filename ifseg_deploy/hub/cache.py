"""Where downloaded models live: one folder per user, shared by every project on the machine.

``$IFSEG_CACHE`` if set, else ``$XDG_CACHE_HOME/ifseg-deploy``, else ``~/.cache/ifseg-deploy``
(the XDG base-directory rule). Checkpoints sit at the top under their official file names
(``ofa_tiny.pt``), the BPE files in ``bpe/``, which is where
:func:`ifseg_deploy.text.tokenizer.find_bpe_dir` looks beside a checkpoint. A download in
progress is ``.<name>.part``; the real name appears only when the file is complete and checked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List

from .names import MODELS, ModelFile

ENV_CACHE = "IFSEG_CACHE"
BPE_FOLDER = "bpe"


def cache_dir() -> str:
    """The cache folder (it may not exist yet): ``$IFSEG_CACHE``, ``$XDG_CACHE_HOME/ifseg-deploy``
    or ``~/.cache/ifseg-deploy``."""
    if os.environ.get(ENV_CACHE):
        return os.path.abspath(os.path.expanduser(os.environ[ENV_CACHE]))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(os.path.abspath(base), "ifseg-deploy")


def model_path(model: ModelFile) -> str:
    """Where ``model`` is (or will be) in the cache."""
    return os.path.join(cache_dir(), model.filename)


def bpe_path() -> str:
    """The cache's BPE folder."""
    return os.path.join(cache_dir(), BPE_FOLDER)


def partial_path(path: str) -> str:
    """The temporary name of ``path`` while it downloads (hidden, beside it)."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.part")


@dataclass(frozen=True)
class CachedModel:
    """A complete model file in the cache."""

    name: str  # the model's name, e.g. "ofa-tiny"
    size: int  # bytes
    path: str  # absolute path of the file

    @property
    def size_text(self) -> str:
        """The size as people read it in a listing: decimal megabytes, e.g. ``"93.2 MB"``."""
        return f"{self.size / 1e6:.1f} MB"


def cached_models() -> List[CachedModel]:
    """The named models (:data:`~ifseg_deploy.hub.names.MODELS`) whose file is complete in the
    cache, in the table's order; sizes in bytes. Partial downloads are not listed. Reads the
    file system only (no network, nothing written); an absent cache lists nothing."""
    found = []
    for model in MODELS.values():
        path = model_path(model)
        if os.path.isfile(path):
            found.append(CachedModel(model.name, os.path.getsize(path), path))
    return found
