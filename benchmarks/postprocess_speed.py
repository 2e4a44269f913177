"""Post-processing and pre-processing speed at one image size, old and new side by side.

* up-sampling + argmax: ``dense`` (``F.interpolate`` of every class, then argmax: the reference's
  rule) against ``cells`` (the CPU default, :mod:`ifseg_deploy.postprocess.upsample`), on scores
  shaped like a segmentation (a few classes in large regions, soft borders, noise; softmax
  probabilities as after kNN) and on pure noise (the worst case), for several class counts; the
  labels of both are compared pixel for pixel;
* kNN smoothing (exact torch search + 25 propagation steps) on the image's grid;
* pre-processing: the OpenCV / NumPy path against the torch path (:func:`ifseg_deploy.preprocess.preprocess_tensor`).

Runs alternate between the methods (``--rounds``), so load from other programs hits both alike;
the table shows the median milliseconds and their ratio: wall clock with ``--threads`` torch
threads, or with ``--clock cpu`` the CPU time of one thread (torch set to one thread), which a
machine shared with other programs disturbs far less than the wall clock.

    python3 benchmarks/postprocess_speed.py [--size 480x640] [--classes 3,20,150] [--rounds 7] [--clock wall|cpu]
        [--threads N] [--device cpu] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ifseg_deploy.fileio import write_bytes
from ifseg_deploy.model import grid_size
from ifseg_deploy.postprocess.knn import knn_smooth
from ifseg_deploy.postprocess.upsample import upsample_argmax
from ifseg_deploy.preprocess import preprocess, preprocess_tensor, resized_shape


def segmentation_scores(n: int, grid: Tuple[int, int], seed: int, present: int = 6) -> torch.Tensor:
    """``(1, h*w, N)`` softmax probabilities: ``present`` classes in regions of a 4x5 layout, soft borders, noise."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, min(present, n), (1, 1, 4, 5), generator=gen)
    classes = torch.randperm(n, generator=gen)[: min(present, n)]
    onehot = torch.zeros(1, n, 4, 5).scatter_(1, classes[coarse], 1.0)
    logits = F.interpolate(onehot, size=grid, mode="bicubic", align_corners=False) * 8
    logits = logits + 0.3 * torch.randn(1, n, *grid, generator=gen)
    return logits.softmax(1).flatten(2).transpose(1, 2).contiguous()


def noise_scores(n: int, grid: Tuple[int, int], seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(1, grid[0] * grid[1], n, generator=gen).softmax(-1)


#: The clock of :func:`timed_ms`: ``time.perf_counter`` (wall) or ``time.thread_time`` (``--clock cpu``).
CLOCK = {"wall": time.perf_counter, "cpu": time.thread_time}
clock = time.perf_counter


def timed_ms(fn: Callable[[], object], device: torch.device) -> Tuple[float, object]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = clock()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (clock() - t0) * 1e3, out


def side_by_side(fns: Dict[str, Callable[[], object]], rounds: int, device: torch.device) -> Dict[str, object]:
    """Median ms of each function, runs alternating; plus each one's last output."""
    times: Dict[str, List[float]] = {k: [] for k in fns}
    outs: Dict[str, object] = {}
    for name, fn in fns.items():  # warm-up
        fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            ms, outs[name] = timed_ms(fn, device)
            times[name].append(ms)
    return {"ms": {k: statistics.median(v) for k, v in times.items()}, "outputs": outs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="480x640", help="original image HxW")
    ap.add_argument("--classes", default="3,20,150")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--clock", choices=sorted(CLOCK), default="wall")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    global clock
    clock = CLOCK[args.clock]
    if args.clock == "cpu":
        if args.device != "cpu":
            ap.error("--clock cpu measures CPU work: use it with --device cpu")
        args.threads = 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    height, width = (int(v) for v in args.size.lower().split("x"))
    resized = resized_shape(height, width)
    grid = grid_size(*resized)
    print(
        f"image {height}x{width} -> input {resized[0]}x{resized[1]}, grid {grid[0]}x{grid[1]}; device {device}, "
        f"{torch.get_num_threads()} threads, {args.clock} clock, median of {args.rounds} alternating runs"
    )
    results: Dict[str, object] = {
        "size": [height, width],
        "grid": list(grid),
        "threads": torch.get_num_threads(),
        "clock": args.clock,
    }

    rows = []
    print(f"\n{'up-sampling + argmax':<28}{'N':>5}{'dense ms':>10}{'cells ms':>10}{'speed-up':>10}{'labels equal':>14}")
    for n in (int(c) for c in args.classes.split(",")):
        for kind, make in (("segmentation", segmentation_scores), ("noise", noise_scores)):
            scores = make(n, grid, seed=n).to(device)
            res = side_by_side(
                {
                    "dense": lambda: upsample_argmax(scores, grid, (height, width), method="dense"),
                    "cells": lambda: upsample_argmax(scores, grid, (height, width), method="cells"),
                },
                args.rounds,
                device,
            )
            ms, outs = res["ms"], res["outputs"]
            equal = float((outs["dense"] == outs["cells"]).float().mean())
            rows.append({"scores": kind, "classes": n, **{f"{k}_ms": v for k, v in ms.items()}, "labels_equal": equal})
            print(
                f"{kind:<28}{n:>5}{ms['dense']:>10.1f}{ms['cells']:>10.1f}{ms['dense'] / ms['cells']:>9.1f}x"
                f"{100 * equal:>13.4f}%"
            )
    results["upsample"] = rows

    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(1, grid[0] * grid[1], 1024, generator=gen).clamp_min_(0).to(device)
    probs = segmentation_scores(20, grid, seed=1).to(device)
    knn = side_by_side({"knn": lambda: knn_smooth(probs, feats, 3, 25, backend="torch")}, args.rounds, device)
    print(f"\nkNN smoothing (torch search, k=3, 25 steps, N=20): {knn['ms']['knn']:.1f} ms")
    results["knn_ms"] = knn["ms"]["knn"]

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    frame = torch.from_numpy(image).to(device)
    pre = side_by_side(
        {"opencv": lambda: preprocess(image), "torch": lambda: preprocess_tensor(frame)}, args.rounds, device
    )
    diff = float((pre["outputs"]["opencv"].to(device) - pre["outputs"]["torch"]).abs().max()) * 127.5
    print(
        f"pre-processing: OpenCV/NumPy {pre['ms']['opencv']:.1f} ms, torch on {device} {pre['ms']['torch']:.1f} ms "
        f"(largest difference {diff:.2f} uint8 levels)"
    )
    results["preprocess_ms"] = dict(pre["ms"], max_level_difference=diff)
    if args.json:
        write_bytes(args.json, (json.dumps(results, indent=2) + "\n").encode())


if __name__ == "__main__":
    main()
