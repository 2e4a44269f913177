"""Colour overlay of a label map with a legend; deterministic colours per category name."""

from __future__ import annotations

import colorsys
import hashlib
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

#: With more categories than this, the legend lists only those present in the image.
LEGEND_MAX_ALL = 20


def category_color(name: str) -> Tuple[int, int, int]:
    """A stable, saturated RGB colour derived from the category name (same name, same colour)."""
    digest = hashlib.sha1(name.strip().lower().encode("utf-8")).digest()
    hue = int.from_bytes(digest[:2], "big") / 65536.0
    sat = 0.65 + 0.35 * digest[2] / 255.0
    val = 0.75 + 0.25 * digest[3] / 255.0
    r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
    return int(r * 255), int(g * 255), int(b * 255)


def palette(categories: Sequence[str]) -> np.ndarray:
    """``(N, 3)`` uint8 RGB colours of the categories."""
    return np.array([category_color(c) for c in categories], dtype=np.uint8).reshape(-1, 3)


def draw_legend(image: np.ndarray, categories: Sequence[str], colors: np.ndarray, present: Optional[np.ndarray] = None) -> np.ndarray:
    """Draw a legend box (colour swatch + name per row) in the top-left corner, in place."""
    idx = list(range(len(categories)))
    if present is not None and len(idx) > LEGEND_MAX_ALL:
        idx = [i for i in idx if present[i]]
    h, w = image.shape[:2]
    scale = max(0.4, min(1.0, min(h, w) / 900))
    thick = 1 if scale < 0.7 else 2
    line = int(26 * scale) + 4
    (tw, _), _ = cv2.getTextSize("M" * max((len(categories[i]) for i in idx), default=1), cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    box_w, box_h = min(w, tw + line + 16), min(h, line * len(idx) + 8)
    roi = image[:box_h, :box_w]
    roi[:] = (roi.astype(np.float32) * 0.35).astype(np.uint8)
    for row, i in enumerate(idx):
        y = 4 + row * line
        if y + line > h:
            break
        color = tuple(int(c) for c in colors[i])
        cv2.rectangle(image, (6, y + 3), (6 + line - 8, y + line - 5), color, -1)
        cv2.putText(image, categories[i], (line + 4, y + line - 8), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return image


def overlay(
    image: np.ndarray,
    labels: np.ndarray,
    categories: Sequence[str],
    alpha: float = 0.5,
    contours: bool = False,
    legend: bool = True,
) -> np.ndarray:
    """Blend class colours over an RGB uint8 image; returns a new RGB uint8 image.

    Args:
        alpha: opacity of the colour layer (0 = image only, 1 = colours only).
        contours: draw class boundaries in white.
        legend: draw the category legend.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError("alpha must be in [0, 1]")
    colors = palette(categories)
    color_layer = colors[np.clip(labels, 0, len(categories) - 1)]
    out = (image.astype(np.float32) * (1 - alpha) + color_layer.astype(np.float32) * alpha).round().astype(np.uint8)
    if contours:
        lab = labels.astype(np.int32)
        edge = np.zeros(lab.shape, dtype=bool)
        edge[:-1] |= lab[:-1] != lab[1:]
        edge[:, :-1] |= lab[:, :-1] != lab[:, 1:]
        edge = cv2.dilate(edge.astype(np.uint8), np.ones((2, 2), np.uint8)).astype(bool)
        out[edge] = 255
    if legend:
        present = np.bincount(labels.reshape(-1).astype(np.int64), minlength=len(categories)) > 0
        draw_legend(out, categories, colors, present)
    return out
