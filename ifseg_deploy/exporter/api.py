"""Export as a library call: ``export_model(source, ExportArgs(...)) -> ExportResult``.

A checkpoint / bundle becomes a verified ONNX graph, a strongly typed TensorRT engine in the
graph's precision (``format="engine"``; an already exported ``.onnx`` can be turned into one) or an
OpenVINO IR folder. :func:`validate` checks every argument before anything is loaded or written;
:data:`~.formats.EXPORT_FORMATS` picks the ``export_<format>(source, args)`` that writes it.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from ..errors import IFSegError
from ..fileio import write_bytes
from ..precision import FP32, INT8
from ..runtime.sidecar import read_vocab, vocab_path
from ..runtime.vocabulary import Vocabulary
from .args import ExportArgs, validate
from .formats import export_format
from .onnx.writer import OnnxExport, write_onnx
from .precision.nncf_int8 import ONNXRUNTIME
from .tensorrt.build import EngineBuild, build_engine
from .tensorrt.profiles import load_profile, trtexec_command


@dataclass
class ExportResult:
    """What an export wrote."""

    onnx_path: str  # "" for OpenVINO (its ONNX graph is an intermediate)
    onnx: Optional[OnnxExport] = None  # None when the source already was an ONNX export
    engine: Optional[EngineBuild] = None
    trtexec_hint: Optional[str] = None  # the trtexec line that builds an engine from the ONNX by hand
    files: List[str] = field(default_factory=list)
    openvino: Optional["OpenVinoExport"] = None  # noqa: F821 (export/openvino/writer.py, imported on use)


def export_model(source: str, args: ExportArgs) -> ExportResult:
    """Export ``source`` (checkpoint, bundle, or an exported ``.onnx`` for ``format="engine"``) as
    ``args.format`` says, after :func:`validate`.

    Raises :class:`IFSegError` with a one-line reason; nothing is written unless every check
    (ONNX checker, graph policy, ONNX Runtime vs PyTorch, TensorRT operator table) passes.
    """
    args = validate(args, source)
    return export_format(args.format).exporter()(source, args)


def _onnx_from_checkpoint(source: str, args: ExportArgs, onnx_path: str) -> Tuple[OnnxExport, Vocabulary]:
    from ..checkpoint import load_model

    loaded = load_model(source)
    vocab = Vocabulary.from_bpe(
        args.bpe_dir,
        source,
        loaded.model.embed_tokens.weight,
        prompt_prefix=loaded.prompt_prefix,
        stored_categories=loaded.categories,
        stored_class_embeds=loaded.class_embeds,
    )
    return write_onnx(loaded, onnx_path, vocab, args), vocab


def _with_trt_target(args: ExportArgs) -> ExportArgs:
    """``trt_version`` defaulting to the profile's operator table."""
    return dataclasses.replace(args, trt_version=args.trt_version or load_profile(args.profile).tensorrt)


def export_onnx(source: str, args: ExportArgs) -> ExportResult:
    """``format="onnx"``: the verified graph at ``args.out`` and its side file (``args`` validated),
    with the ``trtexec`` line that builds an engine from it when it computes its own position biases."""
    onnx, _ = _onnx_from_checkpoint(source, _with_trt_target(args), args.out)
    result = ExportResult(args.out, onnx, files=[onnx.path, onnx.vocab_path])
    if not onnx.contract.bias_inputs:  # trtexec builds engines from graphs that compute their biases
        engine = os.path.splitext(args.out)[0] + ".engine"
        result.trtexec_hint = trtexec_command(
            load_profile(args.profile),
            args.out,
            engine,
            onnx.metadata["arch"]["embed_dim"],
            args.short_side,
            _static_shape(args),
        )
    return result


def export_engine(source: str, args: ExportArgs) -> ExportResult:
    """``format="engine"``: a strongly typed TensorRT engine at ``args.out`` (``args`` validated),
    built from the graph exported next to it (``<stem>.onnx``) or from ``source`` when that is an
    exported ``.onnx``, whose side file then gives the shapes, preprocessing and precision."""
    if source.endswith(".onnx"):
        side = read_vocab(source)
        graph_precision = side.export.get("precision", FP32)
        if args.precision not in (None, graph_precision):
            raise IFSegError(
                f"{source} is an {graph_precision} graph and a strongly typed engine runs in its graph's precision; "
                f"re-export from the checkpoint with format=engine precision={args.precision}"
            )
        contract = side.contract
        args = dataclasses.replace(args, imgsz=side.preprocessing.short_side, precision=graph_precision)
        static = None if contract.dynamic else (contract.batch,) + tuple(contract.image_size)
        result = ExportResult(source)
    else:
        onnx_path = os.path.splitext(args.out)[0] + ".onnx"
        onnx, _ = _onnx_from_checkpoint(source, _with_trt_target(args), onnx_path)
        result = ExportResult(onnx_path, onnx, files=[onnx.path, onnx.vocab_path])
        if not onnx.op_check.ok:
            raise IFSegError(
                f"the graph uses operators TensorRT {onnx.op_check.target} does not support "
                f"({'; '.join(onnx.op_check.errors[:3])}); the engine was not built"
            )
        static = _static_shape(args)
    result.engine = build_engine(
        result.onnx_path,
        args.out,
        load_profile(args.profile),
        args.short_side,
        static,
        args.timing_cache or os.path.splitext(args.out)[0] + ".timing.cache",
        args.device,
        args.rebuild_command(source),
    )
    if vocab_path(result.onnx_path) != vocab_path(args.out):  # the engine needs its own copy of the side file
        with open(vocab_path(result.onnx_path), "rb") as fh:
            write_bytes(vocab_path(args.out), fh.read())
    result.files += [args.out, vocab_path(args.out)]
    return result


def export_openvino(source: str, args: ExportArgs) -> ExportResult:
    """``format="openvino"``: the IR folder ``args.out`` (``args`` validated), converted from a
    verified ONNX graph written to a temporary folder."""
    from .openvino.writer import write_openvino

    args = _with_trt_target(args)
    # fp32 / fp16: the IR compresses its own weights from the fp32 graph; int8: NNCF quantises the fp32 IR,
    # or (quantizer=onnxruntime) the IR of the Q/DQ graph
    qdq = args.precision == INT8 and args.quantizer == ONNXRUNTIME
    graph_args = dataclasses.replace(args, precision=INT8 if qdq else FP32, calib_dir=args.calib_dir if qdq else None)
    with tempfile.TemporaryDirectory() as tmp:
        onnx, vocab = _onnx_from_checkpoint(source, graph_args, os.path.join(tmp, "model.onnx"))
        ov = write_openvino(source, onnx, vocab, args)
    return ExportResult("", openvino=ov, files=ov.files)


def _static_shape(args: ExportArgs) -> Optional[Tuple[int, int, int]]:
    """``(batch, H, W)`` of a static export; None for a dynamic one."""
    return None if args.is_dynamic else (args.batch,) + tuple(args.image_size)
