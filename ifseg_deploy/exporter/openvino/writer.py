"""ONNX -> OpenVINO IR (``<stem>_openvino/``: ``<stem>.xml``, ``<stem>.bin``, the vocabulary side
file), verified against PyTorch like the ONNX export.

The IR comes from the verified ONNX graph through ``openvino.convert_model`` and
``openvino.save_model`` (float32 weights, or float16 with ``compress_to_fp16``: OpenVINO's
documented weight compression; the CPU computes in float32 either way unless a precision hint
says otherwise). ``int8`` with ``quantizer="nncf"`` (the default) quantises the fp32 IR with NNCF's
OpenVINO backend (:mod:`..precision.nncf_int8`: every convolution and matrix product); with
``quantizer="onnxruntime"`` it converts the explicitly quantized (Q/DQ) ONNX graph. OpenVINO runs
either with INT8 convolutions and matrix products; it is checked like the Q/DQ graph itself (relative RMS of the
logits against fp32 PyTorch, label agreement) instead of element-wise. The folder is built next
to its destination and renamed into place only when the IR agrees with PyTorch on every
verification case.
"""

from __future__ import annotations

import copy
import os
import shutil
from dataclasses import dataclass
from typing import List, Union

import numpy as np

from ...checkpoint import load_model
from ...errors import IFSegError
from ...fileio import atomic_folder
from ...precision import FP16, FP32, INT8
from ...runtime import openvino_core
from ...runtime.graph_contract import IMAGES, LOGITS
from ...runtime.sidecar import read_vocab, vocab_path, write_vocab
from ...runtime.torch_backend import cpu_has_vnni
from ...runtime.vocabulary import Vocabulary
from ..args import ExportArgs
from ..onnx.graph import ExportGraph
from ..onnx.verify import RTOL, VerifyReport, compare_outputs, run_torch
from ..onnx.writer import OnnxExport, alternate_categories, verification_cases
from ..precision.fp16_graph import PrecisionCase, PrecisionReport, image_labels, rel_rms
from ..precision.graph_precision import check_weight_precision
from ..precision.int8_graph import INT8_MAX_REL_RMS, calibration_feeds, vocabulary_feeds
from ..precision.nncf_int8 import NNCF, holdout_items, openvino_int8, require_labelled

#: Relative tolerance (of the largest |output|) for float16 weights: their rounding (2^-11
#: relative) accumulates over the layers; float32 weights keep the ONNX export's tolerance.
FP16_RTOL = 2e-2


@dataclass
class OpenVinoExport:
    """What :func:`write_openvino` wrote."""

    folder: str
    xml_path: str
    vocab_path: str
    precision: str
    verification: Union[VerifyReport, PrecisionReport]  # PrecisionReport for int8
    quantizer: str = ""  # int8: "nncf" (NNCF's OpenVINO backend) or "onnxruntime" (IR of the Q/DQ graph)

    @property
    def files(self) -> List[str]:
        return [self.xml_path, os.path.splitext(self.xml_path)[0] + ".bin", self.vocab_path]


def write_openvino(source: str, onnx: OnnxExport, vocabulary: Vocabulary, args: ExportArgs) -> OpenVinoExport:
    """Convert the verified ONNX export ``onnx`` of checkpoint ``source`` into the folder ``args.out``
    with ``args.precision`` weights (default fp32).

    Every verification case of the ONNX export (export inputs, another vocabulary, a non-square
    size when dynamic, ``args.verify_image``) runs through the IR on OpenVINO's CPU device in
    float32 and through the PyTorch model; outputs are compared with :func:`compare_outputs`
    (``precision="int8"``: the IR of the Q/DQ graph, compared by logits relative RMS and labels).
    Raises :class:`IFSegError` (nothing written) when openvino is missing or they disagree.
    """
    try:
        import openvino as ov
    except ImportError:
        raise IFSegError("format=openvino needs openvino: pip install 'ifseg-deploy[openvino]'") from None
    folder, precision = args.out, check_weight_precision(args.precision or FP32)
    loaded = load_model(source)
    vocab = vocabulary.prepare(args.categories)
    graph = ExportGraph(loaded.model.float().eval(), args.contract(loaded.arch)).eval()
    cases = verification_cases(graph, vocab, vocabulary.prepare(alternate_categories(vocab.categories)), args)
    stem = os.path.basename(os.path.abspath(folder))
    stem = stem[: -len("_openvino")] if stem.endswith("_openvino") else stem
    with atomic_folder(folder, "out", "openvino") as tmp:
        xml = os.path.join(tmp, stem + ".xml")
        ir, kept, labelled = ov.convert_model(onnx.path), onnx.precision.fp32_nodes if onnx.precision else 0, None
        if precision == INT8 and args.quantizer == NNCF:
            ir, kept, labelled = _nncf_ir(ir, graph, vocab, args)
        ov.save_model(ir, xml, compress_to_fp16=precision == FP16)
        shutil.copyfile(onnx.vocab_path, vocab_path(xml))
        report = _verify_ir(ov, xml, graph, cases, precision, args, kept)
        if labelled is not None:
            report.labelled = labelled
            require_labelled(labelled, args.gate)
        if precision == INT8 and args.quantizer == NNCF:  # the side file came from the fp32 graph
            _mark_int8(xml, report, args.int8_scope)
    xml = os.path.join(folder, stem + ".xml")
    return OpenVinoExport(folder, xml, vocab_path(xml), precision, report, args.quantizer if precision == INT8 else "")


