"""Class colours: colorcet's ``glasbey_category10`` palette (256 colours, RGB).

Source: colorcet 3.2.1 (HoloViz, https://colorcet.holoviz.org, ``colorcet.glasbey_category10``),
licensed CC BY 4.0. Its first ten colours are matplotlib's ``tab10`` (Tableau 10); the other 246
follow Glasbey's method (each new colour as far as possible from all before it in a perceptual
colour space; Glasbey et al., "Colour displays for categorical images", Color Research &
Application 32(4), 2007). Any two entries are clearly distinct, the first ones most of all.

Colours are assigned by class INDEX: class ``i`` of the category list is always colour ``i``
(modulo 256), so a category list draws with the same colours on every image and video frame, and
no two of the first 256 classes share a colour. (Colours by name would collide: hashing names into
any palette gives two classes of one image the same colour by chance.)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

GLASBEY_CATEGORY10 = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#3a0183", "#004301", "#0fffa9", "#5e0040", "#bcbcff", "#d8afa2", "#b80080", "#004e53", "#6b6500", "#7d0200",
    "#6126ff", "#ffff9a", "#574964", "#8cb894", "#94fcff", "#028268", "#91ff00", "#8300a0", "#ad8944", "#5b3400",
    "#ffc0f3", "#ff6f76", "#798cff", "#dd00ff", "#515646", "#00458a", "#ffbf60", "#ff018d", "#bec9cf", "#af98b5",
    "#b75700", "#027000", "#cd88ff", "#1dd646", "#c0ecc4", "#7a98b5", "#a56089", "#6f8957", "#bd7d76", "#8b2945",
    "#00adff", "#8fd4ff", "#4b6d77", "#00d4b1", "#9300f3", "#8b9500", "#5d5c9f", "#fedfbb", "#00939f", "#ffdc00",
    "#00ab79", "#520068", "#000092", "#0b5d3e", "#a6e376", "#623b41", "#c6c78a", "#ff9eb6", "#ce506c", "#ff07d6",
    "#8b3a05", "#7f3e71", "#ff4902", "#602ca6", "#1c00ff", "#e7dfff", "#aa3baf", "#d99c00", "#a3a39f", "#3f6aff",
    "#46490d", "#7b6985", "#6c988d", "#ff9a75", "#845cff", "#7c6c46", "#81b755", "#bd004a", "#fd94ff", "#5d0018",
    "#8ad1d1", "#9d8dd3", "#da6d43", "#8b5800", "#3c516a", "#4c6c3b", "#eed0d8", "#cfeeff", "#aa1500", "#dfff4f",
    "#ff2b57", "#d1499e", "#707db8", "#5a8000", "#00e5fd", "#774b95", "#68d58c", "#3e3a72", "#ac413f", "#d6a266",
    "#c169ce", "#6a595e", "#88aced", "#a0a66a", "#d2aae6", "#880063", "#00fddb", "#682819", "#b442ff", "#0e59c5",
    "#178743", "#91d300", "#ce7900", "#f95aff", "#5b7466", "#8eaeb3", "#9c7d8c", "#4600c6", "#6c4e2e", "#a66d46",
    "#9e8973", "#a8afca", "#ce8da7", "#00fe64", "#927900", "#ff63a1", "#f5ffd8", "#018cf1", "#14aca0", "#5b2e5a",
    "#89869e", "#d0ccbb", "#d4afc5", "#dbdd6d", "#d0fff4", "#006586", "#006963", "#a84168", "#2d97c5", "#a974ff",
    "#27bb5e", "#58b700", "#cbffa7", "#a47aab", "#ffbd94", "#89e2c1", "#0fc9ff", "#d500c5", "#636d8a", "#69858f",
    "#4b4e53", "#ab6068", "#7ab6d5", "#2c5a17", "#9a0025", "#bed1f3", "#8a6f68", "#6aa56b", "#865468", "#aecdba",
    "#88997f", "#cbdc00", "#9b0491", "#ebbc1b", "#eb9cd2", "#70006f", "#b1a132", "#ca6c93", "#4146a4", "#e58c8a",
    "#d54500", "#c78bcb", "#b79697", "#d42076", "#724bcc", "#684e00", "#682238", "#38564f", "#6fbbab", "#863a31",
    "#a5d398", "#b9af8f", "#d8e4df", "#ab00e0", "#cbc1db", "#ffdf8c", "#e3534d", "#66696f", "#ff001c", "#532d73",
    "#4e916c", "#a86d11", "#ff9f26", "#5fa3b0", "#c88557", "#925998", "#a3a1ff", "#febaba", "#252a88", "#dbe6a8",
    "#97f2a7", "#6794d6", "#ba5b40", "#3a5d92", "#364f2f", "#277c96", "#8a959b", "#d0b457", "#004764", "#5f5d2f",
    "#8e8e41", "#ad3f13", "#6a963c", "#a13d85", "#bfb7ba", "#acc667", "#6569cf", "#92b000", "#2ce3da", "#016f36",
    "#ff7953", "#42817f", "#4fe900", "#995428", "#5d0a00", "#a30058", "#0c8800", "#5a83a7", "#ffecfb", "#4b6901",
    "#8876d4", "#e6c7ff", "#a5ffda", "#d86f78", "#df024b", "#6a685c", "#786ba2", "#7e8067", "#5a4786", "#0000ca",
    "#7c002b", "#97ff72", "#b6e3e1", "#dc53c9", "#777834", "#58be8e",
)


#: ``(256, 3)`` uint8 RGB table of :data:`GLASBEY_CATEGORY10`.
COLORS = np.array([[int(h[k:k + 2], 16) for k in (1, 3, 5)] for h in GLASBEY_CATEGORY10], np.uint8)


def palette(categories: Sequence[str]) -> np.ndarray:
    """``(N, 3)`` uint8 RGB colours of the N categories, by index (see the module docstring)."""
    return COLORS[np.arange(len(categories)) % len(COLORS)]
