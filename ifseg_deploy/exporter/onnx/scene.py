"""A deterministic, photo-like test image for export verification.

Random noise is a poor verification input for kNN smoothing: its cells' ResNet features are
almost equidistant, so many cells have 3rd and 4th neighbours whose similarities tie within
float rounding, and two correct runtimes keep different neighbours. A photo has structure:
regions, edges, smooth shading and fine texture. This module draws such a scene from a seed
(sky and ground gradients, soft-edged shapes with their own shading and texture, low-frequency
lighting and sensor-like noise), so verification needs no third-party photo. On the dev
fixture's model, float rounding could change the kNN smoothing (:mod:`.knn_ties`) of 3 % of the
cells of four such scenes (512x512 to 683x512), and of 87 % of the cells of a uniform-noise image.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Shapes drawn over the background.
SHAPES = 9
#: Amplitude (uint8 levels) of the mid-frequency texture of the ground and the shapes (grass, fabric, bark).
TEXTURE = 25.0
#: Standard deviation of the per-pixel noise (uint8 levels), about a phone camera's at base ISO.
NOISE_SIGMA = 3.0


def _gradient(height: int, width: int, top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` float32 vertical blend from ``top`` to ``bottom`` (RGB, 0..255)."""
    t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    return np.broadcast_to(top * (1 - t) + bottom * t, (height, width, 3)).astype(np.float32)


def _smooth_field(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """``(H, W)`` float32 in about [-1, 1]: random values on a ``cells``-wide grid, bicubically enlarged."""
    coarse = rng.uniform(-1.0, 1.0, (cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)


def synthetic_scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    """An RGB uint8 ``(height, width, 3)`` scene; the same arguments draw the same scene.

    Horizon at a random height between sky and a textured ground gradient, ``SHAPES`` filled
    ellipses and polygons (each with its own colour, shading and texture, edges softened by a small
    blur), a smooth illumination field and Gaussian noise of ``NOISE_SIGMA`` levels.
    """
    rng = np.random.default_rng(seed)
    horizon = int(height * rng.uniform(0.3, 0.6))
    sky = _gradient(horizon, width, np.array([90, 140, 215], np.float32), np.array([200, 220, 240], np.float32))
    ground_top = rng.uniform(60, 160, 3).astype(np.float32)
    ground = _gradient(height - horizon, width, ground_top, ground_top * 0.45)
    image = np.concatenate([sky, ground], axis=0)
    image[horizon:] += _smooth_field(rng, height - horizon, width, 40)[..., None] * TEXTURE
    scale = min(height, width)
    for _ in range(SHAPES):
        colour = rng.uniform(20, 235, 3)
        shading = (
            _smooth_field(rng, height, width, 3) * 35.0
            + _smooth_field(rng, height, width, int(rng.integers(12, 48))) * TEXTURE
        )
        mask = np.zeros((height, width), np.uint8)
        cx, cy = int(rng.uniform(0, width)), int(rng.uniform(horizon * 0.5, height))
        if rng.random() < 0.5:
            axes = (max(2, int(scale * rng.uniform(0.05, 0.3))), max(2, int(scale * rng.uniform(0.05, 0.3))))
            cv2.ellipse(mask, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
        else:
            r = scale * rng.uniform(0.08, 0.3)
            angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 7))))
            pts = np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], axis=1).astype(np.int32)
            cv2.fillPoly(mask, [pts], 255)
        alpha = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), 1.0)[..., None]
        image = image * (1 - alpha) + (colour + shading[..., None]) * alpha
    image *= 1.0 + 0.15 * _smooth_field(rng, height, width, 4)[..., None]
    image += rng.normal(0.0, NOISE_SIGMA, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)
