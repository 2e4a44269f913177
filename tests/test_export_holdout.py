"""Held-out accuracy gates of reduced-precision exports: a trained bundle's held-out pixel accuracy
and mIoU recomputed through the exported graphs (fp32, fp16, int8), stored in the side file, and
gated; bf16 PyTorch keeps it too."""

from __future__ import annotations

import copy
import os

import numpy as np
import onnx
import pytest
import torch
from conftest import BPE, TRAIN_ARCH, make_tiny_model, save_fairseq_checkpoint, save_tiny_bundle
from onnx import TensorProto, helper

from ifseg_deploy.checkpoint import load_model
from ifseg_deploy.cli.main import main
from ifseg_deploy.errors import IFSegError
from ifseg_deploy.exporter.onnx.writer import read_onnx_metadata
from ifseg_deploy.exporter.precision import holdout_check
from ifseg_deploy.exporter.precision.holdout_check import graph_holdout, holdout_set, image_token_tensor
from ifseg_deploy.model.inference import cast_stages
from ifseg_deploy.runtime.graph_contract import GraphContract
from ifseg_deploy.runtime.sidecar import read_vocab
from ifseg_deploy.runtime.vocabulary import Vocabulary
from ifseg_deploy.text.categories_file import ClassSpec
from ifseg_deploy.train import TrainConfig, Trainer, holdout_metrics

HOLDOUT = 16  # images: 16 x 8 x 8 = 1024 scored cells, one cell = 0.1 point
CLASSES = [ClassSpec("grass", ("grass",)), ClassSpec("animal", ("cat", "dog")), ClassSpec("sky", ("sky",))]


def _tame_checkpoint(folder) -> str:
    """The tiny 8x8-grid model with convolutions scaled by their fan-in, so that its backbone
    features stay O(1) (the raw random backbone overflows fp16), saved in the IFSeg layout."""
    model = make_tiny_model(0, TRAIN_ARCH)
    with torch.no_grad():
        for conv in model.backbone.modules():
            if isinstance(conv, torch.nn.Conv2d):
                conv.weight.mul_((conv.weight.shape[-1] / conv.weight[0].numel()) ** 0.5)
    path = save_fairseq_checkpoint(
        model, folder / "tame.pt", class_embeds=torch.zeros(1, TRAIN_ARCH.embed_dim), categories=["thing"]
    )
    for f in ("encoder.json", "vocab.bpe", "dict.txt"):
        os.symlink(BPE / f, folder / f)
    return path


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> str:
    """A bundle trained by the trainer (40 updates, a hierarchical class) with its held-out figures."""
    folder = tmp_path_factory.mktemp("holdout")
    out = folder / "trained.safetensors"
    Trainer(
        TrainConfig(
            checkpoint=_tame_checkpoint(folder),
            out=str(out),
            classes=CLASSES,
            steps=40,
            batch_size=8,
            max_cells=4,
            holdout_size=HOLDOUT,
            lr=1e-2,
            progress=False,
        )
    ).run()
    stored = load_model(str(out)).metadata["holdout"]
    assert stored["pixel_acc"] > 0.6, stored
    assert stored["miou"] > 0.4, stored  # learned: far above chance (1/3)
    return str(out)


def _export(bundle, out, *extra) -> int:
    return main(["export", "--checkpoint", bundle, "--out", str(out), "--imgsz", "128", "--bpe-dir", str(BPE), *extra])


def _calib(folder) -> str:
    import cv2

    calib = folder / "calib"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(calib / f"{i}.png"), (rng.random((96, 128, 3)) * 255).astype(np.uint8))
    return str(calib)


@pytest.mark.parametrize("static", [False, True])
def test_fp32_graph_reproduces_stored_figures(bundle, tmp_path, static):
    """The cut graph is the trained path: the fp32 graph scores what the trainer stored (PyTorch)."""
    out = tmp_path / "m.onnx"
    assert _export(bundle, out, *(["--static", "--batch", "3"] if static else [])) == 0
    loaded = load_model(bundle)
    vocab = Vocabulary.from_bpe(
        str(BPE),
        bundle,
        loaded.model.embed_tokens.weight,
        prompt_prefix=loaded.prompt_prefix,
        stored_categories=loaded.categories,
        stored_class_embeds=loaded.class_embeds,
    )
    contract = read_vocab(str(out)).contract
    assert (contract.bias_inputs is None) == static  # dynamic graphs take their position biases as inputs
    hset = holdout_set(loaded, vocab, contract)
    assert hset.size == HOLDOUT
    assert hset.images.grid == 8
    got = graph_holdout(onnx.load(str(out)), hset, contract)
    stored = loaded.metadata["holdout"]
    for key in ("pixel_acc", "miou"):
        assert got[key] == pytest.approx(stored[key], abs=2e-3)  # at most 2 cells flip at float arg-max ties


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_reduced_export_reports_and_stores_holdout(bundle, tmp_path, capsys, precision):
    out = tmp_path / f"m_{precision}.onnx"
    extra = ["--calib-dir", _calib(tmp_path)] if precision == "int8" else []
    assert _export(bundle, out, "--precision", precision, *extra) == 0
    printed = capsys.readouterr().out
    assert f"held-out accuracy through the graphs ({HOLDOUT} artificial images" in printed
    assert f"  {precision} graph: pixel acc" in printed
    assert "  fp32 graph: pixel acc" in printed
    check = read_onnx_metadata(str(out))["export"]["verification"]["precision"]["holdout"]
    stored = load_model(bundle).metadata["holdout"]
    assert check["applicable"]
    assert check["ok"]
    assert check["gated"]
    assert check["images"] == HOLDOUT
    assert check["stored"] == stored
    assert check["max_drop"] == {"fp16": 0.005, "int8": 0.02}[precision]
    for key in ("pixel_acc", "miou"):
        assert check["fp32_graph"][key] == pytest.approx(stored[key], abs=2e-3)
        assert check["reduced_graph"][key] >= check["fp32_graph"][key] - check["max_drop"]
    drop = max(check["fp32_graph"][k] - check["reduced_graph"][k] for k in ("pixel_acc", "miou"))
    assert check["drop"] == pytest.approx(drop)


