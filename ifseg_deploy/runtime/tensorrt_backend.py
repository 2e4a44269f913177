"""Native TensorRT execution of a serialized engine (``tensorrt`` Python API, 8.6 / 10.x).

Buffers are PyTorch CUDA tensors; tensors are bound by name (``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``). An engine only runs on the TensorRT version and
GPU architecture it was built for: both are recorded in ``<engine>.json`` at build time and
checked on load, with the command that rebuilds it.
"""

from __future__ import annotations

import time
from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor

from ..errors import IFSegError
from .engines import GraphIO, feeds_for, fit_batch


def require_tensorrt():
    """The ``tensorrt`` module, or a one-line error saying how to get it."""
    try:
        import tensorrt as trt
    except ImportError:
        raise IFSegError("TensorRT engines need the tensorrt Python package and a CUDA GPU "
                         "(pip install 'ifseg-deploy[gpu]'; on Jetson it comes with JetPack)") from None
    return trt


def cuda_device(device: str) -> torch.device:
    """The CUDA device to run an engine on (``cuda``, ``cuda:N``, ``N`` or ``auto``)."""
    if not torch.cuda.is_available():
        raise IFSegError("TensorRT engines need a CUDA GPU and a CUDA build of PyTorch; none is available here")
    if device in ("", "auto"):
        device = "cuda"
    if device.isdigit():
        device = f"cuda:{device}"
    if not device.startswith("cuda"):
        raise IFSegError(f"--device {device} cannot run a TensorRT engine; use --device cuda (or cuda:N)")
    return torch.device(device)


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
        problems.append(f"GPU {built.get('gpu', '?')} sm_{str(built.get('compute_capability', '?')).replace('.', '')} "
                        f"(this machine: {current['gpu']} sm_{current['compute_capability'].replace('.', '')})")
    if problems:
        rebuild = built.get("rebuild_command") or "ifseg-deploy export --checkpoint MODEL --format engine"
        raise IFSegError(f"{engine_path} was built for {' and '.join(problems)}; rebuild it on this machine with: {rebuild}")


class TensorRTBackend:
    """Runs a ``.engine``; returns logits ``(B, hw, N)`` and features ``(B, hw, 1024)`` as float32 CUDA tensors."""

    name = "tensorrt"

    def __init__(self, path: str, io: GraphIO, device: str = "cuda", half: bool = False):
        from ..export.sidecar import read_engine_info

        info = read_engine_info(path)
        if half:
            raise IFSegError(f"--half does not apply to a TensorRT engine: its precision ({info.get('precision', '?')}) is fixed "
                             "when it is built; rebuild with ifseg-deploy export --format engine --precision fp16")
        trt = require_tensorrt()
        self.device = cuda_device(device)
        check_engine_compat(info, environment(self.device, trt.__version__), path)
        self._trt = trt
        self.io = io
        self.info = info
        self._logger = trt.Logger(trt.Logger.WARNING)
        with torch.cuda.device(self.device), open(path, "rb") as fh:
            self.engine = trt.Runtime(self._logger).deserialize_cuda_engine(fh.read())
            if self.engine is None:
                raise IFSegError(f"TensorRT could not deserialize {path} (corrupt file or another TensorRT build); rebuild the engine")
            self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        missing = [n for n in io.inputs + io.outputs if n not in names]
        if missing:
            raise IFSegError(f"{path} lacks the tensors {missing}; the engine does not match its side files: rebuild it")
        self._dtypes = {n: self._torch_dtype(self.engine.get_tensor_dtype(n)) for n in names}

    def _torch_dtype(self, dtype) -> torch.dtype:
        trt = self._trt
        table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.int8: torch.int8, trt.bool: torch.bool}
        if hasattr(trt, "int64"):
            table[trt.int64] = torch.int64
        return table[dtype]

    def run(
        self, images: Tensor, prompt_embeds: Tensor, class_embeds: Tensor, timings: Optional[Dict[str, float]] = None
    ) -> Tuple[Tensor, Tensor]:
        outputs = self.run_all(images, prompt_embeds, class_embeds, timings)
        return outputs["logits"].float(), outputs["features"].float()

    def run_all(self, images: Tensor, prompt_embeds: Tensor, class_embeds: Tensor, timings: Optional[Dict[str, float]] = None,
                output_size: Optional[Tuple[int, int]] = None) -> Dict[str, Tensor]:
        """Every engine output as a CUDA tensor."""
        t0 = time.perf_counter()
        out = fit_batch(self.io, images, lambda x: self._execute(feeds_for(self.io, x, prompt_embeds, class_embeds, output_size)))
        if timings is not None:
            torch.cuda.synchronize(self.device)
            timings["network"] = timings.get("network", 0.0) + (time.perf_counter() - t0) * 1e3
        return out

    def _execute(self, feeds: Dict[str, Tensor]) -> Dict[str, Tensor]:
        ctx = self.context
        keep = []
        for name, t in feeds.items():
            t = t.to(self.device, self._dtypes[name]).contiguous()
            keep.append(t)
            if not ctx.set_input_shape(name, tuple(t.shape)):
                ranges = self.info.get("shapes", {}).get(name, "?")
                raise IFSegError(f"input {name} of shape {tuple(t.shape)} is outside the engine's optimisation profile {ranges}; "
                                 "rebuild the engine with a --profile that covers it")
            ctx.set_tensor_address(name, t.data_ptr())
        outputs = {}
        for name in self.io.outputs:
            t = torch.empty(tuple(ctx.get_tensor_shape(name)), dtype=self._dtypes[name], device=self.device)
            ctx.set_tensor_address(name, t.data_ptr())
            outputs[name] = t
        stream = torch.cuda.current_stream(self.device)
        if not ctx.execute_async_v3(stream.cuda_stream):
            raise IFSegError("TensorRT failed to run the engine (see the TensorRT log above); check the input shapes against the build profile")
        stream.synchronize()
        return outputs
