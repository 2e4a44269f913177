"""Measure the kNN-smoothing backends: neighbour search and the 25-step propagation.

Random ReLU-like features with 1024 channels (the ResNet's width) on the grids the model
produces: 32x32 (512x512 input), 32x43 (512x683), 64x64 (1024x1024), 96x128 (1536x2048).

Each backend runs in its own fresh process (faiss-cpu brings a second OpenMP/OpenBLAS thread
pool that keeps slowing torch's CPU work down after a search, so sharing a process would bias
the comparison), and the processes alternate for ``--rounds`` rounds so that load from other
programs hits every backend alike. Per grid: median over all timed runs of the search, of the
propagation that follows it in the same process, of their sum, and of a fixed torch workload run
right after (four 3x3 convolutions, 64 channels, 128x128: a stand-in for the next image's
network, which shows whether the backend's thread pools slow the rest of the pipeline); plus
the fraction of rows whose neighbour SET equals the torch backend's.

    python3 benchmarks/knn_backends.py [--rounds 3] [--repeats 3] [--classes 171] [--threads N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Tuple

import torch

GRIDS: List[Tuple[int, int]] = [(32, 32), (32, 43), (64, 64), (96, 128)]
CHANNELS = 1024


def features(grid: Tuple[int, int], classes: int, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """The same random features / probabilities in every process (fixed seed per grid)."""
    gen = torch.Generator().manual_seed(grid[0] * 1000 + grid[1])
    hw = grid[0] * grid[1]
    feats = torch.randn(1, hw, CHANNELS, generator=gen).clamp_min_(0)
    probs = torch.softmax(torch.randn(1, hw, classes, generator=gen), -1)
    return feats.to(device), probs.to(device)


def timed_ms(fn, device: torch.device) -> Tuple[float, object]:
    """Wall time of one call in milliseconds (CUDA work included) and its result."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) * 1e3, out


def next_image_stand_in(device: torch.device):
    """Fixed torch work that follows the kNN step in a pipeline (the next image's convolutions)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 64, 128, 128, generator=gen).to(device)
    w = (torch.randn(64, 64, 3, 3, generator=gen) * 0.05).to(device)

    def run() -> torch.Tensor:
        y = x
        for _ in range(4):
            y = torch.nn.functional.conv2d(y, w, padding=1).relu_()
        return y

    return run


def worker(backend: str, device_name: str, args) -> Dict[str, object]:
    """Time one backend on every grid (run in a fresh process); neighbours returned for checking."""
    from ifseg_deploy.postprocess.knn import neighbours_faiss, neighbours_torch, propagate

    search = neighbours_faiss if backend == "faiss" else neighbours_torch
    device = torch.device(device_name)
    next_op = next_image_stand_in(device)
    out: Dict[str, object] = {}
    for grid in GRIDS:
        feats, probs = features(grid, args.classes, device)
        nbr = search(feats, args.k)  # warm-up
        propagate(probs, nbr, args.iters)
        next_op()
        t_search, t_prop, t_next = [], [], []
        for _ in range(args.repeats):
            t, nbr = timed_ms(lambda: search(feats, args.k), device)
            t_search.append(t)
            t_prop.append(timed_ms(lambda: propagate(probs, nbr, args.iters), device)[0])
            t_next.append(timed_ms(next_op, device)[0])
        out[f"{grid[0]}x{grid[1]}"] = dict(
            search=t_search, propagate=t_prop, next=t_next, neighbours=nbr[0].cpu().sort(-1).values.tolist()
        )
    return out


def run_worker(backend: str, device: str, args) -> Dict[str, object]:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        backend,
        "--device",
        device,
        "--repeats",
        str(args.repeats),
        "--classes",
        str(args.classes),
        "--k",
        str(args.k),
        "--iters",
        str(args.iters),
    ]
    env = dict(os.environ)
    if args.threads:  # every thread pool in the worker: torch/MKL, faiss's OpenMP and OpenBLAS
        env.update({v: str(args.threads) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")})
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(proc.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of one process per backend (default: 3)")
    ap.add_argument(
        "--repeats", type=int, default=3, help="timed runs per grid in each process, after a warm-up (default: 3)"
    )
    ap.add_argument("--classes", type=int, default=171, help="classes in the propagated probabilities (default: 171)")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--iters", type=int, default=25)
    ap.add_argument("--threads", type=int, help="CPU threads per worker (default: the libraries' default, all cores)")
    ap.add_argument("--json", help="also write the table rows to this JSON file")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.device, args)))
        return

    from ifseg_deploy.postprocess.knn import faiss_available, faiss_gpu_available

    plan = [("cpu", "torch")] + ([("cpu", "faiss")] if faiss_available() else [])
    if torch.cuda.is_available():
        plan += [("cuda", "torch")] + ([("cuda", "faiss")] if faiss_gpu_available() else [])
    runs: Dict[Tuple[str, str], List[Dict[str, object]]] = {p: [] for p in plan}
    load = [os.getloadavg()[0]]
    for _ in range(args.rounds):
        for device, backend in plan:
            runs[(device, backend)].append(run_worker(backend, device, args))
    load.append(os.getloadavg()[0])

    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, {args.threads or 'default'} threads; k={args.k}, "
        f"iters={args.iters}, {args.classes} classes, {CHANNELS} channels; "
        f"median of {args.rounds} processes x {args.repeats} runs; 1-min load average {load[0]:.1f} -> {load[1]:.1f}"
    )
    cols = (
        "device",
        "grid",
        "cells",
        "backend",
        "search_ms",
        "propagate_ms",
        "total_ms",
        "next_op_ms",
        "same_sets_as_torch",
    )
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    rows = []
    for device, backend in plan:
        for h, w in GRIDS:
            key = f"{h}x{w}"
            res = runs[(device, backend)]
            search = [t for r in res for t in r[key]["search"]]
            prop = [t for r in res for t in r[key]["propagate"]]
            total = [s + p for r in res for s, p in zip(r[key]["search"], r[key]["propagate"])]
            ref = torch.tensor(runs[(device, "torch")][0][key]["neighbours"])
            same = (torch.tensor(res[0][key]["neighbours"]) == ref).all(-1).float().mean().item()
            row = dict(
                device=device,
                grid=key,
                cells=h * w,
                backend=backend,
                search_ms=round(statistics.median(search), 1),
                propagate_ms=round(statistics.median(prop), 1),
                total_ms=round(statistics.median(total), 1),
                next_op_ms=round(statistics.median([t for r in res for t in r[key]["next"]]), 1),
                same_sets_as_torch=round(same, 5),
            )
            rows.append(row)
            print("| " + " | ".join(str(row[c]) for c in cols) + " |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
