"""``export`` / ``segment --engine`` command lines: bad input fails with one line and leaves no files."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from conftest import TINY_ARCH, make_tiny_model

from ifseg_deploy.checkpoint.bundle import save_bundle
from ifseg_deploy.cli.main import main
from ifseg_deploy.preprocess import Preprocessing
from ifseg_deploy.runtime.segmenter import Segmenter
from ifseg_deploy.runtime.sidecar import write_vocab


def _has_tensorrt() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, bpe_dir):
    folder = tmp_path_factory.mktemp("bundle")
    model = make_tiny_model(2)
    path = folder / "tiny.safetensors"
    save_bundle(
        str(path),
        model.state_dict(),
        model.embed_tokens.weight[[100, 200]].clone(),
        {"arch": TINY_ARCH.to_dict(), "categories": ["grass", "cat"]},
    )
    return path


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "img.png"
    cv2.imwrite(str(path), (np.random.default_rng(0).random((40, 60, 3)) * 255).astype(np.uint8))
    return path


def _fails(capsys, argv, match):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.startswith("error: "), err
    assert "\n" not in err, err
    assert match in err, err
    return err


@pytest.mark.parametrize(
    "extra,match",
    [
        (["--format", "onnx", "--precision", "int8", "--calib-dir", "x"], "--calib-dir x is not a folder"),
        (["--format", "onnx", "--precision", "int8"], "needs --calib-dir"),
        (["--format", "onnx", "--calib-dir", "x"], "only used with --precision int8"),
        (["--format", "engine", "--precision", "int8"], "needs --calib-dir"),
        (["--format", "engine", "--precision", "fp16", "--calib-dir", "x"], "only used with --precision int8"),
        (["--format", "engine", "--upsample", "in-graph"], "ONNX exports only"),
        (["--imgsz", "big"], "--imgsz big"),
        (["--imgsz", "512x688", "--dynamic"], "short side only"),
        (["--static", "--dynamic"], "--dynamic contradicts --static"),
        (["--batch", "0"], "--batch must be >= 1"),
        (["--profile", "jetson-tx1"], "unknown profile"),
        (["--knn", "in-graph", "--knn-iters", "0"], "--knn in-graph needs"),
    ],
)
def test_export_bad_arguments(bundle, tmp_path, capsys, extra, match):
    out = tmp_path / "out"
    suffix = ".engine" if "engine" in extra else ".onnx"
    _fails(capsys, ["export", "--checkpoint", str(bundle), "--out", str(out / f"m{suffix}"), *extra], match)
    assert not out.exists()


def test_export_empty_calibration_folder(bundle, tmp_path, capsys):
    empty = tmp_path / "calib"
    empty.mkdir()
    out = tmp_path / "out"
    _fails(
        capsys,
        [
            "export",
            "--checkpoint",
            str(bundle),
            "--format",
            "engine",
            "--precision",
            "int8",
            "--calib-dir",
            str(empty),
            "--out",
            str(out / "m.engine"),
        ],
        "holds no images",
    )
    assert not out.exists()


def test_export_wrong_extension_and_missing_checkpoint(bundle, tmp_path, capsys):
    _fails(capsys, ["export", "--checkpoint", str(bundle), "--out", str(tmp_path / "m.engine")], "must end with .onnx")
    _fails(
        capsys,
        ["export", "--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "m.onnx")],
        "checkpoint not found",
    )
    _fails(capsys, ["export", "--checkpoint", str(tmp_path / "m.onnx")], "already an ONNX file")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(_has_tensorrt(), reason="checks the message shown where tensorrt is not installed")
def test_engine_export_without_tensorrt(bundle, tmp_path, capsys):
    _fails(
        capsys,
        ["export", "--checkpoint", str(bundle), "--format", "engine", "--out", str(tmp_path / "m.engine")],
        "need the tensorrt Python package",
    )
    assert list(tmp_path.iterdir()) == []


def test_export_onnx_cli_then_segment_engine(bundle, image, tmp_path, bpe_dir, capsys):
    """Bundle -> export CLI (static, other categories) -> segment --engine with the bundle's own list ==
    --checkpoint."""
    onnx_path = tmp_path / "m.onnx"
    assert (
        main(
            [
                "export",
                "--checkpoint",
                str(bundle),
                "--out",
                str(onnx_path),
                "--categories",
                "sky, road, tree",
                "--imgsz",
                "64x96",
                "--bpe-dir",
                bpe_dir,
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "labels 100.000% agree" in printed
    assert "all operators supported" in printed
    assert "trtexec --onnx=" in printed
    out = tmp_path / "engine"
    assert (
        main(["segment", str(image), "--engine", str(onnx_path), "--bpe-dir", bpe_dir, "--save-raw", "--out", str(out)])
        == 0
    )
    logits, probs, labels = (
        np.load(out / "img_logits.npy"),
        np.load(out / "img_probs.npy"),
        cv2.imread(str(out / "img_labels.png"), -1),
    )
    # the export's preprocessing (short side 64) with the bundle's own categories, on PyTorch
    ref = Segmenter.load(
        str(bundle), bpe_dir=bpe_dir, preprocessing=Preprocessing.short_side_rule(64), device="cpu"
    ).segment(str(image))
    assert logits.shape == ref.logits.shape == (4, 6, 2)
    assert ref.categories == ["grass", "cat"]
    assert np.abs(logits - ref.logits).max() < 2e-4
    assert np.abs(probs - ref.probs).max() < 1e-4
    assert (labels == ref.labels).all()
    # a static 64x96 graph cannot take a square image (50x50 -> 64x64 at short side 64): the exact size and flag,
    # nothing written
    square = tmp_path / "sq.png"
    cv2.imwrite(str(square), np.zeros((50, 50, 3), np.uint8))
    # (an image the graph cannot take fails alone: one line naming it, then the summary, exit 1)
    assert (
        main(
            [
                "segment",
                str(square),
                str(image),
                "--engine",
                str(onnx_path),
                "--bpe-dir",
                bpe_dir,
                "--out",
                str(tmp_path / "sq"),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2
    assert "sq.png" in err[0]
    assert "preprocesses to 64x64; re-export a static 64x64 graph with --imgsz 64x64" in err[0]
    assert "1 input(s) failed, 1 of 2" in err[1]
    assert sorted(p.name for p in (tmp_path / "sq").glob("*.png")) == [
        f"{image.stem}_labels.png",
        f"{image.stem}_overlay.png",
    ]
    _fails(
        capsys,
        [
            "segment",
            str(image),
            "--engine",
            str(onnx_path),
            "--bpe-dir",
            bpe_dir,
            "--half",
            "--out",
            str(tmp_path / "h"),
        ],
        "--providers tensorrt",
    )
    _fails(
        capsys,
        [
            "segment",
            str(image),
            "--engine",
            str(onnx_path),
            "--bpe-dir",
            bpe_dir,
            "--providers",
            "cuda",
            "--out",
            str(tmp_path / "c"),
        ],
        "lacks CUDAExecutionProvider",
    )
    _fails(
        capsys,
        ["segment", str(image), "--engine", str(onnx_path), "--providers", "gpu", "--out", str(tmp_path / "g")],
        "unknown ONNX Runtime provider",
    )


def test_segment_engine_bad_files(image, bundle, tmp_path, capsys):
    _fails(capsys, ["segment", str(image), "--engine", str(tmp_path / "none.onnx")], "engine not found")
    lonely = tmp_path / "lonely.onnx"
    lonely.write_bytes(b"not a graph")
    _fails(capsys, ["segment", str(image), "--engine", str(lonely)], "lonely.vocab.safetensors not found")
    odd = tmp_path / "model.bin"
    odd.write_bytes(b"x")
    _fails(capsys, ["segment", str(image), "--engine", str(odd)], "unknown file type")
    _fails(
        capsys,
        ["segment", str(image), "--checkpoint", str(bundle), "--providers", "cpu"],
        "--providers applies to --engine",
    )
    # an engine with its side files, on a machine without TensorRT / with another TensorRT: one line either way
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\0" * 64)
    model = make_tiny_model(0)
    meta = {
        "arch": TINY_ARCH.to_dict(),
        "categories": None,
        "prompt_prefix": None,
        "preprocessing": Preprocessing().to_dict(),
        "export": {
            "inputs": ["images", "prompt_embeds", "class_embeds"],
            "outputs": ["logits", "features"],
            "dynamic": True,
        },
    }
    write_vocab(str(tmp_path / "m.vocab.safetensors"), model.embed_tokens.weight, None, meta)
    (tmp_path / "m.engine.json").write_text(
        json.dumps({"tensorrt": "0.0.1", "gpu": "none", "compute_capability": "0.0", "precision": "fp16"})
    )
    err = _fails(capsys, ["segment", str(image), "--engine", str(engine), "--categories", "cat"], "")
    assert "tensorrt" in err.lower() or "cuda" in err.lower()
    _fails(
        capsys,
        ["segment", str(image), "--engine", str(engine), "--categories", "cat", "--half"],
        "--precision fp16 does not apply",
    )
