"""The signedness of a Q/DQ graph's activation quantizers.

A symmetric activation quantizer is unsigned (UINT8, zero point 0, range ``[0, 255 * scale]``: NNCF's
after a ReLU) or signed (INT8, zero point 0). TensorRT reads INT8 Q/DQ only, so exported graphs carry
signed activations (:func:`signed_activations`, which doubles such a quantizer's step). ONNX Runtime's
x86 CPU kernels multiply unsigned activations by signed weights (``vpmaddubsw``), and run INT8 x INT8
convolutions through a slower path, so its CPU sessions read the graph with the INT8 quantizers of
ReLU outputs as UINT8 ones of the same step (:func:`unsigned_activations`): the same values wherever the
INT8 ones do not saturate.
"""

from __future__ import annotations

from typing import Any, Set, Tuple

import numpy as np

from ..errors import IFSegError


def _activation_points(model: Any, data_type: int) -> Set[Tuple[str, str]]:
    """``(scale, zero point)`` initializer names of the activation quantizers (``QuantizeLinear`` nodes and
    the ``DequantizeLinear`` nodes that share their zero point) whose zero point has ``data_type``."""
    init = {t.name: t for t in model.graph.initializer}
    points = {
        n.input[2]
        for n in model.graph.node
        if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in init and n.input[0] not in init
        if init[n.input[2]].data_type == data_type
    }  # a QuantizeLinear of an initializer is a weight's: weights stay signed
    return {
        (n.input[1], n.input[2])
        for n in model.graph.node
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2 and n.input[2] in points
    }


def _retype(model: Any, pairs: Set[Tuple[str, str]], scale_factor: float, data_type: int) -> int:
    """Multiply the step of every quantizer in ``pairs`` by ``scale_factor``, store its zero point (0) as
    ``data_type`` and declare its quantised tensors with that type; returns the zero points changed."""
    from onnx import helper, numpy_helper

    init = {t.name: t for t in model.graph.initializer}
    if scale_factor != 1:
        for name in {s for s, _ in pairs}:
            scale = numpy_helper.to_array(init[name])
            init[name].CopyFrom(numpy_helper.from_array((scale * np.float32(scale_factor)).astype(scale.dtype), name))
    points = {p for _, p in pairs}
    dtype = helper.tensor_dtype_to_np_dtype(data_type)
    for name in points:
        init[name].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init[name]).astype(dtype), name))
    quantized = {
        n.output[0] for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[2:3] and n.input[2] in points
    }
    for value in model.graph.value_info:
        if value.name in quantized:
            value.type.tensor_type.elem_type = data_type
    return len(points)


def signed_activations(model: Any) -> int:
    """Turn the unsigned symmetric activation quantizers of the ONNX graph ``model`` (UINT8, zero point 0)
    into INT8 ones with zero point 0 and a step ``255 / 127`` times larger, which cover the same range;
    in place; returns how many zero points changed. Raises :class:`IFSegError` for an asymmetric UINT8
    quantizer (a non-zero zero point), which INT8 with zero point 0 cannot hold."""
    from onnx import TensorProto, numpy_helper

    pairs = _activation_points(model, TensorProto.UINT8)
    init = {t.name: t for t in model.graph.initializer}
    asymmetric = sorted(p for _, p in pairs if numpy_helper.to_array(init[p]).any())
    if asymmetric:
        raise IFSegError(
            f"the int8 graph has an asymmetric UINT8 activation quantizer ({asymmetric[0]}), which TensorRT cannot "
            "read; nothing was written"
        )
    return _retype(model, pairs, 255 / 127, TensorProto.INT8)


def unsigned_activations(model: Any) -> int:
    """Turn the INT8 activation quantizers of the ONNX graph ``model`` that read a ReLU's output (directly
    or through a ``MaxPool``; zero point 0) into UINT8 with zero point 0 and the same step: a value
    ``x >= 0`` quantises to the same ``q`` up to 127 steps, and up to 255 where the INT8 one saturates.
    In place; returns how many zero points changed (0: nothing to do)."""
    from onnx import TensorProto, numpy_helper

    producer = {o: n for n in model.graph.node for o in n.output}

    def non_negative(name: str) -> bool:
        node = producer.get(name)
        if node is not None and node.op_type == "MaxPool":
            return non_negative(node.input[0])
        return node is not None and node.op_type == "Relu"

    init = {t.name: t for t in model.graph.initializer}
    relu = {
        n.input[2]
        for n in model.graph.node
        if n.op_type == "QuantizeLinear" and n.input[2:3] and non_negative(n.input[0])
    }
    pairs = {
        (scale, point)
        for scale, point in _activation_points(model, TensorProto.INT8)
        if point in relu and not numpy_helper.to_array(init[point]).any()
    }
    return _retype(model, pairs, 1, TensorProto.UINT8)
