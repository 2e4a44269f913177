"""Image decoding and the reference's evaluation preprocessing.

Decode (Pillow, as the reference) -> EXIF orientation applied (as viewers and ``cv2.imread`` do;
not for dataset evaluation, whose labels are aligned with the stored pixels) -> RGB uint8 -> keep-ratio resize so the
short side is ``short_side`` unless the long side would exceed ``long_side_max`` (OpenCV bilinear on uint8,
mmcv's rounding) -> ``(x / 255 - 0.5) / 0.5``, CHW float32.

:func:`preprocess_tensor` is the same on a torch tensor on any device (a GPU keeps the frame it
was given): the resize is PyTorch's bilinear rounded to uint8 levels instead of OpenCV's fixed-point
one, the normalisation the same code.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple, Union

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .errors import IFSegError

SHORT_SIDE = 512
LONG_SIDE_MAX = 2048
MEAN = STD = 0.5


def read_image(path: str, exif: bool = True) -> np.ndarray:
    """Decode an image file to RGB uint8 ``(H, W, 3)``, as a viewer shows it (:func:`decode_image`).

    Args:
        path: image file (any format Pillow reads: JPEG, PNG, BMP, TIFF, WebP, ...).
        exif: as for :func:`decode_image`; ``False`` returns the stored pixels, which is what
            dataset label maps are aligned with (dataset evaluation uses it).

    Raises:
        IFSegError: the file is missing, or :func:`decode_image` refuses it.
    """
    if not os.path.isfile(path):
        raise IFSegError(f"image not found: {path}")
    return decode_image(path, exif, path)


def decode_image(source: Union[str, bytes], exif: bool = True, name: str = "the image") -> np.ndarray:
    """The one decode path of every entry point (CLI, Python API, Triton model): an image file's
    path or its encoded bytes -> RGB uint8 ``(H, W, 3)``.

    Grayscale is replicated to three channels, alpha is dropped, palette / CMYK images are
    converted, 16-bit images are scaled to 8 bit. ``exif`` applies the EXIF orientation tag
    (values 1..8: rotations and mirrorings, Pillow's ``ImageOps.exif_transpose``), so a phone
    photo stored sideways comes out upright, ``H x W`` as displayed; an unreadable EXIF block is
    ignored, as viewers do. ``name`` names the image in errors.

    Raises:
        IFSegError: not a decodable image (damaged, truncated, an unknown mode), or more pixels
            declared than Pillow's decompression-bomb limit (twice ``PIL.Image.MAX_IMAGE_PIXELS``,
            about 179 megapixels: decoding it could exhaust memory).
    """
    from PIL import Image, ImageOps

    try:
        with warnings.catch_warnings():
            # Pillow warns about a corrupt EXIF block and then ignores it, as viewers do: no noise
            warnings.filterwarnings("ignore", message=".*EXIF", category=UserWarning)
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # large camera photos (89-179 Mpx) decode
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
                im.load()
                return to_rgb_uint8(ImageOps.exif_transpose(im) if exif else im)
    except Image.DecompressionBombError:
        raise IFSegError(
            f"{name} declares more than {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels (Pillow's decompression-bomb "
            "limit); downscale it first"
        ) from None
    except IFSegError:
        raise
    except MemoryError:
        raise IFSegError(f"{name} is too large to decode in the available memory; downscale it first") from None
    except Exception as e:  # any decoder failure on a damaged or hostile file is this image's problem alone
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:100]
        raise IFSegError(f"cannot decode {name} as an image ({first}); pass a JPEG/PNG/BMP/TIFF file") from None


def as_rgb(image: Any) -> np.ndarray:
    """Any supported image input -> RGB uint8 ``(H, W, 3)``, contiguous.

    * ``str`` / ``os.PathLike``: an image file (:func:`read_image`, EXIF orientation applied);
    * ``PIL.Image.Image``: any mode; its EXIF orientation is applied, as for files;
    * ``np.ndarray``: RGB ``(H, W, 3)`` or grayscale ``(H, W)``, uint8 (0..255), or float in
      [0, 1]; channel order RGB (an OpenCV ``cv2.imread`` array is BGR: convert it first);
    * ``torch.Tensor``: ``(3, H, W)`` (CHW, as torchvision) or ``(H, W, 3)``, RGB, uint8 (0..255)
      or float in [0, 1].

    Raises :class:`IFSegError` for any other type, shape or value range.
    """
    if isinstance(image, (str, os.PathLike)):
        return read_image(os.fspath(image))
    if type(image).__module__.startswith("PIL."):
        from PIL import ImageOps

        return to_rgb_uint8(ImageOps.exif_transpose(image))
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.dim() == 3 and t.shape[0] in (1, 3) and t.shape[-1] not in (1, 3):
            t = t.permute(1, 2, 0)  # CHW -> HWC
        image = t.numpy()
    if not isinstance(image, np.ndarray):
        raise IFSegError(
            f"unsupported image type {type(image).__name__}; pass a path, an RGB numpy array, a PIL image or a torch "
            f"tensor"
        )
    arr = image[..., None] if image.ndim == 2 else image
    if arr.ndim != 3 or arr.shape[2] not in (1, 3) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise IFSegError(
            f"unsupported image shape {image.shape}; pass (H, W, 3) RGB, (H, W) gray or a (3, H, W) tensor"
        )
    if arr.dtype.kind == "f":
        if arr.size and (not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1):
            raise IFSegError("a float image must hold values in [0, 1]; pass uint8 0..255 or scale it")
        arr = np.round(arr * 255.0).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise IFSegError(f"unsupported image dtype {arr.dtype}; pass uint8 (0..255) or float in [0, 1]")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr)


def to_rgb_uint8(im) -> np.ndarray:
    """A Pillow image in any common mode -> RGB uint8 array."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        peak = 65535.0 if arr.max(initial=0) > 255 or im.mode.startswith("I;16") else 255.0
        arr = np.clip(np.round(arr * (255.0 / peak)), 0, 255).astype(np.uint8)
        return cv2.cvtColor(arr, cv2.COLOR_GRAY2RGB)
    if im.mode == "L":
        return cv2.cvtColor(np.asarray(im), cv2.COLOR_GRAY2RGB)
    if im.mode != "RGB":
        im = im.convert("RGB")
    arr = np.asarray(im)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise IFSegError(f"unsupported image layout {arr.shape}; pass an RGB or grayscale image")
    return np.ascontiguousarray(arr)


