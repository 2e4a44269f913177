"""INT8 with NNCF: every convolution and matrix product quantised (OpenVINO IR and ONNX Q/DQ graph) except
the declared ignored scope, run by OpenVINO / ONNX Runtime, accuracy control on a labelled held-out set,
and one-line errors for bad settings."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from conftest import save_tiny_bundle

pytest.importorskip("nncf", reason="the nncf package is not installed (pip install 'ifseg-deploy[openvino]')")
ov = pytest.importorskip("openvino", reason="the openvino package is not installed")

from ifseg_deploy.cli.main import main  # noqa: E402
from ifseg_deploy.errors import IFSegError  # noqa: E402
from ifseg_deploy.exporter.api import export_model  # noqa: E402
from ifseg_deploy.exporter.args import ExportArgs  # noqa: E402
from ifseg_deploy.exporter.onnx.scene import synthetic_scene  # noqa: E402
from ifseg_deploy.exporter.precision.fp16_graph import image_labels  # noqa: E402
from ifseg_deploy.exporter.precision.nncf_int8 import (  # noqa: E402
    IGNORED_NAMES,
    onnx_float_products,
    openvino_float_products,
)
from ifseg_deploy.fileio import write_png  # noqa: E402
from ifseg_deploy.runtime.openvino_backend import ir_path  # noqa: E402
from ifseg_deploy.runtime.segmenter import Segmenter  # noqa: E402
from ifseg_deploy.runtime.sidecar import read_vocab  # noqa: E402

SIZE = 128  # the small test model's working resolution (8x8 grid)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, bpe_dir):
    """A small random bundle, 3 calibration scenes, and a 2-image held-out set labelled with the fp32
    model's own labels (so fp32 scores 100% on it)."""
    root = tmp_path_factory.mktemp("nncf")
    bundle = save_tiny_bundle(root / "tiny.safetensors", bpe_dir=bpe_dir)
    calib = root / "calib"
    calib.mkdir()
    for seed in range(3):
        write_png(str(calib / f"scene_{seed}.png"), synthetic_scene(SIZE, SIZE, seed))
    holdout = root / "holdout"
    (holdout / "images").mkdir(parents=True)
    (holdout / "labels").mkdir()
    fp32 = Segmenter.load(bundle, bpe_dir=bpe_dir, device="cpu")
    for seed in (10, 11):
        rgb = synthetic_scene(SIZE, SIZE, seed)
        logits = fp32.segment(rgb).logits  # (8, 8, N): the labels the export's check computes from them
        labels = image_labels(logits.reshape(1, -1, logits.shape[-1]), SIZE, SIZE)[0]
        write_png(str(holdout / "images" / f"h{seed}.png"), rgb)
        write_png(str(holdout / "labels" / f"h{seed}.png"), labels.astype(np.uint8))
    return bundle, str(calib), str(holdout)


def _args(bpe_dir, **kw) -> ExportArgs:
    return ExportArgs(imgsz=SIZE, bpe_dir=bpe_dir, precision="int8", quantizer="nncf", gate=False, **kw)


def test_openvino_ir_is_int8_and_runs(setup, bpe_dir, tmp_path):
    bundle, calib, _ = setup
    out = str(tmp_path / "m_openvino")
    result = export_model(bundle, _args(bpe_dir, format="openvino", calib_dir=calib, out=out))
    model = ov.Core().read_model(ir_path(out))
    products = [op for op in model.get_ordered_ops() if op.get_type_name() in ("Convolution", "MatMul")]
    assert len(products) > 10
    assert set(openvino_float_products(model)) <= set(IGNORED_NAMES)  # every other product reads int8
    assert len(openvino_float_products(model)) == 1  # the logits product, and only it
    assert result.openvino.quantizer == "nncf"
    report = result.openvino.verification
    assert report.precision == "int8"
    assert report.fp32_nodes == 1
    assert report.rel_rms > 0  # quantised, not the fp32 model
    side = read_vocab(ir_path(out))
    assert side.export["precision"] == "int8"
    assert side.export["quantizer"] == "nncf"
    assert side.export["verification"]["precision"]["fp32_nodes"] == 1
    seg = Segmenter.load(out, bpe_dir=bpe_dir, device="cpu")
    assert seg.backend.capabilities.precision == "int8"
    assert np.isfinite(seg.segment(synthetic_scene(SIZE, SIZE, 5)).logits).all()


