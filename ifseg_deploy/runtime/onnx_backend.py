"""ONNX Runtime execution of an exported graph (CPU, CUDA or TensorRT execution providers)."""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ..config import ArchConfig
from ..errors import IFSegError
from ..precision import FP16, FP32, INT8, ONNXRUNTIME, check_precision
from .backend import Backend, Capabilities, ModelInfo
from .device import parse_device
from .graph_contract import GraphContract
from .qdq import unsigned_activations
from .sidecar import read_vocab

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
_NP_TYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(float16)": np.float16}
_TORCH_OF_NP = {np.float32: torch.float32, np.int64: torch.int64, np.float16: torch.float16}
_NP_OF_TORCH = {v: k for k, v in _TORCH_OF_NP.items()}


def parse_providers(text: str) -> List[str]:
    """``"tensorrt, cuda"`` -> ``["tensorrt", "cuda"]`` (validated)."""
    names = [p.strip().lower() for p in text.split(",") if p.strip()]
    unknown = [p for p in names if p not in PROVIDERS]
    if not names or unknown:
        raise IFSegError(
            f"unknown ONNX Runtime provider(s) {unknown or text!r}; use a comma-separated subset of "
            f"{', '.join(PROVIDERS)}"
        )
    return names


def _import_ort():
    try:
        import onnxruntime as ort
    except ImportError:
        raise IFSegError(
            "running .onnx files needs onnxruntime: pip install 'ifseg-deploy[cpu]' (or [gpu] for onnxruntime-gpu)"
        ) from None
    return ort


def _cpu_int8_graph(path: str) -> Optional[bytes]:
    """The int8 graph at ``path`` with the INT8 quantizers of ReLU outputs made UINT8
    (:func:`.qdq.unsigned_activations`: the same values wherever the INT8 ones do not saturate, in ONNX
    Runtime's faster x86 kernels), serialised; None when it has none to change."""
    try:
        import onnx
    except ImportError:  # the graph runs as it is, in the slower kernels
        return None
    model = onnx.load(path)
    return model.SerializeToString() if unsigned_activations(model) else None


