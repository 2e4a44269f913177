"""Native TensorRT execution of a serialized engine (``tensorrt`` Python API, 10.x / 11.x).

Buffers are PyTorch CUDA tensors; tensors are bound by name (``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``). An engine only runs on the TensorRT version and
GPU architecture it was built for: both are recorded in ``<engine>.json`` at build time and
checked on load, with the command that rebuilds it.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from ..config import ArchConfig
from ..errors import IFSegError
from .backend import Backend, Capabilities, ModelInfo
from .device import cuda_device
from .graph_contract import GraphContract
from .sidecar import read_engine_info, read_vocab
from .tensorrt_common import check_engine_compat, environment, require_tensorrt


class TensorRTBackend(Backend):
    """Runs a ``.engine`` on its CUDA device; reports one ``network`` stage."""

    name = "tensorrt"

    def __init__(
        self,
        path: str,
        contract: GraphContract,
        arch: ArchConfig,
        device: str = "cuda",
        precision: Optional[str] = None,
    ):
        info = read_engine_info(path)
        if precision is not None:  # the strongly typed engine runs its graph's types, nothing else
            raise IFSegError(
                f"precision={precision} does not apply to a TensorRT engine: its precision "
                f"({info.get('precision', '?')}) is fixed "
                "when it is built; rebuild with ifseg-deploy export --format engine --precision fp16"
            )
        trt = require_tensorrt()
        dev = cuda_device(device)
        check_engine_compat(info, environment(dev, trt.__version__), path)
        self._trt = trt
        self.arch = arch
        self.contract = contract
        self.capabilities = Capabilities(
            device=dev,
            precision=info.get("precision", "fp32"),
            knn=contract.in_graph_knn,
            upsample=contract.upsample,
            batch=contract.fixed_batch,
            image_size=contract.fixed_size,
        )
        self.info = info
        self._logger = trt.Logger(trt.Logger.WARNING)
        with torch.cuda.device(self.device), open(path, "rb") as fh:
            self.engine = trt.Runtime(self._logger).deserialize_cuda_engine(fh.read())
            if self.engine is None:
                raise IFSegError(
                    f"TensorRT could not deserialize {path} (corrupt file or another TensorRT build); rebuild the "
                    f"engine"
                )
            self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        missing = [n for n in contract.input_names + contract.output_names if n not in names]
        if missing:
            raise IFSegError(
                f"{path} lacks the tensors {missing}; the engine does not match its side files: rebuild it"
            )
        self._dtypes = {n: self._torch_dtype(self.engine.get_tensor_dtype(n)) for n in names}

    def _torch_dtype(self, dtype) -> torch.dtype:
        trt = self._trt
        table = {
            trt.float32: torch.float32,
            trt.float16: torch.float16,
            trt.int32: torch.int32,
            trt.int8: torch.int8,
            trt.bool: torch.bool,
        }
        if hasattr(trt, "int64"):
            table[trt.int64] = torch.int64
        return table[dtype]

    @classmethod
    def open(
        cls, path: str, device: str = "auto", precision: Optional[str] = None
    ) -> Tuple["TensorRTBackend", ModelInfo]:
        """A serialized engine with its side files (``.vocab.safetensors``, ``.engine.json``); GPU only.
        ``precision`` must stay None: the engine's precision is fixed when it is built."""
        side = read_vocab(path)
        backend = cls(path, side.contract, side.arch, device, precision)
        backend.positions = side.position_feeds(backend.device)
        return backend, side.model_info(path, "engine")

    def _forward(
        self,
        images: Tensor,
        prompt_embeds: Tensor,
        class_embeds: Tensor,
        output_size: Optional[Tuple[int, int]],
        timings: Dict[str, float],
    ) -> Dict[str, Tensor]:
        feeds = self.graph_feeds(images, prompt_embeds, class_embeds, output_size)
        ctx = self.context
        keep = []
        for name, t in feeds.items():
            t = t.to(self.device, self._dtypes[name]).contiguous()
            keep.append(t)
            if not ctx.set_input_shape(name, tuple(t.shape)):
                ranges = self.info.get("shapes", {}).get(name, "?")
                raise IFSegError(
                    f"input {name} of shape {tuple(t.shape)} is outside the engine's optimisation profile {ranges}; "
                    "rebuild the engine with a `profile` that covers it"
                )
            ctx.set_tensor_address(name, t.data_ptr())
        outputs = {}
        for name in self.contract.output_names:
            t = torch.empty(tuple(ctx.get_tensor_shape(name)), dtype=self._dtypes[name], device=self.device)
            ctx.set_tensor_address(name, t.data_ptr())
            outputs[name] = t
        stream = torch.cuda.current_stream(self.device)
        if not ctx.execute_async_v3(stream.cuda_stream):
            raise IFSegError(
                "TensorRT failed to run the engine (see the TensorRT log above); check the input shapes against the "
                "build profile"
            )
        stream.synchronize()
        return outputs
