"""``ifseg-deploy export``: a checkpoint -> verified ONNX graph -> (optionally) a TensorRT engine."""

from __future__ import annotations

import argparse
import os
import shlex
from typing import Optional, Tuple

from ..errors import IFSegError
from .common import categories_arg

FORMATS = ("onnx", "engine")


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("export", help="export a model to ONNX (run-time vocabulary) or a TensorRT engine")
    p.add_argument("--checkpoint", required=True, help="ofa_*.pt, IFSeg checkpoint, .safetensors bundle (or, for --format engine, an exported .onnx)")
    p.add_argument("--format", choices=FORMATS, default="onnx", help="onnx (default) or engine (TensorRT)")
    p.add_argument("--out", help="output file (default: next to the checkpoint, <stem>.onnx / <stem>.engine)")
    p.add_argument("--categories", help='categories the export is verified with (default: the stored ones); any list works at run time')
    p.add_argument("--bpe-dir", help="folder with encoder.json, vocab.bpe, dict.txt (default: next to the checkpoint)")
    p.add_argument("--imgsz", default="512", help="short side S of the preprocessing (default: 512), or HxW: a static export of that size")
    p.add_argument("--dynamic", action="store_true", help="dynamic batch and image size (the default unless --static or --imgsz HxW)")
    p.add_argument("--static", action="store_true", help="fixed batch and SxS (or --imgsz HxW) input; position biases folded into constants")
    p.add_argument("--batch", type=int, default=1, help="batch of a static export, or the batch traced and verified (default: 1)")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), help="engine precision (default: the profile's; ONNX is fp32)")
    p.add_argument("--calib-dir", help="folder of representative images for INT8 calibration")
    p.add_argument("--knn", choices=("host", "in-graph"), default="host", help="kNN smoothing in the graph or on the host (default: host)")
    p.add_argument("--knn-k", type=int, default=3, help="neighbours for in-graph kNN (default: 3)")
    p.add_argument("--knn-iters", type=int, default=25, help="iterations for in-graph kNN (default: 25)")
    p.add_argument("--upsample", choices=("host", "in-graph"), default="host",
                   help="bilinear up-sampling + argmax in the graph (adds input output_size; ONNX only) or on the host")
    p.add_argument("--profile", default="desktop-rtx", help="target profile name or JSON file (default: desktop-rtx); see export/profiles")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, 17..20 (default: 17)")
    p.add_argument("--trt-version", help="TensorRT version for the static operator check (default: the profile's, e.g. 10 or 8.6)")
    p.add_argument("--verify-image", action="append", default=[], help="also verify ORT vs PyTorch on this image (repeatable)")
    p.add_argument("--tolerance", type=float, help="absolute tolerance of the ORT vs PyTorch check (default: 2e-4)")
    p.add_argument("--timing-cache", help="TensorRT timing cache file (default: <out stem>.timing.cache)")
    p.add_argument("--device", default="cuda", help="GPU to build the engine on (default: cuda)")
    return p


def parse_imgsz(text: str) -> Tuple[int, Optional[Tuple[int, int]]]:
    """``"512"`` -> (512, None); ``"512x688"`` -> (512, (512, 688)): short side and explicit static size."""
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts) < 16:
        raise IFSegError(f"--imgsz {text}: expected S or HxW in pixels, each >= 16 (e.g. 512 or 512x688)")
    if len(parts) == 1:
        return parts[0], None
    return min(parts), (parts[0], parts[1])


def default_out(checkpoint: str, fmt: str) -> str:
    stem = os.path.splitext(checkpoint)[0]
    return stem + (".onnx" if fmt == "onnx" else ".engine")


def rebuild_command(args) -> str:
    """The export command that recreates this engine (quoted for a shell)."""
    parts = ["ifseg-deploy", "export", "--checkpoint", args.checkpoint, "--format", "engine", "--out", args.out,
             "--profile", args.profile, "--imgsz", args.imgsz, "--precision", args.precision]
    parts += ["--dynamic"] if args.dynamic else ["--static", "--batch", str(args.batch)]
    if args.calib_dir:
        parts += ["--calib-dir", args.calib_dir]
    if args.categories:
        parts += ["--categories", args.categories]
    return " ".join(shlex.quote(p) for p in parts)


def _validate(args) -> None:
    """Every argument check that needs no model, so bad input fails before any file is written."""
    from ..export.profiles import load_profile
    from ..export.tensorrt_build import check_precision

    args.profile_obj = load_profile(args.profile)
    args.short_side, args.static_size = parse_imgsz(args.imgsz)
    if args.batch < 1:
        raise IFSegError("--batch must be >= 1")
    if args.dynamic and (args.static or args.static_size):
        raise IFSegError("--dynamic contradicts --static / --imgsz HxW (a fixed input size); with --dynamic pass the short side only, e.g. --imgsz 512")
    args.dynamic = not (args.static or args.static_size)
    if args.knn == "in-graph" and (args.knn_k < 1 or args.knn_iters < 1):
        raise IFSegError("--knn in-graph needs --knn-k >= 1 and --knn-iters >= 1")
    if args.out is None:
        args.out = default_out(args.checkpoint, args.format)
    want_ext = ".onnx" if args.format == "onnx" else (".engine", ".plan")
    if not args.out.endswith(want_ext):
        raise IFSegError(f"--out {args.out} must end with {want_ext if isinstance(want_ext, str) else ' or '.join(want_ext)} for --format {args.format}")
    if args.format == "onnx":
        if args.precision not in (None, "fp32"):
            raise IFSegError(f"--precision {args.precision} applies to TensorRT engines (--format engine); ONNX exports are fp32 "
                             "(ONNX Runtime's TensorRT provider runs them in fp16 with segment --providers tensorrt --half)")
        if args.calib_dir:
            raise IFSegError("--calib-dir is only used for INT8 engines (--format engine --precision int8)")
        args.precision = "fp32"
    else:
        if args.upsample == "in-graph":
            raise IFSegError("--upsample in-graph is for ONNX exports only (it needs a shape input TensorRT profiles do not cover); use --upsample host")
        args.precision = args.precision or args.profile_obj.precision
        check_precision(args.precision, args.calib_dir)
        from ..runtime.tensorrt_backend import cuda_device, require_tensorrt

        require_tensorrt()
        cuda_device(args.device)
    if args.checkpoint.endswith(".onnx") and args.format == "onnx":
        raise IFSegError("--checkpoint is already an ONNX file; export from the PyTorch checkpoint or use --format engine")
    if not os.path.isfile(args.checkpoint):
        raise IFSegError(f"checkpoint not found: {args.checkpoint}")