def test_onnx_graph_is_qdq_int8_and_runs(setup, bpe_dir, tmp_path):
    import onnxruntime as ort

    bundle, calib, _ = setup
    out = str(tmp_path / "m.onnx")
    result = export_model(bundle, _args(bpe_dir, format="onnx", calib_dir=calib, out=out))
    graph = onnx.load(out)
    ops = [n.op_type for n in graph.graph.node]
    assert ops.count("QuantizeLinear") > 10
    # TensorRT reads INT8 Q/DQ only: signed zero points everywhere, after ReLU too
    init = {t.name: t.data_type for t in graph.graph.initializer}
    points = [init[n.input[2]] for n in graph.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]
    assert points and set(points) == {onnx.TensorProto.INT8}
    floats = onnx_float_products(graph)
    assert "/model/decoder/MatMul" in floats  # the declared ignored scope
    # and NNCF's ONNX transformer pattern: attention x values (one per attention block) after Softmax
    assert sorted(floats) == sorted(
        ["/model/decoder/MatMul"]
        + [n.name for n in graph.graph.node if n.op_type == "MatMul" and n.name.endswith("attn/MatMul_1")]
    )
    assert len(floats) == 4  # 1 encoder + 2 decoder attention blocks, and the logits
    assert result.onnx.precision.fp32_nodes == len(floats)
    assert result.onnx.precision.rel_rms > 0
    assert result.onnx.metadata["export"]["quantizer"] == "nncf"
    session = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    assert {i.name for i in session.get_inputs()} >= {"images", "prompt_embeds", "class_embeds"}
    seg = Segmenter.load(out, bpe_dir=bpe_dir, device="cpu").segment(synthetic_scene(SIZE, SIZE, 5))
    assert np.isfinite(seg.logits).all()


def _quantized(node, depth: int = 4) -> bool:
    """Whether ``node`` is a FakeQuantize, directly or through data movement."""
    if node.get_type_name() == "FakeQuantize":
        return True
    movement = ("Transpose", "Reshape", "Squeeze", "Unsqueeze")
    return bool(depth) and node.get_type_name() in movement and _quantized(node.input_value(0).get_node(), depth - 1)


def test_all_scope_quantises_attention(setup, bpe_dir, tmp_path):
    bundle, calib, _ = setup
    out = str(tmp_path / "all_openvino")
    export_model(bundle, _args(bpe_dir, format="openvino", calib_dir=calib, out=out))
    model = ov.Core().read_model(ir_path(out))
    attention = [op for op in model.get_ordered_ops() if op.get_type_name() == "ScaledDotProductAttention"]
    assert attention and all(_quantized(op.input_value(0).get_node()) for op in attention)  # queries read int8


