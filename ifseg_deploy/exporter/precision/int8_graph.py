"""fp32 ONNX graph -> explicitly quantized INT8 (Q/DQ) graph, calibrated on ``--calib-dir`` images.

ONNX Runtime's ``quantize_static`` in QDQ format: symmetric INT8 activations and per-channel
symmetric INT8 weights (the form TensorRT's explicit quantization reads), min-max calibration,
only MatMul / Gemm with a weight (products of two activations and the ResNet's convolutions stay
float; biases stay float: TensorRT reads no INT32 Q/DQ). The nodes of :func:`.graph_precision.fp32_nodes`
(LayerNorm, Softmax, the attention-bias path, post-processing) are excluded and stay fp32. Graph inputs and outputs
stay float32.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from typing import Dict, Iterator, List, Sequence

import numpy as np
import onnx

from ...errors import IFSegError
from ...runtime.graph_contract import IMAGES
from .calibrator import calibration_batches, calibration_files
from .graph_precision import fp32_nodes

#: Gate of an INT8 graph: relative RMS error of the logits against the fp32 PyTorch model. Static
#: per-channel weights with float attention stay below it; quantising the attention and position-bias
#: paths does not.
INT8_MAX_REL_RMS = 1e-1
#: Quantized operators. Conv is left float: min-max calibration of the ResNet's activations loses
#: several times more accuracy than the matrix products.
QUANTIZED_OPS = ("MatMul", "Gemm")


def vocabulary_feeds(graph, vocab, height: int, width: int) -> Dict[str, np.ndarray]:
    """The graph inputs other than ``images`` (vocabulary, and the position biases of a ``height x width``
    input where the ``graph``, an :class:`~ifseg_deploy.exporter.onnx.graph.ExportGraph`, takes them)
    for the prepared ``vocab``, as float32 numpy arrays."""
    import torch

    feeds = graph.inputs(
        torch.zeros(1, 3, height, width), vocab.prompt_embeds.detach().float(), vocab.class_embeds.detach().float()
    )
    return {k: v.detach().numpy() for k, v in feeds.items() if k != IMAGES}


def calibration_feeds(
    calib_dir: str, batch: int, height: int, width: int, fixed: Dict[str, np.ndarray]
) -> List[Dict[str, np.ndarray]]:
    """Graph inputs for calibration: the images of ``calib_dir`` fitted to ``height x width``
    (:func:`.calibrator.calibration_batches`), with the ``fixed`` vocabulary inputs."""
    return [dict(fixed, **{IMAGES: b}) for b in calibration_batches(calibration_files(calib_dir), batch, height, width)]


class _NoPreprocessHint(logging.Filter):
    """Drops the quantizer's advice to run its model pre-processing (it warns on every call, on the
    root logger; the exported graph is already simplified and shape-inferred)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    root, hint = logging.getLogger(), _NoPreprocessHint()
    root.addFilter(hint)
    try:
        yield
    finally:
        root.removeFilter(hint)


def to_int8(model: onnx.ModelProto, out_path: str, feeds: Sequence[Dict[str, np.ndarray]]) -> int:
    """Quantize ``model`` (a verified fp32 export) into ``out_path``; returns how many nodes stay fp32."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._feeds: Iterator[Dict[str, np.ndarray]] = iter(feeds)

        def get_next(self):
            return next(self._feeds, None)

    weights = {i.name for i in model.graph.initializer}
    # products of two activations (q.k^T, attention x values, features x class embeddings) stay float
    kept = fp32_nodes(model) + [
        n.name for n in model.graph.node if n.op_type in QUANTIZED_OPS and not weights & set(n.input[:2])
    ]
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "fp32.onnx")
        onnx.save(model, src)
        try:
            with _quiet_quantizer():
                quantize_static(
                    src,
                    out_path,
                    Reader(),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    op_types_to_quantize=list(QUANTIZED_OPS),
                    nodes_to_exclude=kept,
                    activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
                )
        except Exception as e:  # the quantizer raises plain exceptions for graphs it cannot handle
            raise IFSegError(
                f"INT8 quantization failed ({str(e).strip().splitlines()[0][:160]}); nothing was written"
            ) from None
    return len(kept)
