"""ONNX Runtime execution of an exported graph (CPU, CUDA or TensorRT execution providers)."""

from __future__ import annotations

import os
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ..errors import IFSegError
from .engines import GraphIO, feeds_for, fit_batch

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
_NP_TYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(float16)": np.float16}
_TORCH_OF_NP = {np.float32: torch.float32, np.int64: torch.int64, np.float16: torch.float16}
_NP_OF_TORCH = {v: k for k, v in _TORCH_OF_NP.items()}


def parse_providers(text: str) -> List[str]:
    """``"tensorrt, cuda"`` -> ``["tensorrt", "cuda"]`` (validated)."""
    names = [p.strip().lower() for p in text.split(",") if p.strip()]
    unknown = [p for p in names if p not in PROVIDERS]
    if not names or unknown:
        raise IFSegError(f"unknown ONNX Runtime provider(s) {unknown or text!r}; use a comma-separated subset of {', '.join(PROVIDERS)}")
    return names


def _import_ort():
    try:
        import onnxruntime as ort
    except ImportError:
        raise IFSegError("running .onnx files needs onnxruntime: pip install 'ifseg-deploy[cpu]' (or [gpu] for onnxruntime-gpu)") from None
    return ort


class OnnxBackend:
    """Runs an exported ``.onnx`` file; returns logits ``(B, hw, N)`` and features ``(B, hw, 1024)`` as float32.

    The requested providers are checked twice: against the providers this onnxruntime build has,
    and against ``session.get_providers()`` after the session exists, so a silent fall-back to the
    CPU (missing CUDA / cuDNN / TensorRT libraries) is an error, not a slow surprise.
    """

    name = "onnxruntime"

    def __init__(
        self,
        path: str,
        io: GraphIO,
        providers: Sequence[str] = ("cpu",),
        device_id: int = 0,
        half: bool = False,
        io_binding: Optional[bool] = None,
        threads: int = 0,
    ):
        ort = _import_ort()
        providers = list(providers)
        if half and "tensorrt" not in providers:
            raise IFSegError("--half with an .onnx file needs --providers tensorrt (TensorRT fp16); the CPU and CUDA providers run the fp32 graph")
        available = ort.get_available_providers()
        missing = [p for p in providers if PROVIDERS[p] not in available]
        if missing:
            raise IFSegError(f"this onnxruntime build lacks {', '.join(PROVIDERS[p] for p in missing)} (it has {', '.join(available)}); "
                             "pip install onnxruntime-gpu for cuda/tensorrt, or pass --providers cpu")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        cache = os.path.join(os.path.dirname(os.path.abspath(path)), ".ort_trt_cache")
        provider_args = {
            "cpu": {},
            "cuda": {"device_id": device_id},
            "tensorrt": {"device_id": device_id, "trt_fp16_enable": half, "trt_engine_cache_enable": True,
                         "trt_engine_cache_path": cache, "trt_timing_cache_enable": True, "trt_timing_cache_path": cache},
        }
        try:
            self.session = ort.InferenceSession(path, options, providers=[(PROVIDERS[p], provider_args[p]) for p in providers])
        except Exception as e:  # onnxruntime raises its own exception types for bad files
            raise IFSegError(f"ONNX Runtime cannot load {path} ({str(e).strip().splitlines()[0][:160]})") from None
        active = self.session.get_providers()
        dropped = [PROVIDERS[p] for p in providers if PROVIDERS[p] not in active]
        if dropped:
            raise IFSegError(f"ONNX Runtime fell back from {', '.join(dropped)} (active: {', '.join(active)}): its CUDA/cuDNN/TensorRT "
                             "libraries did not load; fix the GPU install or pass --providers cpu")
        self.providers = active
        on_gpu = any(p in ("cuda", "tensorrt") for p in providers)
        self.device = torch.device("cuda", device_id) if on_gpu and torch.cuda.is_available() else torch.device("cpu")
        self.io = io
        self.io_binding = on_gpu if io_binding is None else io_binding
        self._out_types = {o.name: _NP_TYPES.get(o.type, np.float32) for o in self.session.get_outputs()}

    def run(
        self, images: Tensor, prompt_embeds: Tensor, class_embeds: Tensor, timings: Optional[Dict[str, float]] = None
    ) -> Tuple[Tensor, Tensor]:
        """Forward pass (batches adapted to a static graph); the wall time goes to ``timings['network']``."""
        outputs = self.run_all(images, prompt_embeds, class_embeds, timings)
        return outputs["logits"], outputs["features"]

    def run_all(self, images: Tensor, prompt_embeds: Tensor, class_embeds: Tensor, timings: Optional[Dict[str, float]] = None,
                output_size: Optional[Tuple[int, int]] = None) -> Dict[str, Tensor]:
        """Every graph output as a tensor (on the CUDA device with IO binding on a GPU provider)."""
        t0 = time.perf_counter()
        out = fit_batch(self.io, images, lambda x: self._execute(feeds_for(self.io, x, prompt_embeds, class_embeds, output_size)))
        if timings is not None:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            timings["network"] = timings.get("network", 0.0) + (time.perf_counter() - t0) * 1e3
        return out

    def _execute(self, feeds: Dict[str, Tensor]) -> Dict[str, Tensor]:
        if not self.io_binding:
            names = list(self._out_types)
            values = self.session.run(names, {k: v.detach().cpu().numpy() for k, v in feeds.items()})
            return {n: torch.from_numpy(v) for n, v in zip(names, values)}
        binding = self.session.io_binding()
        for name, t in feeds.items():
            t = t.detach().to(self.device).contiguous()
            feeds[name] = t  # keeps device copies alive until the run ends
            if t.is_cuda:
                binding.bind_input(name, "cuda", self.device.index or 0, _NP_OF_TORCH[t.dtype], tuple(t.shape), t.data_ptr())
            else:
                binding.bind_cpu_input(name, t.numpy())
        shapes = self.io.output_shapes(feeds)
        outputs = {}
        for name, np_type in self._out_types.items():
            t = torch.empty(shapes[name], dtype=_TORCH_OF_NP[np_type], device=self.device)
            binding.bind_output(name, self.device.type, self.device.index or 0, np_type, tuple(t.shape), t.data_ptr())
            outputs[name] = t
        self.session.run_with_iobinding(binding)
        return outputs

