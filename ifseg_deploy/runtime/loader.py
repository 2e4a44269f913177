"""One loader for every model file, in the spirit of Ultralytics' AutoBackend.

``load(path)`` recognises a PyTorch checkpoint or bundle (``.pt``, ``.pt.xz``, ``.safetensors``),
an exported ``.onnx`` graph, a TensorRT ``.engine`` / ``.plan`` or an OpenVINO IR folder
(``<stem>_openvino/``) and returns the execution
backend, the :class:`Vocabulary` (category list -> prompt and class embeddings) and the
preprocessing stored with the model. Backends are registered in :data:`BACKENDS` by module path
and imported only when a file needs them, so optional runtimes cost nothing when unused.
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

from ..errors import IFSegError
from ..hub import resolve_checkpoint
from ..preprocess import Preprocessing
from .backend import Backend, ModelInfo
from .vocabulary import Vocabulary

log = logging.getLogger(__name__)

#: name -> "module:Class" of each backend; the class has ``suffixes`` and ``open(path, **options)``.
BACKENDS: Dict[str, str] = {
    "torch": "ifseg_deploy.runtime.torch_backend:TorchBackend",
    "onnxruntime": "ifseg_deploy.runtime.onnx_backend:OnnxBackend",
    "tensorrt": "ifseg_deploy.runtime.tensorrt_backend:TensorRTBackend",
    "openvino": "ifseg_deploy.runtime.openvino_backend:OpenVinoBackend",
}
#: File endings of the exported formats (checked before anything is imported); other files are checkpoints.
SUFFIXES: Dict[str, Tuple[str, ...]] = {
    "onnxruntime": (".onnx",),
    "tensorrt": (".engine", ".plan", ".trt"),
    "openvino": (".xml", "_openvino"),  # the IR or its folder
}


@dataclass
class LoadedRuntime:
    """What :func:`load` returns."""

    backend: Backend
    vocabulary: Vocabulary
    preprocessing: Preprocessing
    info: ModelInfo


def backend_for(path: str) -> str:
    """The registered backend name for ``path``: by its ending, PyTorch for anything else (checkpoints
    are recognised by content); a folder is an OpenVINO IR (``*_openvino/`` or one holding an ``.xml``).
    A one-line error for a missing file."""
    if os.path.isdir(path):
        if not _holds_ir(path):
            raise IFSegError(
                f"{path} is a folder; pass a model file, or an OpenVINO model folder (<stem>_openvino/ with its .xml)"
            )
        return "openvino"
    if not os.path.isfile(path):
        raise IFSegError(f"model file not found: {path}")
    lower = path.lower()
    return next((name for name, suffixes in SUFFIXES.items() if lower.endswith(suffixes)), "torch")


def _holds_ir(folder: str) -> bool:
    """An OpenVINO model folder: named ``*_openvino`` or holding an ``.xml``."""
    return folder.rstrip("/\\").endswith(SUFFIXES["openvino"][1]) or any(
        f.lower().endswith(".xml") for f in os.listdir(folder)
    )


def backend_class(name: str):
    """The backend class registered as ``name``."""
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def vocabulary_for(
    info: ModelInfo, bpe_dir: Optional[str] = None, class_words: Optional[Dict[str, Sequence[str]]] = None
) -> Vocabulary:
    """The :class:`Vocabulary` of a model: its token table, stored categories / class embeddings
    and prompt prefix, with the BPE files of ``bpe_dir`` (default: next to the model)."""
    stored = info.class_embeds.to(info.embed_table) if info.class_embeds is not None else None
    kwargs = {} if info.prompt_prefix is None else {"prompt_prefix": info.prompt_prefix}
    return Vocabulary.from_bpe(
        bpe_dir,
        info.path,
        info.embed_table,
        stored_categories=info.categories,
        stored_class_embeds=stored,
        class_words=class_words,
        **kwargs,
    )


def load(
    path: str,
    device: str = "auto",
    precision: Optional[str] = None,
    bpe_dir: Optional[str] = None,
    class_words: Optional[Dict[str, Sequence[str]]] = None,
    **backend_options,
) -> LoadedRuntime:
    """Open any model file.

    Args:
        path: checkpoint / bundle / ``.onnx`` / ``.engine`` / OpenVINO folder (an exported model
            needs its ``.vocab.safetensors`` side file next to it), or a model name (``ofa-tiny``, ...:
            :func:`ifseg_deploy.hub.resolve_checkpoint`, downloaded once into the cache).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``; OpenVINO: ``cpu``, ``gpu``, ``npu``.
        precision: what the backend runs in (:mod:`ifseg_deploy.precision`; None: the model's own, fp32 for
            checkpoints): ``fp16`` (CUDA; for ``.onnx`` through the TensorRT provider; the ``--half`` flag),
            ``bf16`` (PyTorch, OpenVINO); a TensorRT engine takes none.
        bpe_dir: folder of ``encoder.json``, ``vocab.bpe``, ``dict.txt`` (default: next to ``path``, else
            fetched into the cache).
        class_words: word lists of hierarchical classes (see :class:`Vocabulary`).
        backend_options: backend-specific settings (``providers=``, ``io_binding=`` for ONNX Runtime;
            ``compile=`` for PyTorch; ``performance_hint=`` for OpenVINO).

    Raises :class:`IFSegError` with a one-line reason for any bad input.
    """
    path = resolve_checkpoint(path)
    name = backend_for(path)
    backend, info = backend_class(name).open(path, device=device, precision=precision, **backend_options)
    if info.kind == "ofa":
        log.warning(
            "%s is a plain OFA checkpoint: its segmentation head is untrained; run `ifseg-deploy train` first", path
        )
    vocab = vocabulary_for(info, bpe_dir, class_words)
    pre = info.preprocessing or Preprocessing.short_side_rule(info.arch.image_size)
    return LoadedRuntime(backend, vocab, pre, info)
