"""The one interface every execution backend implements (PyTorch, ONNX Runtime, TensorRT, ...).

A backend runs the network (backbone -> encoder -> parallel decoder) and, when its graph holds
them, the in-graph post-processing. It declares what it computes in :class:`Capabilities`
instead of being probed. The base class does what every backend needs the same way: shape
checks, fitting batches to a fixed graph batch, wall-clock timing with device sync.

Adding a backend: one file with a :class:`Backend` subclass, and one line in
:data:`ifseg_deploy.runtime.loader.BACKENDS`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..config import ArchConfig
from ..preprocess import Preprocessing
from .graph_contract import FEATURES, KNN_PROBS, LABELS, LOGITS, GraphContract
from .position_feeds import PositionFeeds


@dataclass
class NetworkOutputs:
    """What one backend run returns (float32 unless noted; on the backend's device)."""

    logits: Tensor  # (B, h*w, N) decoder logits of the grid cells, raster order
    features: Tensor  # (B, h*w, 1024) ResNet features of the cells (kNN space)
    knn_probs: Optional[Tensor] = None  # (B, h*w, N) kNN-smoothed probabilities, when the graph computes them
    labels: Optional[Tensor] = None  # (B, H0, W0) int64 label map, when the graph up-samples
    timings: Dict[str, float] = field(default_factory=dict)  # milliseconds per stage, whole batch

    @classmethod
    def from_named(cls, tensors: Dict[str, Tensor], timings: Dict[str, float]) -> "NetworkOutputs":
        """From graph outputs by their contract names."""
        opt = {KNN_PROBS: None, LABELS: None}
        opt.update({k: tensors[k] for k in opt if k in tensors})
        return cls(
            tensors[LOGITS].float(),
            tensors[FEATURES].float(),
            None if opt[KNN_PROBS] is None else opt[KNN_PROBS].float(),
            opt[LABELS],
            timings,
        )


@dataclass
class ModelInfo:
    """What the host side needs besides the network, as stored with the model."""

    path: str
    kind: str  # "ofa" | "ifseg" | "bundle" (PyTorch) or "onnx" | "engine" (exported)
    arch: ArchConfig
    embed_table: Tensor  # (V, C) token-embedding table
    prompt_prefix: Optional[str] = None
    categories: Optional[Sequence[str]] = None  # stored category list
    class_embeds: Optional[Tensor] = None  # (N, C) stored class embeddings
    preprocessing: Optional[Preprocessing] = None  # None: the reference resize at arch.image_size


@dataclass(frozen=True)
class Capabilities:
    """What a backend computes and where."""

    device: torch.device
    precision: str = "fp32"  # fp32 | fp16 | bf16 | int8 (what the weights and matrix products run in)
    knn: Optional[Tuple[int, int]] = None  # (k, iters) of in-graph kNN smoothing
    upsample: bool = False  # the graph up-samples and takes argmax itself
    batch: Optional[int] = None  # fixed batch size
    image_size: Optional[Tuple[int, int]] = None  # fixed (H, W) input
    stages: Tuple[str, ...] = ("network",)  # the timing stages it reports
    # takes the decoded images (uint8, original size) and the category list as text, and resizes and
    # embeds them itself (a server); it returns no features, so nothing can be smoothed between its stages
    preprocess: bool = False


class Backend(ABC):
    """Base class of every execution backend.

    Subclasses set ``name``, ``arch``, ``capabilities`` (and ``contract`` for exported graphs)
    and implement :meth:`_forward`.
    """

    name: str = "backend"
    arch: ArchConfig
    capabilities: Capabilities
    contract: Optional[GraphContract] = None
    positions: Optional[PositionFeeds] = None  # for graphs that take their position biases as inputs

    @property
    def device(self) -> torch.device:
        return self.capabilities.device

    def graph_feeds(
        self, images: Tensor, prompt_embeds: Tensor, class_embeds: Tensor, output_size: Optional[Tuple[int, int]]
    ) -> Dict[str, Tensor]:
        """The exported graph's inputs by name (:meth:`GraphContract.feeds`), with the input shape's
        position biases when the graph takes them (computed once per shape, :class:`PositionFeeds`)."""
        biases = self.positions.feeds(images, prompt_embeds) if self.positions is not None else None
        return self.contract.feeds(images, prompt_embeds, class_embeds, output_size, biases)

    @abstractmethod
    def _forward(
        self,
        images: Tensor,
        prompt_embeds: Tensor,
        class_embeds: Tensor,
        output_size: Optional[Tuple[int, int]],
        timings: Dict[str, float],
    ) -> Dict[str, Tensor]:
        """One batch of exactly the backend's batch size; returns outputs by contract name.
        Backends that time finer stages than ``network`` add them to ``timings``."""

    def run(
        self, images: Tensor, prompt_embeds: Tensor, class_embeds: Tensor, output_size: Optional[Tuple[int, int]] = None
    ) -> NetworkOutputs:
        """Run the network on ``images (B, 3, H, W)`` float32 with the vocabulary
        ``prompt_embeds (1, L, C)`` / ``class_embeds (N, C)``.

        ``output_size`` ``(H0, W0)`` is the original image size, used by in-graph up-sampling.
        Batches larger or smaller than a fixed graph batch are split / padded. Raises
        :class:`IFSegError` for shapes the model or graph cannot take.
        """
        if self.contract is not None:
            self.contract.check(self.arch, images, prompt_embeds, class_embeds)
        timings: Dict[str, float] = {}
        self.synchronize()
        t0 = time.perf_counter()
        outputs = self._fit_batch(images, lambda x: self._forward(x, prompt_embeds, class_embeds, output_size, timings))
        self.synchronize()
        if "network" in self.capabilities.stages:
            timings["network"] = (time.perf_counter() - t0) * 1e3
        return NetworkOutputs.from_named(outputs, timings)

    def close(self) -> None:
        """Release what the backend holds beyond memory (a server connection); nothing by default."""

    def synchronize(self) -> None:
        """Wait for queued device work (so wall-clock timings are real)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _fit_batch(self, images: Tensor, execute) -> Dict[str, Tensor]:
        """Run ``execute`` on batches of the fixed graph batch (the last one padded), or all at once."""
        fixed = self.capabilities.batch
        if fixed is None or images.shape[0] == fixed:
            return execute(images)
        parts: List[Dict[str, Tensor]] = []
        for start in range(0, images.shape[0], fixed):
            chunk = images[start : start + fixed]
            n = chunk.shape[0]
            if n < fixed:
                chunk = torch.cat([chunk, chunk[-1:].expand(fixed - n, -1, -1, -1)])
            parts.append({k: v[:n] for k, v in execute(chunk).items()})
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
