"""``ifseg-deploy export``: a checkpoint -> verified ONNX graph -> (optionally) a TensorRT engine."""

from __future__ import annotations

import argparse
import os

from ..exporter.args import PLACES, POSITION_BIASES, ExportArgs
from ..exporter.formats import FORMATS
from ..exporter.precision.nncf_int8 import ALL, INT8_SCOPES, ONNXRUNTIME, QUANTIZERS, SCOPE_WORDS
from ..precision import GRAPHS
from ..triton.repository import FORMAT as TRITON
from ..triton.repository import NETWORKS
from .common import BPE_HELP, add_category_args, category_args
from .flags import flag_names


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "export", help="export a model to ONNX (run-time vocabulary), a TensorRT engine or a Triton model repository"
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        help="ofa_*.pt, IFSeg checkpoint, .safetensors bundle (or, for --format engine, an exported .onnx)",
    )
    p.add_argument(
        "--format",
        choices=FORMATS + (TRITON,),
        default="onnx",
        help="onnx (default), engine (TensorRT), openvino (IR folder <stem>_openvino/) or triton (a Triton Inference "
        "Server model repository)",
    )
    p.add_argument(
        "--out",
        help="output file (default: next to the checkpoint, <stem>.onnx / <stem>.engine), or folder (<stem>_triton)",
    )
    p.add_argument(
        "--network",
        choices=NETWORKS,
        default="python",
        help="triton: the network model on ONNX Runtime in a Python model (CPU servers, default), "
        "Triton's onnxruntime_onnx backend (onnx) or a TensorRT plan built here (engine)",
    )
    p.add_argument(
        "--max-queue-delay-us",
        type=int,
        default=2000,
        help="triton: how long the dynamic batcher waits for more requests, microseconds (default: 2000)",
    )
    add_category_args(p, "to verify the export with (default: the stored ones); any list works at run time")
    p.add_argument(
        "--bpe-dir",
        help=BPE_HELP,
    )
    p.add_argument(
        "--imgsz",
        default="512",
        help="short side S of the preprocessing (default: 512), or HxW (H,W): a static export of that size",
    )
    p.add_argument(
        "--imgsz-from",
        metavar="FILE",
        help="static export sized for this image or video: the exact HxW its "
        "(first frame's) pixels pre-process to at the --imgsz short side",
    )
    p.add_argument(
        "--dynamic",
        action="store_true",
        help="dynamic batch and image size (the default unless --static, --imgsz HxW or --imgsz-from)",
    )
    p.add_argument(
        "--static",
        action="store_true",
        help="fixed batch and SxS (or --imgsz HxW) input; position biases folded into constants",
    )
    p.add_argument(
        "--position-biases",
        choices=POSITION_BIASES,
        default="auto",
        help="dynamic graphs: take the shape-only position biases as inputs, computed once per input shape by the "
        "runtime "
        "(inputs), or compute them on every run (graph); auto: inputs for onnx/openvino, graph for engines and Triton",
    )
    p.add_argument(
        "--batch", type=int, default=1, help="batch of a static export, or the batch traced and verified (default: 1)"
    )
    p.add_argument(
        "--precision",
        choices=GRAPHS,
        help="graph precision; a TensorRT engine is strongly typed and runs in its graph's "
        "(default: fp32 for ONNX, the profile's for engines)",
    )
    p.add_argument(
        "--no-gate",
        action="store_true",
        help="write a reduced-precision graph even when it misses a fidelity gate "
        "(logits within 2e-2 (fp16) / 1e-1 (int8) relative RMS of fp32 PyTorch; a trained "
        "bundle's held-out pixel accuracy and mIoU within 0.5 / 2 points of the fp32 graph)",
    )
    p.add_argument("--calib-dir", help="folder of representative images to calibrate an INT8 (Q/DQ) graph on")
    p.add_argument(
        "--quantizer",
        choices=QUANTIZERS,
        default=ONNXRUNTIME,
        help="INT8 quantizer: onnxruntime (weight matrix products only, default) or nncf (every convolution "
        "and matrix product, activations included: faster on CPUs; check its gate on your model)",
    )
    p.add_argument(
        "--int8-scope",
        choices=INT8_SCOPES,
        default=ALL,
        help="INT8 with nncf: what is int8, every convolution and matrix product (all, default: fastest on "
        "CPUs with VNNI or AMX and on GPUs) or the convolutions only (fastest on CPUs without VNNI)",
    )
    p.add_argument(
        "--holdout-dir",
        help="INT8 with nncf: labelled held-out set (images/<stem>.<ext>, labels/<stem>.png holding category "
        "indices, 255 = ignored) for NNCF's accuracy control",
    )
    p.add_argument(
        "--max-drop",
        type=float,
        help="largest held-out pixel-accuracy drop against fp32 under accuracy control, as a fraction "
        "(default with --holdout-dir: 0.01 = 1 point)",
    )
    p.add_argument(
        "--knn", choices=PLACES, default="host", help="kNN smoothing in the graph or on the host (default: host)"
    )
    p.add_argument("--knn-k", type=int, default=3, help="neighbours for in-graph kNN (default: 3)")
    p.add_argument("--knn-iters", type=int, default=25, help="iterations for in-graph kNN (default: 25)")
    p.add_argument(
        "--upsample",
        choices=PLACES,
        default="host",
        help="bilinear up-sampling + argmax in the graph (adds input output_size; ONNX only) or on the host",
    )
    p.add_argument(
        "--profile",
        default="desktop-rtx",
        help="target profile name or JSON file (default: desktop-rtx); see export/profiles",
    )
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, 17..20 (default: 17)")
    p.add_argument(
        "--trt-version", help="TensorRT version for the static operator check (default: the profile's, e.g. 10 or 8.6)"
    )
    p.add_argument(
        "--verify-image", action="append", default=[], help="also verify ORT vs PyTorch on this image (repeatable)"
    )
    p.add_argument("--tolerance", type=float, help="absolute tolerance of the ORT vs PyTorch check (default: 2e-4)")
    p.add_argument("--timing-cache", help="TensorRT timing cache file (default: <out stem>.timing.cache)")
    p.add_argument("--device", default="cuda", help="GPU to build the engine on (default: cuda)")
    return p


