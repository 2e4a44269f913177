"""Exported models at run time: the backend interface, graph input/output bookkeeping shared by
the ONNX Runtime and TensorRT backends, and the :class:`Segmenter` factory for ``.onnx`` /
``.engine`` files plus their side files."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Protocol, Sequence, Tuple

import torch
from torch import Tensor

from ..config import ArchConfig
from ..errors import IFSegError
from ..model import grid_size
from ..model.encoder import check_input_shape

ONNX_EXTS = (".onnx",)
ENGINE_EXTS = (".engine", ".plan", ".trt")


class Backend(Protocol):
    """What :class:`~ifseg_deploy.runtime.segmenter.Segmenter` needs from an execution backend."""

    name: str

    def run(self, images: Tensor, prompt_embeds: Tensor, class_embeds: Tensor,
            timings: Optional[Dict[str, float]] = None) -> Tuple[Tensor, Tensor]:
        """Logits ``(B, hw, N)`` and backbone features ``(B, hw, 1024)``, float32."""


@dataclass(frozen=True)
class GraphIO:
    """Inputs, outputs and fixed dimensions of an exported graph (from its side-file metadata)."""

    inputs: Tuple[str, ...]
    outputs: Tuple[str, ...]
    arch: ArchConfig
    batch: Optional[int] = None  # fixed batch of a static export
    image_size: Optional[Tuple[int, int]] = None  # fixed (H, W) of a static export
    knn_k: int = 0  # > 0: kNN smoothing runs in the graph with this k ...
    knn_iters: int = 0  # ... and this many iterations

    @classmethod
    def from_meta(cls, meta: dict) -> "GraphIO":
        export = meta.get("export", {})
        if not export.get("inputs") or not export.get("outputs"):
            raise IFSegError("the side file has no export description; re-export with ifseg-deploy export")
        static = not export.get("dynamic", True)
        graph = export.get("graph", {})
        return cls(
            inputs=tuple(export["inputs"]),
            outputs=tuple(export["outputs"]),
            arch=ArchConfig.from_dict(meta["arch"]),
            batch=int(export["batch"]) if static else None,
            image_size=tuple(export["image_size"]) if static else None,
            knn_k=int(graph.get("knn_k", 0)) if graph.get("knn") == "in-graph" else 0,
            knn_iters=int(graph.get("knn_iters", 0)) if graph.get("knn") == "in-graph" else 0,
        )

    def check(self, images: Tensor, prompt_embeds: Tensor, class_embeds: Tensor) -> None:
        """The checks the PyTorch model makes itself, plus the graph's fixed dimensions."""
        h, w = images.shape[2:]
        if self.image_size is not None and (h, w) != tuple(self.image_size):
            raise IFSegError(f"this model was exported for fixed {self.image_size[0]}x{self.image_size[1]} inputs but the image "
                             f"preprocesses to {h}x{w}; re-export with --dynamic")
        c = self.arch.embed_dim
        if prompt_embeds.dim() != 3 or prompt_embeds.shape[0] != 1 or prompt_embeds.shape[2] != c or class_embeds.shape[-1] != c:
            raise IFSegError(f"prompt/class embeddings must be (1, L, {c}) and (N, {c}); the side file belongs to another model")
        grid = grid_size(h, w)
        check_input_shape(self.arch, grid, prompt_embeds.shape[1])
        if self.knn_k and grid[0] * grid[1] < self.knn_k:
            raise IFSegError(f"the {grid[0]}x{grid[1]} grid has fewer cells than the in-graph kNN k={self.knn_k}; use a larger image")

    def output_shapes(self, feeds: Dict[str, Tensor]) -> Dict[str, Tuple[int, ...]]:
        b, _, h, w = feeds["images"].shape
        gh, gw = grid_size(h, w)
        n = feeds["class_embeds"].shape[0]
        shapes = {"logits": (b, gh * gw, n), "features": (b, gh * gw, 1024), "knn_probs": (b, gh * gw, n)}
        if "output_size" in feeds:
            shapes["labels"] = (b, int(feeds["output_size"][0]), int(feeds["output_size"][1]))
        return {k: shapes[k] for k in self.outputs}


def feeds_for(io: GraphIO, images: Tensor, prompt_embeds: Tensor, class_embeds: Tensor,
              output_size: Optional[Tuple[int, int]] = None) -> Dict[str, Tensor]:
    """Validated graph inputs in the graph's order (float32; ``output_size`` defaults to the image size)."""
    io.check(images, prompt_embeds, class_embeds)
    feeds = {"images": images.float().contiguous(), "prompt_embeds": prompt_embeds.float().contiguous(),
             "class_embeds": class_embeds.float().contiguous()}
    if "output_size" in io.inputs:
        size = output_size if output_size is not None else tuple(images.shape[2:])
        feeds["output_size"] = torch.tensor([int(size[0]), int(size[1])], dtype=torch.int64)
    return {k: feeds[k] for k in io.inputs}


