"""Static check of an ONNX graph against the ONNX-TensorRT operator support matrix.

The tables below transcribe ``docs/operators.md`` of onnx/onnx-tensorrt for the TensorRT 8.6
release (opsets up to 17) and the 10.x releases (opsets 9-20, 10.1 GA document): the operators
marked supported with their data types. Operators absent from a table are unsupported. The
restrictions column of that document is checked in :func:`check_graph` for the operators and
attributes it names.

TensorRT 11.x (target ``"11"``): the 10.x table plus what the 11.0 release notes add to the ONNX
parser (the ``Swish`` operator, listed with Sigmoid's float types; the ``TRT_*`` custom operators
are not used here), opsets 9-25
(NVIDIA's ONNX opset guide for 11.x). For the operators this project's graphs use (MatMul, Gemm,
Conv, LayerNormalization, Softmax, Resize, Gather, TopK, Cast, Q/DQ, shape arithmetic) no
difference between 10.x and 11.x is documented; what 11 removed concerns the builder (weak-typing
flags, calibrators: see :mod:`.tensorrt_build`), not the operator support. The 11 table is thus
the 10.x transcription, not a new transcription of an 11.x operators document.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, FrozenSet, List, Optional, Set

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from ...errors import IFSegError

_TRT86 = """
Abs=FP32/FP16/INT32 Acos=FP32/FP16 Acosh=FP32/FP16 Add=FP32/FP16/INT32 And=BOOL
ArgMax=FP32/FP16/INT32 ArgMin=FP32/FP16/INT32 Asin=FP32/FP16 Asinh=FP32/FP16 Atan=FP32/FP16
Atanh=FP32/FP16 AveragePool=FP32/FP16/INT8/INT32 BatchNormalization=FP32/FP16
Cast=FP32/FP16/INT32/INT8/UINT8/BOOL Ceil=FP32/FP16 Celu=FP32/FP16 Clip=FP32/FP16/INT8
Concat=FP32/FP16/INT32/INT8/BOOL Constant=FP32/FP16/INT32/INT8/BOOL ConstantOfShape=FP32
Conv=FP32/FP16/INT8 ConvTranspose=FP32/FP16/INT8 Cos=FP32/FP16 Cosh=FP32/FP16 CumSum=FP32/FP16
DepthToSpace=FP32/FP16/INT32 DequantizeLinear=INT8 Div=FP32/FP16/INT32 Dropout=FP32/FP16
Einsum=FP32/FP16 Elu=FP32/FP16/INT8 Equal=FP32/FP16/INT32 Erf=FP32/FP16 Exp=FP32/FP16
Expand=FP32/FP16/INT32/BOOL EyeLike=FP32/FP16/INT32/BOOL Flatten=FP32/FP16/INT32/BOOL
Floor=FP32/FP16 Gather=FP32/FP16/INT8/INT32/BOOL GatherElements=FP32/FP16/INT8/INT32/BOOL
GatherND=FP32/FP16/INT8/INT32/BOOL Gemm=FP32/FP16/INT8 GlobalAveragePool=FP32/FP16/INT8
GlobalLpPool=FP32/FP16/INT8 GlobalMaxPool=FP32/FP16/INT8 Greater=FP32/FP16/INT32
GreaterOrEqual=FP32/FP16/INT32 GridSample=FP32/FP16 GroupNormalization=FP32/FP16 GRU=FP32/FP16
HardSwish=FP32/FP16/INT8 HardSigmoid=FP32/FP16/INT8 Identity=FP32/FP16/INT32/INT8/BOOL
If=FP32/FP16/INT32/BOOL ImageScaler=FP32/FP16 InstanceNormalization=FP32/FP16 IsInf=FP32/FP16
IsNaN=FP32/FP16/INT32 LayerNormalization=FP32/FP16 LeakyRelu=FP32/FP16/INT8 Less=FP32/FP16/INT32
LessOrEqual=FP32/FP16/INT32 Log=FP32/FP16 LogSoftmax=FP32/FP16 Loop=FP32/FP16/INT32/BOOL
LRN=FP32/FP16 LSTM=FP32/FP16 LpNormalization=FP32/FP16 LpPool=FP32/FP16/INT8 MatMul=FP32/FP16
Max=FP32/FP16/INT32 MaxPool=FP32/FP16/INT8 Mean=FP32/FP16/INT32 MeanVarianceNormalization=FP32/FP16
Min=FP32/FP16/INT32 Mod=FP32/FP16/INT32 Mul=FP32/FP16/INT32 Neg=FP32/FP16/INT32
NonMaxSuppression=FP32/FP16 NonZero=FP32/FP16 Not=BOOL OneHot=FP32/FP16/INT32/BOOL Or=BOOL
Pad=FP32/FP16/INT8/INT32 ParametricSoftplus=FP32/FP16/INT8 Pow=FP32/FP16 PRelu=FP32/FP16/INT8
QuantizeLinear=FP32/FP16 RandomNormal=FP32/FP16 RandomNormalLike=FP32/FP16 RandomUniform=FP32/FP16
RandomUniformLike=FP32/FP16 Range=FP32/FP16/INT32 Reciprocal=FP32/FP16 ReduceL1=FP32/FP16
ReduceL2=FP32/FP16 ReduceLogSum=FP32/FP16 ReduceLogSumExp=FP32/FP16 ReduceMax=FP32/FP16
ReduceMean=FP32/FP16 ReduceMin=FP32/FP16 ReduceProd=FP32/FP16 ReduceSum=FP32/FP16
ReduceSumSquare=FP32/FP16 Relu=FP32/FP16/INT8 Reshape=FP32/FP16/INT32/INT8/BOOL Resize=FP32/FP16
ReverseSequence=FP32/FP16/INT32/INT8/BOOL RNN=FP32/FP16 RoiAlign=FP32/FP16 Round=FP32/FP16/INT8
ScaledTanh=FP32/FP16/INT8 Scan=FP32/FP16 Scatter=FP32/FP16/INT8/INT32
ScatterElements=FP32/FP16/INT8/INT32 ScatterND=FP32/FP16/INT8/INT32 Selu=FP32/FP16/INT8
Shape=FP32/FP16/INT32/INT8/BOOL Shrink=FP32/FP16/INT32 Sigmoid=FP32/FP16/INT8
Sign=FP32/FP16/INT8/INT32 Sin=FP32/FP16 Sinh=FP32/FP16 Size=FP32/FP16/INT32/INT8/BOOL
Slice=FP32/FP16/INT32/INT8/BOOL Softmax=FP32/FP16 Softplus=FP32/FP16/INT8 Softsign=FP32/FP16/INT8
SpaceToDepth=FP32/FP16/INT32 Split=FP32/FP16/INT32/BOOL Sqrt=FP32/FP16
Squeeze=FP32/FP16/INT32/INT8/BOOL Sub=FP32/FP16/INT32 Sum=FP32/FP16/INT32 Tan=FP32/FP16
Tanh=FP32/FP16/INT8 ThresholdedRelu=FP32/FP16/INT8 Tile=FP32/FP16/INT32/BOOL TopK=FP32/FP16/INT32
Transpose=FP32/FP16/INT32/INT8/BOOL Trilu=FP32/FP16/INT32/INT8/BOOL
Unsqueeze=FP32/FP16/INT32/INT8/BOOL Upsample=FP32/FP16 Where=FP32/FP16/INT32/BOOL Xor=BOOL
"""

_TRT10 = """
Abs=FP32/FP16/BF16/INT32/INT64 Acos=FP32/FP16/BF16 Acosh=FP32/FP16/BF16
Add=FP32/FP16/BF16/INT32/INT64 And=BOOL ArgMax=FP32/FP16/BF16/INT32/INT64
ArgMin=FP32/FP16/BF16/INT32/INT64 Asin=FP32/FP16/BF16 Asinh=FP32/FP16/BF16 Atan=FP32/FP16/BF16
Atanh=FP32/FP16/BF16 AveragePool=FP32/FP16/BF16 BatchNormalization=FP32/FP16/BF16
Cast=FP32/FP16/BF16/INT32/INT64/UINT8/BOOL CastLike=FP32/FP16/BF16/INT32/INT64/UINT8/BOOL
Ceil=FP32/FP16/BF16 Celu=FP32/FP16/BF16 Clip=FP32/FP16/BF16 Concat=FP32/FP16/BF16/INT32/INT64/BOOL
Constant=FP32/FP16/BF16/INT32/INT64/BOOL ConstantOfShape=FP32/FP16/BF16/INT32/INT64/BOOL
Conv=FP32/FP16/BF16 ConvTranspose=FP32/FP16/BF16 Cos=FP32/FP16/BF16 Cosh=FP32/FP16/BF16
CumSum=FP32/FP16/BF16 DeformConv=FP32/FP16 DepthToSpace=FP32/FP16/BF16/INT32/INT64
DequantizeLinear=INT8/FP8/INT4 Div=FP32/FP16/BF16/INT32/INT64 Dropout=FP32/FP16/BF16
Einsum=FP32/FP16/BF16 Elu=FP32/FP16/BF16 Equal=FP32/FP16/BF16/INT32/INT64 Erf=FP32/FP16/BF16
Exp=FP32/FP16/BF16 Expand=FP32/FP16/BF16/INT32/INT64/BOOL EyeLike=FP32/FP16/BF16/INT32/INT64/BOOL
Flatten=FP32/FP16/BF16/INT32/INT64/BOOL Floor=FP32/FP16/BF16 Gather=FP32/FP16/BF16/INT32/INT64/BOOL
GatherElements=FP32/FP16/BF16/INT32/INT64/BOOL GatherND=FP32/FP16/BF16/INT32/INT64/BOOL
Gelu=FP32/FP16/BF16/INT8/INT32/INT64 Gemm=FP32/FP16/BF16 GlobalAveragePool=FP32/FP16/BF16
GlobalLpPool=FP32/FP16/BF16 GlobalMaxPool=FP32/FP16/BF16 Greater=FP32/FP16/BF16/INT32/INT64
GreaterOrEqual=FP32/FP16/BF16/INT32/INT64 GridSample=FP32/FP16 GroupNormalization=FP32/FP16/BF16
GRU=FP32/FP16/BF16 HardSigmoid=FP32/FP16/BF16 HardSwish=FP32/FP16/BF16 Hardmax=FP32/FP16/BF16
Identity=FP32/FP16/BF16/INT32/INT64/BOOL If=FP32/FP16/BF16/INT32/INT64/BOOL
ImageScaler=FP32/FP16/BF16 InstanceNormalization=FP32/FP16/BF16 IsInf=FP32/FP16/BF16
IsNaN=FP32/FP16/BF16/INT32/INT64 LayerNormalization=FP32/FP16/BF16 LeakyRelu=FP32/FP16/BF16
Less=FP32/FP16/BF16/INT32/INT64 LessOrEqual=FP32/FP16/BF16/INT32/INT64 Log=FP32/FP16/BF16
LogSoftmax=FP32/FP16/BF16 Loop=FP32/FP16/BF16/INT32/INT64/BOOL LRN=FP32/FP16/BF16
LSTM=FP32/FP16/BF16 LpNormalization=FP32/FP16/BF16 LpPool=FP32/FP16/BF16 MatMul=FP32/FP16/BF16
Max=FP32/FP16/BF16/INT32/INT64 MaxPool=FP32/FP16/BF16 Mean=FP32/FP16/BF16/FP8/INT32/INT64
MeanVarianceNormalization=FP32/FP16/BF16 Min=FP32/FP16/BF16/INT32/INT64 Mish=FP32/FP16
Mod=FP32/FP16/BF16/INT32/INT64 Mul=FP32/FP16/BF16/INT32/INT64 Neg=FP32/FP16/BF16/INT32/INT64
NonMaxSuppression=FP32/FP16 NonZero=FP32/FP16 Not=BOOL OneHot=FP32/FP16/BF16/INT32/INT64/BOOL
Or=BOOL Pad=FP32/FP16/BF16/INT32/INT64 ParametricSoftplus=FP32/FP16/BF16 Pow=FP32/FP16/BF16
PRelu=FP32/FP16/BF16 QuantizeLinear=FP32/FP16/BF16 RandomNormal=FP32/FP16/BF16
RandomNormalLike=FP32/FP16/BF16 RandomUniform=FP32/FP16/BF16 RandomUniformLike=FP32/FP16/BF16
Range=FP32/FP16/BF16/INT32/INT64 Reciprocal=FP32/FP16/BF16 ReduceL1=FP32/FP16/BF16/INT32/INT64
ReduceL2=FP32/FP16/BF16/INT32/INT64 ReduceLogSum=FP32/FP16/BF16/INT32/INT64
ReduceLogSumExp=FP32/FP16/BF16/INT32/INT64 ReduceMax=FP32/FP16/BF16/INT32/INT64
ReduceMean=FP32/FP16/BF16/INT32/INT64 ReduceMin=FP32/FP16/BF16/INT32/INT64
ReduceProd=FP32/FP16/BF16/INT32/INT64 ReduceSum=FP32/FP16/BF16/INT32/INT64
ReduceSumSquare=FP32/FP16/BF16/INT32/INT64 Relu=FP32/FP16/BF16/INT32/INT64
Reshape=FP32/FP16/BF16/INT32/INT64/BOOL Resize=FP32/FP16/BF16
ReverseSequence=FP32/FP16/BF16/INT32/INT64/BOOL RNN=FP32/FP16/BF16 RoiAlign=FP32/FP16
Round=FP32/FP16/BF16 ScaledTanh=FP32/FP16/BF16 Scan=FP32/FP16/BF16
Scatter=FP32/FP16/BF16/INT32/INT64 ScatterElements=FP32/FP16/BF16/INT32/INT64
ScatterND=FP32/FP16/BF16/INT32/INT64 Selu=FP32/FP16/BF16 Shape=FP32/FP16/BF16/INT32/INT64/BOOL
Shrink=FP32/FP16/BF16/INT32/INT64 Sigmoid=FP32/FP16/BF16 Sign=FP32/FP16/BF16/INT32/INT64
Sin=FP32/FP16/BF16 Sinh=FP32/FP16/BF16 Size=FP32/FP16/BF16/INT32/INT64/BOOL
Slice=FP32/FP16/BF16/INT32/INT64/BOOL Softmax=FP32/FP16/BF16 Softplus=FP32/FP16/BF16
Softsign=FP32/FP16/BF16 SpaceToDepth=FP32/FP16/BF16/INT32/INT64
Split=FP32/FP16/BF16/INT32/INT64/BOOL Sqrt=FP32/FP16/BF16 Squeeze=FP32/FP16/BF16/INT32/INT64/BOOL
Sub=FP32/FP16/BF16/INT32/INT64 Sum=FP32/FP16/BF16/INT32/INT64 Tan=FP32/FP16/BF16
Tanh=FP32/FP16/BF16 ThresholdedRelu=FP32/FP16/BF16 Tile=FP32/FP16/BF16/INT32/INT64/BOOL
TopK=FP32/FP16/BF16/INT32/INT64 Transpose=FP32/FP16/BF16/INT32/INT64/BOOL
Trilu=FP32/FP16/BF16/INT32/INT64/BOOL Unsqueeze=FP32/FP16/BF16/INT32/INT64/BOOL
Upsample=FP32/FP16/BF16 Where=FP32/FP16/BF16/INT32/INT64/BOOL Xor=BOOL
"""


def _parse(table: str) -> Dict[str, FrozenSet[str]]:
    out = {}
    for item in table.split():
        op, types = item.split("=")
        out[op] = frozenset(types.split("/"))
    return out


@dataclass(frozen=True)
class TrtTarget:
    """One TensorRT release line: supported operators, their types and the opset range."""

    version: str
    ops: Dict[str, FrozenSet[str]]
    min_opset: int
    max_opset: int
    int64_as_int32: bool  # 8.x casts INT64 down to INT32 (documented limited INT64 support)


TARGETS: Dict[str, TrtTarget] = {
    "8.6": TrtTarget("8.6", _parse(_TRT86), 7, 17, True),
    "10": TrtTarget("10", _parse(_TRT10), 9, 20, False),
    "11": TrtTarget("11", {**_parse(_TRT10), "Swish": frozenset({"FP32", "FP16", "BF16"})}, 9, 25, False),
}
DEFAULT_TARGET = "10"

_ONNX_TYPES = {
    TensorProto.FLOAT: "FP32",
    TensorProto.FLOAT16: "FP16",
    TensorProto.BFLOAT16: "BF16",
    TensorProto.DOUBLE: "FP32",
    TensorProto.INT32: "INT32",
    TensorProto.INT64: "INT64",
    TensorProto.INT8: "INT8",
    TensorProto.UINT8: "UINT8",
    TensorProto.BOOL: "BOOL",
}
#: Operators whose documented types describe the produced tensor rather than the first input.
_OUTPUT_TYPED = {
    "Constant",
    "ConstantOfShape",
    "EyeLike",
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
    "Shape",
    "Size",
}
_RESIZE_COORDS = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
_REDUCE_OPS = {
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSum",
    "ReduceSumSquare",
}
TOPK_MAX = 3840


def resolve_target(version: Optional[str]) -> TrtTarget:
    """``"11"``, ``"11.4.0"``, ``"10"``, ``"10.3.0"``, ``"8.6"``, ``"8.6.2"`` ... -> the matching table
    (None: the default)."""
    if version is None:
        return TARGETS[DEFAULT_TARGET]
    major_minor = version.split(".")
    key = major_minor[0] if major_minor[0] != "8" else ".".join(major_minor[:2])
    if key not in TARGETS:
        raise IFSegError(f"no operator table for TensorRT {version}; supported targets: {', '.join(TARGETS)}")
    return TARGETS[key]


@dataclass
class OpCheckReport:
    """Findings of :func:`check_graph`. ``errors`` stop an engine build; ``warnings`` are informational."""

    target: str
    opset: int
    op_counts: Dict[str, int] = field(default_factory=dict)
    errors: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        state = (
            "all operators supported" if self.ok else f"{len(self.errors)} problem(s): " + "; ".join(self.errors[:5])
        )
        extra = f" ({len(self.warnings)} type note(s))" if self.warnings else ""
        return (
            f"TensorRT {self.target} static check, opset {self.opset}, {sum(self.op_counts.values())} nodes / "
            f"{len(self.op_counts)} op types: {state}{extra}"
        )

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "opset": self.opset,
            "ok": self.ok,
            "errors": self.errors,
            "warnings": self.warnings,
        }


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _onnx_opset(model: onnx.ModelProto) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def check_graph(model: onnx.ModelProto, target: Optional[str] = None) -> OpCheckReport:
    """Check every node's operator, input type and documented restrictions for ``target``."""
    trt = resolve_target(target)
    opset = _onnx_opset(model)
    report = OpCheckReport(trt.version, opset)
    if not trt.min_opset <= opset <= trt.max_opset:
        report.errors.append(f"opset {opset} outside TensorRT {trt.version}'s range {trt.min_opset}-{trt.max_opset}")
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape inference is best effort: types then stay unknown
        inferred = model
    graph = inferred.graph
    types = {
        v.name: v.type.tensor_type.elem_type for v in list(graph.value_info) + list(graph.input) + list(graph.output)
    }
    types.update({i.name: i.data_type for i in graph.initializer})
    constants: Set[str] = {i.name for i in graph.initializer}
    small = {i.name: numpy_helper.to_array(i) for i in graph.initializer if _numel(i.dims) <= 16}
    consumed = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
    for node in graph.node:
        op = node.op_type
        report.op_counts[op] = report.op_counts.get(op, 0) + 1
        where = f"{op} '{node.name or node.output[0]}'"
        if node.domain not in ("", "ai.onnx"):
            report.errors.append(f"{where}: custom domain '{node.domain}' needs a TensorRT plugin")
            continue
        if op == "Constant":
            constants.update(node.output)
            value = _attr(node, "value")
            if value is not None and _numel(value.dims) <= 16:
                small[node.output[0]] = numpy_helper.to_array(value)
            if (
                _attr(node, "sparse_value") is not None
                or _attr(node, "value_string") is not None
                or _attr(node, "value_strings") is not None
            ):
                report.errors.append(f"{where}: sparse/string constants are unsupported")
        if op not in trt.ops:
            report.errors.append(f"{where}: operator not supported by TensorRT {trt.version}")
            continue
        tensor = node.output[0] if op in _OUTPUT_TYPED or not node.input else node.input[0]
        onnx_type = types.get(tensor, TensorProto.UNDEFINED)
        name = _ONNX_TYPES.get(onnx_type)
        if name == "INT64" and trt.int64_as_int32:
            name = "INT32"
        if onnx_type != TensorProto.UNDEFINED and name not in trt.ops[op]:
            report.warnings.append(
                f"{where}: type {TensorProto.DataType.Name(onnx_type)} not listed ({'/'.join(sorted(trt.ops[op]))})"
            )
        report.errors += [f"{where}: {msg}" for msg in _restrictions(node, opset, constants, small, consumed)]
    return report