def export_args(args) -> ExportArgs:
    """The flags as :class:`ExportArgs` (field by field; ``export_model`` validates them)."""
    from .common import parse_imgsz

    size = parse_imgsz(args.imgsz)
    return ExportArgs(
        format=args.format,
        out=args.out,
        categories=category_args(args)[0],
        bpe_dir=args.bpe_dir,
        imgsz=size[0] if len(size) == 1 else size,
        imgsz_from=args.imgsz_from,
        dynamic=True if args.dynamic else None,
        static=args.static,
        batch=args.batch,
        precision=args.precision,
        calib_dir=args.calib_dir,
        quantizer=args.quantizer,
        int8_scope=args.int8_scope,
        holdout_dir=args.holdout_dir,
        max_drop=args.max_drop,
        gate=not args.no_gate,
        knn=args.knn,
        knn_k=args.knn_k,
        knn_iters=args.knn_iters,
        upsample=args.upsample,
        position_biases=args.position_biases,
        profile=args.profile,
        opset=args.opset,
        trt_version=args.trt_version,
        verify_image=args.verify_image,
        tolerance=args.tolerance,
        timing_cache=args.timing_cache,
        device=args.device,
    )


def run(args) -> int:
    from ..exporter.api import export_model

    if args.format == TRITON:
        return run_triton(args)
    result = export_model(args.checkpoint, export_args(args))
    if result.onnx is not None:
        onnx = result.onnx
        if args.imgsz_from:
            h, w = onnx.metadata["export"]["image_size"]
            print(
                f"Static input {h}x{w}: what {args.imgsz_from} pre-processes to at short side "
                f"{onnx.metadata['preprocessing']['short_side']}"
            )
        print(f"ONNX Runtime (CPU) vs PyTorch, categories: {', '.join(onnx.metadata['export']['categories'])}")
        for line in onnx.verification.lines():
            print(f"  {flag_names(line)}")
        if onnx.precision is not None:
            for line in onnx.precision.lines():
                print(flag_names(line))
            if not onnx.precision.ok:
                print(
                    f"warning: the {onnx.precision.precision} graph misses its gate; written anyway because of "
                    f"--no-gate"
                )
        print(onnx.op_check.summary())
        for w in onnx.op_check.warnings[:10]:
            print(f"  note: {w}")
        print(f"Wrote {onnx.path} and {onnx.vocab_path}")
        if onnx.contract.bias_inputs and args.format == "onnx":
            print(
                "Position biases are graph inputs, computed once per input shape by ifseg-deploy's ONNX Runtime and "
                "OpenVINO "
                "backends; for TensorRT use --format engine (or export with --position-biases graph)"
            )
    if result.openvino is not None:
        ov = result.openvino
        what = {"nncf": f"INT8, NNCF: {SCOPE_WORDS[args.int8_scope]}", "onnxruntime": "INT8 Q/DQ graph"}.get(
            ov.quantizer, f"fp32 compute, {ov.precision} weights"
        )
        print(f"OpenVINO (CPU, {what}) vs PyTorch:")
        for line in ov.verification.lines():
            print(f"  {flag_names(line)}")
        print(f"Wrote {ov.folder}/ ({', '.join(os.path.basename(f) for f in ov.files)})")
    if result.trtexec_hint:
        print(f"Build a TensorRT engine by hand (profile {args.profile}):\n  {result.trtexec_hint}")
    if result.engine is not None:
        info = result.engine.info
        print(
            f"Built {result.engine.path} ({info['precision']}, TensorRT {info['tensorrt']}, {info['gpu']} "
            f"sm_{info['compute_capability'].replace('.', '')}, strongly typed)"
        )
        print(f"Equivalent trtexec command is in {result.engine.path}.json")
    return 0


def run_triton(args) -> int:
    from ..triton.repository import TritonOptions, export_triton

    repo = export_triton(args.checkpoint, export_args(args), TritonOptions(args.network, args.max_queue_delay_us))
    if repo.export.onnx is not None:
        print(
            f"ONNX Runtime (CPU) vs PyTorch, categories: {', '.join(repo.export.onnx.metadata['export']['categories'])}"
        )
        for line in repo.export.onnx.verification.lines():
            print(f"  {flag_names(line)}")
    for line in repo.checks:
        print(line)
    print(
        f"Wrote Triton model repository {repo.path} (network: {repo.network}); start the server as its README.md says"
    )
    return 0
