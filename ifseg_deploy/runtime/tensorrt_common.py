"""TensorRT facts shared by the engine builder and the TensorRT backend: the module itself, the
version and GPU an engine is tied to, and the compatibility check made on load."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch

from ..errors import IFSegError


def require_tensorrt():
    """The ``tensorrt`` module, or a one-line error saying how to get it."""
    try:
        import tensorrt as trt
    except ImportError:
        raise IFSegError(
            "TensorRT engines need the tensorrt Python package and a CUDA GPU "
            "(pip install 'ifseg-deploy[gpu]'; on Jetson it comes with JetPack)"
        ) from None
    return trt


def version_key(version: str) -> Tuple[int, ...]:
    """``"10.3.0.26"`` -> ``(10, 3, 0)``: the part of a TensorRT version an engine is tied to."""
    parts = []
    for p in str(version).split(".")[:3]:
        parts.append(int(p) if p.isdigit() else -1)
    return tuple(parts)


def environment(device: torch.device, trt_version: Optional[str] = None) -> Dict[str, Any]:
    """TensorRT version and GPU of this machine, in the form ``<engine>.json`` records them."""
    if trt_version is None:
        trt_version = require_tensorrt().__version__
    props = torch.cuda.get_device_properties(device)
    return {"tensorrt": trt_version, "gpu": props.name, "compute_capability": f"{props.major}.{props.minor}"}


def check_engine_compat(built: Dict[str, Any], current: Dict[str, Any], engine_path: str) -> None:
    """Refuse an engine built for another TensorRT version or GPU architecture, saying how to rebuild it."""
    problems = []
    if version_key(built.get("tensorrt", "?")) != version_key(current["tensorrt"]):
        problems.append(f"TensorRT {built.get('tensorrt', '?')} (this machine: {current['tensorrt']})")
    if str(built.get("compute_capability")) != str(current["compute_capability"]):
        problems.append(
            f"GPU {built.get('gpu', '?')} sm_{str(built.get('compute_capability', '?')).replace('.', '')} "
            f"(this machine: {current['gpu']} sm_{current['compute_capability'].replace('.', '')})"
        )
    if problems:
        rebuild = built.get("rebuild_command") or "ifseg-deploy export --checkpoint MODEL --format engine"
        raise IFSegError(
            f"{engine_path} was built for {' and '.join(problems)}; rebuild it on this machine with: {rebuild}"
        )
