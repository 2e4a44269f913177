"""The torch pre-processing (frames resized on the device they live on) against the reference's
OpenCV / NumPy path: within one uint8 level per pixel, bit-equal where no resize happens."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ifseg_deploy.errors import IFSegError
from ifseg_deploy.preprocess import Preprocessing, preprocess, preprocess_tensor

#: One uint8 level after normalisation ((x / 255 - 0.5) / 0.5): OpenCV rounds its bilinear weights
#: to 1/2048 (11-bit fixed point) and its result to a level; PyTorch computes in float32 and
#: :func:`resize_tensor` rounds once, so a pixel near a half level can land on the next one.
LEVEL = 2 / 255


def _image(shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = np.kron(rng.integers(0, 256, (shape[0] // 8 + 1, shape[1] // 8 + 1, 3)), np.ones((8, 8, 1)))
    noisy = smooth[: shape[0], : shape[1]] + rng.integers(-20, 21, shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("shape", [(480, 640, 3), (300, 200, 3), (97, 1000, 3), (1100, 900, 3), (40, 30, 3)])
def test_torch_path_within_one_level_of_opencv(shape):
    image = _image(shape, seed=shape[0])
    want = preprocess(image)
    got = preprocess_tensor(torch.from_numpy(image))
    assert got.dtype == torch.float32 and got.shape == want.shape
    diff = (got - want).abs()
    assert float(diff.max()) <= LEVEL + 1e-6
    assert float((diff < 1e-6).float().mean()) > 0.8  # most pixels are the same level


def test_no_resize_is_bit_equal():
    image = _image((512, 700, 3))
    torch.testing.assert_close(preprocess_tensor(torch.from_numpy(image)), preprocess(image), rtol=0, atol=0)


def test_on_device_uses_the_stored_sizes():
    pre = Preprocessing(128, 256)
    image = _image((300, 900, 3))
    got = pre.on_device(image, torch.device("cpu"))
    assert got.shape == pre(image).shape == (3, 85, 256)
    assert float((got - pre(image)).abs().max()) <= LEVEL + 1e-6


def test_wrong_input():
    with pytest.raises(IFSegError, match=r"^expected an RGB uint8 image of shape \(H, W, 3\), got torch.float32"):
        preprocess_tensor(torch.zeros(4, 4, 3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
def test_cuda_frames_match_the_cpu_path():
    image = _image((480, 640, 3))
    pre = Preprocessing()
    got = pre.on_device(image, torch.device("cuda"))
    assert got.is_cuda
    assert float((got.cpu() - pre(image)).abs().max()) <= LEVEL + 1e-6


def test_segmenter_preprocesses_on_the_device_of_a_backend_that_takes_device_frames(tiny_bundle, bpe_dir, monkeypatch):
    """The Segmenter's branch for device frames (taken on CUDA), run on CPU: inputs from the torch path,
    within one level of the OpenCV path, and the same labels on a smooth image."""
    from ifseg_deploy.runtime.segmenter import Segmenter
    from ifseg_deploy.runtime.torch_backend import TorchBackend

    plain = Segmenter.load(tiny_bundle, bpe_dir=bpe_dir, device="cpu", knn_iters=0)
    monkeypatch.setattr(TorchBackend, "takes_device_frames", property(lambda self: True))
    calls = []
    on_device = Preprocessing.on_device
    monkeypatch.setattr(Preprocessing, "on_device", lambda self, *a: calls.append(1) or on_device(self, *a))
    frames = Segmenter.load(tiny_bundle, bpe_dir=bpe_dir, device="cpu", knn_iters=0)
    image = _image((90, 130, 3))
    a, b = plain.preprocess([image]), frames.preprocess([image])
    assert calls == [1]
    assert float((a.images - b.images).abs().max()) <= LEVEL + 1e-6
    got, want = frames.postprocess(b, frames.infer(b))[0], plain.postprocess(a, plain.infer(a))[0]
    assert got.labels.dtype == np.int64 and (got.labels == want.labels).mean() > 0.99
