"""Which precision an exported graph carries, and which of its nodes stay in FP32.

Reduced precision lives in the ONNX graph itself (strongly typed: TensorRT 10/11 and ONNX
Runtime run the types the graph declares). The numerically sensitive parts stay FP32 in every
reduced-precision graph: LayerNorm and Softmax, the attention-bias path (position tables, their
projections and resizes, the Add that puts the bias on the attention logits) and the
post-processing outside the network (kNN smoothing, up-sampling).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Optional, Set

from ...errors import IFSegError
from ...precision import GRAPHS, INT8, OPENVINO_WRITES, check_precision
from ...runtime.graph_contract import VALUE_INPUTS
from .calibrator import calibration_files

if TYPE_CHECKING:  # the CLI starts (e.g. `checks` on a bare install) without the onnx package
    import onnx

_FP32_OPS = {"LayerNormalization", "Softmax"}


def check_graph_precision(precision: str, calib_dir: Optional[str]) -> None:
    """``precision`` is one a graph can be written in (:data:`ifseg_deploy.precision.GRAPHS`) and
    ``calib_dir`` goes with int8 only (it must hold calibration images); :class:`IFSegError` otherwise."""
    check_precision(precision, GRAPHS, "exported graphs")
    if precision == INT8:
        calibration_files(calib_dir)
    elif calib_dir:
        raise IFSegError("`calib_dir` is only used with precision=int8")


def check_weight_precision(precision: str) -> str:
    """``precision`` of an OpenVINO export (:data:`ifseg_deploy.precision.OPENVINO_WRITES`: fp32 or
    fp16 weights, or the int8 Q/DQ graph); :class:`IFSegError` otherwise."""
    return check_precision(precision, OPENVINO_WRITES, "format=openvino: fp32 / fp16 weights, or the int8 Q/DQ graph")


def fp32_nodes(model: onnx.ModelProto) -> List[str]:
    """Names of the float nodes a reduced-precision graph keeps in FP32.

    * LayerNormalization and Softmax;
    * the attention-bias path: float nodes whose values depend on no graph input (only on
      weights and input *shapes*: position tables, their projections and resizes, masks);
    * the Add / Cast nodes between such a bias and a Softmax (bias + q.k^T);
    * the post-processing outside the network (nodes not under ``/model/``: kNN similarity,
      top-k, propagation, up-sampling).
    """
    from onnx import TensorProto, shape_inference

    graph = shape_inference.infer_shapes(model).graph
    float_out = {
        v.name for v in list(graph.value_info) + list(graph.output) if v.type.tensor_type.elem_type == TensorProto.FLOAT
    }
    dependent: Set[str] = {i.name for i in graph.input if i.name in VALUE_INPUTS}
    for node in graph.node:  # ONNX graphs are topologically sorted
        if node.op_type != "Shape" and any(i in dependent for i in node.input):
            dependent.update(node.output)
    consumers: Dict[str, List[onnx.NodeProto]] = {}
    for node in graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)

    def feeds_softmax(name: str, depth: int = 2) -> bool:
        for c in consumers.get(name, []):
            if c.op_type == "Softmax" or (depth and c.op_type == "Cast" and feeds_softmax(c.output[0], depth - 1)):
                return True
        return False

    kept = []
    for node in graph.node:
        if not node.output or node.output[0] not in float_out:
            continue
        bias_path = not any(o in dependent for o in node.output)
        post = not node.name.startswith("/model/")
        if (
            node.op_type in _FP32_OPS
            or bias_path
            or post
            or (node.op_type in ("Add", "Cast") and feeds_softmax(node.output[0]))
        ):
            kept.append(node.name)
    return kept
