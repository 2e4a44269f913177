"""Load fairseq / OFA / IFSeg ``.pt`` files without ever executing code from them."""

from __future__ import annotations

import argparse
import io
import lzma
import os
import pickle
import re
import zipfile
from typing import Any, Dict

import torch

from ..errors import IFSegError

#: The only non-tensor globals a fairseq checkpoint needs (its config Namespace).
ALLOWED_GLOBALS = [argparse.Namespace]


def load_pickled_checkpoint(path: str) -> Dict[str, Any]:
    """``torch.load(weights_only=True)`` with ``argparse.Namespace`` allow-listed.

    ``.xz``-compressed files (as the conformance fixtures ship) are decompressed in memory.

    Anything else pickled in the file (classes, functions, ``__reduce__`` payloads) is refused
    before it can run, with a one-line :class:`IFSegError`.
    """
    if not os.path.isfile(path):
        raise IFSegError(f"checkpoint not found: {path}")
    if os.path.getsize(path) == 0:
        raise IFSegError(f"{path} is empty; download the checkpoint again")
    try:
        source = io.BytesIO(lzma.open(path).read()) if path.endswith(".xz") else path
        with torch.serialization.safe_globals(ALLOWED_GLOBALS):
            obj = torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        found = re.search(r"GLOBAL ([\w.]+)", text)
        if found or "Unsupported global" in text:
            what = found.group(1) if found else "an unsupported global"
            raise IFSegError(
                f"refusing to load {path}: it pickles {what}, not only tensors and argparse.Namespace; "
                "only trusted OFA/IFSeg checkpoints are accepted"
            ) from None
        detail = re.search(r"Unpickler error: ([^\n]+)", text)
        reason = f" ({detail.group(1).strip()[:120]})" if detail else ""
        raise IFSegError(f"{path} is not a PyTorch checkpoint{reason}; pass an ofa_*.pt, IFSeg checkpoint or .safetensors bundle") from None
    except (zipfile.BadZipFile, lzma.LZMAError, EOFError, RuntimeError, OSError, ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise IFSegError(f"{path} is truncated or not a PyTorch checkpoint ({msg[:160]}); download it again") from None
    if not isinstance(obj, dict):
        raise IFSegError(f"{path} does not hold a checkpoint dictionary (found {type(obj).__name__})")
    return obj
