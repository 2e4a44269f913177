"""INT8 calibration data: images from ``--calib-dir`` shaped like the build profile's opt input,
and an entropy calibrator (``IInt8EntropyCalibrator2``) that feeds them to TensorRT."""

from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from ..errors import IFSegError
from ..fileio import write_bytes
from ..fileio import IMAGE_EXTS, list_images
from ..preprocess import normalize, read_image
from ..runtime.graph_contract import CLASSES, IMAGES, PROMPT

#: Images used at most (TensorRT's guidance: a few hundred representative images are enough).
MAX_IMAGES = 500


def calibration_files(calib_dir: Optional[str]) -> List[str]:
    """The images of ``calib_dir`` (sorted); a one-line error when the folder is missing or empty."""
    if not calib_dir:
        raise IFSegError("--precision int8 needs --calib-dir with representative images (a few hundred) for calibration")
    if not os.path.isdir(calib_dir):
        raise IFSegError(f"--calib-dir {calib_dir} is not a folder; pass a folder of representative images")
    files = list_images(calib_dir)
    if not files:
        raise IFSegError(f"--calib-dir {calib_dir} holds no images ({', '.join(IMAGE_EXTS)}); INT8 calibration needs "
                         "a few hundred representative images")
    return files[:MAX_IMAGES]


def fit_image(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """Keep-ratio bilinear resize that covers ``height x width``, then a centre crop to exactly that size."""
    h, w = rgb.shape[:2]
    f = max(height / h, width / w)
    nh, nw = max(height, int(h * f + 0.5)), max(width, int(w * f + 0.5))
    if (nh, nw) != (h, w):
        rgb = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR)
    top, left = (nh - height) // 2, (nw - width) // 2
    return rgb[top:top + height, left:left + width]


def calibration_batches(files: Sequence[str], batch: int, height: int, width: int) -> List[np.ndarray]:
    """Normalised float32 batches ``(batch, 3, H, W)``; the last batch is filled up by repeating images."""
    images = [normalize(fit_image(read_image(f), height, width)).numpy() for f in files]
    while len(images) % batch:
        images.append(images[len(images) % len(files)])
    return [np.stack(images[i:i + batch]) for i in range(0, len(images), batch)]


def make_calibrator(trt, batches: List[np.ndarray], prompt_embeds: torch.Tensor, class_embeds: torch.Tensor,
                    cache_path: str, device: torch.device):
    """An ``IInt8EntropyCalibrator2`` over ``batches`` with a fixed vocabulary; the cache goes to ``cache_path``."""

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._batches = iter(batches)
            self._fixed = {PROMPT: prompt_embeds.float().to(device).contiguous(),
                           CLASSES: class_embeds.float().to(device).contiguous()}
            self._current = {}

        def get_batch_size(self) -> int:
            return int(batches[0].shape[0])

        def get_batch(self, names: List[str]):
            images = next(self._batches, None)
            if images is None:
                return None
            self._current = dict(self._fixed, **{IMAGES: torch.from_numpy(images).to(device).contiguous()})
            return [int(self._current[n].data_ptr()) for n in names]

        def read_calibration_cache(self):
            if os.path.isfile(cache_path):
                with open(cache_path, "rb") as fh:
                    return fh.read()
            return None

        def write_calibration_cache(self, cache) -> None:
            write_bytes(cache_path, bytes(cache))

    return EntropyCalibrator()


def opt_image_shape(shapes: dict) -> Tuple[int, int, int]:
    """``(batch, H, W)`` of the profile's opt ``images`` shape."""
    b, _, h, w = shapes[IMAGES][1]
    return b, h, w
