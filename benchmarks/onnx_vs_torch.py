"""Per-frame network time: ONNX Runtime vs PyTorch eager, OFA-tiny shapes, in one process.

Builds a randomly initialised SegOFA with the OFA-tiny shapes (ResNet-50 stages 1-3, 256 wide,
4+4 layers, 4 heads), exports it with ``ifseg-deploy``'s exporter (a static 512x512 graph with
folded position biases, and a dynamic graph), and times the network only (backbone + encoder +
decoder: no preprocessing, kNN or up-sampling) on a 512x512 and a 512x683 input. The backends
alternate within each round so that load from other programs hits them alike; the figure is the
median over rounds. On a CUDA machine PyTorch fp32/fp16 and ONNX Runtime's CUDA provider (when
onnxruntime-gpu is installed) are timed too.

    python3 benchmarks/onnx_vs_torch.py [--rounds 7] [--threads N] [--bpe-dir ../shared/bpe] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List

import torch

from ifseg_deploy.bench.synthetic import random_model
from ifseg_deploy.checkpoint import LoadedModel
from ifseg_deploy.config import ofa_preset
from ifseg_deploy.exporter.args import ExportArgs
from ifseg_deploy.exporter.onnx.writer import write_onnx
from ifseg_deploy.runtime.onnx_backend import OnnxBackend
from ifseg_deploy.runtime.sidecar import read_vocab
from ifseg_deploy.runtime.torch_backend import TorchBackend
from ifseg_deploy.runtime.vocabulary import Vocabulary
from ifseg_deploy.text.tokenizer import OFATokenizer

CATEGORIES = ["grass", "cat", "giraffe", "concrete wall"]
SHAPES = [(512, 512), (512, 683)]


def timed(fn: Callable[[], object], cuda: bool) -> float:
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1e3


def onnx_backend(path: str, providers: List[str], threads: int = 0) -> OnnxBackend:
    side = read_vocab(path)
    return OnnxBackend(path, side.contract, side.arch, providers, threads=threads)


def main(argv: List[str] = None) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--bpe-dir", default=os.path.join(here, "..", "..", "shared", "bpe"))
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = random_model(ofa_preset("tiny"))
    loaded = LoadedModel(model, "bundle", "ofa_tiny_random", CATEGORIES, None)
    vocab = Vocabulary(OFATokenizer(args.bpe_dir), model.embed_tokens.weight, loaded.prompt_prefix, CATEGORIES, None)
    prepared = vocab.prepare(CATEGORIES)
    work = tempfile.mkdtemp(prefix="onnx_vs_torch_")
    files = {}
    for name, dynamic in (("static", False), ("dynamic", True)):
        t0 = time.perf_counter()
        files[name] = write_onnx(
            loaded,
            os.path.join(work, f"{name}.onnx"),
            vocab,
            ExportArgs(
                categories=CATEGORIES,
                imgsz=min(SHAPES[0]),
                image_size=SHAPES[0],
                dynamic=dynamic or None,
                static=not dynamic,
                position_biases="graph",
            ),
        ).path
        print(
            f"exported {name} graph in {time.perf_counter() - t0:.1f} s ({os.path.getsize(files[name]) / 1e6:.0f} MB)",
            flush=True,
        )
    backends: Dict[str, object] = {
        "torch eager cpu fp32": TorchBackend(model, "cpu"),
        "onnxruntime cpu, static graph": onnx_backend(files["static"], ["cpu"], args.threads),
        "onnxruntime cpu, dynamic graph": onnx_backend(files["dynamic"], ["cpu"], args.threads),
    }
    if torch.cuda.is_available():
        import copy

        import onnxruntime as ort

        backends["torch eager cuda fp32"] = TorchBackend(copy.deepcopy(model), "cuda")
        backends["torch eager cuda fp16"] = TorchBackend(copy.deepcopy(model), "cuda", precision="fp16")
        if "CUDAExecutionProvider" in ort.get_available_providers():
            backends["onnxruntime cuda, dynamic graph"] = onnx_backend(files["dynamic"], ["cuda"])
    results = {}
    for h, w in SHAPES:
        images = torch.rand(1, 3, h, w) * 2 - 1
        runnable = {k: b for k, b in backends.items() if not (k.endswith("static graph") and (h, w) != SHAPES[0])}
        for b in runnable.values():  # warm-up (allocations, CUDA kernels, ORT arena)
            b.run(images, prepared.prompt_embeds, prepared.class_embeds)
        times: Dict[str, List[float]] = {k: [] for k in runnable}
        for _ in range(args.rounds):
            for k, b in runnable.items():
                times[k].append(
                    timed(lambda: b.run(images, prepared.prompt_embeds, prepared.class_embeds), "cuda" in k)
                )
        results[f"{h}x{w}"] = {k: statistics.median(v) for k, v in times.items()}
    cpu = f"{os.cpu_count()}-core CPU ({args.threads} threads)"
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    print(f"\nOFA-tiny shapes, network only, median of {args.rounds} rounds; {cpu}; GPU: {gpu}")
    for shape, row in results.items():
        base = row["torch eager cpu fp32"]
        print(f"  {shape}:")
        for k, ms in row.items():
            print(f"    {k:<34} {ms:8.1f} ms  ({base / ms:.2f}x torch cpu)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(
                {"machine": {"cpu": cpu, "gpu": gpu, "torch": torch.__version__}, "rounds": args.rounds, "ms": results},
                fh,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