def resized_shape(
    height: int, width: int, short_side: int = SHORT_SIDE, long_side_max: int = LONG_SIDE_MAX
) -> Tuple[int, int]:
    """``(new_h, new_w)`` of mmcv's keep-ratio rescale to ``(long_side_max, short_side)``."""
    f = min(long_side_max / max(height, width), short_side / min(height, width))
    return int(height * f + 0.5), int(width * f + 0.5)


def resize(image: np.ndarray, short_side: int = SHORT_SIDE, long_side_max: int = LONG_SIDE_MAX) -> np.ndarray:
    """Keep-ratio bilinear resize of an RGB uint8 image (OpenCV fixed-point arithmetic)."""
    h, w = image.shape[:2]
    nh, nw = resized_shape(h, w, short_side, long_side_max)
    if (nh, nw) == (h, w):
        return image.copy()
    return cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)


def normalize(image: np.ndarray) -> torch.Tensor:
    """RGB uint8 ``(H, W, 3)`` -> float32 ``(3, H, W)`` in [-1, 1]."""
    return normalize_tensor(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))


def normalize_tensor(image: torch.Tensor) -> torch.Tensor:
    """``(3, H, W)`` uint8 (or float holding 0..255 levels), any device -> float32 in [-1, 1]:
    ``(x / 255 - 0.5) / 0.5``."""
    return image.float().div_(255.0).sub_(MEAN).div_(STD)


