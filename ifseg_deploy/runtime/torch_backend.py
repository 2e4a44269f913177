"""PyTorch eager execution of SegOFA (CPU or CUDA; float32, TF32, bfloat16 or float16), optionally compiled."""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
from torch import Tensor

from ..checkpoint import load_model
from ..errors import IFSegError
from ..model import SegOFA, grid_size
from ..model.inference import cast_stages, fold_batchnorm
from ..postprocess.scores import grid_scores
from ..postprocess.upsample import upsample_argmax
from ..precision import BF16, FP16, FP32, TF32, TORCH, TORCH_CUDA, check_precision
from ..preprocess import Preprocessing
from .backend import Backend, Capabilities, ModelInfo
from .cuda_graphs import Body, CudaGraphs
from .device import parse_device
from .graph_contract import FEATURES, KNN_PROBS, LABELS, LOGITS

log = logging.getLogger(__name__)

#: CPU flags (Linux ``/proc/cpuinfo``) of native bfloat16 matrix products.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
VNNI_CPU_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def cpu_flags() -> Optional[List[str]]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (Linux), or None where it is not available."""
    if not os.path.isfile("/proc/cpuinfo"):
        return None
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
        return next((line.split(":", 1)[1].split() for line in fh if line.startswith("flags")), [])


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX). Elsewhere oneDNN
    emulates bf16, slower than float32. Reads ``/proc/cpuinfo`` on Linux; other systems: oneDNN's own check."""
    flags = cpu_flags()
    if flags is not None:
        return any(f in flags for f in BF16_CPU_FLAGS)
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def cpu_has_vnni() -> Optional[bool]:
    """Whether this CPU has an int8 dot-product instruction (AVX512-VNNI, AVX-VNNI or AMX); None where
    unknown. Without one, int8 matrix products (oneDNN, OpenVINO) multiply u8 x s8 pairs into 16-bit
    sums that saturate, so an int8 model loses accuracy it keeps on VNNI CPUs."""
    flags = cpu_flags()
    return None if flags is None else any(f in flags for f in VNNI_CPU_FLAGS)


#: One TF32 switch: ``(read, write, value allowing TF32, value forbidding it)``.
Tf32Switch = Tuple[Callable[[], Any], Callable[[Any], None], Any, Any]


def _set_attr(owner: Any, name: str) -> Callable[[Any], None]:
    return lambda value: setattr(owner, name, value)


def tf32_switches() -> Tuple[Tf32Switch, ...]:
    """The process-wide TF32 switches of float32 cuDNN convolutions and CUDA matrix products.

    PyTorch 2.9 and later: ``torch.backends.cudnn.conv.fp32_precision`` and
    ``torch.backends.cuda.matmul.fp32_precision`` (``"tf32"`` / ``"ieee"``). While they are changed,
    PyTorch refuses to read the legacy ``torch.backends.cudnn.allow_tf32`` (it raises on a mix of
    the APIs); neither the model nor ``torch.compile`` reads it. Earlier releases:
    ``torch.backends.cudnn.allow_tf32`` and ``torch.set_float32_matmul_precision`` (``"high"`` /
    ``"highest"``; kept as a string so a caller's ``"medium"`` comes back). All can be read and set
    on CPU-only builds.
    """
    cudnn = torch.backends.cudnn
    if hasattr(getattr(cudnn, "conv", None), "fp32_precision"):
        return tuple(
            (lambda owner=owner: owner.fp32_precision, _set_attr(owner, "fp32_precision"), "tf32", "ieee")
            for owner in (cudnn.conv, torch.backends.cuda.matmul)
        )
    return (
        (lambda: cudnn.allow_tf32, _set_attr(cudnn, "allow_tf32"), True, False),
        (torch.get_float32_matmul_precision, torch.set_float32_matmul_precision, "high", "highest"),
    )


