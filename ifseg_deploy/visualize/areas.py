"""Per-class area of a label map: what fraction of the image each class covers."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np


def area_summary(labels: np.ndarray, categories: Sequence[str]) -> List[Tuple[str, float]]:
    """``[(name, fraction), ...]`` of the classes present in ``labels``, largest first.

    Args:
        labels: ``(H, W)`` integer class indices in ``0..N-1`` (N = ``len(categories)``).
        categories: the class names, by index.

    Returns:
        One entry per class with at least one pixel; ``fraction`` = its pixels / all pixels
        (the fractions sum to 1). Equal areas keep the category order.

    Raises:
        ValueError: ``labels`` is empty or holds a value outside ``0..N-1``.
    """
    flat = np.asarray(labels).reshape(-1)
    if flat.size == 0:
        raise ValueError("empty label map")
    if flat.min() < 0 or flat.max() >= len(categories):
        raise ValueError(f"label values must be in 0..{len(categories) - 1}, got {flat.min()}..{flat.max()}")
    counts = np.bincount(flat.astype(np.int64), minlength=len(categories))
    order = sorted(np.flatnonzero(counts), key=lambda c: -counts[c])  # stable: ties stay in index order
    return [(categories[c], float(counts[c] / flat.size)) for c in order]


def format_area_summary(areas: Sequence[Tuple[str, float]], limit: Optional[int] = None) -> str:
    """``"sky 41.2%, grass 30.1%, cat 18.0%"``; with ``limit``, the first ``limit`` classes and
    ``"+N more"``."""
    shown = list(areas if limit is None else areas[:limit])
    text = ", ".join(f"{name} {100 * frac:.1f}%" for name, frac in shown)
    rest = len(areas) - len(shown)
    return f"{text}, +{rest} more" if rest else text