def resize_tensor(
    image: torch.Tensor, short_side: int = SHORT_SIDE, long_side_max: int = LONG_SIDE_MAX
) -> torch.Tensor:
    """:func:`resize` of an RGB ``(3, H, W)`` uint8 tensor on any device -> float32 ``(3, h, w)``
    holding uint8 levels: bilinear (``align_corners=False``, as OpenCV's ``INTER_LINEAR``) rounded
    to the nearest level. OpenCV rounds its weights to 1/2048 (11-bit fixed point), so the two differ
    by at most one level on some pixels (``tests/test_preprocess_torch.py``)."""
    nh, nw = resized_shape(image.shape[1], image.shape[2], short_side, long_side_max)
    x = image.float()
    if (nh, nw) == tuple(image.shape[1:]):
        return x
    return F.interpolate(x[None], size=(nh, nw), mode="bilinear", align_corners=False)[0].round_().clamp_(0, 255)


def preprocess_tensor(
    image: torch.Tensor, short_side: int = SHORT_SIDE, long_side_max: int = LONG_SIDE_MAX
) -> torch.Tensor:
    """RGB uint8 ``(H, W, 3)`` tensor on any device (a frame uploaded once to the GPU) -> model input
    ``(3, h, w)`` float32 on the same device: :func:`resize_tensor`, then :func:`normalize_tensor`.

    Raises:
        IFSegError: not an ``(H, W, 3)`` uint8 tensor.
    """
    if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[2] != 3:
        raise IFSegError(f"expected an RGB uint8 image of shape (H, W, 3), got {image.dtype} {tuple(image.shape)}")
    return normalize_tensor(resize_tensor(image.permute(2, 0, 1), short_side, long_side_max))


def preprocess(image: np.ndarray, short_side: int = SHORT_SIDE, long_side_max: int = LONG_SIDE_MAX) -> torch.Tensor:
    """RGB uint8 image -> model input ``(3, h, w)``."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise IFSegError(f"expected an RGB uint8 image of shape (H, W, 3), got {image.dtype} {image.shape}")
    return normalize(resize(image, short_side, long_side_max))


@dataclass(frozen=True)
class Preprocessing:
    """The resize and normalisation a model was trained / exported with (stored in its bundle or side file)."""

    short_side: int = SHORT_SIDE
    long_side_max: int = LONG_SIDE_MAX

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        """RGB uint8 ``(H, W, 3)`` -> float32 ``(3, h, w)``."""
        return preprocess(image, self.short_side, self.long_side_max)

    def on_device(self, image: np.ndarray, device: torch.device) -> torch.Tensor:
        """RGB uint8 ``(H, W, 3)`` -> float32 ``(3, h, w)`` on ``device``: the uint8 frame is copied
        once (through pinned memory, asynchronously, on CUDA) and resized and normalised there
        (:func:`preprocess_tensor`)."""
        frame = torch.from_numpy(np.ascontiguousarray(image))
        if device.type == "cuda":
            # the caching host allocator keeps a pinned block until the copy from it has finished
            frame = frame.pin_memory().to(device, non_blocking=True)
        else:
            frame = frame.to(device)
        return preprocess_tensor(frame, self.short_side, self.long_side_max)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "short_side": self.short_side,
            "long_side_max": self.long_side_max,
            "mean": MEAN,
            "std": STD,
            "color": "RGB",
            "resize": "keep-ratio bilinear on uint8 (mmcv imrescale)",
        }

    @classmethod
    def short_side_rule(cls, short_side: int) -> "Preprocessing":
        """The reference rule at short side ``short_side`` (pixels): long side capped at 4x it."""
        return cls(short_side, 4 * short_side)

    @classmethod
    def from_dict(cls, d: Optional[Dict[str, Any]], default: "Preprocessing") -> "Preprocessing":
        """The stored settings (``default`` where absent); other normalisations than the reference's are refused."""
        if not d:
            return default
        if float(d.get("mean", MEAN)) != MEAN or float(d.get("std", STD)) != STD or d.get("color", "RGB") != "RGB":
            raise IFSegError(
                f"the model stores a preprocessing this runtime does not implement ({d}); expected RGB, mean = std = "
                f"0.5"
            )
        short = int(d.get("short_side", default.short_side))
        return cls(short, int(d.get("long_side_max", cls.short_side_rule(short).long_side_max)))