def _mark_int8(xml: str, report: PrecisionReport, scope: str) -> None:
    """Rewrite the IR's side file (copied from the fp32 ONNX export) as an NNCF int8 model's, with its check."""
    side = read_vocab(xml)
    meta = copy.deepcopy(side.meta)
    meta["export"].update(precision=INT8, quantizer=NNCF, int8_scope=scope)
    meta["export"].setdefault("verification", {})["precision"] = report.to_dict()
    write_vocab(vocab_path(xml), side.embed_table, side.class_embeds, meta, side.positions)


def _nncf_ir(ir, graph: ExportGraph, vocab, args: ExportArgs):
    """NNCF's int8 model of the fp32 IR ``ir``, calibrated on ``args.calib_dir`` (and accuracy-controlled
    on ``args.holdout_dir``) at the traced size: ``(model, products left float, labelled check or None)``."""
    h, w = args.traced_size
    fixed = vocabulary_feeds(graph, vocab, h, w)
    holdout = args.holdout_dir and holdout_items(args.holdout_dir, args.batch, h, w, fixed, len(vocab.categories))
    calibration = calibration_feeds(args.calib_dir, args.batch, h, w, fixed)
    return openvino_int8(ir, calibration, holdout or None, args.max_drop, args.int8_scope)


def _verify_ir(ov, xml: str, graph: ExportGraph, cases, precision: str, args, fp32_nodes: int):
    """Every verification case through the IR (OpenVINO's CPU device, float32) and through PyTorch;
    the compiled model is released on return, before the folder is renamed into place."""
    compiled = openvino_core.core().compile_model(xml, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    names = [o.get_any_name() for o in compiled.outputs]

    def run(feeds):
        return {p.get_any_name(): np.asarray(v) for p, v in compiled({k: v.numpy() for k, v in feeds.items()}).items()}

    if precision == INT8:
        return _check_int8(run, graph, cases, names, args.gate, fp32_nodes)
    rtol = FP16_RTOL if precision == FP16 else RTOL
    report = VerifyReport(
        [
            compare_outputs(name, feeds, run_torch(graph, feeds, names), run(feeds), atol=args.atol, rtol=rtol)
            for name, feeds in cases
        ]
    )
    if not report.ok:
        worst = next(c for c in report.cases if not c.ok)
        raise IFSegError(
            f"OpenVINO disagrees with PyTorch on '{worst.name}' ({'; '.join(worst.problems)}); nothing was written"
        )
    return report


def _check_int8(run, graph: ExportGraph, cases, names: List[str], gated: bool, fp32_nodes: int) -> PrecisionReport:
    """The int8 IR against the fp32 PyTorch graph: logits relative RMS (gate :data:`INT8_MAX_REL_RMS`)
    and label agreement at each case's image size; raises :class:`IFSegError` below the gate unless
    ``gated`` is off (``gate=False``)."""
    report = PrecisionReport("int8", INT8_MAX_REL_RMS, fp32_nodes, gated=gated)
    for name, feeds in cases:
        ref, out = run_torch(graph, feeds, names)[LOGITS], run(feeds)[LOGITS]
        h, w = feeds[IMAGES].shape[2:]
        agree = float((image_labels(out, h, w) == image_labels(ref, h, w)).mean())
        report.cases.append(PrecisionCase(name, rel_rms(ref, out) if np.isfinite(out).all() else float("inf"), agree))
    if not report.ok and gated:
        worst = max(report.cases, key=lambda c: c.rel_rms)
        hint = (
            "; this CPU has no VNNI, where int8 products saturate: check on a VNNI CPU, or export fp16 / run bf16"
            if cpu_has_vnni() is False
            else ""
        )
        raise IFSegError(
            f"the int8 OpenVINO model's logits differ from fp32 PyTorch by rel-RMS {worst.rel_rms:.2e} on "
            f"'{worst.name}' "
            f"(gate {INT8_MAX_REL_RMS:.0e}); nothing was written (gate=False writes it anyway){hint}"
        )
    return report
