"""Flags and helpers shared by several sub-commands."""

from __future__ import annotations

import argparse
import os
from typing import List, Tuple

from ..errors import IFSegError
from ..fileio import IMAGE_EXTS, list_images
from ..text.prompt import parse_categories

def add_segmenter_args(p: argparse.ArgumentParser, arch_option: bool = False) -> None:
    """Model source (``--checkpoint`` | ``--engine`` [| ``--arch``]) and every runtime option."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="ofa_*.pt, IFSeg checkpoint or .safetensors bundle (PyTorch)")
    src.add_argument("--engine", help="exported .onnx (ONNX Runtime), TensorRT .engine or OpenVINO <stem>_openvino/ folder, "
                                      "with its .vocab.safetensors side file")
    if arch_option:
        src.add_argument("--arch", help="random weights of an official OFA size: tiny, medium, base, large, huge")
    add_model_args(p)
    p.add_argument("--providers", help="ONNX Runtime execution providers for --engine model.onnx, in order: cpu, cuda, tensorrt "
                                       "(default: cpu, or cuda with --device cuda)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"),
                   help="PyTorch / OpenVINO compute precision: fp32 (default), bf16 (CPUs with AVX512-BF16 or AMX), fp16 (CUDA; "
                        "= --half, which also runs exported graphs in fp16)")
    p.add_argument("--compile", action="store_true", help="PyTorch: torch.compile the network (the first frame of each size compiles)")
    p.add_argument("--imgsz", type=int, help="inference short side in pixels (default: the model's stored preprocessing)")
    add_knn_args(p)
    p.add_argument("--window", type=int, help="sliding-window inference with square windows of this many pixels (multiple of 16) "
                                             "for very large inputs (default: whole image)")


def load_segmenter(args):
    """The Segmenter of ``--checkpoint`` or ``--engine`` (any model file), with the same options."""
    from ..runtime.loader import backend_for
    from ..runtime.segmenter import Segmenter

    path = args.checkpoint or args.engine
    if not os.path.exists(path):
        raise IFSegError(f"{'checkpoint' if args.checkpoint else 'engine'} not found: {path}")
    if args.engine and backend_for(path) == "torch":
        raise IFSegError(f"--engine {path}: unknown file type; pass an exported .onnx, a TensorRT .engine/.plan file "
                         "or an OpenVINO model folder (<stem>_openvino/)")
    options = {}
    if args.providers:
        if backend_for(path) != "onnxruntime":
            raise IFSegError("--providers applies to --engine model.onnx (ONNX Runtime); other model files run on their own runtime")
        options["providers"] = args.providers
    half, precision = precision_options(backend_for(path), args)
    options.update(precision)
    extra = {} if args.imgsz is None else {"preprocessing": inference_preprocessing(args.imgsz)}
    return Segmenter.load(path, categories_arg(args.categories), args.bpe_dir, args.device, half, backend_options=options,
                          knn_k=args.knn_k, knn_iters=args.knn_iters, knn_backend=args.knn_backend, window=args.window, **extra)


def precision_options(backend: str, args) -> Tuple[bool, dict]:
    """``(half, backend options)`` of ``--precision`` / ``--half`` / ``--compile``: PyTorch and OpenVINO
    take a precision option, other runtimes ``half``; only PyTorch compiles. One-line errors otherwise."""
    if args.half and args.precision not in (None, "fp16"):
        raise IFSegError(f"--half means --precision fp16; it contradicts --precision {args.precision}")
    precision = "fp16" if args.half else args.precision
    options = {}
    if backend in ("torch", "openvino"):
        if precision:
            options["precision"] = precision
    elif precision == "bf16":
        raise IFSegError("--precision bf16 applies to PyTorch checkpoints and OpenVINO models; exported ONNX / TensorRT "
                         "graphs carry their precision (export --precision)")
    if args.compile:
        if backend != "torch":
            raise IFSegError("--compile applies to PyTorch checkpoints (--checkpoint); exported models are already compiled graphs")
        options["compile"] = True
    return precision == "fp16" and "precision" not in options, options


def inference_preprocessing(short_side: int):
    """``--imgsz S``: the keep-ratio resize to short side ``S`` (long side capped at ``4 S``)."""
    from ..preprocess import Preprocessing

    if short_side < 16:
        raise IFSegError(f"--imgsz {short_side}: the inference short side must be >= 16 pixels (e.g. 384, 512)")
    return Preprocessing(short_side, 4 * short_side)


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--categories", help='comma-separated category names, e.g. "grass, cat, dog" (default: those stored in the model)')
    p.add_argument("--bpe-dir", help="folder with encoder.json, vocab.bpe, dict.txt (default: next to the checkpoint)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu); OpenVINO models: cpu, gpu, npu")
    p.add_argument("--half", action="store_true", help="float16 inference (CUDA only)")


def add_knn_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--knn-k", type=int, default=3, help="neighbours per cell for kNN smoothing (default: 3)")
    p.add_argument("--knn-iters", type=int, default=25, help="kNN smoothing iterations, 0 disables (default: 25)")
    p.add_argument("--knn-backend", default="auto", choices=["auto", "torch", "faiss"], help="kNN search backend")


def categories_arg(text):
    return None if text is None else parse_categories(text)


def expand_images(inputs: List[str]) -> List[str]:
    """Files as given; folders expanded to the images inside (sorted). Missing paths are an error."""
    out: List[str] = []
    for item in inputs:
        if os.path.isdir(item):
            files = list_images(item)
            if not files:
                raise IFSegError(f"folder {item} holds no images ({', '.join(IMAGE_EXTS)})")
            out += files
        elif os.path.isfile(item):
            out.append(item)
        else:
            raise IFSegError(f"input not found: {item}")
    return out


def output_stems(paths: List[str]) -> List[str]:
    """File stems for outputs; repeated stems get ``_1``, ``_2`` ... so no output overwrites another."""
    seen = {}
    stems = []
    for p in paths:
        stem = os.path.splitext(os.path.basename(p))[0]
        n = seen.get(stem, 0)
        seen[stem] = n + 1
        stems.append(stem if n == 0 else f"{stem}_{n}")
    return stems


def parse_imgsz(text: str) -> Tuple[int, ...]:
    """``--imgsz`` of every command: ``"512"`` -> ``(512,)``; ``"512x688"`` or ``"512,688"`` -> ``(512, 688)`` (H, W).

    Each command reads one value as a short side (export, inference) or a square (bench).
    Raises :class:`IFSegError` unless there are one or two integers, each >= 16.
    """
    try:
        parts = tuple(int(p) for p in str(text).lower().replace("x", ",").split(",") if p.strip())
    except ValueError:
        parts = ()
    if len(parts) not in (1, 2) or min(parts) < 16:
        raise IFSegError(f"--imgsz {text}: expected S or HxW in pixels, each >= 16 (e.g. 512 or 512x688)")
    return parts
