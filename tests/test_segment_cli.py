"""``ifseg-deploy segment`` / ``info`` end to end, as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from ifseg_deploy.cli.main import main
from ifseg_deploy.model.positions import resize_pair_bias


def _run(args):
    return main([str(a) for a in args])


def test_segment_reproduces_reference(tmp_path, ifseg_checkpoint, dev_dir, golden):
    out = tmp_path / "out"
    assert (
        _run(["segment", dev_dir / "image_eval0.png", "--checkpoint", ifseg_checkpoint, "--out", out, "--save-raw"])
        == 0
    )
    labels = cv2.imread(str(out / "image_eval0_labels.png"), cv2.IMREAD_UNCHANGED)
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, golden["eval0_knn_label_map"])
    logits = np.load(out / "image_eval0_logits.npy")
    probs = np.load(out / "image_eval0_probs.npy")
    assert logits.shape == probs.shape == (32, 32, 4)
    assert logits.dtype == probs.dtype == np.float32
    np.testing.assert_allclose(logits.reshape(1024, 4), golden["eval0_seg_logits"][0, :-1], atol=5e-4, rtol=0)
    np.testing.assert_allclose(probs.reshape(1024, 4), golden["eval0_knn_probs"][0, :-1], atol=1e-4, rtol=0)
    overlay = cv2.imread(str(out / "image_eval0_overlay.png"))
    assert overlay.shape == (512, 512, 3)
    assert sorted(os.listdir(out)) == [".ifseg-deploy"] + sorted(
        f"image_eval0_{s}" for s in ("labels.png", "overlay.png", "logits.npy", "probs.npy")
    )


def test_segment_without_knn(tmp_path, ifseg_checkpoint, dev_dir, golden):
    out = tmp_path / "out"
    assert (
        _run(
            [
                "segment",
                dev_dir / "image_eval0.png",
                "--checkpoint",
                ifseg_checkpoint,
                "--out",
                out,
                "--save-raw",
                "--knn-iters",
                "0",
            ]
        )
        == 0
    )
    labels = cv2.imread(str(out / "image_eval0_labels.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(labels, golden["eval0_label_map"])
    probs = np.load(out / "image_eval0_probs.npy")
    np.testing.assert_allclose(probs.reshape(1024, 4), golden["eval0_seg_probs"][0, :-1], atol=1e-4, rtol=0)


def test_non_square_batch_and_categories(tmp_path, ifseg_checkpoint, dev_dir):
    """A 375x500 image (512x683 input, 32x43 grid): outputs at the original size; batching is exact."""
    rgb = np.asarray(Image.open(dev_dir / "image_eval0.png"))[:375, :500]
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb[:, ::-1]).save(tmp_path / "b.png")
    single, batch = tmp_path / "single", tmp_path / "batch"
    cats = "sky, tree, road"
    assert (
        _run(
            [
                "segment",
                tmp_path / "a.png",
                tmp_path / "b.png",
                "--checkpoint",
                ifseg_checkpoint,
                "--out",
                single,
                "--save-raw",
                "--categories",
                cats,
            ]
        )
        == 0
    )
    assert (
        _run(
            [
                "segment",
                tmp_path / "a.png",
                tmp_path / "b.png",
                "--checkpoint",
                ifseg_checkpoint,
                "--out",
                batch,
                "--save-raw",
                "--categories",
                cats,
                "--batch",
                "2",
            ]
        )
        == 0
    )
    for stem in ("a", "b"):
        logits = np.load(single / f"{stem}_logits.npy")
        assert logits.shape == (32, 43, 3)
        np.testing.assert_allclose(np.load(batch / f"{stem}_logits.npy"), logits, atol=1e-4)
        labels = cv2.imread(str(single / f"{stem}_labels.png"), cv2.IMREAD_UNCHANGED)
        assert labels.shape == (375, 500)
        assert labels.max() < 3


def test_resize_orders_agree():
    """Resizing keys-then-queries equals queries-then-keys (the reference uses both orders)."""
    bias = torch.randn(2, 1 + 32 * 32, 1 + 32 * 32, dtype=torch.float64)
    a = resize_pair_bias(bias, 32, (32, 43), key_first=True, lead=1)
    b = resize_pair_bias(bias, 32, (32, 43), key_first=False, lead=1)
    assert a.shape == (2, 1 + 32 * 43, 1 + 32 * 43)
    torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    torch.testing.assert_close(a[:, 0, 0], bias[:, 0, 0])
    assert resize_pair_bias(bias, 32, (32, 32), key_first=True, lead=1) is bias


def test_info_lists_categories(capsys, ifseg_checkpoint, ofa_checkpoint):
    assert _run(["info", ifseg_checkpoint]) == 0
    text = capsys.readouterr().out
    assert "IFSeg fine-tuned" in text
    assert "grass, cat, giraffe, concrete wall" in text
    assert "resnet50" in text
    assert _run(["info", ofa_checkpoint, "--json"]) == 0
    assert '"kind": "plain OFA"' in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--categories", "cat,,dog"], "empty category"),
        (["--categories", "cat, dog, cat"], "listed twice"),
        (["--knn-iters", "-1"], "knn-iters"),
        (["--alpha", "2"], "alpha"),
        (["--device", "cuda:7"] if not torch.cuda.is_available() else ["--device", "tpu"], "device"),
    ],
)
def test_bad_arguments_one_line(tmp_path, capsys, ifseg_checkpoint, dev_dir, extra, message):
    out = tmp_path / "out"
    code = _run(["segment", dev_dir / "image_eval0.png", "--checkpoint", ifseg_checkpoint, "--out", out] + extra)
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert err.count("\n") == 1
    assert "Traceback" not in err
    assert not out.exists()


def test_plain_ofa_needs_categories(tmp_path, caplog, capsys, ofa_checkpoint, dev_dir):
    code = _run(["segment", dev_dir / "image_eval0.png", "--checkpoint", ofa_checkpoint, "--out", tmp_path])
    assert code == 2
    assert "--categories" in capsys.readouterr().err
    assert "plain OFA checkpoint" in caplog.text
    assert "ifseg-deploy train" in caplog.text


def test_cli_subprocess_no_traceback(tmp_path, dev_dir):
    """The installed entry point reports a bad checkpoint in one line with exit status 2."""
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ifseg_deploy",
            "segment",
            str(dev_dir / "image_eval0.png"),
            "--checkpoint",
            str(bad),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ")
    assert proc.stderr.count("\n") == 1


def test_labels_png_is_uint16_above_255_classes(tmp_path, tiny_bundle, bpe_dir):
    img = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(img)
    cats = ", ".join(f"thing{i}" for i in range(256))
    assert (
        _run(
            [
                "segment",
                img,
                "--checkpoint",
                tiny_bundle,
                "--bpe-dir",
                bpe_dir,
                "--out",
                tmp_path / "o",
                "--categories",
                cats,
                "--knn-iters",
                "0",
                "--save-raw",
            ]
        )
        == 0
    )
    labels = cv2.imread(str(tmp_path / "o" / "x_labels.png"), cv2.IMREAD_UNCHANGED)
    assert labels.dtype == np.uint16
    assert labels.shape == (40, 40)
    logits = np.load(tmp_path / "o" / "x_logits.npy")
    assert logits.shape[-1] == 256
    up = torch.nn.functional.interpolate(
        torch.from_numpy(logits).permute(2, 0, 1)[None], size=(40, 40), mode="bilinear", align_corners=False
    )
    np.testing.assert_array_equal(labels, up[0].argmax(0).numpy())
