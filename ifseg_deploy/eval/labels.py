"""Label-map files: reading them, and mapping stored values to class indices (or ignore)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Iterable, Sequence, Tuple

import numpy as np

from ..errors import IFSegError
from .metrics import IGNORE

#: Table value of stored label values that must not occur.
INVALID = -2
SINGLE_CHANNEL_MODES = ("L", "P", "I;16", "I;16L", "I;16B", "I")


def check_same_size(a: Tuple[int, int], b: Tuple[int, int], what_a: str, what_b: str) -> None:
    """Raise a one-line :class:`IFSegError` unless the ``(H, W)`` shapes ``a`` and ``b`` are equal."""
    if a != b:
        raise IFSegError(
            f"{what_a} is {a[1]}x{a[0]} but {what_b} is {b[1]}x{b[0]} (width x height); they must have the same size"
        )


def read_label_map(path: str) -> np.ndarray:
    """A single-channel PNG (8/16-bit grayscale or palette indices) as an int64 array ``(H, W)``."""
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        raise IFSegError(f"label map not found: {path}")
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode not in SINGLE_CHANNEL_MODES:
                raise IFSegError(
                    f"{path} is a {mode} image, not a label map; label maps are single-channel (8/16-bit gray or "
                    f"palette) PNGs"
                )
            return np.asarray(im, dtype=np.int64)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise IFSegError(
            f"cannot decode label map {path} ({str(e).splitlines()[0][:100]}); pass PNG label maps"
        ) from None


def _ignored(values: Sequence[int]) -> str:
    return f" or {', '.join(map(str, values))} (ignore)" if values else ""


@dataclass(frozen=True)
class LabelMapping:
    """Stored value -> class index in ``0..N-1`` or :data:`IGNORE`; unlisted values are errors."""

    table: np.ndarray  # int64 (V,): INVALID for values that must not occur
    expected: str  # the valid values, for error messages

    @classmethod
    def from_pairs(cls, pairs: Dict[int, int], expected: str) -> "LabelMapping":
        table = np.full(max(pairs) + 1, INVALID, np.int64)
        for value, target in pairs.items():
            table[value] = target
        return cls(table, expected)

    @classmethod
    def identity(cls, num_classes: int, ignore: Iterable[int] = ()) -> "LabelMapping":
        """Values ``0..N-1`` are classes; the ``ignore`` values are ignored."""
        pairs = {c: c for c in range(num_classes)}
        ignore = sorted(set(ignore))
        pairs.update({v: IGNORE for v in ignore})
        return cls.from_pairs(pairs, f"0..{num_classes - 1}{_ignored(ignore)}")

    @classmethod
    def reduce_zero_label(cls, num_classes: int, ignore: Iterable[int] = (255,)) -> "LabelMapping":
        """mmsegmentation's ``reduce_zero_label`` (ADE20K's annotation PNGs): stored 0 is ignored,
        ``1..N`` are classes ``0..N-1``, and the ``ignore`` values (255) stay ignored.

        Source: mmseg ``LoadAnnotations`` (``gt[gt == 0] = 255; gt = gt - 1; gt[gt == 254] = 255``).
        """
        ignore = sorted(set(ignore))
        pairs = {0: IGNORE, **{v: IGNORE for v in ignore}, **{k: k - 1 for k in range(1, num_classes + 1)}}
        return cls.from_pairs(pairs, f"0 (ignore), 1..{num_classes}{_ignored(ignore)}")

    def apply(self, raw: np.ndarray, path: str) -> np.ndarray:
        """Map a stored label map; any value outside the table is a one-line error naming ``path``."""
        bad = (raw < 0) | (raw >= len(self.table))
        out = self.table[np.where(bad, 0, raw)]
        bad |= out == INVALID
        if bad.any():
            values = np.unique(raw[bad])
            shown = ", ".join(map(str, values[:5])) + (" ..." if len(values) > 5 else "")
            raise IFSegError(
                f"{path}: label value(s) {shown} out of range (expected {self.expected}); check the dataset / "
                f"`num_classes` / `ignore` / `reduce_zero_label` (ADE20K: 0 = ignore)"
            )
        return out
