"""The contract of an exported graph: tensor names, dtypes, declared shapes and what the graph
computes besides the network. The exporter, every runtime backend, the TensorRT builder and
calibrator, and the profile / Triton generators all read it from here; the side file stores it
(:meth:`GraphContract.to_meta` / :meth:`GraphContract.from_meta`).

Inputs (float32 unless noted):
  ``images (B, 3, H, W)``        normalised RGB as the reference preprocessing produces it;
  ``prompt_embeds (1, L, C)``    token embeddings of the prompt (host side: tokenizer + table);
  ``class_embeds (N, C)``        class (seg-token) embeddings;
  ``encoder_bias (Le, H, T, T)``, ``decoder_bias (Ld, H, 1+hw, 1+hw)``, ``cross_bias (H, 1+hw, T)``
                                 only in a graph that takes its position biases as inputs
                                 (``T = hw + L``): the shape-only attention biases, computed once per
                                 input shape on the host (:mod:`.position_feeds`), not per frame;
  ``output_size (2,)`` int64     only with in-graph up-sampling: the original ``(H0, W0)``.
Outputs (float32 unless noted):
  ``logits (B, h*w, N)``, ``features (B, h*w, 1024)`` (always, so host kNN stays possible);
  ``knn_probs (B, h*w, N)``      with in-graph kNN smoothing;
  ``labels (B, H0, W0)`` int64   with in-graph up-sampling + argmax.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor

from ..config import ArchConfig
from ..errors import IFSegError
from ..model import grid_size
from ..model.encoder import check_input_shape

IMAGES, PROMPT, CLASSES, OUTPUT_SIZE = "images", "prompt_embeds", "class_embeds", "output_size"
LOGITS, FEATURES, KNN_PROBS, LABELS = "logits", "features", "knn_probs", "labels"
ENC_BIAS, DEC_BIAS, CROSS_BIAS = "encoder_bias", "decoder_bias", "cross_bias"
BIAS_INPUTS = (ENC_BIAS, DEC_BIAS, CROSS_BIAS)
#: Inputs whose values (not only shapes) flow through the network.
VALUE_INPUTS = (IMAGES, PROMPT, CLASSES)
#: Channels of the ResNet features the graph returns for kNN smoothing.
FEATURE_DIM = 1024
#: Symbolic dimension names of a dynamic graph (Triton writes them as -1).
SYMBOLIC = (
    "batch",
    "height",
    "width",
    "cells",
    "prompt_len",
    "classes",
    "out_height",
    "out_width",
    "tokens",
    "targets",
)
DTYPES = {OUTPUT_SIZE: "int64", LABELS: "int64"}  # every other tensor is float32

Dim = Union[int, str]


@dataclass(frozen=True)
class GraphContract:
    """What an exported graph takes and returns.

    ``embed_dim`` may be a placeholder string (``"${EMBED_DIM}"``) for templates. ``batch`` and
    ``image_size`` are the fixed input shape of a static graph, and the traced one of a dynamic graph.
    ``bias_inputs``: ``(encoder layers, decoder layers, heads)`` of a dynamic graph that takes its
    position biases as inputs, or None (the graph computes them; a static graph folds them).
    """

    embed_dim: Union[int, str]
    knn_k: int = 3
    knn_iters: int = 0  # 0: kNN smoothing stays on the host
    upsample: bool = False  # in-graph bilinear up-sampling + argmax to ``output_size``
    dynamic: bool = True
    batch: int = 1
    image_size: Tuple[int, int] = (512, 512)
    bias_inputs: Optional[Tuple[int, int, int]] = None

    @property
    def input_names(self) -> List[str]:
        return (
            [IMAGES, PROMPT, CLASSES]
            + (list(BIAS_INPUTS) if self.bias_inputs else [])
            + ([OUTPUT_SIZE] if self.upsample else [])
        )

    @property
    def output_names(self) -> List[str]:
        return [LOGITS, FEATURES] + ([KNN_PROBS] if self.knn_iters else []) + ([LABELS] if self.upsample else [])

    @property
    def fixed_batch(self) -> Optional[int]:
        return None if self.dynamic else self.batch

    @property
    def fixed_size(self) -> Optional[Tuple[int, int]]:
        return None if self.dynamic else tuple(self.image_size)

    @property
    def in_graph_knn(self) -> Optional[Tuple[int, int]]:
        """``(k, iters)`` of the kNN smoothing the graph computes itself, or None."""
        return (self.knn_k, self.knn_iters) if self.knn_iters else None

    def dims(self) -> Dict[str, List[Dim]]:
        """Declared shape of every input and output (symbolic names where dynamic)."""
        h, w = self.image_size
        gh, gw = grid_size(h, w)
        batch, cells = ("batch", "cells") if self.dynamic else (self.batch, gh * gw)
        c = self.embed_dim
        every: Dict[str, List[Dim]] = {
            IMAGES: ["batch", 3, "height", "width"] if self.dynamic else [self.batch, 3, h, w],
            PROMPT: [1, "prompt_len", c],
            CLASSES: ["classes", c],
            OUTPUT_SIZE: [2],
            LOGITS: [batch, cells, "classes"],
            FEATURES: [batch, cells, FEATURE_DIM],
            KNN_PROBS: [batch, cells, "classes"],
            LABELS: [batch, "out_height", "out_width"],
            **self._bias_dims(),
        }
        return {k: every[k] for k in self.input_names + self.output_names}

    def _bias_dims(self) -> Dict[str, List[Dim]]:
        if not self.bias_inputs:
            return {}
        enc, dec, heads = self.bias_inputs
        return {
            ENC_BIAS: [enc, heads, "tokens", "tokens"],
            DEC_BIAS: [dec, heads, "targets", "targets"],
            CROSS_BIAS: [heads, "targets", "tokens"],
        }

    def dynamic_axes(self) -> Dict[str, Dict[int, str]]:
        """``{tensor: {axis: name}}`` of the symbolic dimensions (``torch.onnx.export``'s argument)."""
        axes = {
            k: {i: d for i, d in enumerate(v) if isinstance(d, str) and d in SYMBOLIC} for k, v in self.dims().items()
        }
        return {k: v for k, v in axes.items() if v}

    def output_shapes(self, feeds: Dict[str, Tensor]) -> Dict[str, Tuple[int, ...]]:
        """Concrete output shapes for concrete inputs."""
        b, _, h, w = feeds[IMAGES].shape
        gh, gw = grid_size(h, w)
        n = feeds[CLASSES].shape[0]
        shapes = {LOGITS: (b, gh * gw, n), FEATURES: (b, gh * gw, FEATURE_DIM), KNN_PROBS: (b, gh * gw, n)}
        if OUTPUT_SIZE in feeds:
            shapes[LABELS] = (b, int(feeds[OUTPUT_SIZE][0]), int(feeds[OUTPUT_SIZE][1]))
        return {k: shapes[k] for k in self.output_names}

    def check(self, arch: ArchConfig, images: Tensor, prompt_embeds: Tensor, class_embeds: Tensor) -> None:
        """The checks the PyTorch model makes itself, plus the graph's fixed dimensions (one-line errors)."""
        h, w = images.shape[2:]
        if self.fixed_size is not None and (h, w) != self.fixed_size:
            fh, fw = self.fixed_size
            # A static export's preprocessing short side is min(fh, fw) unless the long-side cap set its size.
            flag = (
                f"imgsz={h}x{w} (or `imgsz_from` <this image or video>)"
                if min(h, w) == min(fh, fw)
                else "`imgsz_from` <this image or video> (with the model's `imgsz` short side)"
            )
            raise IFSegError(
                f"this model was exported for fixed {fh}x{fw} inputs but this input preprocesses to {h}x{w}; "
                f"re-export a static {h}x{w} graph with {flag}, or a dynamic one with dynamic=True"
            )
        c = self.embed_dim
        if (
            prompt_embeds.dim() != 3
            or prompt_embeds.shape[0] != 1
            or prompt_embeds.shape[2] != c
            or class_embeds.shape[-1] != c
        ):
            raise IFSegError(
                f"prompt/class embeddings must be (1, L, {c}) and (N, {c}); the side file belongs to another model"
            )
        grid = grid_size(h, w)
        check_input_shape(arch, grid, prompt_embeds.shape[1])

    def feeds(
        self,
        images: Tensor,
        prompt_embeds: Tensor,
        class_embeds: Tensor,
        output_size: Optional[Tuple[int, int]] = None,
        biases: Optional[Dict[str, Tensor]] = None,
    ) -> Dict[str, Tensor]:
        """Graph inputs in the graph's order (float32; ``output_size`` defaults to the image size;
        ``biases``: the :data:`BIAS_INPUTS` of this input shape, required by a graph that takes them)."""
        feeds = {
            IMAGES: images.float().contiguous(),
            PROMPT: prompt_embeds.float().contiguous(),
            CLASSES: class_embeds.float().contiguous(),
        }
        if self.bias_inputs:
            if biases is None:
                raise ValueError("this graph takes its position biases as inputs; pass biases=")
            feeds.update((name, biases[name]) for name in BIAS_INPUTS)
        if self.upsample:
            size = output_size if output_size is not None else tuple(images.shape[2:])
            feeds[OUTPUT_SIZE] = torch.tensor([int(size[0]), int(size[1])], dtype=torch.int64)
        return feeds

    def to_meta(self) -> Dict[str, Any]:
        """The ``export`` fields of the side file that describe the graph."""
        return {
            "dynamic": self.dynamic,
            "batch": self.batch,
            "image_size": list(self.image_size),
            "graph": {
                "knn": "in-graph" if self.knn_iters else "host",
                "knn_k": self.knn_k,
                "knn_iters": self.knn_iters,
                "upsample": "in-graph" if self.upsample else "host",
                "position_biases": "inputs" if self.bias_inputs else "in-graph",
                **({"bias_layers_heads": list(self.bias_inputs)} if self.bias_inputs else {}),
            },
            "inputs": self.input_names,
            "outputs": self.output_names,
        }

    @classmethod
    def from_meta(cls, meta: Dict[str, Any]) -> "GraphContract":
        """The contract stored in a side file's metadata; a one-line error when it has none."""
        export = meta.get("export", {})
        if not export.get("inputs") or not export.get("outputs"):
            raise IFSegError("the side file has no export description; re-export with ifseg-deploy export")
        graph = export.get("graph", {})
        knn = graph.get("knn") == "in-graph"
        contract = cls(
            embed_dim=int(ArchConfig.from_dict(meta["arch"]).embed_dim),
            knn_k=int(graph.get("knn_k", 3)),
            knn_iters=int(graph.get("knn_iters", 0)) if knn else 0,
            upsample=graph.get("upsample") == "in-graph",
            dynamic=bool(export.get("dynamic", True)),
            batch=int(export.get("batch", 1)),
            image_size=tuple(int(v) for v in export.get("image_size", (512, 512))),
            bias_inputs=tuple(int(v) for v in graph["bias_layers_heads"])
            if graph.get("position_biases") == "inputs"
            else None,
        )
        if contract.input_names != list(export["inputs"]) or contract.output_names != list(export["outputs"]):
            raise IFSegError(
                "the side file's input/output names do not match its graph settings; re-export with ifseg-deploy export"
            )
        return contract
