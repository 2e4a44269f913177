"""Every CPU backend side by side in one process: OFA-tiny / OFA-base shapes, random weights.

For each size: a random bundle (``ifseg_deploy.compare.random_bundle``, 15 categories), its
exports (dynamic and static 512x512 ONNX, OpenVINO IR with fp32 and fp16 weights), and every
backend x precision loaded at once. Network only (backbone + encoder + decoder) on a 512x512
input and end to end (decode-free pre-processing, network, 25 kNN steps, up-sampling) on a
640x480 frame; the backends alternate within each round so that load from other programs hits
them alike; figures are medians over rounds. The logits of each backend are compared with
PyTorch fp32 on the same input (relative RMS, grid label agreement). The matrix-product peak of
this CPU (a 4096^3 fp32 and bf16 ``torch.mm``) is measured in the same process, and each row's
arithmetic rate (the fp32 model's FLOP count from ``torch.utils.flop_counter``) is given as a
fraction of it.

    python3 benchmarks/cpu_targets.py [--archs tiny base] [--rounds 5] [--compile] [--bpe-dir ../shared/bpe] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch

from ifseg_deploy.compare import machine_info, random_bundle
from ifseg_deploy.config import ofa_preset
from ifseg_deploy.export.api import ExportConfig, export_model
from ifseg_deploy.model import SegOFA
from ifseg_deploy.runtime.loader import load
from ifseg_deploy.runtime.segmenter import Segmenter
from ifseg_deploy.runtime.torch_backend import cpu_has_bf16

CATEGORIES = ["sky", "tree", "grass", "road", "building", "person", "car", "dog", "cat", "water", "mountain", "floor",
              "wall", "table", "chair"]


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def matmul_peak(dtype: torch.dtype, n: int = 4096, repeats: int = 5) -> float:
    """GFLOP/s of an ``n x n x n`` ``torch.mm`` in ``dtype`` (best of ``repeats``)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    return 2 * n**3 / min(timed(lambda: torch.mm(a, b)) for _ in range(repeats)) / 1e6


