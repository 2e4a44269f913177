"""Verification of in-graph kNN smoothing where two correct runtimes may keep different neighbours:
near-tied cells, the cells their propagation reaches, the pixels up-sampled from them, and the
comparison that leaves exactly those out (and still refuses every other difference)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ifseg_deploy.exporter.onnx.knn_ties import near_tied_cells, undetermined_cells, undetermined_pixels
from ifseg_deploy.exporter.onnx.scene import synthetic_scene
from ifseg_deploy.exporter.onnx.verify import CaseResult, VerifyReport, compare_outputs

#: Six cells on a circle (degrees). Cell 0's nearest other cells, 1 and 2, are both 30 degrees away:
#: an exact tie for k = 2. Every other cell's 2nd and 3rd most similar cells are >= 0.08 apart in cosine.
ANGLES = [0, 30, -30, 95, 175, 260]
#: k = 2 neighbours (the cell itself and the nearest other), worked out by hand from ANGLES;
#: cell 0 takes 1 or 2.
NEAREST_OTHER = {1: 0, 2: 0, 3: 1, 4: 3, 5: 2}


def _features(angles, channels=4):
    rad = np.deg2rad(np.asarray(angles, dtype=np.float64))
    f = np.zeros((1, len(angles), channels), dtype=np.float32)
    f[0, :, 0], f[0, :, 1] = 3 * np.cos(rad), 3 * np.sin(rad)  # any length: similarities are cosines
    return f


def test_near_tied_cells_finds_the_exact_tie_only():
    ref = _features(ANGLES)
    out = ref + np.float32(1e-7) * np.random.default_rng(0).standard_normal(ref.shape).astype(np.float32)
    tied, neighbours = near_tied_cells(ref, out, 2)
    assert tied.tolist() == [[True, False, False, False, False, False]]
    assert neighbours.shape == (1, 6, 2)
    assert (neighbours[0, :, 0] == np.arange(6)).all()
    assert {c: int(neighbours[0, c, 1]) for c in NEAREST_OTHER} == NEAREST_OTHER
    # cell 1 at 29.9 degrees: cell 0's candidates differ by cos 29.9 - cos 30 = 8.7e-4 in cosine, far above
    # float rounding: decided, while the runtimes agree; undecided when the other runtime puts cell 1 at 30.1
    near = _features([0, 29.9, -30, 95, 175, 260])
    assert not near_tied_cells(near, near, 2)[0].any()
    assert near_tied_cells(near, _features([0, 30.1, -30, 95, 175, 260]), 2)[0].tolist() == [[True] + [False] * 5]
    # k >= cells: every cell is a neighbour, nothing to choose
    assert not near_tied_cells(ref, out, 6)[0].any()
    assert near_tied_cells(ref, out, 60)[1].shape == (1, 6, 6)


@pytest.mark.parametrize("iters,expected", [(1, {0}), (2, {0, 1, 2}), (3, {0, 1, 2, 3, 5}), (4, {0, 1, 2, 3, 4, 5})])
def test_undetermined_cells_follow_propagation(iters, expected):
    """Pass 1 reads cell 0's own neighbours; pass t + 1 reads the cells whose neighbours were undetermined at pass t:
    1 and 2 take 0, then 3 takes 1 and 5 takes 2, then 4 takes 3."""
    neighbours = np.array([[[c, NEAREST_OTHER.get(c, 1)] for c in range(6)]])
    tied = np.zeros((1, 6), dtype=bool)
    tied[0, 0] = True
    assert set(np.flatnonzero(undetermined_cells(tied, neighbours, iters)[0])) == expected


def test_undetermined_pixels_are_the_bilinear_support():
    """2x2 grid -> 4x4 pixels, align_corners=False: source coordinates -0.25 (clamped), 0.25, 0.75, 1.25, so
    cell 0 of each axis weighs on pixels 0, 1, 2 and cell 1 on pixels 1, 2, 3."""
    cells = np.array([[True, False, False, False]])
    expected = np.zeros((4, 4), dtype=bool)
    expected[:3, :3] = True
    assert (undetermined_pixels(cells, (2, 2), (4, 4))[0] == expected).all()
    last = np.array([[False, False, False, True]])
    assert (undetermined_pixels(last, (2, 2), (4, 4))[0] == expected[::-1, ::-1]).all()


def _smooth(p0, neighbours, iters):
    """Mean over the neighbours, ``iters`` times (written out for the test)."""
    p = p0.copy()
    for _ in range(iters):
        p = np.stack([p[list(nbrs)].mean(0) for nbrs in neighbours])
    return p


def _case(cell0_other, iters):
    """ORT-like outputs: k = 2 smoothing of random probabilities with cell 0 keeping ``cell0_other``."""
    logits = np.random.default_rng(1).standard_normal((1, 6, 3)).astype(np.float32)
    p0 = torch.softmax(torch.from_numpy(logits), -1).numpy()[0].astype(np.float64)
    neighbours = [(0, cell0_other)] + [(c, NEAREST_OTHER[c]) for c in range(1, 6)]
    return {
        "logits": logits,
        "features": _features(ANGLES),
        "knn_probs": _smooth(p0, neighbours, iters)[None].astype(np.float32),
    }


def test_compare_leaves_out_near_ties_and_keeps_refusing_the_rest():
    feeds = {
        "images": torch.zeros(1, 3, 32, 48),
        "prompt_embeds": torch.zeros(1, 5, 8),
        "class_embeds": torch.zeros(3, 8),
    }
    iters = 3
    ref, out = _case(1, iters), _case(2, iters)
    cells_differ = np.abs(ref["knn_probs"] - out["knn_probs"]).max(-1)[0] > 1e-6
    assert set(np.flatnonzero(cells_differ)) == {0, 1, 2, 3, 5}  # both choices are legitimate, and they do differ
    strict = compare_outputs("tie", feeds, ref, out)
    assert not strict.ok
    assert any("knn_probs" in p for p in strict.problems)
    case = compare_outputs("tie", feeds, ref, out, knn=(2, iters))
    assert case.ok, case.problems
    assert case.knn_masked == (5, 6), case.problems
    assert "kNN compared on 1 of 6 cells (5 left out" in case.line()
    wrong = {**out, "knn_probs": out["knn_probs"].copy()}
    wrong["knn_probs"][0, 4] = wrong["knn_probs"][0, 4, ::-1]  # the one determined cell disagrees
    refused = compare_outputs("tie", feeds, ref, wrong, knn=(2, iters))
    assert not refused.ok
    assert any("knn_probs" in p for p in refused.problems)


def test_knn_compared_nowhere_is_refused():
    """Near-tie masking must not turn into no check: a verification where every case left out every cell fails."""
    shapes = {"images": (1, 3, 32, 32), "prompt_embeds": (1, 5, 8), "class_embeds": (3, 8)}
    nowhere = VerifyReport(
        [CaseResult("flat", shapes, knn_masked=(4, 4)), CaseResult("flat 2", shapes, knn_masked=(6, 6))]
    )
    assert not nowhere.ok
    assert "could not be compared" in nowhere.failure()
    assert nowhere.to_dict()["ok"] is False
    somewhere = VerifyReport(
        [CaseResult("flat", shapes, knn_masked=(4, 4)), CaseResult("scene", shapes, knn_masked=(1, 6))]
    )
    assert somewhere.ok
    assert VerifyReport([CaseResult("host kNN", shapes)]).ok


def test_synthetic_scene_is_seeded_and_photo_like():
    a, b, c = synthetic_scene(96, 128, 0), synthetic_scene(96, 128, 0), synthetic_scene(96, 128, 1)
    assert a.shape == (96, 128, 3)
    assert a.dtype == np.uint8
    assert (a == b).all()
    assert (a != c).any()
    # photo-like: smooth almost everywhere (small neighbour differences) but not flat, with edges
    step = np.abs(np.diff(a.astype(np.int16), axis=1))
    assert np.median(step) <= 8
    assert a.std() > 20
    assert (step > 40).mean() > 0.001