_TF32_LOCK = threading.Lock()
_tf32_open: List[Tuple[bool, object]] = []  # the open tf32_policy blocks of the process, oldest first
_tf32_saved: List[Any] = []  # the switches' values before the first of them


@contextmanager
def tf32_policy(allow: Optional[bool]) -> Iterator[None]:
    """Within the block, TF32 is allowed (True) or off (False) for float32 convolutions and matrix
    products on CUDA (:func:`tf32_switches`); None changes nothing. The switches are process-wide:
    on exit (exceptions included) the newest block still open elsewhere applies again, or, when none
    is, the values found before the first one. Blocks may nest or overlap on several threads; while
    blocks with different ``allow`` overlap, the newest holds. CPU kernels ignore the switches."""
    if allow is None:
        yield
        return
    switches = tf32_switches()
    block = (allow, object())  # unequal to every other block, so overlapping blocks leave in any order
    with _TF32_LOCK:
        if not _tf32_open:
            _tf32_saved[:] = [read() for read, _, _, _ in switches]
        _tf32_open.append(block)
        for _, write, on, off in switches:
            write(on if allow else off)
    try:
        yield
    finally:
        with _TF32_LOCK:
            _tf32_open.remove(block)
            for (_, write, on, off), value in zip(switches, _tf32_saved):
                write(value if not _tf32_open else on if _tf32_open[-1][0] else off)


def resolve_precision(precision: Optional[str], device: torch.device) -> str:
    """``precision`` (None: fp32; one of :data:`ifseg_deploy.precision.TORCH`, or
    :data:`~ifseg_deploy.precision.TORCH_CUDA` on CUDA) checked against ``device``. Raises
    :class:`IFSegError` naming the parameter when ``device`` cannot run it."""
    if precision == TF32 and device.type != "cuda":
        raise IFSegError("precision=tf32 needs a CUDA device")
    precision = check_precision(precision, TORCH_CUDA if device.type == "cuda" else TORCH, "PyTorch") or FP32
    if precision == FP16 and device.type != "cuda":
        raise IFSegError(
            "precision=fp16 needs a CUDA device; on the CPU use precision=bf16 (CPUs with AVX512-BF16 or AMX)"
        )
    if precision == BF16:
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise IFSegError(
                f"precision=bf16: GPU {torch.cuda.get_device_name(device)} has no bfloat16; use precision=fp16"
            )
        if device.type == "cpu" and not cpu_has_bf16():
            raise IFSegError(
                "precision=bf16 needs a CPU with AVX512-BF16 or AMX (see lscpu flags avx512_bf16 / amx_bf16); "
                "this one would emulate it slower than fp32: use precision=fp32"
            )
    return precision


#: ``(k, iters)`` of kNN smoothing, or None for none.
Knn = Optional[Tuple[int, int]]


def frame_outputs(
    model: SegOFA,
    images: Tensor,
    prompt_embeds: Tensor,
    class_embeds: Tensor,
    biases: Any,
    knn: Knn = None,
    output_size: Optional[Tuple[int, int]] = None,
) -> List[Tensor]:
    """The whole per-frame device work, as one CUDA graph captures it: the network on ``images``
    ``(B, 3, H, W)`` with the shape's position ``biases``, then (when asked) kNN smoothing with the
    exact torch search (:func:`~ifseg_deploy.postprocess.scores.grid_scores`) and bilinear
    up-sampling + argmax to ``output_size`` ``(H0, W0)`` (the reference's dense rule).

    Returns ``[logits (B, h*w, N), features (B, h*w, C)]`` in the model's dtype, then the float32
    kNN probabilities ``(B, h*w, N)`` with ``knn``, then the int64 labels ``(B, H0, W0)`` with
    ``output_size`` (of the kNN probabilities with ``knn``, of the logits without: the host rule of
    :meth:`~ifseg_deploy.runtime.segmenter.Segmenter.postprocess`)."""
    logits, feats = model(images, prompt_embeds, class_embeds, None, biases)
    outputs = [logits, feats]
    scores = logits.float()
    if knn is not None:
        probs, scores = grid_scores(scores, feats.float(), knn[0], knn[1], backend="torch")
        outputs.append(probs)
    if output_size is not None:
        outputs.append(upsample_argmax(scores, grid_size(*images.shape[2:]), output_size, method="dense"))
    return outputs


