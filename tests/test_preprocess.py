"""Decoding and the reference's evaluation resize / normalisation."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from ifseg_deploy.errors import IFSegError
from ifseg_deploy.preprocess import preprocess, read_image, resized_shape


def test_fixture_image_preprocessing(dev_dir, golden):
    rgb = read_image(str(dev_dir / "image_eval0.png"))
    np.testing.assert_array_equal(rgb, golden["eval0_raw_image_rgb_uint8"])
    x = preprocess(rgb)
    torch.testing.assert_close(x[None], torch.from_numpy(golden["eval0_patch_images"]), atol=0, rtol=0)


@pytest.mark.parametrize(
    "hw,expected",
    [
        ((512, 512), (512, 512)),
        ((375, 500), (512, 683)),  # 500 * 512/375 = 682.67 -> int(x + 0.5) = 683
        ((640, 480), (683, 512)),
        ((560, 1440), (512, 1317)),  # 1440 * 512/560 = 1316.57
        ((100, 5000), (41, 2048)),  # long side capped: f = 2048/5000
        ((1024, 2048), (512, 1024)),
    ],
)
def test_resized_shape(hw, expected):
    assert resized_shape(*hw) == expected


def test_non_square_resize_is_opencv_bilinear(dev_dir):
    rgb = read_image(str(dev_dir / "image_eval0.png"))[:375, :500]
    x = preprocess(rgb)
    assert tuple(x.shape) == (3, 512, 683)
    ref = cv2.resize(rgb, (683, 512), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
    np.testing.assert_allclose(x.permute(1, 2, 0).numpy(), (ref - 0.5) / 0.5, atol=1e-6)


def test_image_modes(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    gray = rgb[..., 0].copy()
    Image.fromarray(gray).save(tmp_path / "g.png")
    np.testing.assert_array_equal(read_image(str(tmp_path / "g.png")), np.repeat(gray[..., None], 3, axis=2))
    rgba = np.concatenate([rgb, rng.integers(0, 256, (20, 30, 1), dtype=np.uint8)], axis=2)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(str(tmp_path / "a.png")), rgb)
    g16 = (gray.astype(np.uint16) * 257)
    cv2.imwrite(str(tmp_path / "g16.png"), g16)
    np.testing.assert_array_equal(read_image(str(tmp_path / "g16.png")), np.repeat(gray[..., None], 3, axis=2))
    c16 = rgb.astype(np.uint16) * 257
    cv2.imwrite(str(tmp_path / "c16.png"), c16[..., ::-1])
    out = read_image(str(tmp_path / "c16.png"))
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    assert np.abs(out.astype(int) - rgb).max() <= 1


def test_unreadable_images(tmp_path):
    (tmp_path / "x.png").write_bytes(b"not an image at all")
    with pytest.raises(IFSegError, match="cannot decode"):
        read_image(str(tmp_path / "x.png"))
    with pytest.raises(IFSegError, match="not found"):
        read_image(str(tmp_path / "nope.jpg"))
    good = tmp_path / "t.png"
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(good)
    (tmp_path / "trunc.png").write_bytes(good.read_bytes()[:60])
    with pytest.raises(IFSegError, match="cannot decode"):
        read_image(str(tmp_path / "trunc.png"))
    with pytest.raises(IFSegError, match="RGB uint8"):
        preprocess(np.zeros((4, 4), np.float32))
