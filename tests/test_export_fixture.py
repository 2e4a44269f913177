"""The dev fixture through the CLI: export (kNN smoothing in the graph, the default k = 3) with a
foreign category list, then ``segment --engine`` with the real list must reproduce the reference
(and the PyTorch path on a non-square image)."""

from __future__ import annotations

import os

import cv2
import numpy as np
import onnx
import pytest

from ifseg_deploy.cli.main import main
from ifseg_deploy.exporter.onnx.verify import graph_policy_problems
from ifseg_deploy.exporter.onnx.writer import read_onnx_metadata

REAL = "grass, cat, giraffe, concrete wall"
FOREIGN = "dog, person, sky"


@pytest.fixture(scope="module")
def exported(ifseg_checkpoint, dev_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("engine") / "dev.onnx"
    rc = main(
        [
            "export",
            "--checkpoint",
            ifseg_checkpoint,
            "--format",
            "onnx",
            "--out",
            str(out),
            "--categories",
            FOREIGN,
            "--knn",
            "in-graph",
            "--verify-image",
            str(dev_dir / "image_eval0.png"),
        ]
    )  # dynamic batch / HxW is the default
    assert rc == 0
    return str(out)


def _segment(tmp_path, image, *model_args, categories=REAL):
    out = tmp_path / "seg"
    assert main(["segment", str(image), *model_args, "--categories", categories, "--save-raw", "--out", str(out)]) == 0
    stem = os.path.splitext(os.path.basename(str(image)))[0]
    return (
        np.load(out / f"{stem}_logits.npy"),
        np.load(out / f"{stem}_probs.npy"),
        cv2.imread(str(out / f"{stem}_labels.png"), cv2.IMREAD_UNCHANGED),
    )


def test_graph_inspection(exported):
    model = onnx.load(exported)
    assert graph_policy_problems(model) == []  # opset >= 17, no Loop/Scan, LayerNormalization nodes, finite constants
    assert not any(n.op_type in ("Loop", "Scan") for n in model.graph.node)
    meta = read_onnx_metadata(exported)
    assert meta["export"]["categories"] == ["dog", "person", "sky"]
    assert meta["categories"] == [c.strip() for c in REAL.split(",")]
    cases = meta["export"]["verification"]["cases"]
    assert [c["ok"] for c in cases] == [True] * 3  # synthetic scene, another one (other list), dev image
    arch = meta["arch"]
    assert meta["export"]["graph"] == {
        "knn": "in-graph",
        "knn_k": 3,
        "knn_iters": 25,
        "upsample": "host",
        "position_biases": "inputs",
        "bias_layers_heads": [arch["encoder_layers"], arch["decoder_layers"], arch["heads"]],
    }
    assert [i.name for i in model.graph.input] == [
        "images",
        "prompt_embeds",
        "class_embeds",
        "encoder_bias",
        "decoder_bias",
        "cross_bias",
    ]
    # the cells compared for kNN are most of each image (the rest have near-tied neighbour sets)
    assert [c["cells"] for c in cases] == [1024, 32 * 43, 1024]
    assert all(c["knn_masked_cells"] < 0.25 * c["cells"] for c in cases)


def test_engine_reproduces_reference(exported, golden, dev_dir, tmp_path, bpe_dir):
    """The graph's own kNN smoothing (k = 3, 25 passes) gives the reference's probabilities and label map."""
    logits, probs, labels = _segment(tmp_path, dev_dir / "image_eval0.png", "--engine", exported, "--bpe-dir", bpe_dir)
    n = 4
    ref_logits = golden["eval0_seg_logits"][0, :-1].reshape(32, 32, n)
    ref_probs = golden["eval0_knn_probs"][0, :-1].reshape(32, 32, n)
    assert np.abs(logits - ref_logits).max() < 5e-4
    assert np.abs(probs - ref_probs).max() < 1e-4
    assert (labels == golden["eval0_knn_label_map"]).all()


def test_engine_matches_pytorch_on_non_square_image(exported, ifseg_checkpoint, dev_dir, tmp_path, bpe_dir):
    """400x560 -> preprocessed to 512x717 -> a 32x45 grid (> 1024 cells, resized position tables)."""
    rgb = cv2.imread(str(dev_dir / "image_eval0.png"))
    image = tmp_path / "wide.png"
    cv2.imwrite(str(image), cv2.resize(rgb, (560, 400), interpolation=cv2.INTER_AREA))
    ort_out = _segment(tmp_path / "ort", image, "--engine", exported, "--bpe-dir", bpe_dir)
    torch_out = _segment(tmp_path / "torch", image, "--checkpoint", ifseg_checkpoint)
    assert ort_out[0].shape == torch_out[0].shape == (32, 45, 4)
    assert np.abs(ort_out[0] - torch_out[0]).max() < 5e-4
    assert np.abs(ort_out[1] - torch_out[1]).max() < 1e-4
    assert ort_out[2].shape == (400, 560)
    assert (ort_out[2] == torch_out[2]).mean() > 0.9999
