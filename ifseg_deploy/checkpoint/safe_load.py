"""Load fairseq / OFA / IFSeg ``.pt`` files without ever executing code from them.

``torch.load(weights_only=True)`` rebuilds only tensors and plain containers; every other
pickled global must be allow-listed (``torch.serialization.safe_globals``). The allow-list
here holds data types only, the ones fairseq checkpoints really contain:

* ``argparse.Namespace``: the settings of fairseq runs (``args``, ``cfg["model"]``);
* NumPy arrays, scalars and dtypes (``numpy.ndarray``, ``numpy.dtype``, the ``numpy.dtypes``
  classes and the ``_reconstruct`` / ``scalar`` rebuild helpers, under NumPy 1's
  ``numpy.core.multiarray`` and NumPy 2's ``numpy._core.multiarray`` spellings): fairseq
  stores metrics and ``extra_state["best"]`` that way. Their rebuild functions only lay out
  bytes in memory; the values they receive were themselves unpickled under the same rules.

Anything else (``os.system``, ``builtins.eval``, ``functools.partial``, arbitrary classes,
``omegaconf`` containers) is refused before it can run, with a one-line :class:`IFSegError`
naming the refused global.
"""

from __future__ import annotations

import argparse
import importlib
import io
import lzma
import os
import pickle
import pickletools
import re
from typing import Any, Dict, List, Optional, Union

import numpy as np
import torch

from ..errors import IFSegError

ZIP_MAGIC = b"PK\x03\x04"
PICKLE_MAGIC = b"\x80"  # a pickle protocol opcode: the legacy (pre-1.6) torch.save format


def _numpy_globals() -> List[Union[type, tuple]]:
    """NumPy's data-only globals, under both module spellings (NumPy 1 files read by NumPy 2 and back)."""
    try:
        multiarray = importlib.import_module("numpy._core.multiarray")  # NumPy 2
    except ImportError:
        multiarray = importlib.import_module("numpy.core.multiarray")  # NumPy 1
    out: List[Union[type, tuple]] = [np.ndarray, np.dtype]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out += [(multiarray._reconstruct, f"{module}._reconstruct"), (multiarray.scalar, f"{module}.scalar")]
    dtypes = getattr(np, "dtypes", None)  # NumPy >= 1.25: one class per dtype, e.g. numpy.dtypes.Float64DType
    if dtypes is not None:
        out += [
            getattr(dtypes, n)
            for n in sorted(dir(dtypes))
            if n.endswith("DType") and isinstance(getattr(dtypes, n), type)
        ]
    return out


#: Every non-tensor global a checkpoint may pickle (all data types, none runs code).
ALLOWED_GLOBALS = [argparse.Namespace] + _numpy_globals()

#: How torch's weights-only unpickler names a refused global, most specific first.
_REFUSED = (
    re.compile(r"GLOBAL (\S+)"),
    re.compile(r"unsupported class (\S+)"),
    re.compile(r"<class '([^']+)'>"),
    re.compile(r"<function (\S+)"),
)
#: A complete dotted Python name (a name cut off by a truncated file is not one).
_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def refused_global(message: str, source: Any = None) -> Optional[str]:
    """The global torch's weights-only unpickler refused, from its error text (or, for a zip
    checkpoint, from ``torch.serialization.get_unsafe_globals_in_checkpoint``); None if unknown.

    Builtins are named with their module (``eval`` -> ``builtins.eval``).
    """
    for pattern in _REFUSED:
        found = pattern.search(message)
        if found:
            name = found.group(1)
            if not _DOTTED.fullmatch(name):
                return None
            return name if "." in name else f"builtins.{name}"
    if source is not None:
        try:
            if isinstance(source, io.BytesIO):
                source.seek(0)
            with torch.serialization.safe_globals(ALLOWED_GLOBALS):
                names = torch.serialization.get_unsafe_globals_in_checkpoint(source)
        except Exception:  # not a zip checkpoint: nothing more to learn
            return None
        allowed = {g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}" for g in ALLOWED_GLOBALS}
        names = [n for n in names if n not in allowed]
        return names[0] if names else None
    return None


def _pickles_global(source: Union[str, io.BytesIO], name: str) -> bool:
    """Whether a raw pickle file holds the complete global ``name`` (read with ``pickletools``,
    which runs nothing); False when the stream breaks off first, i.e. the name torch reported
    was cut by a truncated file."""
    module, _, attr = name.rpartition(".")
    wanted = {f"{module} {attr}"} | (
        {f"__builtin__ {attr}"} if module == "builtins" else set()
    )  # protocol 2 spells it so
    strings: List[str] = []
    fh = io.BytesIO(source.getvalue()) if isinstance(source, io.BytesIO) else open(source, "rb")
    try:
        with fh:
            while True:  # the legacy torch format is several pickles in a row
                for op, arg, _ in pickletools.genops(fh):
                    if op.name == "GLOBAL" and arg in wanted:
                        return True
                    if isinstance(arg, str):
                        strings.append(arg)
                    if op.name == "STACK_GLOBAL" and " ".join(strings[-2:]) in wanted:
                        return True
    except Exception:  # the stream ends or breaks: the name is not complete in the file
        return False


