"""The input size a static export needs for a given image or video (``export --imgsz-from``).

A static graph takes exactly one ``H x W``: the size its source *pre-processes to*, which is not
the same as rounding the aspect ratio to a "nice" size (a 640x480 video pre-processes to 512x683
at short side 512, not 512x688). The size is read the way the runtime reads the pixels: images
with Pillow, their EXIF orientation applied (a photo stored 640x480 and tagged "rotate 90" is
480 wide); videos as the first frame OpenCV decodes (as ``stream`` reads them).
"""

from __future__ import annotations

import os
from typing import Optional, Tuple

from ..errors import IFSegError
from ..preprocess import Preprocessing, resized_shape

#: EXIF ``Orientation`` tag, and its values that turn the picture by 90 degrees (width <-> height).
EXIF_ORIENTATION = 0x0112
TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)


def _image_size(path: str) -> Optional[Tuple[int, int]]:
    """``(H, W)`` as displayed, or None when Pillow does not recognise ``path`` as an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:  # reads the header only
            width, height = im.size
            orientation = im.getexif().get(EXIF_ORIENTATION, 1)
    except UnidentifiedImageError:
        return None
    except OSError as e:
        raise IFSegError(f"imgsz_from={path}: cannot read it ({e}); pass an image or a video file") from None
    return (width, height) if orientation in TRANSPOSING_ORIENTATIONS else (height, width)


def _first_frame_size(path: str) -> Tuple[int, int]:
    """``(H, W)`` of the first frame OpenCV decodes from a video file."""
    import cv2

    cap = cv2.VideoCapture(path)
    try:
        ok, frame = cap.read() if cap.isOpened() else (False, None)
    finally:
        cap.release()
    if not ok or frame is None:
        raise IFSegError(
            f"imgsz_from={path}: neither an image nor a video OpenCV can read a frame from; pass an image or a video "
            f"file"
        )
    return frame.shape[0], frame.shape[1]


def source_size(path: str) -> Tuple[int, int]:
    """``(H, W)`` of an image file (EXIF orientation applied) or of a video file's first frame.

    Raises :class:`IFSegError` when the file does not exist or cannot be decoded.
    """
    if not os.path.isfile(path):
        raise IFSegError(f"imgsz_from={path}: file not found")
    size = _image_size(path)
    return size if size is not None else _first_frame_size(path)


def static_size_for(source: str, preprocessing: Preprocessing) -> Tuple[int, int]:
    """``(H, W)`` model input that ``source`` pre-processes to with ``preprocessing`` (the
    reference keep-ratio resize: short side, capped long side)."""
    height, width = source_size(source)
    return resized_shape(height, width, preprocessing.short_side, preprocessing.long_side_max)