def model_gflop(arch: str, images: torch.Tensor, prompt: torch.Tensor, classes: torch.Tensor) -> float:
    """GFLOP of one forward of the fp32 model (``torch.utils.flop_counter``; a fresh module in
    autograd mode, as the counter's module tracker needs)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = SegOFA(ofa_preset(arch)).eval()
    with FlopCounterMode(display=False) as counter:
        model(images, prompt.clone(), classes.clone())
    return counter.get_total_flops() / 1e9


def variants(bundle: str, work: str, compile_: bool, static: bool) -> Dict[str, Tuple[str, dict]]:
    """name -> (model path, backend options); exports are made here."""
    stem = os.path.join(work, os.path.splitext(os.path.basename(bundle))[0])
    out = {"PyTorch fp32": (bundle, {"precision": "fp32"})}
    if cpu_has_bf16():
        out["PyTorch bf16"] = (bundle, {"precision": "bf16"})
        if compile_:
            out["PyTorch bf16 + compile"] = (bundle, {"precision": "bf16", "compile": True})
    exports = {"dynamic.onnx": dict(format="onnx"), "static.onnx": dict(format="onnx", static=True),
               "fp32_openvino": dict(format="openvino", precision="fp32"), "fp16_openvino": dict(format="openvino", precision="fp16")}
    if not static:
        del exports["static.onnx"]
    files = {}
    for suffix, settings in exports.items():
        t0 = time.perf_counter()
        files[suffix] = f"{stem}_{suffix}"
        if os.path.exists(files[suffix]):  # kept from an earlier run with the same --work
            continue
        export_model(bundle, ExportConfig(out=files[suffix], categories=CATEGORIES, bpe_dir=BPE, **settings))
        print(f"  exported {suffix} in {time.perf_counter() - t0:.0f} s", flush=True)
    out["ONNX Runtime fp32, dynamic graph"] = (files["dynamic.onnx"], {})
    if static:
        out["ONNX Runtime fp32, static graph"] = (files["static.onnx"], {})
    out["OpenVINO fp32"] = (files["fp32_openvino"], {"precision": "fp32"})
    out["OpenVINO fp32, fp16 weights"] = (files["fp16_openvino"], {"precision": "fp32"})
    if cpu_has_bf16():
        out["OpenVINO bf16"] = (files["fp32_openvino"], {"precision": "bf16"})
    return out


def measure(arch: str, work: str, rounds: int, compile_: bool, static: bool, export_only: bool = False) -> dict:
    print(f"OFA-{arch}: building the random bundle and its exports", flush=True)
    bundle = os.path.join(work, f"ofa_{arch}_random.safetensors")
    if not os.path.isfile(bundle):
        random_bundle(ofa_preset(arch), bundle, CATEGORIES, BPE)
    rows = variants(bundle, work, compile_, static)
    if export_only:
        return {}
    runtimes = {name: load(path, device="cpu", bpe_dir=BPE, **options) for name, (path, options) in rows.items()}
    vocab = next(iter(runtimes.values())).vocabulary.prepare(CATEGORIES)
    images = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(0)) * 2 - 1
    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    gflop = model_gflop(arch, images, vocab.prompt_embeds, vocab.class_embeds)
    # end to end only where the graph takes the 640x480 frame's 512x683 input (not the static 512x512 graph)
    segmenters = {name: Segmenter(rt.backend, rt.vocabulary, CATEGORIES, preprocessing=rt.preprocessing) for name, rt in runtimes.items()
                  if rt.backend.capabilities.image_size is None}
    first_ms, logits = {}, {}
    for name, rt in runtimes.items():  # warm-up: the first run of a shape (compilation, biases, arenas)
        first_ms[name] = timed(lambda: logits.__setitem__(name, rt.backend.run(images, vocab.prompt_embeds, vocab.class_embeds).logits))
        if name in segmenters:
            segmenters[name].segment(frame)
    net: Dict[str, List[float]] = {k: [] for k in runtimes}
    e2e: Dict[str, List[float]] = {k: [] for k in runtimes}
    for r in range(rounds):
        for name, rt in runtimes.items():
            net[name].append(timed(lambda: rt.backend.run(images, vocab.prompt_embeds, vocab.class_embeds)))
            if name in segmenters:
                e2e[name].append(timed(lambda: segmenters[name].segment(frame)))
        print(f"  round {r + 1}/{rounds} done", flush=True)
    ref = logits["PyTorch fp32"].double()
    table = {}
    for name in runtimes:
        out = logits[name].double()
        ms = statistics.median(net[name])
        e2e_ms = statistics.median(e2e[name]) if e2e[name] else None
        table[name] = {
            "network_ms": ms, "first_run_ms": first_ms[name], "end_to_end_ms": e2e_ms,
            "end_to_end_fps": 1000.0 / e2e_ms if e2e_ms else None, "speedup": statistics.median(net["PyTorch fp32"]) / ms,
            "gflops": gflop / ms * 1e3, "logits_rel_rms": float((out - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt()),
            "grid_label_agreement": float((out.argmax(-1) == ref.argmax(-1)).double().mean()),
        }
    return {"gflop_per_frame": gflop, "rows": table}


def main(argv: List[str] = None) -> int:
    global BPE
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["tiny", "base"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--static-archs", nargs="*", default=["tiny"],
                        help="sizes that also get a static 512x512 ONNX graph (default: tiny; OFA-base's export ran out of the 23 GB of the test machine)")
    parser.add_argument("--compile", action="store_true", help="also time PyTorch bf16 + torch.compile")
    parser.add_argument("--bpe-dir", default=os.path.join(here, "..", "..", "shared", "bpe"))
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--work", help="folder for the bundles and exports, reused by later runs (default: a temporary one)")
    parser.add_argument("--export-only", action="store_true", help="make the bundles and exports in --work, time nothing")
    args = parser.parse_args(argv)
    BPE = args.bpe_dir
    load_before = os.getloadavg()
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"matmul peak: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s", flush=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="cpu_targets_") as tmp:
        work = args.work or tmp
        os.makedirs(work, exist_ok=True)
        for arch in args.archs:
            results[arch] = measure(arch, work, args.rounds, args.compile, arch in args.static_archs, args.export_only)
    if args.export_only:
        return 0
    machine = dict(machine_info(), load_before=load_before, load_after=os.getloadavg(), matmul_peak_gflops=peaks)
    print(f"\n{machine['cpu']}, {machine['threads']} threads, load average {load_before[0]:.1f} -> {machine['load_after'][0]:.1f}; "
          f"matmul peak fp32 {peaks['fp32']:.0f} / bf16 {peaks['bf16']:.0f} GFLOP/s")
    for arch, res in results.items():
        print(f"\nOFA-{arch} ({res['gflop_per_frame']:.0f} GFLOP per 512x512 frame), median of {args.rounds} alternating rounds")
        print(f"  {'backend':<34}{'net ms':>9}{'speed-up':>9}{'GFLOP/s':>9}{'% peak':>8}{'1st run ms':>11}{'e2e FPS':>9}{'rel-RMS':>10}{'grid agree':>11}")
        for name, row in res["rows"].items():
            peak = peaks["bf16" if "bf16" in name else "fp32"]
            print(f"  {name:<34}{row['network_ms']:>9.0f}{row['speedup']:>8.2f}x{row['gflops']:>9.0f}{100 * row['gflops'] / peak:>7.0f}%"
                  f"{row['first_run_ms']:>11.0f}{row['end_to_end_fps'] or float('nan'):>9.2f}{row['logits_rel_rms']:>10.1e}{100 * row['grid_label_agreement']:>10.1f}%")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"machine": machine, "rounds": args.rounds, "results": results}, fh, indent=2)
    return 0


BPE = ""

if __name__ == "__main__":
    sys.exit(main())
