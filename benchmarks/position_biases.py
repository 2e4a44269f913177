"""What a new input size costs: the shape-only position biases, in PyTorch and in exported graphs.

1. PyTorch: ``SegOFA.position_biases`` for input sizes the model has not seen (the first frame of a
   new size; later frames reuse them), OFA-tiny / OFA-base shapes, random weights, 15-category
   prompt. Run it once per source tree to compare two versions of the code.
2. ONNX Runtime, OFA-tiny, 640x480 camera frame (pre-processed to 512x683): a dynamic graph that
   computes its biases on every run (``--position-biases graph``), one that takes them as inputs
   (``inputs``, the default: computed once per shape by the runtime), and a static 512x683 graph
   (biases folded into constants). Backends alternate within each round; medians over rounds.

    python3 benchmarks/position_biases.py [--archs tiny base] [--rounds 5] [--skip-onnx] [--bpe-dir ../shared/bpe]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch

from ifseg_deploy.bench.compare import machine_info
from ifseg_deploy.bench.synthetic import CATEGORIES, random_bundle, random_model
from ifseg_deploy.config import ofa_preset

NEW_SIZES = [(32, 43), (43, 32), (30, 40), (20, 27)]  # grids of 512x683, 683x512, 480x640 and 320x427 inputs
PROMPT_LEN = 36  # the prompt of the 15 categories above


def torch_new_sizes(arch: str) -> None:
    model = random_model(ofa_preset(arch))
    with torch.inference_mode():
        model.position_biases((32, 32), PROMPT_LEN)  # warm-up (allocator, kernels)
        for size in NEW_SIZES:
            t = time.perf_counter()
            model.position_biases(size, PROMPT_LEN)
            ms = (time.perf_counter() - t) * 1e3
            print(f"PyTorch OFA-{arch}: first frame at grid {size[0]}x{size[1]}: position biases {ms:.0f} ms")


def onnx_runtime(rounds: int, bpe_dir: str) -> None:
    from ifseg_deploy.exporter.api import export_model
    from ifseg_deploy.exporter.args import ExportArgs
    from ifseg_deploy.runtime.onnx_backend import OnnxBackend
    from ifseg_deploy.runtime.vocabulary import Vocabulary
    from ifseg_deploy.text.tokenizer import OFATokenizer

    with tempfile.TemporaryDirectory() as tmp:
        bundle = random_bundle(ofa_preset("tiny"), os.path.join(tmp, "tiny.safetensors"), CATEGORIES, bpe_dir)
        variants = {
            "dynamic, biases in the graph": dict(position_biases="graph"),
            "dynamic, biases as inputs": dict(position_biases="inputs"),
            "static 512x683": dict(imgsz=(512, 683)),
        }
        backends = {}
        for i, (name, kw) in enumerate(variants.items()):
            out = os.path.join(tmp, f"v{i}.onnx")
            export_model(bundle, ExportArgs(out=out, bpe_dir=bpe_dir, **kw))
            backends[name], info = OnnxBackend.open(out, device="cpu")
        vocab = Vocabulary(OFATokenizer(bpe_dir), info.embed_table).prepare(CATEGORIES)
        images = torch.rand(1, 3, 512, 683) * 2 - 1
        first = {}
        for name, backend in backends.items():
            t = time.perf_counter()
            backend.run(images, vocab.prompt_embeds, vocab.class_embeds)
            first[name] = (time.perf_counter() - t) * 1e3
        times = {name: [] for name in backends}
        for _ in range(rounds):
            for name, backend in backends.items():
                t = time.perf_counter()
                backend.run(images, vocab.prompt_embeds, vocab.class_embeds)
                times[name].append((time.perf_counter() - t) * 1e3)
        base = statistics.median(times["static 512x683"])
        print(f"\nONNX Runtime CPU, OFA-tiny, 512x683 input, {rounds} alternating rounds (median):")
        print(f"{'graph':<32}{'first run ms':>14}{'per frame ms':>14}{'vs static':>11}")
        for name in backends:
            med = statistics.median(times[name])
            print(f"{name:<32}{first[name]:>14.0f}{med:>14.0f}{med / base:>10.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", nargs="+", default=["tiny", "base"])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--skip-onnx", action="store_true")
    p.add_argument("--bpe-dir", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "bpe"))
    args = p.parse_args()
    info = machine_info()
    print(f"CPU: {info['cpu']}, {info['threads']} threads, torch {info['torch']}")
    for arch in args.archs:
        torch_new_sizes(arch)
    if not args.skip_onnx:
        onnx_runtime(args.rounds, args.bpe_dir)


if __name__ == "__main__":
    main()
