"""kNN smoothing backends against the reference's kNN arrays and against each other."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ifseg_deploy.errors import IFSegError
from ifseg_deploy.postprocess.knn import (
    faiss_available,
    faiss_gpu_available,
    knn_smooth,
    neighbours_faiss,
    neighbours_torch,
    propagate,
    resolve_backend,
)

needs_faiss = pytest.mark.skipif(
    not faiss_available(), reason="faiss is not installed (pip install 'ifseg-deploy[cpu]')"
)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

BACKENDS = [("torch", neighbours_torch), pytest.param(("faiss", neighbours_faiss), marks=needs_faiss)]


def reference_propagate(probs, nbr, iters):
    """The reference's loop, verbatim in meaning: gather the neighbours' rows, average, repeat."""
    batch = torch.arange(probs.shape[0])[:, None, None].expand_as(nbr)
    for _ in range(iters):
        probs = probs[batch, nbr].mean(dim=-2)
    return probs


def sets(idx):
    return np.sort(np.asarray(idx), axis=-1)


@pytest.mark.parametrize("backend", BACKENDS, ids=["torch", "faiss"])
def test_neighbours_and_probs_match_reference(golden, backend):
    _, search = backend
    feats = torch.from_numpy(golden["eval0_image_embed_before_proj"])
    nbr = search(feats, 3)
    ref = golden["eval0_knn_topk_indices"]
    top4 = golden["eval0_knn_top4_cosine"]
    clear = (top4[..., 2] - top4[..., 3]) > 1e-5  # rows without a near tie for the 3rd neighbour
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(sets(nbr)[clear], sets(ref)[clear])
    assert (nbr[..., 0].numpy() == np.arange(1024)).mean() > 0.99  # the cell itself is (almost always) first
    probs = torch.from_numpy(golden["eval0_seg_probs"][:, :-1])
    out = knn_smooth(probs, feats, 3, 25, neighbours=nbr)
    np.testing.assert_allclose(out.numpy(), golden["eval0_knn_probs"][:, :-1], atol=1e-5, rtol=0)


def test_propagation_is_the_reference_bit_for_bit(golden):
    probs = torch.from_numpy(golden["eval0_seg_probs"])  # with the reference's extra eos row
    nbr = torch.from_numpy(golden["eval0_knn_topk_indices"]).long()
    np.testing.assert_array_equal(propagate(probs, nbr, 25).numpy(), golden["eval0_knn_probs"][:, :-1])
    gen = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(3, 50, 7, generator=gen), -1)
    n = torch.randint(0, 50, (3, 50, 4), generator=gen)
    assert torch.equal(propagate(p, n, 6), reference_propagate(p, n, 6))
    assert torch.equal(propagate(p, n, 0), p)


def _features_with_ties(hw=1024, c=256, seed=0):
    gen = torch.Generator().manual_seed(seed)
    f = torch.randn(1, hw, c, generator=gen).clamp_min(0)
    groups = torch.randperm(hw, generator=gen)[:300].reshape(30, 10)  # 30 groups of 10 identical cells
    for g in groups:
        f[0, g] = f[0, g[0]].clone()
    return f, groups


@needs_faiss
def test_faiss_agrees_with_torch():
    """Held-out random features: same neighbour sets wherever the 3rd/4th similarity margin is clear."""
    for seed, hw in ((1, 1376), (2, 4096)):
        f, _ = _features_with_ties(hw, 1024, seed)
        a, b = neighbours_torch(f, 3), neighbours_faiss(f, 3)
        fn = torch.nn.functional.normalize(f.double(), dim=-1)[0]
        top4 = torch.topk(fn @ fn.T, 4, dim=-1).values
        clear = ((top4[:, 2] - top4[:, 3]) > 1e-5).numpy()
        assert clear.mean() > 0.7  # 300 cells sit in groups of identical features (exact ties)
        np.testing.assert_array_equal(sets(a[0])[clear], sets(b[0])[clear])


def test_torch_ties_keep_lowest_index():
    """Cells with bit-identical features tie exactly; the torch backend (like torch.topk in the
    reference) keeps the lowest cell indices of the group."""
    f, groups = _features_with_ties()
    nbr = neighbours_torch(f, 3)[0]
    for g in groups:
        lowest = sorted(g.tolist())[:3]
        for cell in g.tolist():
            assert sorted(nbr[cell].tolist()) == lowest


def test_chunking_does_not_change_neighbours(monkeypatch):
    f, _ = _features_with_ties(700, 64, 3)
    full = neighbours_torch(f, 5)
    import ifseg_deploy.postprocess.knn as knn

    monkeypatch.setattr(knn, "CHUNK_ROWS", 128)
    np.testing.assert_array_equal(sets(neighbours_torch(f, 5)), sets(full))


def test_backend_selection_and_arguments(monkeypatch):
    import ifseg_deploy.postprocess.knn as knn

    cpu = torch.device("cpu")
    assert resolve_backend("auto") == "auto"  # resolved later, per tensor device
    assert resolve_backend("auto", cpu) == ("faiss" if faiss_available() else "torch")
    assert resolve_backend("auto", torch.device("cuda")) == "torch"
    monkeypatch.setattr(knn, "faiss_available", lambda: False)
    assert resolve_backend("auto", cpu) == "torch"  # without faiss installed
    assert resolve_backend("faiss") == "faiss"
    with pytest.raises(IFSegError, match="unknown kNN backend"):
        resolve_backend("annoy")
    p = torch.softmax(torch.randn(1, 4, 3), -1)
    f = torch.randn(1, 4, 8)
    assert knn_smooth(p, f, 3, 0) is p
    assert knn_smooth(p, f, 10, 2).shape == (1, 4, 3)  # k larger than the grid: every cell is a neighbour
    with pytest.raises(IFSegError, match="`k` must be >= 1"):
        knn_smooth(p, f, 0, 2)


def test_auto_dispatch(monkeypatch):
    import ifseg_deploy.postprocess.knn as knn

    used = []
    monkeypatch.setattr(knn, "faiss_available", lambda: True)
    monkeypatch.setattr(knn, "neighbours_faiss", lambda f, k: used.append(f.shape[1]) or knn.neighbours_torch(f, k))
    f = torch.randn(1, 64, 8)
    p = torch.softmax(torch.randn(1, 64, 3), -1)
    knn.knn_smooth(p, f, 3, 1)  # auto on CPU
    knn.knn_smooth(p, f, 3, 1, backend="torch")
    assert used == [64]


@needs_cuda
def test_cuda_torch_backend_matches_cpu(golden):
    feats = torch.from_numpy(golden["eval0_image_embed_before_proj"])
    top4 = golden["eval0_knn_top4_cosine"]
    clear = (top4[..., 2] - top4[..., 3]) > 1e-5
    gpu = neighbours_torch(feats.cuda(), 3).cpu()
    np.testing.assert_array_equal(sets(gpu)[clear], sets(golden["eval0_knn_topk_indices"])[clear])


@pytest.mark.skipif(
    not (torch.cuda.is_available() and faiss_gpu_available()), reason="needs a CUDA device and faiss with GPU support"
)
def test_faiss_gpu_matches_reference(golden):
    feats = torch.from_numpy(golden["eval0_image_embed_before_proj"]).cuda()
    top4 = golden["eval0_knn_top4_cosine"]
    clear = (top4[..., 2] - top4[..., 3]) > 1e-5
    nbr = neighbours_faiss(feats, 3)
    assert nbr.is_cuda
    np.testing.assert_array_equal(sets(nbr.cpu())[clear], sets(golden["eval0_knn_topk_indices"])[clear])
