"""ONNX -> TensorRT engine with the ``tensorrt`` Python API (10.x and 11.x), strongly typed.

The network is created ``STRONGLY_TYPED``: every tensor keeps the type the ONNX graph declares,
so the engine's precision is the graph's (an fp16 graph gives an fp16 engine, a Q/DQ graph an
INT8 one; see :mod:`.graph_precision`). No FP16/INT8 builder flags, no calibrator, no per-layer
precision pinning: TensorRT 11 removed them and on 10.x the graph carries the same information.
Besides: OnnxParser, one optimisation profile (min/opt/max from the target profile), workspace
limit, builder optimisation level, timing cache. The engine and ``<engine>.json`` (TensorRT
version, GPU, precision, shapes, the rebuild and ``trtexec`` commands) are written atomically.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from ...errors import IFSegError
from ...fileio import write_bytes
from ...runtime.device import cuda_device
from ...runtime.sidecar import read_vocab, write_engine_info
from ...runtime.tensorrt_common import environment, require_tensorrt
from ...version import __version__
from .profiles import TargetProfile, trtexec_command

#: Oldest TensorRT major version that builds strongly typed networks from ONNX.
MIN_TENSORRT = 10
Shapes = Dict[str, Tuple[Tuple[int, ...], ...]]


def network_flags(trt) -> int:
    """``create_network`` flags: ``STRONGLY_TYPED`` (TensorRT 10.x / 11.x; explicit batch is implied
    there). Older TensorRT (8.x, JetPack 5) is refused with what to install instead."""
    version = str(trt.__version__)
    major = int(version.split(".")[0]) if version.split(".")[0].isdigit() else 0
    if major < MIN_TENSORRT or not hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        raise IFSegError(
            f"TensorRT {version} cannot build strongly typed networks; install TensorRT 10 or 11 "
            "(pip install 'ifseg-deploy[gpu]'; on Jetson: JetPack 6)"
        )
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def define_network(trt, onnx_path: str, profile: TargetProfile, shapes: Shapes, timing_cache: bytes = b""):
    """Parse ``onnx_path`` into a strongly typed network and configure the build.

    ``shapes``: ``{input: (min, opt, max)}``; ``timing_cache``: bytes of an earlier cache (may be
    empty). Returns ``(builder, network, config)``; raises :class:`IFSegError` when the parser
    rejects the graph.
    """
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(onnx_path):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise IFSegError(
            f"TensorRT's ONNX parser rejects {onnx_path}: {errors[0].splitlines()[0] if errors else 'unknown error'}"
        )
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, profile.workspace_mb << 20)
    config.builder_optimization_level = profile.builder_optimization_level
    opt = builder.create_optimization_profile()
    for name, (lo, mid, hi) in shapes.items():
        opt.set_shape(name, lo, mid, hi)
    config.add_optimization_profile(opt)
    config.set_timing_cache(config.create_timing_cache(timing_cache), False)
    return builder, network, config


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_cache(path: Optional[str]) -> bytes:
    if not path:
        return b""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return b""


@dataclass
class EngineBuild:
    path: str
    info: Dict[str, Any]


def build_engine(
    onnx_path: str,
    engine_path: str,
    profile: TargetProfile,
    imgsz: int,
    static: Optional[Tuple[int, int, int]] = None,
    timing_cache: Optional[str] = None,
    device: str = "cuda",
    rebuild_command: str = "",
) -> EngineBuild:
    """Build ``engine_path`` from a verified ONNX export (with its ``.vocab.safetensors`` side file).

    The engine's precision is the graph's (``export.precision`` of the side file, fp32 for
    exports that predate it). ``static``: fixed ``(batch, H, W)``; otherwise the profile's image
    ranges at short side ``imgsz``.
    """
    trt = require_tensorrt()
    dev = cuda_device(device)
    side = read_vocab(onnx_path)
    precision = side.export.get("precision", "fp32")
    embed_dim = side.arch.embed_dim
    shapes = profile.input_shapes(embed_dim, imgsz, static)
    builder, network, config = define_network(trt, onnx_path, profile, shapes, _read_cache(timing_cache))
    import torch

    with torch.cuda.device(dev):
        serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise IFSegError(
            "TensorRT could not build the engine (see its log above); try a larger workspace or smaller profile shapes"
        )
    write_bytes(engine_path, bytes(serialized))
    if timing_cache:
        write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))
    info = dict(environment(dev, trt.__version__))
    info.update(
        {
            "ifseg_deploy": __version__,
            "precision": precision,
            "strongly_typed": True,
            "profile": profile.to_dict(),
            "imgsz": imgsz,
            "shapes": {k: [list(s) for s in v] for k, v in shapes.items()},
            "onnx": onnx_path,
            "onnx_sha256": _sha256(onnx_path),
            "rebuild_command": rebuild_command,
            "trtexec": trtexec_command(profile, onnx_path, engine_path, embed_dim, imgsz, static, timing_cache),
        }
    )
    write_engine_info(engine_path, info)
    return EngineBuild(engine_path, info)