def fit_batch(io: GraphIO, images: Tensor, execute: Callable[[Tensor], Dict[str, Tensor]]) -> Dict[str, Tensor]:
    """Run ``execute`` on batches of the graph's fixed size (last one padded), or on all images at once."""
    if io.batch is None or images.shape[0] == io.batch:
        return execute(images)
    parts: List[Dict[str, Tensor]] = []
    for start in range(0, images.shape[0], io.batch):
        chunk = images[start:start + io.batch]
        n = chunk.shape[0]
        if n < io.batch:
            chunk = torch.cat([chunk, chunk[-1:].expand(io.batch - n, -1, -1, -1)])
        parts.append({k: v[:n] for k, v in execute(chunk).items()})
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def engine_kind(path: str) -> str:
    """``"onnx"`` or ``"tensorrt"`` from the file extension of an existing file."""
    if not os.path.isfile(path):
        raise IFSegError(f"engine not found: {path}")
    ext = os.path.splitext(path)[1].lower()
    if ext in ONNX_EXTS:
        return "onnx"
    if ext in ENGINE_EXTS:
        return "tensorrt"
    raise IFSegError(f"--engine {path}: unknown file type; pass an exported .onnx or a TensorRT .engine/.plan file")


def cuda_index(device: str) -> int:
    """Device index of ``cuda``, ``cuda:N`` or ``N``."""
    tail = device.split(":", 1)[1] if ":" in device else (device if device.isdigit() else "0")
    if not tail.isdigit():
        raise IFSegError(f"unknown device '{device}'; use cpu, cuda or cuda:N")
    return int(tail)


def load_backend(path: str, io: GraphIO, providers: Optional[Sequence[str]] = None, device: str = "cpu",
                 half: bool = False, io_binding: Optional[bool] = None):
    """The backend for an exported file: ONNX Runtime for ``.onnx``, native TensorRT for engines."""
    if engine_kind(path) == "onnx":
        from .onnx_backend import OnnxBackend

        if providers is None:
            providers = ["cpu"] if device in ("cpu", "") else ["cuda"]
        return OnnxBackend(path, io, providers, 0 if device == "cpu" else cuda_index(device), half, io_binding)
    if providers is not None:
        raise IFSegError("--providers applies to .onnx files; a TensorRT engine runs on TensorRT itself")
    from .tensorrt_backend import TensorRTBackend

    return TensorRTBackend(path, io, "cuda" if device == "cpu" else device, half)  # engines run on the GPU only


def sidecar_vocabulary(side, path: str, bpe_dir: Optional[str] = None):
    """The :class:`Vocabulary` of an exported model: its side file's table + the BPE files."""
    from ..text.prompt import DEFAULT_PROMPT_PREFIX
    from ..text.tokenizer import OFATokenizer, find_bpe_dir
    from .vocabulary import Vocabulary

    tokenizer = OFATokenizer(find_bpe_dir(bpe_dir, path))
    prefix = side.meta.get("prompt_prefix") or DEFAULT_PROMPT_PREFIX
    return Vocabulary(tokenizer, side.embed_table, prefix, side.categories, side.class_embeds)


def segmenter_from_engine(path: str, categories: Optional[Sequence[str]] = None, bpe_dir: Optional[str] = None,
                          providers: Optional[Sequence[str]] = None, device: str = "cpu", half: bool = False, **kwargs):
    """A :class:`Segmenter` over an exported ``.onnx`` / ``.engine`` and its ``.vocab.safetensors`` side file.

    The side file supplies the token-embedding table, stored categories / class embeddings, the
    prompt prefix and the preprocessing; the BPE files come from ``bpe_dir`` or sit next to ``path``.
    """
    from ..export.sidecar import read_vocab
    from .segmenter import Segmenter

    engine_kind(path)
    side = read_vocab(path)
    io = GraphIO.from_meta(side.meta)
    backend = load_backend(path, io, providers, device, half)
    vocab = sidecar_vocabulary(side, path, bpe_dir)
    pre = side.preprocessing
    kwargs.setdefault("short_side", int(pre["short_side"]))
    kwargs.setdefault("long_side_max", int(pre["long_side_max"]))
    return Segmenter(backend, vocab, categories, **kwargs)