def test_convolution_scope_quantises_convolutions_only(setup, bpe_dir, tmp_path):
    import onnxruntime as ort

    bundle, calib, _ = setup
    out = str(tmp_path / "conv_openvino")
    result = export_model(
        bundle, _args(bpe_dir, format="openvino", calib_dir=calib, out=out, int8_scope="convolutions")
    )
    model = ov.Core().read_model(ir_path(out))
    floats = set(openvino_float_products(model))
    convolutions = {op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"}
    products = {op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "MatMul"}
    assert convolutions and not convolutions & floats  # every convolution reads int8
    assert products and products <= floats  # every matrix product stays float
    attention = [op for op in model.get_ordered_ops() if op.get_type_name() == "ScaledDotProductAttention"]
    assert attention and not any(_quantized(i.get_source_output().get_node()) for op in attention for i in op.inputs())
    assert result.openvino.verification.fp32_nodes == len(products)
    assert read_vocab(ir_path(out)).export["int8_scope"] == "convolutions"
    seg = Segmenter.load(out, bpe_dir=bpe_dir, device="cpu")
    assert seg.backend.capabilities.precision == "int8"
    assert np.isfinite(seg.segment(synthetic_scene(SIZE, SIZE, 5)).logits).all()

    out = str(tmp_path / "conv.onnx")
    result = export_model(bundle, _args(bpe_dir, format="onnx", calib_dir=calib, out=out, int8_scope="convolutions"))
    graph = onnx.load(out)
    floats = set(onnx_float_products(graph))
    assert floats == {n.name for n in graph.graph.node if n.op_type in ("MatMul", "Gemm")}
    assert any(n.op_type == "Conv" for n in graph.graph.node) and not any("Conv" in f for f in floats)
    assert result.onnx.metadata["export"]["int8_scope"] == "convolutions"
    session = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    assert "images" in {i.name for i in session.get_inputs()}


def test_cli_convolution_scope_says_what_is_int8(setup, bpe_dir, tmp_path, capsys):
    bundle, calib, _ = setup
    out = str(tmp_path / "cli_openvino")
    argv = ["export", "--checkpoint", bundle, "--format", "openvino", "--precision", "int8", "--imgsz", str(SIZE)]
    argv += ["--calib-dir", calib, "--quantizer", "nncf", "--int8-scope", "convolutions", "--bpe-dir", bpe_dir]
    assert main(argv + ["--out", out, "--no-gate"]) == 0
    assert "OpenVINO (CPU, INT8, NNCF: the convolutions only) vs PyTorch" in capsys.readouterr().out
    assert read_vocab(ir_path(out)).export["int8_scope"] == "convolutions"


def test_accuracy_control_on_labelled_holdout(setup, bpe_dir, tmp_path, capsys):
    bundle, calib, holdout = setup
    out = str(tmp_path / "ac_openvino")
    code = main(
        [
            "export",
            "--checkpoint",
            bundle,
            "--format",
            "openvino",
            "--precision",
            "int8",
            "--imgsz",
            str(SIZE),
            "--calib-dir",
            calib,
            "--quantizer",
            "nncf",
            "--holdout-dir",
            holdout,
            "--max-drop",
            "0.5",
            "--bpe-dir",
            bpe_dir,
            "--out",
            out,
            "--no-gate",
        ]
    )
    text = capsys.readouterr().out
    assert code == 0
    line = next(line for line in text.splitlines() if "labelled held-out set (2 images)" in line)
    assert "pixel acc fp32 100.00%" in line  # labelled with the fp32 model's own labels
    assert "max_drop 50.0 pt" in line or "--max-drop 50.0 pt" in line
    assert os.path.isfile(ir_path(out))


@pytest.mark.parametrize(
    "settings, names",
    [
        (dict(max_drop=1.5, holdout_dir="x"), "max_drop=1.5"),
        (dict(max_drop=0.01), "`holdout_dir`"),
        (dict(quantizer="tflite"), "quantizer=tflite"),
        (dict(int8_scope="attention"), "int8_scope=attention"),
        (dict(int8_scope="convolutions", quantizer="onnxruntime"), "int8_scope=convolutions"),
        (dict(precision="fp16", holdout_dir="x"), "`holdout_dir`"),
    ],
)
def test_bad_settings_name_the_parameter(setup, bpe_dir, tmp_path, settings, names):
    bundle, calib, _ = setup
    args = dict(
        format="onnx", out=str(tmp_path / "m.onnx"), imgsz=SIZE, precision="int8", calib_dir=calib, quantizer="nncf"
    )
    args.update(settings)
    if args["precision"] != "int8":
        del args["calib_dir"]
    with pytest.raises(IFSegError) as e:
        export_model(bundle, ExportArgs(**args))
    assert names in str(e.value)
    assert "\n" not in str(e.value)
    assert not os.listdir(tmp_path)


def test_cli_max_drop_without_holdout_is_one_line(setup, tmp_path, capsys):
    bundle, calib, _ = setup
    code = main(
        ["export", "--checkpoint", bundle, "--precision", "int8", "--calib-dir", calib, "--max-drop", "0.01"]
        + ["--out", str(tmp_path / "m.onnx")]
    )
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert "--holdout-dir" in err
    assert "\n" not in err