class OnnxBackend(Backend):
    """Runs an exported ``.onnx`` file through ONNX Runtime; reports one ``network`` stage.

    The requested providers are checked twice: against the providers this onnxruntime build has,
    and against ``session.get_providers()`` after the session exists, so a silent fall-back to the
    CPU (missing CUDA / cuDNN / TensorRT libraries) is an error, not a slow surprise.
    """

    name = "onnxruntime"

    def __init__(
        self,
        path: str,
        contract: GraphContract,
        arch: ArchConfig,
        providers: Sequence[str] = ("cpu",),
        device_id: int = 0,
        precision: Optional[str] = None,
        io_binding: Optional[bool] = None,
        threads: int = 0,
        graph_precision: str = FP32,
    ):
        ort = _import_ort()
        providers = list(providers)
        half = check_precision(precision, ONNXRUNTIME, "ONNX Runtime; exported graphs carry their precision") == FP16
        if half and "tensorrt" not in providers:
            raise IFSegError(
                "precision=fp16 with an .onnx file needs providers=tensorrt (TensorRT fp16); the CPU and CUDA "
                "providers run the fp32 graph"
            )
        available = ort.get_available_providers()
        missing = [p for p in providers if PROVIDERS[p] not in available]
        if missing:
            raise IFSegError(
                f"this onnxruntime build lacks {', '.join(PROVIDERS[p] for p in missing)} (it has "
                f"{', '.join(available)}); "
                "pip install onnxruntime-gpu for cuda/tensorrt, or pass providers=cpu"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        cache = os.path.join(os.path.dirname(os.path.abspath(path)), ".ort_trt_cache")
        provider_args = {
            "cpu": {},
            "cuda": {"device_id": device_id, "use_tf32": 0},  # fp32 graphs stay fp32, as the PyTorch reference
            "tensorrt": {
                "device_id": device_id,
                "trt_fp16_enable": half,
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": cache,
                "trt_timing_cache_enable": True,
                "trt_timing_cache_path": cache,
            },
        }
        try:
            model = _cpu_int8_graph(path) if graph_precision == INT8 and providers == ["cpu"] else None
            self.session = ort.InferenceSession(
                model if model is not None else path,
                options,
                providers=[(PROVIDERS[p], provider_args[p]) for p in providers],
            )
        except Exception as e:  # onnxruntime raises its own exception types for bad files
            raise IFSegError(f"ONNX Runtime cannot load {path} ({str(e).strip().splitlines()[0][:160]})") from None
        active = self.session.get_providers()
        dropped = [PROVIDERS[p] for p in providers if PROVIDERS[p] not in active]
        if dropped:
            raise IFSegError(
                f"ONNX Runtime fell back from {', '.join(dropped)} (active: {', '.join(active)}): its "
                f"CUDA/cuDNN/TensorRT "
                "libraries did not load; fix the GPU install or pass providers=cpu"
            )
        self.providers = active
        on_gpu = any(p in ("cuda", "tensorrt") for p in providers)
        device = torch.device("cuda", device_id) if on_gpu and torch.cuda.is_available() else torch.device("cpu")
        self.arch = arch
        self.contract = contract
        self.capabilities = Capabilities(
            device=device,
            precision=FP16 if half else graph_precision,
            knn=contract.in_graph_knn,
            upsample=contract.upsample,
            batch=contract.fixed_batch,
            image_size=contract.fixed_size,
        )
        self.io_binding = on_gpu if io_binding is None else io_binding
        self._out_types = {o.name: _NP_TYPES.get(o.type, np.float32) for o in self.session.get_outputs()}

    @classmethod
    def open(
        cls,
        path: str,
        device: str = "auto",
        precision: Optional[str] = None,
        providers: Optional[Sequence[str] | str] = None,
        io_binding: Optional[bool] = None,
    ) -> Tuple["OnnxBackend", ModelInfo]:
        """An exported ``.onnx`` and its side file. ``providers``: names or ``"tensorrt,cuda"``; without
        them CUDA when ``device`` is a CUDA device (``auto``: when this onnxruntime build and the
        machine have one), else the CPU. ``precision="fp16"`` runs the graph in float16 through the
        TensorRT provider (the ``--half`` flag); None runs it in its own precision."""
        if isinstance(providers, str):
            providers = parse_providers(providers)
        side = read_vocab(path)
        if device in ("auto", ""):
            gpu_ok = torch.cuda.is_available() and PROVIDERS["cuda"] in _import_ort().get_available_providers()
            dev = torch.device("cuda" if gpu_ok and providers != ["cpu"] else "cpu")
        else:
            dev = parse_device(device)
        if providers is None:
            providers = ["cuda"] if dev.type == "cuda" else ["cpu"]
        device_id = (dev.index or 0) if dev.type == "cuda" else 0
        backend = cls(
            path,
            side.contract,
            side.arch,
            providers,
            device_id,
            precision,
            io_binding,
            graph_precision=side.export.get("precision", "fp32"),
        )
        backend.positions = side.position_feeds(backend.device)
        return backend, side.model_info(path, "onnx")

    def _forward(
        self,
        images: Tensor,
        prompt_embeds: Tensor,
        class_embeds: Tensor,
        output_size: Optional[Tuple[int, int]],
        timings: Dict[str, float],
    ) -> Dict[str, Tensor]:
        feeds = self.graph_feeds(images, prompt_embeds, class_embeds, output_size)
        if not self.io_binding:
            names = list(self._out_types)
            values = self.session.run(names, {k: v.detach().cpu().numpy() for k, v in feeds.items()})
            return {n: torch.from_numpy(v) for n, v in zip(names, values)}
        binding = self.session.io_binding()
        for name, t in feeds.items():
            t = t.detach().to(self.device).contiguous()
            feeds[name] = t  # keeps device copies alive until the run ends
            if t.is_cuda:
                binding.bind_input(
                    name, "cuda", self.device.index or 0, _NP_OF_TORCH[t.dtype], tuple(t.shape), t.data_ptr()
                )
            else:
                binding.bind_cpu_input(name, t.numpy())
        shapes = self.contract.output_shapes(feeds)
        outputs = {}
        for name, np_type in self._out_types.items():
            t = torch.empty(shapes[name], dtype=_TORCH_OF_NP[np_type], device=self.device)
            binding.bind_output(name, self.device.type, self.device.index or 0, np_type, tuple(t.shape), t.data_ptr())
            outputs[name] = t
        self.session.run_with_iobinding(binding)
        return outputs
