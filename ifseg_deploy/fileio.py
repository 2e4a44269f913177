"""File handling shared by every command: atomic output (a temporary file next to the target,
then a rename) and the listing of image folders."""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterator, List

from .errors import IFSegError

#: File endings treated as images when a folder is listed.
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def list_images(folder: str) -> List[str]:
    """Paths of the image files directly inside ``folder`` (by ending, case-insensitive), sorted."""
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTS))


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
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp (and some writers) create files readable by the owner only
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def increment_path(path: str, exist_ok: bool = False) -> str:
    """``runs/segment`` if free (or ``exist_ok``), else ``runs/segment2``, ``runs/segment3``, ...
    (Ultralytics' run numbering); nothing is created."""
    if exist_ok or not os.path.exists(path):
        return path
    n = 2
    while os.path.exists(f"{path}{n}"):
        n += 1
    return f"{path}{n}"


def check_creatable_dir(folder: str) -> str:
    """Check, without creating anything, that ``folder`` exists as a writable folder or can be made
    (its nearest existing ancestor is a writable folder); return it. Raises :class:`IFSegError`."""
    probe = os.path.abspath(folder)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK):
        raise IFSegError(f"cannot write to {folder} ({probe} is not a writable folder); choose another --out")
    if probe != os.path.abspath(folder) and os.path.exists(folder):
        raise IFSegError(f"{folder} is not a folder; choose another --out")
    return folder


def ensure_writable_dir(folder: str) -> str:
    """Create ``folder`` if needed and check it accepts files; return it."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise IFSegError(f"cannot create output folder {folder} ({e.strerror}); choose another --out") from None
    if not os.access(folder, os.W_OK):
        raise IFSegError(f"output folder {folder} is not writable; choose another --out")
    return folder


def write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)


def write_png(path: str, image) -> None:
    """Write a uint8/uint16 array (gray or RGB) as PNG, atomically."""
    import cv2
    import numpy as np

    arr = np.ascontiguousarray(image[..., ::-1] if image.ndim == 3 else image)
    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise IFSegError(f"could not encode {path} as PNG")
    write_bytes(path, buf.tobytes())


def write_npy(path: str, array) -> None:
    """Write a NumPy array as ``.npy``, atomically."""
    import numpy as np

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)