def test_holdout_gate_refuses_and_no_gate_writes(bundle, tmp_path, capsys, monkeypatch):
    """An impossible held-out gate (any drop, even none, is too much): refused, nothing written;
    --no-gate writes it and says so."""
    monkeypatch.setitem(holdout_check.MAX_DROP, "fp16", -0.01)
    out = tmp_path / "out" / "m.onnx"
    assert _export(bundle, out, "--precision", "fp16") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the fp16 graph loses")
    assert "held-out accuracy" in err
    assert "--no-gate" in err
    assert "\n" not in err
    assert not out.parent.exists() or not os.listdir(out.parent)
    assert _export(bundle, out, "--precision", "fp16", "--no-gate") == 0
    printed = capsys.readouterr().out
    assert "BELOW GATE" in printed
    assert "not enforced: --no-gate" in printed
    assert "misses its gate; written anyway because of --no-gate" in printed
    check = read_onnx_metadata(str(out))["export"]["verification"]["precision"]
    assert check["ok"] is False
    assert check["holdout"]["ok"] is False
    assert check["holdout"]["gated"] is False


def test_not_applicable_without_stored_figures(tmp_path, capsys):
    """A bundle not written by train, and a static graph whose grid is not the held-out set's."""
    plain = save_tiny_bundle(tmp_path / "plain.safetensors")
    out = tmp_path / "p.onnx"
    assert (
        main(
            [
                "export",
                "--checkpoint",
                plain,
                "--out",
                str(out),
                "--precision",
                "fp16",
                "--static",
                "--imgsz",
                "64",
                "--bpe-dir",
                str(BPE),
                "--no-gate",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "held-out accuracy: not applicable (plain.safetensors stores no held-out figures" in printed
    check = read_onnx_metadata(str(out))["export"]["verification"]["precision"]["holdout"]
    assert check["applicable"] is False


def test_static_grid_other_than_the_sets(bundle, tmp_path, capsys):
    out = tmp_path / "s.onnx"
    assert _export(bundle, out, "--precision", "fp16", "--static", "--imgsz", "64x96") == 0
    assert (
        "held-out accuracy: not applicable (the static graph's 4x6 grid is not the held-out set's 8x8"
        in capsys.readouterr().out
    )


def test_missing_cut_point_is_one_line():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["logits"], name="/model/relu")],
        "g",
        [x],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])],
    )
    with pytest.raises(IFSegError, match="cannot find the encoder's image-token input") as e:
        image_token_tensor(helper.make_model(graph))
    assert "\n" not in str(e.value)


def test_bf16_pytorch_keeps_holdout_accuracy(bundle):
    """``--precision bf16`` (torch backend: cast_stages) within 0.5 points of float32 on the held-out set."""
    loaded = load_model(bundle)
    vocab = Vocabulary.from_bpe(
        str(BPE),
        bundle,
        loaded.model.embed_tokens.weight,
        prompt_prefix=loaded.prompt_prefix,
        stored_categories=loaded.categories,
        stored_class_embeds=loaded.class_embeds,
    )
    hset = holdout_set(loaded, vocab, GraphContract(loaded.arch.embed_dim))
    fp32 = holdout_metrics(loaded.model, hset.images, hset.prompt_embeds, hset.class_embeds, hset.size)
    assert fp32 == loaded.metadata["holdout"]  # the trainer's own figures, from the reloaded bundle
    bf16_model = cast_stages(copy.deepcopy(loaded.model), torch.bfloat16)
    assert bf16_model.encoder.layers[0].fc1.module.weight.dtype == torch.bfloat16
    bf16 = holdout_metrics(bf16_model, hset.images, hset.prompt_embeds, hset.class_embeds, hset.size)
    for key in ("pixel_acc", "miou"):
        assert bf16[key] >= fp32[key] - 0.005, (bf16, fp32)