def _reason(error: BaseException) -> str:
    """The first clause of an exception's message, short and complete (never cut mid-sentence)."""
    if isinstance(error, EOFError):
        return "the file ends early"
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    text = text.split(": ", 1)[1] if text.startswith("PytorchStreamReader failed") and ": " in text else text
    text = re.split(r"(?<=[a-z0-9)])\. ", text, maxsplit=1)[0].rstrip(". ")
    return text if 0 < len(text) <= 100 else type(error).__name__


def _read_source(path: str) -> Union[str, io.BytesIO]:
    """The path, or for ``.xz`` files (as the conformance fixtures ship) the decompressed bytes."""
    if not path.endswith(".xz"):
        return path
    try:
        with lzma.open(path) as fh:
            return io.BytesIO(fh.read())
    except OSError as e:
        if e.strerror:  # the file itself cannot be read
            raise IFSegError(f"cannot read {path} ({e.strerror}); check the path and its permissions") from None
        raise IFSegError(f"{path} is a truncated or damaged .xz file ({_reason(e)}); download it again") from None
    except (lzma.LZMAError, EOFError) as e:
        raise IFSegError(f"{path} is a truncated or damaged .xz file ({_reason(e)}); download it again") from None


def _head(source: Union[str, io.BytesIO]) -> bytes:
    if isinstance(source, io.BytesIO):
        return source.getvalue()[:4]
    try:
        with open(source, "rb") as fh:
            return fh.read(4)
    except OSError as e:
        raise IFSegError(f"cannot read {source} ({e.strerror}); check the path and its permissions") from None


def load_pickled_checkpoint(path: str) -> Dict[str, Any]:
    """``torch.load(weights_only=True)`` with :data:`ALLOWED_GLOBALS`; ``.xz`` files are
    decompressed in memory.

    Returns:
        The checkpoint dictionary (or a bare state dict) as stored.

    Raises:
        IFSegError: one line, one sentence with a fix: missing / empty file, truncated or
            damaged file, not a PyTorch checkpoint, or a pickled global outside the allow-list
            (named in the message; nothing from the file has run).
    """
    if not os.path.isfile(path):
        raise IFSegError(f"checkpoint not found: {path}")
    if os.path.getsize(path) == 0:
        raise IFSegError(f"{path} is empty; download the checkpoint again")
    source = _read_source(path)
    head = _head(source)
    if not (head.startswith(ZIP_MAGIC) or head.startswith(PICKLE_MAGIC)):
        raise IFSegError(
            f"{path} is not a PyTorch checkpoint (it is neither a zip archive nor a pickle); "
            "pass an ofa_*.pt, IFSeg checkpoint or .safetensors bundle"
        )
    try:
        with torch.serialization.safe_globals(ALLOWED_GLOBALS):
            obj = torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        name = refused_global(text, source)
        if name and (head.startswith(ZIP_MAGIC) or _pickles_global(source, name)):
            raise IFSegError(
                f"refusing to load {path}: it pickles {name}, which is not data (only tensors, NumPy arrays and "
                f"scalars and "
                "argparse settings are read, so that loading runs no code from the file); if you trust the file, "
                "re-save its "
                "weights with torch.save(torch.load(path, weights_only=False)['model'], 'weights.pt')"
            ) from None
        detail = re.search(r"Unpickler error:\s*([^\n]+)", text)
        if "Unsupported operand" in text and head[:1] == PICKLE_MAGIC and head[1:2] > b"\x02":
            raise IFSegError(
                f"{path} is a pickle of protocol {head[1]}, which torch.load cannot read without running code; "
                "re-save the weights with torch.save (protocol 2)"
            ) from None
        reason = (
            "its pickle stream breaks off"
            if name or "GLOBAL" in text
            else _reason(ValueError(detail.group(1) if detail else text))
        )
        raise IFSegError(f"{path} is truncated or damaged ({reason}); download it again") from None
    except (
        Exception
    ) as e:  # damaged bytes make torch's readers raise many types (RuntimeError, struct.error, EOFError, ...)
        raise IFSegError(f"{path} is truncated or damaged ({_reason(e)}); download it again") from None
    if not isinstance(obj, dict):
        raise IFSegError(
            f"{path} does not hold a checkpoint dictionary (found {type(obj).__name__}); pass an ofa_*.pt, "
            "IFSeg checkpoint or .safetensors bundle"
        )
    return obj
