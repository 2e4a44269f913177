"""Colour overlays: deterministic colours per name, opacity, contours, legend."""

from __future__ import annotations

import numpy as np
import pytest

from ifseg_deploy.visualize.overlay import category_color, overlay, palette


def _scene():
    image = np.full((120, 200, 3), 100, np.uint8)
    labels = np.zeros((120, 200), np.int64)
    labels[:, 100:] = 1
    return image, labels


def test_colours_depend_only_on_the_name():
    assert category_color("cat") == category_color(" Cat ") != category_color("dog")
    assert (palette(["dog", "cat"])[::-1] == palette(["cat", "dog"])).all()


def test_opacity_blends_image_and_colours():
    image, labels = _scene()
    cats = ["grass", "cat"]
    assert (overlay(image, labels, cats, alpha=0.0, legend=False) == image).all()
    full = overlay(image, labels, cats, alpha=1.0, legend=False)
    assert (full[:, :100] == category_color("grass")).all() and (full[:, 100:] == category_color("cat")).all()
    half = overlay(image, labels, cats, alpha=0.5, legend=False)
    expected = np.round(0.5 * 100 + 0.5 * np.array(category_color("cat"), np.float32))
    assert (half[5, 150] == expected).all()
    with pytest.raises(ValueError):
        overlay(image, labels, cats, alpha=1.5)


def test_contours_and_legend():
    image, labels = _scene()
    cats = ["grass", "cat"]
    plain = overlay(image, labels, cats, alpha=0.5, legend=False)
    edged = overlay(image, labels, cats, alpha=0.5, contours=True, legend=False)
    changed = np.argwhere((plain != edged).any(-1))
    assert changed.size and set(np.unique(changed[:, 1])) <= {98, 99, 100, 101}  # only along the class boundary
    assert (edged[60, 99] == 255).all()
    legend = overlay(image, labels, cats, alpha=0.5)
    diff = np.argwhere((legend != plain).any(-1))
    assert diff.size and diff[:, 0].max() < 60 and diff[:, 1].max() < 150  # a box in the top-left corner
    assert (legend[:, :, :] == plain)[80:].all()
