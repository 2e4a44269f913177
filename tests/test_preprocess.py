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
    g16 = gray.astype(np.uint16) * 257
    cv2.imwrite(str(tmp_path / "g16.png"), g16)
    np.testing.assert_array_equal(read_image(str(tmp_path / "g16.png")), np.repeat(gray[..., None], 3, axis=2))
    c16 = rgb.astype(np.uint16) * 257
    cv2.imwrite(str(tmp_path / "c16.png"), c16[..., ::-1])
    out = read_image(str(tmp_path / "c16.png"))
    assert out.dtype == np.uint8
    assert out.shape == rgb.shape
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


# EXIF orientation: the displayed image of each tag value, per the EXIF 2.32 specification
# (value: where the stored 0th row / 0th column go), computed here with NumPy.
DISPLAYED = {
    1: lambda s: s,
    2: lambda s: s[:, ::-1],  # mirrored left-right
    3: lambda s: s[::-1, ::-1],  # rotated 180
    4: lambda s: s[::-1, :],  # mirrored top-bottom
    5: lambda s: s.transpose(1, 0, 2),  # mirrored about the main diagonal
    6: lambda s: np.rot90(s, k=-1),  # rotated 90 clockwise (a phone held upright, camera on the left)
    7: lambda s: np.rot90(s, k=2).transpose(1, 0, 2),  # mirrored about the anti-diagonal
    8: lambda s: np.rot90(s, k=1),  # rotated 90 counter-clockwise
}


def _tagged_jpeg(path, pixels, orientation):
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation  # Orientation
    Image.fromarray(pixels).save(path, "JPEG", quality=95, exif=exif.tobytes())


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path, orientation):
    # stored 40 wide x 16 high: a smooth gradient with a red block in the stored top-left corner
    yy, xx = np.mgrid[:16, :40]
    stored = np.stack([xx * 6, yy * 15, np.full_like(xx, 60)], axis=-1).astype(np.uint8)
    stored[:6, :8] = (255, 0, 0)
    _tagged_jpeg(tmp_path / "plain.jpg", stored, None)
    _tagged_jpeg(tmp_path / "tagged.jpg", stored, orientation)
    decoded = read_image(str(tmp_path / "plain.jpg"))  # no tag: the stored pixels (after JPEG coding)
    assert decoded.shape == (16, 40, 3)
    np.testing.assert_array_equal(read_image(str(tmp_path / "tagged.jpg"), exif=False), decoded)
    shown = read_image(str(tmp_path / "tagged.jpg"))
    np.testing.assert_array_equal(shown, DISPLAYED[orientation](decoded))
    # OpenCV's imread applies the tag too: same displayed size
    assert shown.shape == cv2.imread(str(tmp_path / "tagged.jpg")).shape
    # where the red corner is shown, from the tag's meaning (0th row / 0th column positions)
    top = orientation in (1, 2, 5, 6)
    left = orientation in (1, 4, 5, 8)
    h, w = shown.shape[:2]
    corner = shown[3 if top else h - 4, 3 if left else w - 4]
    assert corner[0] > 200, (orientation, corner)
    assert corner[1] < 60, (orientation, corner)


def test_phone_photo_rotated_90(tmp_path):
    # the case: stored 640x250 (width x height), tagged "rotate 90 CW" -> shown 250 wide, 640 high
    stored = np.random.default_rng(3).integers(0, 256, (250, 640, 3), dtype=np.uint8)
    _tagged_jpeg(tmp_path / "phone.jpg", stored, 6)
    assert read_image(str(tmp_path / "phone.jpg")).shape == (640, 250, 3)
    assert read_image(str(tmp_path / "phone.jpg"), exif=False).shape == (250, 640, 3)


def test_corrupt_exif_block_is_ignored(tmp_path, recwarn):
    stored = np.full((8, 12, 3), 90, np.uint8)
    # an IFD announcing 5 entries but cut after the first entry's tag and type
    Image.fromarray(stored).save(
        tmp_path / "bad.jpg", "JPEG", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05\x01\x12\x00\x03"
    )
    assert read_image(str(tmp_path / "bad.jpg")).shape == (8, 12, 3)
    assert not [w for w in recwarn if "EXIF" in str(w.message)]
