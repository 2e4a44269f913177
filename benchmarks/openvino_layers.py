"""Where OpenVINO's CPU plugin spends a frame: per-layer times of exported IRs, grouped by layer type and
kernel, side by side.

Each IR runs through the project's backend (:func:`ifseg_deploy.runtime.loader.load`) on one 512x512
input with the IR's own vocabulary, with OpenVINO's per-layer counters on (``PERF_COUNT``); after
``--warmup`` runs, the fastest of ``--runs`` is kept. The table gives, per IR, the milliseconds of
each (layer type, kernel) group, e.g. ``Convolution jit_avx2_1x1_I8`` (an int8 kernel) against
``Convolution brgconv_avx2_1x1_f32``, and the wall time of the run. OpenVINO fuses an attention block it
can into one ``Subgraph`` layer; a block it cannot fuse shows as ``MatMul``, ``Softmax`` and ``Add``.

    python3 benchmarks/openvino_layers.py IR [IR ...] [--top 12] [--runs 5] [--json out.json]

Make the IRs with ``ifseg-deploy export --format openvino ...`` or ``benchmarks/cpu_targets.py --work DIR``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import time
from typing import Dict, List, Optional, Tuple

import torch

from ifseg_deploy.bench.compare import machine_info
from ifseg_deploy.bench.synthetic import CATEGORIES
from ifseg_deploy.fileio import write_bytes
from ifseg_deploy.runtime import openvino_core
from ifseg_deploy.runtime.loader import load


def profile(path: str, bpe_dir: Optional[str], warmup: int, runs: int) -> Tuple[float, Dict[Tuple[str, str], float]]:
    """(wall ms of the fastest run, (layer type, kernel) -> ms in that run) of the IR at ``path``."""
    runtime = load(path, device="cpu", bpe_dir=bpe_dir, precision="fp32")
    vocab = runtime.vocabulary.prepare(CATEGORIES)
    images = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(0)) * 2 - 1
    backend = runtime.backend
    for _ in range(warmup):
        backend.run(images, vocab.prompt_embeds, vocab.class_embeds)
    best: Optional[Tuple[float, list]] = None
    for _ in range(runs):
        t0 = time.perf_counter()
        backend.run(images, vocab.prompt_embeds, vocab.class_embeds)
        wall = (time.perf_counter() - t0) * 1e3
        if best is None or wall < best[0]:
            best = (wall, backend.request.profiling_info)
    groups: Dict[Tuple[str, str], float] = collections.Counter()
    for layer in best[1]:
        groups[(layer.node_type, layer.exec_type)] += layer.real_time.total_seconds() * 1e3
    return best[0], dict(groups)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("irs", nargs="+", help="IR folders or .xml files")
    parser.add_argument("--bpe-dir", help="BPE files, where an IR's bundle needs them")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--top", type=int, default=12, help="groups shown per IR (default 12)")
    parser.add_argument("--json", help="also write the groups of every IR here")
    args = parser.parse_args(argv)
    openvino_core.core().set_property("CPU", {"PERF_COUNT": True})
    info = machine_info()
    print(f"{info['cpu']}, load average {os.getloadavg()[0]:.1f}", flush=True)
    report = {"machine": info, "irs": {}}
    for path in args.irs:
        wall, groups = profile(path, args.bpe_dir, args.warmup, args.runs)
        total = sum(groups.values())
        print(f"\n{path}: {wall:.0f} ms wall, {total:.0f} ms in layers")
        for (kind, kernel), ms in sorted(groups.items(), key=lambda g: -g[1])[: args.top]:
            print(f"  {kind:30s} {kernel:28s} {ms:7.1f} ms  {100 * ms / total:4.1f}%")
        report["irs"][path] = {"wall_ms": wall, "groups": [[k, e, ms] for (k, e), ms in groups.items()]}
    if args.json:
        write_bytes(args.json, json.dumps(report, indent=1).encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
