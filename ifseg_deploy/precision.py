"""Precision names, and what each backend runs and each writer writes.

A precision is what the weights and matrix products run in: ``fp32``, ``fp16``, ``bf16``, ``int8``
(an explicitly quantized Q/DQ graph) or ``tf32`` (float32 weights; convolutions and matrix products in
TensorFloat-32 on CUDA GPUs from Ampere on). Every backend, exporter, profile and the trainer
declares its choices here, as a subset of :data:`PRECISIONS`, and checks a value with
:func:`check_precision`.
"""

from __future__ import annotations

from typing import Optional, Tuple

from .errors import IFSegError

FP32, FP16, BF16, INT8, TF32 = "fp32", "fp16", "bf16", "int8", "tf32"
#: Every precision name, in the order messages list them.
PRECISIONS: Tuple[str, ...] = (FP32, FP16, BF16, INT8, TF32)

#: PyTorch eager execution (fp16: CUDA; bf16: CPUs with AVX512-BF16 / AMX or GPUs with bfloat16).
#: fp32 is strict float32: TF32 is off for the backend's own work, whatever the process-wide setting.
TORCH: Tuple[str, ...] = (FP32, BF16, FP16)
#: PyTorch on a CUDA device: :data:`TORCH` and tf32 (TF32 convolutions and matrix products allowed).
TORCH_CUDA: Tuple[str, ...] = TORCH + (TF32,)
#: OpenVINO inference precision hints (an int8 IR runs INT8 matrix products whatever the hint).
OPENVINO_RUNS: Tuple[str, ...] = (FP32, BF16, FP16)
#: ONNX Runtime: the graph's own precision, or fp16 through the TensorRT provider.
ONNXRUNTIME: Tuple[str, ...] = (FP32, FP16)
#: Graphs an export writes (ONNX, and the strongly typed TensorRT engines built from them).
GRAPHS: Tuple[str, ...] = (FP32, FP16, INT8)
#: OpenVINO IRs an export writes: fp32 / fp16 weights, or the IR of the int8 Q/DQ graph.
OPENVINO_WRITES: Tuple[str, ...] = (FP32, FP16, INT8)
#: Training (``auto``: bf16 where the device multiplies it natively, else fp32).
TRAIN: Tuple[str, ...] = ("auto", FP32, BF16, FP16)


def check_precision(precision: Optional[str], allowed: Tuple[str, ...], what: str = "") -> Optional[str]:
    """``precision`` itself when it is one of ``allowed`` (or None); otherwise :class:`IFSegError`
    naming the parameter (``precision='x': use one of ...``), with ``what`` (e.g. ``"OpenVINO
    exports"``) saying whose list it is."""
    if precision is not None and precision not in allowed:
        raise IFSegError(f"precision={precision!r}: use one of {', '.join(allowed)}" + (f" ({what})" if what else ""))
    return precision
