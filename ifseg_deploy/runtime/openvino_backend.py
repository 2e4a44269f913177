"""OpenVINO execution of an exported IR (``<stem>_openvino/`` with ``<stem>.xml``, ``.bin`` and the
vocabulary side file), on an Intel CPU, integrated GPU or NPU.

Written by ``ifseg-deploy export --format openvino``. OpenVINO's own hints are exposed: the
performance hint (``latency`` for one stream of frames, ``throughput`` for many parallel
requests) and the inference precision (``fp32``, ``bf16`` on CPUs with AVX512-BF16 / AMX,
``fp16`` on GPUs / NPUs); the precision defaults to fp32 on every device so results do not
depend on the CPU.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from ..config import ArchConfig
from ..errors import IFSegError
from ..precision import FP32, OPENVINO_RUNS, check_precision
from . import openvino_core
from .backend import Backend, Capabilities, ModelInfo
from .graph_contract import GraphContract
from .sidecar import read_vocab

#: ``--device`` -> OpenVINO device name.
DEVICES = {"auto": "AUTO", "cpu": "CPU", "gpu": "GPU", "npu": "NPU"}
#: Precision (one of :data:`ifseg_deploy.precision.OPENVINO_RUNS`) -> OpenVINO inference precision hint.
PRECISION_HINTS = dict(zip(OPENVINO_RUNS, ("f32", "bf16", "f16")))
PERFORMANCE_HINTS = ("latency", "throughput")


def ir_path(path: str) -> str:
    """The ``.xml`` of an IR folder (or ``path`` itself); a one-line error when there is none or several."""
    if not os.path.isdir(path):
        return path
    found = sorted(glob.glob(os.path.join(path, "*.xml")))
    if len(found) != 1:
        raise IFSegError(
            f"{path} holds {len(found)} .xml files; an OpenVINO model folder holds exactly one "
            "(re-export with ifseg-deploy export --format openvino)"
        )
    return found[0]


def openvino_device(device: str) -> str:
    """``--device`` -> OpenVINO device name (``cpu``, ``gpu``, ``gpu.1``, ``npu``, ``auto``)."""
    text = (device or "auto").strip().lower()
    base, _, index = text.partition(".")
    if base not in DEVICES or (index and not index.isdigit()):
        raise IFSegError(f"device={device} is not an OpenVINO device; use cpu, gpu (Intel GPU, gpu.N), npu or auto")
    return DEVICES[base] + (f".{index}" if index else "")


class OpenVinoBackend(Backend):
    """Runs an OpenVINO IR through one infer request; reports one ``network`` stage."""

    name = "openvino"

    def __init__(
        self,
        xml_path: str,
        contract: GraphContract,
        arch: ArchConfig,
        device: str = "CPU",
        precision: str = "fp32",
        performance_hint: str = "latency",
        threads: int = 0,
    ):
        check_precision(precision, OPENVINO_RUNS, "OpenVINO")
        if performance_hint not in PERFORMANCE_HINTS:
            raise IFSegError(f"unknown performance hint {performance_hint}; use {' or '.join(PERFORMANCE_HINTS)}")
        core = openvino_core.core()
        base = device.split(".")[0]
        if base != "AUTO" and base not in {d.split(".")[0] for d in core.available_devices}:
            raise IFSegError(
                f"OpenVINO has no {device} device here (available: {', '.join(core.available_devices)}); use device=cpu"
            )
        config = {"PERFORMANCE_HINT": performance_hint.upper(), "INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision]}
        if threads and base == "CPU":
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            self.compiled = core.compile_model(core.read_model(xml_path), device, config)
        except RuntimeError as e:  # OpenVINO reports bad files and unsupported settings as RuntimeError
            raise IFSegError(
                f"OpenVINO cannot load {xml_path} on {device} ({str(e).strip().splitlines()[0][:160]})"
            ) from None
        self.request = self.compiled.create_infer_request()
        self.ov_device = device
        self.arch = arch
        self.contract = contract
        self.capabilities = Capabilities(
            device=torch.device("cpu"),
            precision=precision,
            knn=contract.in_graph_knn,
            upsample=contract.upsample,
            batch=contract.fixed_batch,
            image_size=contract.fixed_size,
        )

    @classmethod
    def open(
        cls,
        path: str,
        device: str = "cpu",
        precision: Optional[str] = None,
        performance_hint: str = "latency",
        threads: int = 0,
    ) -> Tuple["OpenVinoBackend", ModelInfo]:
        """An IR folder (or its ``.xml``) and its side file; ``precision`` (None: fp32) is the inference hint."""
        xml = ir_path(path)
        side = read_vocab(xml)
        precision = precision or FP32
        backend = cls(xml, side.contract, side.arch, openvino_device(device), precision, performance_hint, threads)
        backend.positions = side.position_feeds()
        if side.export.get("precision") == "int8":  # the IR of a Q/DQ graph: INT8 matrix products whatever the hint
            backend.capabilities = dataclasses.replace(backend.capabilities, precision="int8")
        return backend, side.model_info(path, "openvino")

    def _forward(
        self,
        images: Tensor,
        prompt_embeds: Tensor,
        class_embeds: Tensor,
        output_size: Optional[Tuple[int, int]],
        timings: Dict[str, float],
    ) -> Dict[str, Tensor]:
        feeds = self.graph_feeds(images, prompt_embeds, class_embeds, output_size)
        results = self.request.infer({k: np.ascontiguousarray(v.detach().cpu().numpy()) for k, v in feeds.items()})
        return {port.get_any_name(): torch.from_numpy(np.array(value)) for port, value in results.items()}
