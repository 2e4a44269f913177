"""Flags and helpers shared by several sub-commands."""

from __future__ import annotations

import argparse
import difflib
import glob
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from ..errors import IFSegError
from ..fileio import IMAGE_EXTS, list_images
from ..precision import BF16, FP16, TF32, TORCH_CUDA
from ..text.categories_file import BUILTIN_FILES, names_and_words, parse_category_spec, read_categories_file


def add_segmenter_args(p: argparse.ArgumentParser, arch_option: bool = False) -> None:
    """Model source (``--checkpoint`` | ``--engine`` | ``--server`` [| ``--arch``]) and every runtime option."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--checkpoint",
        help="ofa_*.pt, IFSeg checkpoint or .safetensors bundle (PyTorch), or a model name: ofa-tiny, ofa-medium, "
        "ofa-base, ofa-large, ofa-huge, ifseg-web-demo (downloaded once into the cache)",
    )
    src.add_argument(
        "--engine",
        help="exported .onnx (ONNX Runtime), TensorRT .engine or OpenVINO <stem>_openvino/ folder, "
        "with its .vocab.safetensors side file",
    )
    src.add_argument(
        "--server",
        help="Triton Inference Server serving an export --format triton repository: grpc://HOST:8001 or http://HOST:8000",
    )
    if arch_option:
        src.add_argument("--arch", help="random weights of an official OFA size: tiny, medium, base, large, huge")
    add_model_args(p)
    p.add_argument(
        "--providers",
        help="ONNX Runtime execution providers for --engine model.onnx, in order: cpu, cuda, tensorrt "
        "(default: cpu, or cuda with --device cuda)",
    )
    p.add_argument(
        "--precision",
        choices=TORCH_CUDA,
        help="PyTorch / OpenVINO compute precision: fp32 (default; strict float32, TF32 off), bf16 (CPUs with "
        "AVX512-BF16 or AMX), fp16 (CUDA; = --half, which also runs exported graphs in fp16), tf32 (PyTorch on CUDA: "
        "float32 weights, TF32 convolutions and matrix products)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="PyTorch: torch.compile the network (the first frame of each size compiles)",
    )
    p.add_argument(
        "--no-cuda-graph",
        dest="cuda_graph",
        action="store_false",
        help="PyTorch on CUDA: run every frame eagerly instead of replaying one CUDA graph per input size "
        "(captured on its first frame)",
    )
    p.add_argument(
        "--imgsz", type=int, help="inference short side in pixels (default: the model's stored preprocessing)"
    )
    add_knn_args(p)
    p.add_argument(
        "--window",
        type=int,
        help="sliding-window inference with square windows of this many pixels (multiple of 16) "
        "for very large inputs (default: whole image)",
    )
    p.add_argument(
        "--timeout", type=float, default=60.0, help="with --server: seconds to wait for each answer (default: 60)"
    )


def add_offline_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--offline",
        action="store_true",
        help="never use the network: model names and BPE files come from the cache only (as IFSEG_OFFLINE=1)",
    )


def resolve_checkpoint_arg(args) -> None:
    """``--checkpoint`` given as a model name (``ofa-tiny``, ...) becomes its file in the cache,
    downloaded once (:func:`ifseg_deploy.hub.resolve_checkpoint`), and a near-miss of a name is
    refused with the name it resembles; anything else stays as it is, for the command's own checks
    (which come first: a bad flag is named before a missing file)."""
    from ..hub import MODELS, resolve_checkpoint

    checkpoint = getattr(args, "checkpoint", None)
    if checkpoint and (checkpoint in MODELS or difflib.get_close_matches(checkpoint, list(MODELS), n=1)):
        args.checkpoint = resolve_checkpoint(checkpoint)


def load_segmenter(args):
    """The Segmenter of ``--checkpoint`` or ``--engine`` (any model file), with the same options, or
    the client of ``--server``."""
    from ..runtime.loader import backend_for
    from ..runtime.segmenter import Segmenter

    if args.server:
        return server_segmenter(args, raw=bool(getattr(args, "save_raw", False)))
    path = args.checkpoint or args.engine
    if not os.path.exists(path):
        raise IFSegError(f"{'checkpoint' if args.checkpoint else 'engine'} not found: {path}")
    if args.engine and backend_for(path) == "torch":
        raise IFSegError(
            f"--engine {path}: unknown file type; pass an exported .onnx, a TensorRT .engine/.plan file "
            "or an OpenVINO model folder (<stem>_openvino/)"
        )
    options = {}
    if args.providers:
        if backend_for(path) != "onnxruntime":
            raise IFSegError(
                "--providers applies to --engine model.onnx (ONNX Runtime); other model files run on their own runtime"
            )
        options["providers"] = args.providers
    announce_device(args.device)
    categories, class_words = category_args(args)
    precision, compile_options = precision_options(backend_for(path), args)
    options.update(compile_options)
    extra = {} if args.imgsz is None else {"preprocessing": inference_preprocessing(args.imgsz)}
    return Segmenter.load(
        path,
        categories,
        args.bpe_dir,
        args.device,
        precision,
        class_words=class_words,
        backend_options=options,
        knn_k=args.knn_k,
        knn_iters=args.knn_iters,
        knn_backend=args.knn_backend,
        window=args.window,
        **extra,
    )


def precision_options(backend: str, args) -> Tuple[Optional[str], dict]:
    """``(precision, backend options)`` of ``--precision`` / ``--half`` / ``--compile``, for the
    registered ``backend``: ``--half`` is the alias of ``--precision fp16`` (here and nowhere else);
    bf16 runs on PyTorch and OpenVINO only; only PyTorch compiles. Commands without ``--precision`` /
    ``--compile`` (eval) have ``--half`` alone. One-line errors otherwise."""
    requested = getattr(args, "precision", None)
    if args.half and requested not in (None, FP16):
        raise IFSegError(f"--half means --precision fp16; it contradicts --precision {requested}")
    precision = FP16 if args.half else requested
    options = {}
    if precision == BF16 and backend not in ("torch", "openvino"):
        raise IFSegError(
            "--precision bf16 applies to PyTorch checkpoints and OpenVINO models; exported ONNX / TensorRT "
            "graphs carry their precision (export --precision)"
        )
    if precision == TF32 and backend != "torch":
        raise IFSegError("--precision tf32 applies to PyTorch checkpoints on CUDA (--checkpoint)")
    if not getattr(args, "cuda_graph", True):
        if backend != "torch":
            raise IFSegError(
                "--no-cuda-graph applies to PyTorch checkpoints (--checkpoint); exported models run on their own "
                "runtime"
            )
        options["cuda_graph"] = False
    if getattr(args, "compile", False):
        if backend != "torch":
            raise IFSegError(
                "--compile applies to PyTorch checkpoints (--checkpoint); exported models are already compiled graphs"
            )
        options["compile"] = True
    return precision, options


def inference_preprocessing(short_side: int):
    """``--imgsz S``: the keep-ratio resize to short side ``S`` (long side capped at ``4 S``)."""
    from ..preprocess import Preprocessing

    if short_side < 16:
        raise IFSegError(f"--imgsz {short_side}: the inference short side must be >= 16 pixels (e.g. 384, 512)")
    return Preprocessing.short_side_rule(short_side)


def server_segmenter(args, raw: bool = True):
    """The :class:`Segmenter` over the Triton server of ``--server`` (:func:`ifseg_deploy.triton.client.connect`);
    local-only options are refused, and kNN settings must match what the repository was exported
    with (the server applies them)."""
    from ..triton.client import connect

    local = [
        flag
        for flag, on in (
            ("--providers", args.providers),
            ("--window", args.window),
            ("--half", args.half),
            ("--bpe-dir", args.bpe_dir),
            ("--precision", args.precision),
            ("--compile", args.compile),
            ("--no-cuda-graph", not args.cuda_graph),
            ("--imgsz", args.imgsz is not None),
        )
        if on
    ]
    if local:
        raise IFSegError(f"{', '.join(local)} do not apply to --server (the server runs the model as exported)")
    categories, class_words = category_args(args)
    if class_words:
        raise IFSegError(
            "--server takes plain category names; classes with word lists (name: words) need a local model"
        )
    seg = connect(args.server, categories, args.timeout, raw=raw)
    if (args.knn_k, args.knn_iters) != (seg.knn_k, seg.knn_iters):
        raise IFSegError(
            f"the server smooths with kNN k={seg.knn_k}, {seg.knn_iters} iterations (set at export); "
            "drop --knn-k/--knn-iters or re-export with them"
        )
    return seg


def add_font_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--font",
        metavar="PATH",
        help="TrueType/OpenType font for the legend's names (default: $IFSEG_FONT, else an "
        "installed font that covers them, found by fontconfig)",
    )


#: The --bpe-dir help of every command.
BPE_HELP = (
    "folder with encoder.json, vocab.bpe, dict.txt (default: next to the checkpoint, else OFA's, downloaded "
    "once into the cache)"
)


def add_model_args(p: argparse.ArgumentParser) -> None:
    add_category_args(p)
    p.add_argument(
        "--bpe-dir",
        help=BPE_HELP,
    )
    add_device_arg(p)
    p.add_argument("--half", action="store_true", help="float16 inference (CUDA only)")


def add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device",
        default="auto",
        help="auto, cpu, cuda or cuda:N (default: auto = CUDA when available, else CPU); "
        "OpenVINO models: cpu, gpu, npu",
    )


def announce_device(requested: str) -> None:
    """Say on one line which device ``--device auto`` chose."""
    if requested in ("auto", ""):
        from ..runtime.device import parse_device

        dev = parse_device(requested)
        print(f"--device auto: using {dev}" + (" (no CUDA device found)" if dev.type == "cpu" else ""))


def add_knn_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--knn-k", type=int, default=3, help="neighbours per cell for kNN smoothing (default: 3)")
    p.add_argument("--knn-iters", type=int, default=25, help="kNN smoothing iterations, 0 disables (default: 25)")
    p.add_argument("--knn-backend", default="auto", choices=["auto", "torch", "faiss"], help="kNN search backend")


def add_category_args(p: argparse.ArgumentParser, what: str = "(default: those stored in the model)") -> None:
    p.add_argument(
        "--categories",
        help='comma-separated names, e.g. "grass, cat, dog"; classes with word lists as '
        f'"animal: cat, dog; plant: grass, tree" {what}',
    )
    p.add_argument(
        "--categories-file",
        help="a file with one class per line (name, or name: word, word), # comments; "
        "or a built-in list: " + ", ".join(BUILTIN_FILES),
    )


def category_args(args) -> Tuple[Optional[List[str]], Optional[Dict[str, Tuple[str, ...]]]]:
    """``(category names, word lists of hierarchical classes)`` from ``--categories`` /
    ``--categories-file`` (``(None, None)``: the model's stored list)."""
    if args.categories is not None and args.categories_file:
        raise IFSegError("pass either --categories or --categories-file, not both")
    if args.categories_file:
        classes = read_categories_file(args.categories_file)
    elif args.categories is not None:
        classes = parse_category_spec(args.categories)
    else:
        return None, None
    names, words = names_and_words(classes)
    return names, words or None


@dataclass
class ImageInputs:
    """What the image arguments of ``segment`` expand to."""

    paths: List[str]  # distinct image files, in argument order
    problems: List[str]  # one line per argument that yields nothing
    repeats: int  # files left out because they were already listed (same file by its resolved path)


def expand_images(inputs: List[str]) -> ImageInputs:
    """Files as given, folders expanded to the images inside, glob patterns (``'photos/*.jpg'``,
    ``**`` recursive) expanded, all in order. A file reached twice (listed again, or through a
    symbolic link, including a link loop under ``**``) is kept once, by its resolved path, and
    counted in ``repeats``; each argument that yields nothing gives one problem line."""
    out: List[str] = []
    seen = set()
    problems: List[str] = []
    repeats = 0
    for item in inputs:
        if os.path.isdir(item):
            files = list_images(item)
            if not files:
                problems.append(f"folder {item} holds no images ({', '.join(IMAGE_EXTS)})")
        elif os.path.isfile(item):
            files = [item]
        elif glob.has_magic(item):
            files = sorted(f for f in glob.glob(item, recursive=True) if os.path.isfile(f))
            if not files:
                problems.append(f"no file matches {item}")
        else:
            files = []
            problems.append(f"input not found: {item}")
        for f in files:
            key = os.path.realpath(f)
            if key in seen:
                repeats += 1
                continue
            seen.add(key)
            out.append(f)
    return ImageInputs(out, problems, repeats)


def result_names(paths: List[str]) -> List[str]:
    """One distinct output stem per input: its path relative to the inputs' common folder, without
    the extension (``x/a.png`` and ``y/a.png`` -> ``x/a``, ``y/a``; a lone folder's images keep
    their bare names). Inputs that would still meet (``a.png`` and ``a.jpg``, or names differing
    only in case) keep their extension (``a_png``), then a number if needed; no stem equals
    another, compared case-insensitively."""
    absolute = [os.path.normpath(os.path.abspath(p)) for p in paths]
    if not absolute:
        return []
    root = os.path.commonpath([os.path.dirname(a) for a in absolute])
    rel = [os.path.relpath(a, root) for a in absolute]
    stems = [os.path.splitext(r)[0] for r in rel]
    counts: Dict[str, int] = {}
    for s in stems:
        counts[s.casefold()] = counts.get(s.casefold(), 0) + 1
    taken = {s.casefold() for s in stems if counts[s.casefold()] == 1}
    names = []
    for s, r in zip(stems, rel):
        if counts[s.casefold()] == 1:
            names.append(s)
            continue
        base = s + "_" + os.path.splitext(r)[1].lstrip(".")
        name, n = base, 2
        while name.casefold() in taken:
            name, n = f"{base}_{n}", n + 1
        taken.add(name.casefold())
        names.append(name)
    return names


def parse_imgsz(text: str, flag: str = "--imgsz") -> Tuple[int, ...]:
    """An image-size flag's value: ``"512"`` -> ``(512,)``; ``"512x688"`` or ``"512,688"`` -> ``(512, 688)`` (H, W).

    Each command reads one value as a short side (export, inference) or a square (bench's
    ``--source-size``). Raises :class:`IFSegError` naming ``flag`` unless there are one or two
    integers, each >= 16.
    """
    try:
        parts = tuple(int(p) for p in str(text).lower().replace("x", ",").split(",") if p.strip())
    except ValueError:
        parts = ()
    if len(parts) not in (1, 2) or min(parts) < 16:
        raise IFSegError(f"{flag} {text}: expected S or HxW in pixels, each >= 16 (e.g. 512 or 512x688)")
    return parts