def _export_onnx(args, onnx_path: str):
    from ..checkpoint import load_model
    from ..export.graph import GraphSpec
    from ..export.onnx_export import OnnxExportOptions, export_onnx
    from ..export.verify import ATOL
    from ..runtime.vocabulary import Vocabulary
    from ..text.tokenizer import OFATokenizer, find_bpe_dir

    tokenizer = OFATokenizer(find_bpe_dir(args.bpe_dir, args.checkpoint))
    loaded = load_model(args.checkpoint)
    vocab = Vocabulary(tokenizer, loaded.model.embed_tokens.weight, loaded.prompt_prefix, loaded.categories, loaded.class_embeds)
    spec = GraphSpec(knn_k=args.knn_k, knn_iters=args.knn_iters if args.knn == "in-graph" else 0, upsample=args.upsample == "in-graph")
    opts = OnnxExportOptions(
        image_size=args.static_size or (args.short_side, args.short_side), dynamic=args.dynamic, batch=args.batch,
        opset=args.opset, graph=spec, atol=args.tolerance if args.tolerance is not None else ATOL,
        trt_target=args.trt_version or args.profile_obj.tensorrt, verify_images=args.verify_image,
    )
    result = export_onnx(loaded, onnx_path, vocab, categories_arg(args.categories), opts)
    print(f"ONNX Runtime (CPU) vs PyTorch, categories: {', '.join(result.metadata['export']['categories'])}")
    for line in result.verification.lines():
        print(f"  {line}")
    print(result.op_check.summary())
    for w in result.op_check.warnings[:10]:
        print(f"  note: {w}")
    print(f"Wrote {result.path} and {result.vocab_path}")
    return result, vocab


def run(args) -> int:
    from ..export.profiles import trtexec_command

    _validate(args)
    profile = args.profile_obj
    if args.checkpoint.endswith(".onnx"):
        onnx_path, calib_vocab, static = _existing_onnx(args)
    else:
        onnx_path = args.out if args.format == "onnx" else os.path.splitext(args.out)[0] + ".onnx"
        static = None if args.dynamic else (args.batch,) + (args.static_size or (args.short_side, args.short_side))
        result, vocabulary = _export_onnx(args, onnx_path)
        if args.format == "onnx":
            engine = os.path.splitext(onnx_path)[0] + ".engine"
            print(f"Build a TensorRT engine by hand (profile {profile.name}):\n  "
                  + trtexec_command(profile, onnx_path, engine, result.metadata["arch"]["embed_dim"], args.short_side, static))
            return 0
        if not result.op_check.ok:
            raise IFSegError(f"the graph uses operators TensorRT {result.op_check.target} does not support "
                             f"({'; '.join(result.op_check.errors[:3])}); the engine was not built")
        calib_vocab = vocabulary.prepare(categories_arg(args.categories)) if args.precision == "int8" else None
    from ..export.sidecar import vocab_path
    from ..export.tensorrt_build import build_engine
    from ..fileio import write_bytes

    build = build_engine(onnx_path, args.out, profile, args.precision, args.short_side, static, args.calib_dir,
                         args.timing_cache or os.path.splitext(args.out)[0] + ".timing.cache", args.device,
                         rebuild_command(args), calib_vocab)
    if vocab_path(onnx_path) != vocab_path(args.out):  # the engine needs its own copy of the side file
        with open(vocab_path(onnx_path), "rb") as fh:
            write_bytes(vocab_path(args.out), fh.read())
    info = build.info
    print(f"Built {build.path} ({args.precision}, TensorRT {info['tensorrt']}, {info['gpu']} sm_{info['compute_capability'].replace('.', '')}, "
          f"{info['fp32_pinned_layers']} layers pinned to FP32)")
    print(f"Equivalent trtexec command is in {build.path}.json")
    return 0


def _existing_onnx(args):
    """An already exported ONNX file: its shapes and preprocessing come from its side file, not the flags."""
    from ..export.sidecar import read_vocab
    from ..runtime.engines import sidecar_vocabulary

    side = read_vocab(args.checkpoint)
    export = side.export
    args.short_side = int(side.preprocessing["short_side"])
    static = None if export.get("dynamic", True) else (int(export["batch"]),) + tuple(int(v) for v in export["image_size"])
    calib_vocab = None
    if args.precision == "int8":
        calib_vocab = sidecar_vocabulary(side, args.checkpoint, args.bpe_dir).prepare(categories_arg(args.categories) or export.get("categories"))
    return args.checkpoint, calib_vocab, static
