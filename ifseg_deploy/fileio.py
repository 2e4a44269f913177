"""Atomic file output: write to a temporary file next to the target, then rename."""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterator

from .errors import IFSegError


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path in the target's folder; rename it to ``path`` on success only."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
        os.close(fd)
    except OSError as e:
        raise IFSegError(f"cannot write to {folder} ({e.strerror}); choose a writable output path") from None
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def ensure_writable_dir(folder: str) -> str:
    """Create ``folder`` if needed and check it accepts files; return it."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise IFSegError(f"cannot create output folder {folder} ({e.strerror}); choose another --out") from None
    if not os.access(folder, os.W_OK):
        raise IFSegError(f"output folder {folder} is not writable; choose another --out")
    return folder
