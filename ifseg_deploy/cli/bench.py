"""``ifseg-deploy bench``: end-to-end and per-stage latency, trtexec-style summary."""

from __future__ import annotations

import argparse
import json
from typing import Optional

import numpy as np

from ..errors import IFSegError
from ..fileio import ResultFolder, check_output_file, write_bytes
from .common import (
    add_segmenter_args,
    category_args,
    inference_preprocessing,
    load_segmenter,
    parse_imgsz,
    precision_options,
)
from .flags import flag_names


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "bench", help="measure latency per stage (preprocess, backbone, encoder, decoder, knn, upsample)"
    )
    add_segmenter_args(p, arch_option=True)
    p.add_argument("--source", help="image to time on (default: a random image of --source-size)")
    p.add_argument(
        "--source-size",
        default="512",
        help="random image size H,W or S for SxS (default: 512); resized to --imgsz like any image",
    )
    p.add_argument("--batch", type=int, default=1, help="images per forward pass (default: 1)")
    p.add_argument("--warmup", type=int, default=2, help="untimed iterations first (default: 2)")
    p.add_argument("--iters", type=int, default=10, help="timed iterations (default: 10)")
    p.add_argument("--num-classes", type=int, default=15, help="with --arch: number of classes (default: 15)")
    p.add_argument(
        "--prompt-len", type=int, default=40, help="with --arch: prompt tokens (default: 40, ~15 categories)"
    )
    p.add_argument(
        "--clients",
        type=int,
        default=1,
        help="with --server: concurrent clients, each with one request in flight (perf_analyzer's concurrency; "
        "default: 1)",
    )
    p.add_argument("--json", help="also write the report as JSON to this file")
    p.add_argument(
        "--compare",
        action="store_true",
        help="benchmark every installed backend x precision on the same model and image: one table, JSON (--json, "
        "default runs/bench/compare.json) and a PNG chart next to it; exports go to the JSON's folder",
    )
    return p


def source_image(args) -> np.ndarray:
    """``--source`` decoded, or a random RGB image of ``--source-size``."""
    from ..preprocess import read_image

    if args.source:
        return read_image(args.source)
    size = parse_imgsz(args.source_size, "--source-size")
    h, w = size * 2 if len(size) == 1 else size
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def run_compare(args, image: np.ndarray) -> int:
    """``bench --compare``: the table of :func:`ifseg_deploy.bench.compare.compare`."""
    import os

    from tqdm import tqdm

    from ..bench.compare import compare, write_chart, write_json
    from ..bench.synthetic import random_bundle
    from ..config import ofa_preset

    out = check_output_file(args.json or os.path.join("runs", "bench", "compare.json"), "json", "json")
    chart = check_output_file(os.path.splitext(out)[0] + ".png", "json", "png")
    models = ResultFolder(os.path.splitext(out)[0] + "_models", "json", kind="bench --compare models")
    source = args.checkpoint
    if args.engine:
        raise IFSegError(
            "bench --compare exports the model itself: pass --checkpoint (or --arch with --bpe-dir), not --engine"
        )
    if args.arch:
        if not args.bpe_dir:
            raise IFSegError("bench --compare --arch needs --bpe-dir (the exports are verified with real prompts)")
        cats = category_args(args)[0] or [f"class {i}" for i in range(args.num_classes)]
        source = random_bundle(
            ofa_preset(args.arch), models.file(f"random_{args.arch}.safetensors"), cats, args.bpe_dir
        )
    bar = tqdm(total=1, desc="bench --compare", unit="it")

    def progress(done: int, total: int, label: str) -> None:
        bar.total = total
        bar.set_postfix_str(label)
        bar.update(done - bar.n)

    report = compare(
        source,
        image,
        models.create(),
        category_args(args)[0],
        args.bpe_dir,
        args.device,
        args.imgsz,
        args.warmup,
        args.iters,
        progress=progress,
        knn_k=args.knn_k,
        knn_iters=args.knn_iters,
        knn_backend=args.knn_backend,
    )
    bar.close()
    print(flag_names(report.format()))  # row notes name parameters (device='cuda')
    write_json(report, out)
    write_chart(report, chart)
    print(f"Report saved to {out} and {chart}")
    return 0


def run(args) -> int:
    from ..bench.latency import run_benchmark
    from ..bench.synthetic import random_segmenter
    from ..config import ofa_preset

    if args.batch < 1 or args.iters < 1 or args.warmup < 0:
        raise IFSegError("--batch and --iters must be >= 1 and --warmup >= 0")
    if args.clients != 1 and not args.server:
        raise IFSegError("--clients needs --server (concurrent clients of a Triton server)")
    if args.json and not args.compare:
        check_output_file(args.json, "json", "json")
    image = source_image(args)
    if args.compare:
        return run_compare(args, image)
    if args.server:
        return run_server(args, image)
    if args.arch:
        if args.num_classes < 1 or args.prompt_len < 1:
            raise IFSegError("--num-classes and --prompt-len must be >= 1")
        knn = dict(knn_k=args.knn_k, knn_iters=args.knn_iters, knn_backend=args.knn_backend, window=args.window)
        precision, options = precision_options("torch", args)
        if args.imgsz is not None:
            knn["preprocessing"] = inference_preprocessing(args.imgsz)
        seg = random_segmenter(
            ofa_preset(args.arch), args.num_classes, args.prompt_len, args.device, precision, **options, **knn
        )
        label = f"random OFA-{args.arch}"
    else:
        seg = load_segmenter(args)
        label = args.checkpoint or args.engine
    print(
        f"Benchmarking {label} on {args.device}, {len(seg.categories)} classes, input {image.shape[0]}x{image.shape[1]}"
    )
    report = run_benchmark(
        seg,
        image,
        args.batch,
        args.warmup,
        args.iters,
        progress=lambda i, n, ms: print(f"  iteration {i}/{n}: {ms:.1f} ms", flush=True),
    )
    return _print_report(report, args.json)


def run_server(args, image: np.ndarray) -> int:
    """``bench --server``: ``--clients`` concurrent streams against a Triton server (perf_analyzer style)."""
    from ..bench.triton_load import run_server_benchmark
    from .common import server_segmenter

    first = server_segmenter(args, raw=False)
    print(
        f"Benchmarking {args.server} with {args.clients} concurrent client(s), {len(first.categories)} classes, "
        f"input {image.shape[0]}x{image.shape[1]}, batch {args.batch}"
    )
    spare = iter([first])  # the first connection reads the server statistics; each client thread opens its own
    report = run_server_benchmark(
        lambda: next(spare, None) or server_segmenter(args, raw=False),
        image,
        args.clients,
        args.batch,
        args.warmup,
        args.iters,
    )
    return _print_report(report, args.json)


def _print_report(report, json_path: Optional[str]) -> int:
    """Print ``report``'s summary and, with ``--json``, write its ``to_dict()`` there; the exit code."""
    print(report.format())
    if json_path:
        write_bytes(json_path, json.dumps(report.to_dict(), indent=2).encode(), "json")
        print(f"Report saved to {json_path}")
    return 0