class TorchBackend(Backend):
    """Runs the PyTorch model; reports ``backbone``, ``encoder`` and ``decoder`` stage times.

    For inference the frozen batch norms are folded into the convolutions; ``bf16`` runs the
    backbone and the transformer linear layers in bfloat16 with weights converted once
    (:func:`ifseg_deploy.model.inference.cast_stages`), ``fp16`` the whole model in float16 (CUDA).
    ``fp32`` is strict float32: the forward pass runs with TF32 off (PyTorch allows it for cuDNN
    convolutions by default), ``tf32`` (CUDA) with TF32 on; the process-wide switches are restored
    after each forward pass (:func:`tf32_policy`).
    ``compile=True`` wraps the backbone, encoder and decoder in ``torch.compile``; the first run
    of each input shape compiles (its time is logged and kept in :attr:`compile_ms`).
    ``cuda_graph`` (CUDA only; ignored on other devices): the forward pass of each input shape is
    captured as a CUDA graph on its first run and replayed afterwards (:class:`CudaGraphs`); a graph
    has no stage boundaries, so it is timed as one ``network`` stage. With graphs,
    :meth:`fuse_postprocess` (a :class:`~ifseg_deploy.runtime.segmenter.Segmenter` calls it) puts kNN
    smoothing and up-sampling + argmax into the same graph (:func:`frame_outputs`).
    On CUDA, a Segmenter pre-processes frames on the device (:attr:`takes_device_frames`).
    The model is copied first unless ``inplace``.
    """

    name = "torch"

    def __init__(
        self,
        model: SegOFA,
        device: str = "cpu",
        precision: Optional[str] = None,
        compile: bool = False,
        inplace: bool = False,
        cuda_graph: bool = True,
    ):
        dev = parse_device(device)
        precision = resolve_precision(precision, dev)
        model = (model if inplace else copy.deepcopy(model)).to(dev).eval()
        fold_batchnorm(model.backbone)
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        if precision == "fp16":
            model.half()
        elif precision == "bf16":
            cast_stages(model, torch.bfloat16)
        if compile:
            for part in (model.backbone, model.encoder, model.decoder):
                part.compile()
        self._allow_tf32 = {FP32: False, TF32: True}.get(precision)  # None: fp16 / bf16 leave the switches
        self.model = model
        self.compiled = compile
        self.compile_ms: List[float] = []  # first-run time of each new input shape when compiled
        self._seen_shapes: set = set()
        self.arch = model.cfg
        self.graphs = CudaGraphs() if cuda_graph and dev.type == "cuda" else None
        self.fused = False  # kNN / up-sampling in the graph (fuse_postprocess)
        self._knn: Knn = None
        stages = ("network",) if self.graphs is not None else ("backbone", "encoder", "decoder")
        self.capabilities = Capabilities(device=dev, precision=precision, stages=stages)

    @classmethod
    def open(
        cls,
        path: str,
        device: str = "auto",
        precision: Optional[str] = None,
        compile: bool = False,
        cuda_graph: bool = True,
        **options,
    ) -> Tuple["TorchBackend", ModelInfo]:
        """A checkpoint or bundle (:func:`ifseg_deploy.checkpoint.load_model`) on ``device``; the other
        arguments as for the constructor. Raises :class:`IFSegError` for options of exported models."""
        if options:
            raise IFSegError(
                f"{', '.join(sorted(options))} do(es) not apply to PyTorch checkpoints; they are for exported models"
            )
        loaded = load_model(path)
        backend = cls(loaded.model, device, precision, compile, inplace=True, cuda_graph=cuda_graph)
        pre = Preprocessing.from_dict(
            loaded.metadata.get("preprocessing"), Preprocessing.short_side_rule(loaded.arch.image_size)
        )
        info = ModelInfo(
            path,
            loaded.kind,
            loaded.arch,
            backend.model.embed_tokens.weight,
            loaded.prompt_prefix,
            loaded.categories,
            loaded.class_embeds,
            pre,
        )
        return backend, info

    @property
    def takes_device_frames(self) -> bool:
        """Inputs may arrive on the device: frames are then uploaded as uint8 and resized there."""
        return self.device.type == "cuda"

    def fuse_postprocess(self, knn: Knn) -> None:
        """With CUDA graphs, capture kNN smoothing (``knn`` ``(k, iters)``, or None for none) and, when
        :meth:`run` is given an ``output_size``, up-sampling + argmax with the network
        (:func:`frame_outputs`); declared in :attr:`capabilities`. Without graphs: nothing changes
        (post-processing stays on the caller's side, timed per stage)."""
        if self.graphs is None:
            return
        self.fused, self._knn = True, knn
        self.capabilities = dataclasses.replace(self.capabilities, knn=knn, upsample=True)

    def _forward(
        self,
        images: Tensor,
        prompt_embeds: Tensor,
        class_embeds: Tensor,
        output_size: Optional[Tuple[int, int]],
        timings: Dict[str, float],
    ) -> Dict[str, Tensor]:
        dev = self.device
        first = self.compiled and tuple(images.shape) not in self._seen_shapes
        t0 = time.perf_counter()
        extra: Dict[str, Tensor] = {}
        with torch.inference_mode(), tf32_policy(self._allow_tf32):
            tensors = [t.to(dev, self.dtype) for t in (images, prompt_embeds, class_embeds)]
            if self.graphs is None:
                logits, feats = self.model(*tensors, self._stage_timer(timings))
            else:
                size = output_size if self.fused else None
                knn = self._knn if self.fused else None
                outputs = self.graphs(
                    tensors, lambda t: self._graph_body(t, knn, size), extra=(knn, size) if self.fused else None
                )
                logits, feats = outputs[:2]
                named = [KNN_PROBS] * (knn is not None) + [LABELS] * (size is not None)
                extra = dict(zip(named, outputs[2:]))
        if first:
            self._seen_shapes.add(tuple(images.shape))
            self.compile_ms.append((time.perf_counter() - t0) * 1e3)
            log.warning(
                "torch.compile: the first run of input %s took %.1f s (compilation)",
                tuple(images.shape),
                self.compile_ms[-1] / 1e3,
            )
        return {LOGITS: logits, FEATURES: feats, **extra}

    def _graph_body(
        self, tensors: List[Tensor], knn: Knn = None, output_size: Optional[Tuple[int, int]] = None
    ) -> Body:
        """:func:`frame_outputs` on ``tensors`` as a graph body: the shape's position biases are
        computed here, eagerly, and held by the body, so the graph reads tensors that live as long as
        it does (the model's own bias cache keeps only the last few shapes)."""
        images, prompt_embeds, class_embeds = tensors
        biases = self.model.position_biases(grid_size(*images.shape[2:]), prompt_embeds.shape[1])
        return lambda: frame_outputs(self.model, images, prompt_embeds, class_embeds, biases, knn, output_size)

    def _stage_timer(self, timings: Dict[str, float]) -> Callable[[str], None]:
        """A callback adding the time since its previous call (or creation) to ``timings[stage]``."""
        self.synchronize()
        last = [time.perf_counter()]

        def on_stage(name: str) -> None:
            self.synchronize()
            now = time.perf_counter()
            timings[name] = timings.get(name, 0.0) + (now - last[0]) * 1e3
            last[0] = now

        return on_stage
