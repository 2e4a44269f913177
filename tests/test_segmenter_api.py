"""The embeddable Segmenter API: run-time categories, batching, sliding windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import save_tiny_bundle

from ifseg_deploy.errors import IFSegError
from ifseg_deploy.preprocess import Preprocessing
from ifseg_deploy.runtime.segmenter import Segmenter


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory, bpe_dir):
    path = save_tiny_bundle(tmp_path_factory.mktemp("m") / "tiny.safetensors", bpe_dir=bpe_dir)
    return Segmenter.load(path, bpe_dir=bpe_dir, knn_iters=3, device="cpu")


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_result_fields(segmenter):
    res = segmenter.segment(_image(96, 160))
    assert segmenter.preprocessing.short_side == 128  # the tiny bundle's 8x8 seg grid works at 128 px
    assert res.labels.shape == (96, 160)
    assert res.grid == (8, 14)
    assert res.probs.shape == res.logits.shape == (8, 14, 3)
    np.testing.assert_allclose(res.probs.sum(-1), 1.0, atol=1e-5)
    assert list(res.timings) == ["preprocess", "backbone", "encoder", "decoder", "knn", "upsample"]
    assert (
        "knn"
        not in segmenter.__class__(segmenter.backend, segmenter.vocabulary, knn_iters=0).segment(_image(32, 32)).timings
    )
    assert res.categories == ["sky", "grass", "dog"]


def test_set_categories_changes_only_the_vocabulary(segmenter):
    img = _image(128, 128, 1)
    before = segmenter.segment(img)
    weights = {k: v.clone() for k, v in segmenter.backend.model.state_dict().items()}
    segmenter.set_categories(["road", "car", "person", "tree"])
    after = segmenter.segment(img)
    assert after.logits.shape[-1] == 4
    assert after.categories == ["road", "car", "person", "tree"]
    assert all(torch.equal(v, segmenter.backend.model.state_dict()[k]) for k, v in weights.items())
    segmenter.set_categories(["sky", "grass", "dog"])
    np.testing.assert_allclose(segmenter.segment(img).logits, before.logits, atol=1e-6)
    with pytest.raises(IFSegError, match="twice"):
        segmenter.set_categories(["a", "a"])


def test_categories_string_at_construction(segmenter):
    """The CLI's string works where a list does, also when the Segmenter is made (not one category per letter)."""
    img = _image(96, 96, 2)
    as_list = segmenter.__class__(segmenter.backend, segmenter.vocabulary, ["road", "car"], knn_iters=3)
    as_text = segmenter.__class__(segmenter.backend, segmenter.vocabulary, "road, car", knn_iters=3)
    assert as_text.categories == ["road", "car"]
    np.testing.assert_allclose(as_text.segment(img).logits, as_list.segment(img).logits, atol=1e-6)


def test_batch_matches_single_with_mixed_sizes(segmenter):
    imgs = [_image(128, 128, 2), _image(96, 160, 3), _image(128, 128, 4)]
    batched = segmenter.segment_batch(imgs, batch_size=2)
    for img, res in zip(imgs, batched):
        np.testing.assert_allclose(res.logits, segmenter.segment(img).logits, atol=1e-4)


def test_sliding_window(segmenter):
    img = _image(128, 320, 5)  # stays 128x320: a 8x20 grid
    whole = segmenter.segment(img)
    seg = Segmenter(
        segmenter.backend, segmenter.vocabulary, knn_iters=3, preprocessing=Preprocessing(128, 512), window=128
    )
    slid = seg.segment(img)
    assert slid.logits.shape == whole.logits.shape
    assert slid.labels.shape == (128, 320)
    # Cells 0..4 of each row are seen by the first 128x128 crop only (stride 5 cells).
    crop = seg.segment(img[:, :128])
    np.testing.assert_allclose(slid.logits[:, :5], crop.logits[:, :5], atol=1e-5)
    big = Segmenter(segmenter.backend, segmenter.vocabulary, preprocessing=Preprocessing(128, 512), window=512)
    np.testing.assert_allclose(big.segment(img).logits, whole.logits, atol=1e-6)
    with pytest.raises(IFSegError, match="multiple of 16"):
        Segmenter(segmenter.backend, segmenter.vocabulary, window=100)


def test_position_bias_cache_follows_weights():
    """Shape-only biases are reused in inference mode and recomputed after any weight change."""
    from conftest import SMALL_ARCH, make_tiny_model

    model = make_tiny_model(4, SMALL_ARCH)
    with torch.inference_mode():
        first = model.position_biases((8, 11), 9)
        assert model.position_biases((8, 11), 9) is first
        assert model.position_biases((8, 8), 9) is not first
    with torch.no_grad():
        uncached = model.position_biases((8, 11), 9)
        assert uncached is not first
        assert torch.equal(uncached[0][0], first[0][0])
        model.decoder.seg_rel_pos_table_list[0].weight.add_(1.0)
    with torch.inference_mode():
        again = model.position_biases((8, 11), 9)
        assert again is not first
        assert not torch.equal(again[1][0][0], first[1][0][0])
        assert torch.equal(again[0][0], first[0][0])  # the encoder part is unchanged
