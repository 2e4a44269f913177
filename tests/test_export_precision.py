"""Reduced-precision ONNX graphs: the fp16 conversion (types, casts, float32 contract), its gate
against fp32 PyTorch, and the dev fixture's fp16 graph against the reference's own logits."""

from __future__ import annotations

import os
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto

from ifseg_deploy.cli.main import main
from ifseg_deploy.exporter.onnx.writer import read_onnx_metadata
from ifseg_deploy.exporter.precision.fp16_graph import rel_rms, to_fp16
from ifseg_deploy.runtime.onnx_backend import OnnxBackend


def _types(model: onnx.ModelProto) -> dict:
    graph = onnx.shape_inference.infer_shapes(model).graph
    types = {
        v.name: v.type.tensor_type.elem_type for v in list(graph.value_info) + list(graph.input) + list(graph.output)
    }
    types.update({i.name: i.data_type for i in graph.initializer})
    return types


class _Attention(torch.nn.Module):
    """images -> (out, feats): a projection whose output is both a graph output and read further
    (``feats``), attention with a shape-only bias, LayerNorm, a scale constant used on both paths."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj, self.pos, self.norm = torch.nn.Linear(8, 8), torch.nn.Linear(1, 8), torch.nn.LayerNorm(8)

    def forward(self, images):
        feats = self.proj(images)
        t = torch.arange(images.shape[1], dtype=torch.float32)[:, None] * 0.5
        p = self.pos(t)
        attn = torch.softmax(feats @ feats.transpose(1, 2) * 0.5 + p @ p.t(), -1)
        return self.norm(attn @ feats), feats


class _Net(torch.nn.Module):
    """The network under ``/model/`` as in the export graph (nodes outside it are post-processing)."""

    def __init__(self):
        super().__init__()
        self.model = _Attention()

    def forward(self, images):
        return self.model(images)


def test_fp16_graph_types_and_contract(tmp_path):
    path = str(tmp_path / "net.onnx")
    x = torch.randn(2, 5, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Net().eval(),
            (x,),
            path,
            dynamo=False,
            opset_version=17,
            input_names=["images"],
            output_names=["out", "feats"],
            dynamic_axes={"images": {1: "t"}},
        )
    half, kept = to_fp16(onnx.load(path))
    types = _types(half)
    assert kept > 0
    assert [(o.name, o.type.tensor_type.elem_type) for o in half.graph.input] == [("images", TensorProto.FLOAT)]
    assert {o.name: o.type.tensor_type.elem_type for o in half.graph.output} == {
        "out": TensorProto.FLOAT,
        "feats": TensorProto.FLOAT,
    }
    by_op = {}
    for node in half.graph.node:
        by_op.setdefault(node.op_type, set()).add(types.get(node.output[0]))
    assert by_op["Softmax"] == {TensorProto.FLOAT}
    assert by_op["LayerNormalization"] == {TensorProto.FLOAT}
    assert TensorProto.FLOAT16 in by_op["MatMul"]  # the value path's matrix products run in fp16
    assert any(n.op_type == "Cast" for n in half.graph.node)
    # runs as it is on ONNX Runtime CPU, close to the fp32 graph
    save = str(tmp_path / "half.onnx")
    onnx.save(half, save)
    feeds = {"images": np.random.default_rng(1).standard_normal((2, 7, 8)).astype(np.float32)}
    ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)
    out = ort.InferenceSession(save, providers=["CPUExecutionProvider"]).run(None, feeds)
    for r, o in zip(ref, out):
        assert o.dtype == np.float32
        assert r.shape == o.shape
        err = np.linalg.norm(o.astype(np.float64) - r) / np.linalg.norm(r)
        assert 0 < err < 5e-3  # fp16 rounding: not exact, but close


def test_rel_rms():
    assert rel_rms(np.array([3.0, 4.0]), np.array([3.0, 4.5])) == pytest.approx(0.1)
    assert rel_rms(np.ones((2, 3)), np.ones((2, 3))) == 0.0


def test_gate_refuses_and_no_gate_writes(tiny_bundle, bpe_dir, tmp_path, capsys, monkeypatch):
    """Below the gate nothing is written; --no-gate writes the graph and says so."""
    import ifseg_deploy.exporter.onnx.writer as onnx_export

    monkeypatch.setattr(onnx_export, "FP16_MAX_REL_RMS", 0.0)  # fp16 rounding always leaves some error
    out = tmp_path / "out" / "m.onnx"
    args = [
        "export",
        "--checkpoint",
        tiny_bundle,
        "--out",
        str(out),
        "--precision",
        "fp16",
        "--static",
        "--imgsz",
        "64",
        "--bpe-dir",
        bpe_dir,
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the fp16 graph's logits differ from fp32 PyTorch by rel-RMS")
    assert "--no-gate" in err
    assert "\n" not in err
    assert not out.parent.exists() or not os.listdir(out.parent)
    assert main(args + ["--no-gate"]) == 0
    printed = capsys.readouterr().out
    assert "misses its gate; written anyway because of --no-gate" in printed
    meta = read_onnx_metadata(str(out))
    assert meta["export"]["precision"] == "fp16"
    check = meta["export"]["verification"]["precision"]
    assert check["ok"] is False
    assert check["gated"] is False
    assert check["logits_rel_rms"] > 0


@pytest.fixture(scope="module")
def fixture_fp16(ifseg_checkpoint, dev_dir, bpe_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("fp16") / "dev16.onnx"
    rc = main(
        [
            "export",
            "--checkpoint",
            ifseg_checkpoint,
            "--out",
            str(out),
            "--precision",
            "fp16",
            "--static",
            "--bpe-dir",
            bpe_dir,
            "--categories",
            "grass, cat, giraffe, concrete wall",
            "--verify-image",
            str(dev_dir / "image_eval0.png"),
        ]
    )
    assert rc == 0
    return str(out)


def test_fixture_fp16_graph_meets_gate(fixture_fp16, golden, dev_dir, bpe_dir):
    meta = read_onnx_metadata(fixture_fp16)
    assert meta["export"]["precision"] == "fp16"
    check = meta["export"]["verification"]["precision"]
    assert check["ok"]
    assert check["logits_rel_rms"] <= 2e-2
    assert all(c["label_agreement"] > 0.99 for c in check["cases"])
    # independently: the graph's logits on the dev image against the reference implementation's own
    backend, info = OnnxBackend.open(fixture_fp16, device="cpu")
    assert backend.capabilities.precision == "fp16"
    from ifseg_deploy.preprocess import Preprocessing, read_image
    from ifseg_deploy.runtime.loader import vocabulary_for

    vocab = vocabulary_for(info, bpe_dir).prepare(["grass", "cat", "giraffe", "concrete wall"])
    images = Preprocessing(512, 2048)(read_image(str(dev_dir / "image_eval0.png"))).unsqueeze(0)
    logits = backend.run(images, vocab.prompt_embeds, vocab.class_embeds).logits.numpy()
    ref = golden["eval0_seg_logits"][:, :-1]
    err = np.linalg.norm(logits.astype(np.float64) - ref) / np.linalg.norm(ref)
    assert 1e-5 < err < 2e-2  # fp16: close to the reference, but not the fp32 graph's ~1e-5
    agree = (logits.argmax(-1) == ref.argmax(-1)).mean()
    assert agree > 0.99


def test_int8_qdq_graph(tiny_bundle, bpe_dir, tmp_path, capsys, caplog):
    """--precision int8 --quantizer onnxruntime: a Q/DQ graph calibrated on --calib-dir; weights of
    MatMul/Gemm quantized per channel, normalisation/softmax and activation x activation products float,
    float32 I/O."""
    import cv2

    calib = tmp_path / "calib"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(calib / f"{i}.png"), (rng.random((48, 80, 3)) * 255).astype(np.uint8))
    out = tmp_path / "m8.onnx"
    assert (
        main(
            [
                "export",
                "--checkpoint",
                tiny_bundle,
                "--bpe-dir",
                bpe_dir,
                "--out",
                str(out),
                "--precision",
                "int8",
                "--calib-dir",
                str(calib),
                "--static",
                "--imgsz",
                "64",
                "--no-gate",
                "--quantizer",
                "onnxruntime",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "int8 graph vs fp32 PyTorch" in printed
    assert "rel-RMS" in printed
    assert (
        "pre-processing before quantization" not in caplog.text
    )  # the quantizer's per-call advice is not the user's business
    model = onnx.load(str(out))
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name: i for i in model.graph.initializer}
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert dq
    assert all(inits[n.input[0]].data_type == TensorProto.INT8 for n in dq if n.input[0] in inits)  # no INT32 bias Q/DQ
    quantized = [
        n
        for n in model.graph.node
        if n.op_type in ("MatMul", "Gemm")
        and all(i in producers and producers[i].op_type == "DequantizeLinear" for i in n.input[:2])
    ]
    assert quantized
    per_channel = [
        n for n in dq if n.input[0] in inits and len(inits[n.input[1]].dims) == 1 and inits[n.input[1]].dims[0] > 1
    ]
    assert per_channel  # weight scales per output channel
    for node in model.graph.node:
        if node.op_type in ("Softmax", "LayerNormalization"):
            assert not any(i in producers and producers[i].op_type == "DequantizeLinear" for i in node.input)
    assert {o.type.tensor_type.elem_type for o in list(model.graph.input) + list(model.graph.output)} == {
        TensorProto.FLOAT
    }
    meta = read_onnx_metadata(str(out))
    assert meta["export"]["precision"] == "int8"
    assert meta["export"]["verification"]["precision"]["precision"] == "int8"
    backend, _ = OnnxBackend.open(str(out), device="cpu")
    assert backend.capabilities.precision == "int8"


def test_fixture_int8_graph_meets_gate(ifseg_checkpoint, dev_dir, bpe_dir, tmp_path):
    """ONNX Runtime's quantizer, calibrated on a photo that is not among the verification images; gate 1e-1
    logits rel-RMS."""
    import shutil

    calib = tmp_path / "calib"
    calib.mkdir()
    shutil.copy(dev_dir.parents[1] / "media" / "cat_dog.jpeg", calib)
    out = tmp_path / "dev8.onnx"
    assert (
        main(
            [
                "export",
                "--checkpoint",
                ifseg_checkpoint,
                "--out",
                str(out),
                "--precision",
                "int8",
                "--calib-dir",
                str(calib),
                "--static",
                "--bpe-dir",
                bpe_dir,
                "--categories",
                "grass, cat, giraffe, concrete wall",
                "--verify-image",
                str(dev_dir / "image_eval0.png"),
                "--quantizer",
                "onnxruntime",
            ]
        )
        == 0
    )
    check = read_onnx_metadata(str(out))["export"]["verification"]["precision"]
    assert check["ok"]
    assert check["logits_rel_rms"] <= 1e-1
    assert all(c["label_agreement"] > 0.9 for c in check["cases"])
