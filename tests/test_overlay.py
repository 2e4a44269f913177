"""Colour overlays: the published palette by class index, opacity, outlines, a legend that shows the
colours the image shows and scales with the image, and the per-class area summary."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ifseg_deploy.visualize.areas import area_summary, format_area_summary
from ifseg_deploy.visualize.overlay import draw_legend, overlay
from ifseg_deploy.visualize.palette import palette

# matplotlib's tab10 ("Tableau 10"), as published in matplotlib's colour documentation
TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def _rgb(hex_colour):
    return tuple(int(hex_colour[k : k + 2], 16) for k in (1, 3, 5))


def _scene():
    image = np.full((120, 200, 3), 100, np.uint8)
    labels = np.zeros((120, 200), np.int64)
    labels[:, 100:] = 1
    return image, labels


def _delta_e(colors):
    """Pairwise CIE76 colour differences (CIELAB via OpenCV, D65)."""
    lab = cv2.cvtColor(colors.reshape(1, -1, 3).astype(np.float32) / 255, cv2.COLOR_RGB2LAB).reshape(-1, 3)
    d = np.linalg.norm(lab[:, None] - lab[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    return d


def test_palette_is_glasbey_category10_by_index():
    cats = [f"class {i}" for i in range(300)]
    colors = palette(cats)
    assert colors.shape == (300, 3)
    assert colors.dtype == np.uint8
    assert [tuple(c) for c in colors[:10]] == [_rgb(h) for h in TAB10]
    # by index, not by name: the first class is always the first colour; 256 distinct colours, then it repeats
    assert (palette(["dog", "cat"])[0] == palette(["cat", "dog"])[0]).all()
    assert len({tuple(c) for c in colors[:256]}) == 256
    assert (colors[256:] == colors[:44]).all()
    # clearly distinct: every pair differs by a visible amount (CIE76 > 8; ~2.3 is a just-noticeable difference),
    # the first 20 colours (most category lists) by far more
    d = _delta_e(colors[:256])
    assert d.min() > 8
    assert d[:20, :20].min() > 25


def test_opacity_blends_image_and_colours():
    image, labels = _scene()
    cats = ["grass", "cat"]
    grass, cat = _rgb(TAB10[0]), _rgb(TAB10[1])
    assert (overlay(image, labels, cats, alpha=0.0, legend=False) == image).all()
    full = overlay(image, labels, cats, alpha=1.0, legend=False)
    assert (full[:, :100] == grass).all()
    assert (full[:, 100:] == cat).all()
    part = overlay(image, labels, cats, alpha=0.3, legend=False)
    assert (part[5, 150] == np.round(0.7 * 100 + 0.3 * np.array(cat))).all()
    with pytest.raises(ValueError):
        overlay(image, labels, cats, alpha=1.5)


def test_outlines_are_the_pure_class_colour_along_boundaries():
    image, labels = _scene()
    cats = ["grass", "cat"]
    plain = overlay(image, labels, cats, alpha=0.5, legend=False)
    edged = overlay(image, labels, cats, alpha=0.5, contours=True, legend=False)
    changed = np.argwhere((plain != edged).any(-1))
    assert changed.size
    assert set(np.unique(changed[:, 1])) == {99, 100}  # one pixel each side of the boundary
    assert (edged[:, 99] == _rgb(TAB10[0])).all()
    assert (edged[:, 100] == _rgb(TAB10[1])).all()


def test_every_overlay_colour_is_in_the_legend():
    grey = 128
    image = np.full((240, 320, 3), grey, np.uint8)
    labels = np.zeros((240, 320), np.int64)
    labels[:, 160:] = 1
    labels[120:, 80:240] = 3  # class 2 is absent
    cats = ["sky", "grass", "tree", "cat"]
    alpha = 0.4
    pure = {k: _rgb(TAB10[k]) for k in (0, 1, 3)}
    blended = {k: tuple(np.round((1 - alpha) * grey + alpha * np.array(c)).astype(int)) for k, c in pure.items()}
    allowed = set(pure.values()) | set(blended.values())
    for contours in (False, True):
        bare = overlay(image, labels, cats, alpha=alpha, contours=contours, legend=False)
        out = overlay(image, labels, cats, alpha=alpha, contours=contours)
        ys, xs = np.nonzero((out != bare).any(-1))
        box = np.zeros(labels.shape, bool)
        box[: ys.max() + 1, : xs.max() + 1] = True
        assert 0 < box.mean() < 0.25  # a legend in the top-left corner
        outside = {tuple(c) for c in out[~box].reshape(-1, 3)}
        assert outside <= allowed
        assert set(blended.values()) <= outside
        inside = {tuple(c) for c in out[box].reshape(-1, 3)}
        assert allowed <= inside  # each class's fill and outline colour is a legend swatch


def _text_rows(image):
    """Height of the white (grey-level, bright) text drawn by the legend."""
    bright = (image.min(-1) >= 128) & (image.max(-1) == image.min(-1))
    rows = np.flatnonzero(bright.any(1))
    return rows.max() - rows.min() + 1


def test_legend_text_scales_with_the_image():
    cats = ["cat"]
    small = draw_legend(np.zeros((400, 600, 3), np.uint8), cats, palette(cats))
    photo = draw_legend(np.zeros((4000, 6000, 3), np.uint8), cats, palette(cats))  # a 24-megapixel photo
    hs, hl = _text_rows(small), _text_rows(photo)
    assert 8.5 < hl / hs < 11.5, (hs, hl)  # proportional to the image size
    assert hl >= 0.015 * 4000  # readable when the photo is viewed whole


def test_many_classes_wrap_into_columns():
    cats = [f"c{i}" for i in range(150)]
    image = np.full((480, 640, 3), 128, np.uint8)
    labels = (np.arange(480 * 640).reshape(480, 640) * 150 // (480 * 640)).astype(np.int64)  # all 150 present
    out = overlay(image, labels, cats, alpha=0.5)
    found = {tuple(c) for c in out.reshape(-1, 3)}
    assert all(tuple(c) in found for c in palette(cats))  # every swatch frame is drawn inside the image


def test_legend_that_cannot_fit_keeps_the_largest_classes():
    cats = [f"a long category name number {i}" for i in range(150)]
    image = np.full((120, 160, 3), 128, np.uint8)
    labels = np.zeros((120, 160), np.int64)
    labels[:, :80] = 7  # the two largest classes
    labels[:, 80:150] = 42
    labels[:, 150:] = np.arange(120)[:, None] % 60 + 60  # 60 small ones
    shown = {
        tuple(c)
        for c in draw_legend(image.copy(), cats, palette(cats), np.bincount(labels.ravel(), minlength=150)).reshape(
            -1, 3
        )
    }
    colours = palette(cats)
    assert tuple(colours[7]) in shown
    assert tuple(colours[42]) in shown
    assert sum(tuple(c) in shown for c in colours[60:120]) < 60  # not all fit: the rest is "+N more"


def test_area_summary():
    labels = np.zeros((10, 10), np.int64)
    labels[:5] = 2  # 50 pixels
    labels[5:, :4] = 3  # 20 pixels; class 0 keeps 30, class 1 none
    assert area_summary(labels, ["a", "b", "c", "d"]) == [("c", 0.5), ("a", 0.3), ("d", 0.2)]
    tie = np.array([[1, 0], [0, 1]])
    assert area_summary(tie, ["x", "y"]) == [("x", 0.5), ("y", 0.5)]
    assert format_area_summary([("c", 0.5), ("a", 0.3), ("d", 0.2)]) == "c 50.0%, a 30.0%, d 20.0%"
    assert format_area_summary([("c", 0.5), ("a", 0.3), ("d", 0.2)], limit=1) == "c 50.0%, +2 more"
    with pytest.raises(ValueError, match="0..3"):
        area_summary(labels, ["a", "b", "c"])
