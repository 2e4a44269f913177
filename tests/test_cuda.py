"""CUDA paths of the PyTorch runtime (run on a GPU machine; skipped on CPU with the reason)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ifseg_deploy.runtime.segmenter import Segmenter
from ifseg_deploy.runtime.torch_backend import tf32_policy, tf32_switches

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"
)


def test_cuda_fp32_matches_reference(ifseg_checkpoint, dev_dir, golden):
    seg = Segmenter.load(ifseg_checkpoint, device="cuda")
    res = seg.segment(str(dev_dir / "image_eval0.png"))
    np.testing.assert_allclose(res.logits.reshape(1024, 4), golden["eval0_seg_logits"][0, :-1], atol=5e-4, rtol=0)
    np.testing.assert_allclose(res.probs.reshape(1024, 4), golden["eval0_knn_probs"][0, :-1], atol=1e-4, rtol=0)
    assert (res.labels == golden["eval0_knn_label_map"]).mean() > 0.9999


def test_cuda_fp16_close_to_reference(ifseg_checkpoint, dev_dir, golden):
    seg = Segmenter.load(ifseg_checkpoint, device="cuda", precision="fp16", knn_iters=0)
    res = seg.segment(str(dev_dir / "image_eval0.png"))
    assert np.isfinite(res.logits).all()
    ref = golden["eval0_seg_logits"][0, :-1]
    assert np.abs(res.logits.reshape(1024, 4) - ref).max() < 0.05 * np.abs(ref).max()
    assert (res.labels == golden["eval0_label_map"]).mean() > 0.98


def test_cuda_tf32_close_to_reference(ifseg_checkpoint, dev_dir, golden):
    """tf32 keeps float32 weights and lets cuDNN / cuBLAS round products to TF32 (10 mantissa bits)."""
    seg = Segmenter.load(ifseg_checkpoint, device="cuda", precision="tf32", knn_iters=0)
    res = seg.segment(str(dev_dir / "image_eval0.png"))
    ref = golden["eval0_seg_logits"][0, :-1]
    assert np.abs(res.logits.reshape(1024, 4) - ref).max() < 0.05 * np.abs(ref).max()
    assert (res.labels == golden["eval0_label_map"]).mean() > 0.98


def test_cuda_fp32_ignores_a_process_wide_tf32(ifseg_checkpoint, dev_dir, golden):
    """A process that allows TF32 still gets strict float32 from precision=fp32, and keeps its setting."""
    seg = Segmenter.load(ifseg_checkpoint, device="cuda", knn_iters=0)
    with tf32_policy(True):
        user = [read() for read, _, _, _ in tf32_switches()]
        res = seg.segment(str(dev_dir / "image_eval0.png"))
        assert [read() for read, _, _, _ in tf32_switches()] == user
    np.testing.assert_allclose(res.logits.reshape(1024, 4), golden["eval0_seg_logits"][0, :-1], atol=5e-4, rtol=0)


def test_cuda_graph_replay_matches_eager(ifseg_checkpoint, dev_dir):
    """One graph per input size, replayed with new inputs, gives the eager logits."""
    from PIL import Image

    graphed = Segmenter.load(ifseg_checkpoint, device="cuda", knn_iters=0)
    eager = Segmenter.load(ifseg_checkpoint, device="cuda", knn_iters=0, backend_options={"cuda_graph": False})
    assert graphed.backend.graphs is not None and eager.backend.graphs is None
    rgb = np.asarray(Image.open(dev_dir / "image_eval0.png").convert("RGB"))
    images = [rgb, rgb[:, : rgb.shape[1] // 2].copy(), rgb[::-1].copy(), rgb]
    for image in images:
        np.testing.assert_allclose(graphed.segment(image).logits, eager.segment(image).logits, atol=1e-4, rtol=0)
    graphs = graphed.backend.graphs
    assert not graphs.failed and len(graphs.graphs) == 2


def test_cuda_whole_frame_graph_matches_eager(ifseg_checkpoint, dev_dir):
    """Network + kNN + up-sampling + argmax captured as one graph per shape, frames pre-processed on the
    GPU: the eager CUDA path's labels and probabilities; no capture falls back to eager."""
    from PIL import Image

    graphed = Segmenter.load(ifseg_checkpoint, device="cuda", knn_iters=25)
    eager = Segmenter.load(ifseg_checkpoint, device="cuda", knn_iters=25, backend_options={"cuda_graph": False})
    assert graphed.backend.fused and graphed.backend.capabilities.knn == (3, 25)
    rgb = np.asarray(Image.open(dev_dir / "image_eval0.png").convert("RGB"))
    for image in (rgb, rgb[:, : rgb.shape[1] // 2].copy(), rgb):
        got, want = graphed.segment(image), eager.segment(image)
        assert got.labels.dtype == np.int64 and got.labels.shape == image.shape[:2]
        assert (got.labels == want.labels).mean() > 0.999
        np.testing.assert_allclose(got.probs, want.probs, atol=1e-4, rtol=0)
        assert "knn" not in got.timings  # smoothed inside the graph
    assert not graphed.backend.graphs.failed and len(graphed.backend.graphs.graphs) == 2


def test_cuda_frames_preprocessed_on_the_device(ifseg_checkpoint, dev_dir, golden):
    """Frames go to the GPU as uint8 and are resized there: the labels stay the reference's."""
    seg = Segmenter.load(ifseg_checkpoint, device="cuda")
    batch = seg.preprocess([str(dev_dir / "image_eval0.png")])
    assert batch.images.is_cuda
    res = seg.postprocess(batch, seg.infer(batch))[0]
    assert (res.labels == golden["eval0_knn_label_map"]).mean() > 0.999
