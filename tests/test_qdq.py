"""Activation quantizer signedness: exported Q/DQ graphs are INT8 only (what TensorRT reads), and ONNX
Runtime's CPU sessions read the quantizers of ReLU outputs as UINT8 (its fast x86 kernels) with the
same values."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="the onnx package is not installed")
ort = pytest.importorskip("onnxruntime", reason="the onnxruntime package is not installed")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from ifseg_deploy.errors import IFSegError  # noqa: E402
from ifseg_deploy.runtime.qdq import signed_activations, unsigned_activations  # noqa: E402

STEP = 0.02


def _graph(relu_point: np.ndarray, other_point: np.ndarray) -> onnx.ModelProto:
    """x -> Relu -> Q/DQ (``relu_point``) -> Conv 1x1 (int8 weights) -> Q/DQ (``other_point``) -> y."""
    weight = np.array([[[[3]], [[-2]]], [[[1]], [[4]]]], dtype=np.int8)
    init = [
        numpy_helper.from_array(np.float32(STEP), "relu_scale"),
        numpy_helper.from_array(relu_point, "relu_point"),
        numpy_helper.from_array(np.float32(0.05), "out_scale"),
        numpy_helper.from_array(other_point, "out_point"),
        numpy_helper.from_array(weight, "w_q"),
        numpy_helper.from_array(np.float32(0.1), "w_scale"),
        numpy_helper.from_array(np.int8(0), "w_point"),
    ]
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("QuantizeLinear", ["r", "relu_scale", "relu_point"], ["rq"]),
        helper.make_node("DequantizeLinear", ["rq", "relu_scale", "relu_point"], ["rd"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_point"], ["w"]),
        helper.make_node("Conv", ["rd", "w"], ["c"]),
        helper.make_node("QuantizeLinear", ["c", "out_scale", "out_point"], ["cq"]),
        helper.make_node("DequantizeLinear", ["cq", "out_scale", "out_point"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])],
        init,
        value_info=[
            helper.make_tensor_value_info("rq", helper.np_dtype_to_tensor_dtype(relu_point.dtype), [1, 2, 4, 4])
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _points(model: onnx.ModelProto) -> dict:
    return {t.name: (t.data_type, numpy_helper.to_array(t)) for t in model.graph.initializer}


def test_signed_activations_make_every_quantizer_int8_over_the_same_range():
    model = _graph(np.uint8(0), np.int8(0))
    x = np.random.default_rng(0).uniform(-2, 5.2, (1, 2, 4, 4)).astype(np.float32)  # ReLU range [0, 255 * STEP]
    before = _run(model, x)
    assert signed_activations(model) == 1
    init = _points(model)
    assert init["relu_point"][0] == TensorProto.INT8
    assert init["relu_scale"][1] == pytest.approx(STEP * 255 / 127)
    assert init["out_point"][0] == TensorProto.INT8 and init["out_scale"][1] == pytest.approx(0.05)  # already signed
    assert init["w_point"][0] == TensorProto.INT8
    declared = {v.name: v.type.tensor_type.elem_type for v in model.graph.value_info}
    assert declared["rq"] == TensorProto.INT8
    after = _run(model, x)  # one step twice as coarse: within two of the old steps per input, times the weights
    assert np.abs(after - before).max() <= 0.05 + 5 * 0.1 * STEP * 255 / 127


def test_signed_activations_refuse_an_asymmetric_unsigned_quantizer():
    with pytest.raises(IFSegError, match="asymmetric UINT8 activation quantizer"):
        signed_activations(_graph(np.uint8(3), np.int8(0)))


def test_unsigned_activations_keep_the_values_of_relu_outputs():
    model = _graph(np.int8(0), np.int8(0))
    x = np.random.default_rng(1).uniform(-2, 127 * STEP, (1, 2, 4, 4)).astype(np.float32)  # below saturation
    before = _run(model, x)
    assert unsigned_activations(model) == 1
    init = _points(model)
    assert init["relu_point"][0] == TensorProto.UINT8 and init["relu_scale"][1] == pytest.approx(STEP)
    assert init["out_point"][0] == TensorProto.INT8  # a convolution's output can be negative
    assert init["w_point"][0] == TensorProto.INT8  # weights stay signed
    np.testing.assert_array_equal(_run(model, x), before)
    assert unsigned_activations(model) == 0  # nothing left to change
