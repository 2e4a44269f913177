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
