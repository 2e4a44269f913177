"""ONNX -> TensorRT engine with the ``tensorrt`` Python API (8.6 / 10.x).

OnnxParser, one optimisation profile (min/opt/max from the target profile), workspace limit,
timing cache, FP16 with the numerically sensitive layers pinned to FP32 (LayerNorm, Softmax, the
attention-bias path and the Add that puts the bias on the attention logits, in-graph
post-processing), INT8 through an entropy calibrator. The engine and ``<engine>.json`` (TensorRT
version, GPU, shapes, the rebuild and ``trtexec`` commands) are written atomically.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Set, Tuple

import onnx
from onnx import TensorProto

from .. import __version__
from ..errors import IFSegError
from ..fileio import write_bytes
from ..runtime.device import cuda_device
from ..runtime.graph_contract import VALUE_INPUTS
from ..runtime.sidecar import read_vocab, write_engine_info
from ..runtime.tensorrt_common import environment, require_tensorrt
from ..runtime.vocabulary import PreparedVocabulary
from .calibrator import calibration_batches, calibration_files, make_calibrator, opt_image_shape
from .profiles import TargetProfile, trtexec_command

_PINNED_OPS = {"LayerNormalization", "Softmax"}


def fp32_pinned_nodes(model: onnx.ModelProto) -> List[str]:
    """Names of the float nodes to keep in FP32 when the engine runs in FP16/INT8.

    * LayerNormalization and Softmax;
    * the attention-bias path: float nodes whose values depend on no graph input (only on
      weights and input *shapes*: position tables, their projections and resizes, masks);
    * the Add / Cast nodes between such a bias and a Softmax (bias + q.k^T);
    * the post-processing outside the network (kNN similarity, top-k, propagation).
    """
    graph = onnx.shape_inference.infer_shapes(model).graph
    float_out = {v.name for v in list(graph.value_info) + list(graph.output) if v.type.tensor_type.elem_type == TensorProto.FLOAT}
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

    pinned = []
    for node in graph.node:
        if not node.output or node.output[0] not in float_out:
            continue
        bias_path = not any(o in dependent for o in node.output)
        post = not node.name.startswith("/model/")
        if node.op_type in _PINNED_OPS or bias_path or post or (node.op_type in ("Add", "Cast") and feeds_softmax(node.output[0])):
            pinned.append(node.name)
    return pinned


def _pin_layers(trt, network, names: Set[str]) -> int:
    """Force FP32 compute and outputs on the TensorRT layers built from ``names`` (and every norm/softmax)."""
    count = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        base = re.sub(r"_\d+$", "", layer.name)
        if not (layer.type in (trt.LayerType.NORMALIZATION, trt.LayerType.SOFTMAX) or layer.name in names or base in names):
            continue
        if all(layer.get_output(j).dtype == trt.float32 for j in range(layer.num_outputs)):
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)
            count += 1
    return count


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class EngineBuild:
    path: str
    info: Dict[str, Any]


def check_precision(precision: str, calib_dir: Optional[str]) -> None:
    """Validate the precision flags before anything is exported (INT8 needs calibration images)."""
    if precision not in ("fp32", "fp16", "int8"):
        raise IFSegError(f"unknown precision '{precision}'; use fp32, fp16 or int8")
    if precision == "int8":
        calibration_files(calib_dir)
    elif calib_dir:
        raise IFSegError("--calib-dir is only used with --precision int8")


def build_engine(onnx_path: str, engine_path: str, profile: TargetProfile, precision: str, imgsz: int,
                 static: Optional[Tuple[int, int, int]] = None, calib_dir: Optional[str] = None,
                 timing_cache: Optional[str] = None, device: str = "cuda", rebuild_command: str = "",
                 calib_vocab: Optional[PreparedVocabulary] = None) -> EngineBuild:
    """Build ``engine_path`` from a verified ONNX export (with its ``.vocab.safetensors`` side file).

    ``calib_vocab`` (INT8 only) is the category list the calibration images are run with.
    """
    check_precision(precision, calib_dir)
    trt = require_tensorrt()
    dev = cuda_device(device)
    side = read_vocab(onnx_path)
    embed_dim = side.arch.embed_dim
    shapes = profile.input_shapes(embed_dim, imgsz, static)
    model = onnx.load(onnx_path)
    pinned = fp32_pinned_nodes(model) if precision != "fp32" else []
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0 if int(trt.__version__.split(".")[0]) >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(onnx_path):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise IFSegError(f"TensorRT's ONNX parser rejects {onnx_path}: {errors[0].splitlines()[0] if errors else 'unknown error'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, profile.workspace_mb << 20)
    if hasattr(config, "builder_optimization_level"):
        config.builder_optimization_level = profile.builder_optimization_level
    opt = builder.create_optimization_profile()
    for name, (lo, mid, hi) in shapes.items():
        opt.set_shape(name, lo, mid, hi)
    config.add_optimization_profile(opt)
    pinned_layers = 0
    if precision in ("fp16", "int8"):
        if not builder.platform_has_fast_fp16:
            raise IFSegError(f"this GPU ({environment(dev, trt.__version__)['gpu']}) has no fast FP16; build with --precision fp32")
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        pinned_layers = _pin_layers(trt, network, set(pinned))
    calib_cache = engine_path + ".calib.cache"
    if precision == "int8":
        if not builder.platform_has_fast_int8:
            raise IFSegError("this GPU has no fast INT8; build with --precision fp16")
        b, h, w = opt_image_shape(shapes)
        batches = calibration_batches(calibration_files(calib_dir), b, h, w)
        if calib_vocab is None:
            raise IFSegError("INT8 calibration needs a category list; pass --categories")
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = make_calibrator(trt, batches, calib_vocab.prompt_embeds, calib_vocab.class_embeds, calib_cache, dev)
        config.set_calibration_profile(opt)
    cache_bytes = b""
    if timing_cache:
        try:
            with open(timing_cache, "rb") as fh:
                cache_bytes = fh.read()
        except FileNotFoundError:
            pass
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, False)
    import torch

    with torch.cuda.device(dev):
        serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise IFSegError("TensorRT could not build the engine (see its log above); try a larger workspace or smaller profile shapes")
    write_bytes(engine_path, bytes(serialized))
    if timing_cache:
        write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))
    info = dict(environment(dev, trt.__version__))
    info.update({
        "ifseg_deploy": __version__,
        "precision": precision,
        "profile": profile.to_dict(),
        "imgsz": imgsz,
        "shapes": {k: [list(s) for s in v] for k, v in shapes.items()},
        "onnx": onnx_path,
        "onnx_sha256": _sha256(onnx_path),
        "fp32_pinned_layers": pinned_layers,
        "rebuild_command": rebuild_command,
        "trtexec": trtexec_command(profile, onnx_path, engine_path, embed_dim, imgsz, static, precision,
                                   calib_cache if precision == "int8" else None, timing_cache, pinned),
    })
    write_engine_info(engine_path, info)
    return EngineBuild(engine_path, info)