def _numel(dims) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


def _restrictions(
    node: onnx.NodeProto, opset: int, constants: Set[str], small: Dict[str, np.ndarray], consumed: Set[str]
) -> List[str]:
    """Violations of the documented per-operator restrictions."""
    op, out = node.op_type, []

    def constant_input(index: int) -> bool:
        return len(node.input) <= index or not node.input[index] or node.input[index] in constants

    if op == "Resize":
        if _attr(node, "coordinate_transformation_mode", "half_pixel") not in _RESIZE_COORDS:
            out.append(f"coordinate_transformation_mode {_attr(node, 'coordinate_transformation_mode')} unsupported")
        if _attr(node, "mode", "nearest") not in ("nearest", "linear"):
            out.append(f"mode {_attr(node, 'mode')} unsupported (nearest or linear only)")
        if _attr(node, "antialias", 0):
            out.append("antialiasing unsupported")
        if _attr(node, "keep_aspect_ratio_policy", "stretch") != "stretch":
            out.append("only keep_aspect_ratio_policy=stretch is supported")
    elif op == "Slice" and not constant_input(3):
        out.append("`axes` must be an initializer")
    elif op in ("Squeeze", "Unsqueeze") and opset >= 13 and not constant_input(1):
        out.append("`axes` must be a constant tensor")
    elif op in _REDUCE_OPS and opset >= 18 and not constant_input(1):
        out.append("`axes` must be an initializer")
    elif op == "TopK":
        if not constant_input(1):
            out.append("`K` must be an initializer")
        elif node.input[1] in small and int(small[node.input[1]].reshape(-1)[0]) >= TOPK_MAX:
            out.append(f"`K` must be less than {TOPK_MAX}")
        if _attr(node, "sorted", 1) != 1:
            out.append("`sorted` must be 1")
    elif op == "MaxPool":
        if len(node.output) > 1 and node.output[1] in consumed:
            out.append("the `Indices` output is unsupported")
        if any(d != 1 for d in _attr(node, "dilations", [])):
            out.append("`dilations` must be all ones")
    elif op == "LayerNormalization" and any(o in consumed for o in node.output[1:]):
        out.append("only the first output `Y` is supported")
    elif op == "ScatterND" and _attr(node, "reduction", "none") != "none":
        out.append("`reduction` is unsupported")
    return out
