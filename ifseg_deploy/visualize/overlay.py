"""Colour overlay of a label map, with an outline option and a legend that scales with the image.

What the legend shows is what the image shows: each class is drawn as its palette colour blended
over the photo at opacity ``alpha``, optionally outlined in the pure palette colour
(``contours``); its legend swatch is that same blend over a mid-grey surface, framed by the pure
colour. On a flat mid-grey image every pixel outside the legend therefore has exactly a colour
of a swatch; on a photo the fill follows the photo's brightness and the outline is exact.
Colours are by class index (:mod:`ifseg_deploy.visualize.palette`); names are drawn as typed, in
any script (:mod:`ifseg_deploy.visualize.fonts`).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence, Union

import cv2
import numpy as np

from .fonts import HersheyPen, TrueTypePen, legend_pen
from .palette import palette

Pen = Union[HersheyPen, TrueTypePen]

#: With more categories than this, the legend lists only those present in the image.
LEGEND_MAX_ALL = 20
#: The surface legend swatches blend their colour over (RGB mid grey).
SWATCH_GREY = 128
#: Legend text height as a fraction of the image's shorter side, and its minimum in pixels.
TEXT_FRACTION = 1 / 40
MIN_TEXT_PX = 10


def blend(image: np.ndarray, colors: np.ndarray, alpha: float) -> np.ndarray:
    """``(1 - alpha) * image + alpha * colors``, rounded to uint8 (OpenCV ``addWeighted``); both
    uint8 RGB arrays of the same shape."""
    return cv2.addWeighted(image, 1.0 - alpha, colors, alpha, 0.0)


def outline_mask(labels: np.ndarray, width: int) -> np.ndarray:
    """``(H, W)`` bool: pixels within ``width`` pixels (chessboard distance) of another class."""
    lab = labels.astype(np.float32)  # exact for any label below 2**24; cv2 morphology has no int64
    kernel = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    return cv2.dilate(lab, kernel) != cv2.erode(lab, kernel)


def text_height(image_shape: Sequence[int]) -> int:
    """Legend text height in pixels: :data:`TEXT_FRACTION` of the shorter image side (at least
    :data:`MIN_TEXT_PX`), so the legend reads the same on a 640x480 frame and a 6000x4000 photo."""
    return max(MIN_TEXT_PX, round(min(image_shape[0], image_shape[1]) * TEXT_FRACTION))


class _Grid(NamedTuple):
    """Legend geometry for one text height (pixels)."""

    th: int  # text height
    pad: int  # margin
    line: int  # row pitch; swatch side = line - pad
    col_w: int  # column pitch
    rows: int
    cols: int


def _grid(names: Sequence[str], th: int, h: int, pen: Pen) -> _Grid:
    pad, line = max(2, th // 2), round(th * 1.8)
    text_w = max(pen.width(n, th) for n in names)
    rows = max(1, min(len(names), (h - pad) // line))
    return _Grid(th, pad, line, line + text_w + 2 * pad, rows, math.ceil(len(names) / rows))


def draw_legend(
    image: np.ndarray,
    categories: Sequence[str],
    colors: np.ndarray,
    areas: Optional[np.ndarray] = None,
    alpha: float = 0.5,
    font: Optional[str] = None,
) -> np.ndarray:
    """Draw the legend in the top-left corner of an RGB uint8 ``(H, W, 3)`` image, in place; returns ``image``.

    One row per category: a swatch (the colour blended at ``alpha`` over :data:`SWATCH_GREY`,
    framed by the pure colour) and the name in white on a darkened panel. With more than
    :data:`LEGEND_MAX_ALL` categories only those with pixels in ``areas`` (pixel count per
    category) are listed. Text height follows :func:`text_height`; rows wrap into columns when
    they do not fit the image height, the text shrinks (down to :data:`MIN_TEXT_PX`) when the
    columns do not fit its width, and what still does not fit is left out for the largest
    classes and a last row "+N more".

    Args:
        colors: ``(N, 3)`` uint8 RGB, one per category (:func:`~ifseg_deploy.visualize.palette.palette`).
        areas: ``(N,)`` pixel count per category, or None (all categories listed).
        font: a TrueType/OpenType file for the names (default ``$IFSEG_FONT``). Without one, ASCII
            names use OpenCV's Hershey font and other names the installed fonts that cover them
            (:func:`~ifseg_deploy.visualize.fonts.legend_pen`; one logged warning per set of
            characters no font covers).

    Raises:
        IFSegError: ``font`` (or ``$IFSEG_FONT``) is missing or not a readable font file.
    """
    pen = legend_pen(categories, font)  # from all categories: the same look on every frame of a video
    idx = list(range(len(categories)))
    if areas is not None and len(idx) > LEGEND_MAX_ALL:
        idx = [i for i in idx if areas[i] > 0]
    if not idx:
        return image
    h, w = image.shape[:2]
    names = [categories[i] for i in idx]
    g = _grid(names, text_height(image.shape), h, pen)
    while g.cols * g.col_w > w and g.th > MIN_TEXT_PX:
        g = _grid(names, max(MIN_TEXT_PX, int(g.th * 0.85)), h, pen)
    capacity = g.rows * max(1, w // g.col_w)
    if len(idx) > capacity:  # keep the largest classes, in category order, and say how many are left out
        weight = areas if areas is not None else -np.arange(len(categories))
        left_out = len(idx) - (capacity - 1)
        idx = sorted(sorted(idx, key=lambda i: -weight[i])[: capacity - 1])
        names = [categories[i] for i in idx] + [f"+{left_out} more"]
        g = _grid(names, g.th, h, pen)
    box_w, box_h = min(w, g.cols * g.col_w), min(h, g.rows * g.line + g.pad)
    image[:box_h, :box_w] = (image[:box_h, :box_w].astype(np.float32) * 0.25).astype(np.uint8)
    side, frame = g.line - g.pad, max(1, g.th // 6)
    fills = blend(np.full_like(colors, SWATCH_GREY), colors, alpha)
    text = []
    for k, name in enumerate(names):
        x, y = g.pad + (k // g.rows) * g.col_w, g.pad + (k % g.rows) * g.line
        if k < len(idx):
            i = idx[k]
            cv2.rectangle(image, (x, y), (x + side - 1, y + side - 1), tuple(int(c) for c in colors[i]), -1)
            cv2.rectangle(
                image,
                (x + frame, y + frame),
                (x + side - 1 - frame, y + side - 1 - frame),
                tuple(int(c) for c in fills[i]),
                -1,
            )
        text.append((x + side + g.pad, y + (side + g.th) // 2, name))  # baseline: capitals centred on the swatch
    pen.draw(image, text, g.th)
    return image


def overlay(
    image: np.ndarray,
    labels: np.ndarray,
    categories: Sequence[str],
    alpha: float = 0.5,
    contours: bool = False,
    legend: bool = True,
    font: Optional[str] = None,
) -> np.ndarray:
    """Blend class colours over an RGB uint8 ``(H, W, 3)`` image; returns a new RGB uint8 image.

    Args:
        labels: ``(H, W)`` integer class indices into ``categories``.
        alpha: opacity of the colour layer (0 = image only, 1 = colours only).
        contours: outline every region in its class's pure colour (width grows with the image).
        legend: draw the category legend (see :func:`draw_legend`).
        font: the legend's font file (see :func:`draw_legend`).

    Raises:
        ValueError: ``alpha`` outside [0, 1].
        IFSegError: a bad legend font file (see :func:`draw_legend`).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError("alpha must be in [0, 1]")
    colors = palette(categories)
    index = np.clip(labels, 0, len(categories) - 1)
    out = blend(image, np.take(colors, index, axis=0), alpha)
    if contours:
        edge = outline_mask(index, max(1, round(min(labels.shape) / 400)))
        out[edge] = colors[index[edge]]
    if legend:
        areas = np.bincount(index.reshape(-1).astype(np.int64), minlength=len(categories))
        draw_legend(out, categories, colors, areas, alpha, font)
    return out
