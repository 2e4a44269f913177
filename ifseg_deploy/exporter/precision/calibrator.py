"""INT8 calibration data: the images of ``--calib-dir``, fitted to the graph's input size and
normalised like the reference preprocessing (the Q/DQ quantizer's calibration feed)."""

from __future__ import annotations

import os
from typing import List, Optional, Sequence

import cv2
import numpy as np

from ...errors import IFSegError
from ...fileio import IMAGE_EXTS, list_images
from ...preprocess import normalize, read_image

#: Images used at most (TensorRT's guidance: a few hundred representative images are enough).
MAX_IMAGES = 500


def calibration_files(calib_dir: Optional[str]) -> List[str]:
    """The images of ``calib_dir`` (sorted); a one-line error when the folder is missing or empty."""
    if not calib_dir:
        raise IFSegError("precision=int8 needs `calib_dir` with representative images (a few hundred) for calibration")
    if not os.path.isdir(calib_dir):
        raise IFSegError(f"calib_dir={calib_dir} is not a folder; pass a folder of representative images")
    files = list_images(calib_dir)
    if not files:
        raise IFSegError(
            f"calib_dir={calib_dir} holds no images ({', '.join(IMAGE_EXTS)}); INT8 calibration needs "
            "a few hundred representative images"
        )
    return files[:MAX_IMAGES]


def fit_image(rgb: np.ndarray, height: int, width: int, nearest: bool = False) -> np.ndarray:
    """Keep-ratio bilinear resize that covers ``height x width``, then a centre crop to exactly that size
    (``nearest``: nearest-neighbour resize, for label maps)."""
    h, w = rgb.shape[:2]
    f = max(height / h, width / w)
    nh, nw = max(height, int(h * f + 0.5)), max(width, int(w * f + 0.5))
    if (nh, nw) != (h, w):
        rgb = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR)
    top, left = (nh - height) // 2, (nw - width) // 2
    return rgb[top : top + height, left : left + width]


def calibration_batches(files: Sequence[str], batch: int, height: int, width: int) -> List[np.ndarray]:
    """Normalised float32 batches ``(batch, 3, H, W)``; the last batch is filled up by repeating images."""
    images = [normalize(fit_image(read_image(f), height, width)).numpy() for f in files]
    while len(images) % batch:
        images.append(images[len(images) % len(files)])
    return [np.stack(images[i : i + batch]) for i in range(0, len(images), batch)]
