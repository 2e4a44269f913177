"""Streaming benchmark (not a test): pipelined vs sequential throughput, label flicker with and without
``--temporal``, and resident memory over a long run.

Videos are made here from ``shared/media/cat_dog.jpeg``: a *still* one (the same view with camera-like
noise) and a *panning* one (the view moves sideways a few pixels per frame, with noise). Flicker is
the fraction of pixels whose label changes between consecutive frames; on the panning video the
previous labels are first shifted by the known motion, so only real changes of mind count.

    PYTHONPATH=. python3 benchmarks/stream_pipeline.py --json stream_bench.json

Models: throughput with random OFA-tiny weights (``--arch tiny``, 15 classes); flicker with the
``dev`` conformance checkpoint (the reference code's model with random weights, 4 classes, whose
labels do vary over the photo); both at a 256-pixel short side. ``--checkpoint`` measures a real
model for both instead.

OpenMP threads busy-wait by default; on a shared machine that wasted 2-4x the CPU time in the
sequential loop, so this script runs with ``OMP_WAIT_POLICY=PASSIVE`` unless it is set.
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before OpenMP starts (torch import)

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from ifseg_deploy.bench.synthetic import random_segmenter  # noqa: E402
from ifseg_deploy.config import ArchConfig, ofa_preset  # noqa: E402
from ifseg_deploy.preprocess import Preprocessing  # noqa: E402
from ifseg_deploy.runtime.segmenter import Segmenter  # noqa: E402
from ifseg_deploy.stream import OutputOptions, Stream, TemporalSmoother, run_stream  # noqa: E402

SHARED = Path(os.environ.get("IFSEG_SHARED", Path(__file__).resolve().parents[2] / "shared"))
IMAGE = SHARED / "media" / "cat_dog.jpeg"
SIZE = (640, 480)  # video frame (width, height): a common camera mode
PAN_PX = 4  # panning speed, pixels per frame


def make_video(path: str, frames: int, pan: int, noise: float = 4.0, seed: int = 0) -> str:
    """MJPEG AVI of ``frames`` views of the photo scaled to the frame height, moving ``pan`` px per frame."""
    photo = cv2.imread(str(IMAGE))
    scale = SIZE[1] / photo.shape[0]
    photo = cv2.resize(photo, (int(photo.shape[1] * scale), SIZE[1]), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(seed)
    w = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 25, SIZE)
    for i in range(frames):
        x = (i * pan) % (photo.shape[1] - SIZE[0])
        view = photo[:, x : x + SIZE[0]].astype(np.float32) + rng.normal(0, noise, (SIZE[1], SIZE[0], 3))
        w.write(np.clip(view, 0, 255).astype(np.uint8))
    w.release()
    return path


def throughput(seg: Segmenter, video: str, pipelined: bool, out: str) -> dict:
    """Full ``stream --save`` work (decode, segment, draw, H.264 encode) in one mode, with its CPU time.

    Both modes run off the main thread: on a loaded machine PyTorch spent 2-3x the CPU time on the
    same network in the main thread as in a worker thread, which would flatter the pipelined mode.
    """
    box = {}

    def work():
        c0 = time.process_time()
        stream = Stream(seg, video, pipelined=pipelined)
        box["summary"] = run_stream(stream, OutputOptions(save=out, progress=False))
        box["cpu"] = time.process_time() - c0

    t = threading.Thread(target=work)
    t.start()
    t.join()
    s = box["summary"]
    return {
        "fps": round(s.fps, 2),
        "latency_ms": {k: round(v, 1) for k, v in s.latency().items()},
        "frames": s.processed,
        "cpu_s_per_frame": round(box["cpu"] / s.processed, 3),
    }


def flicker(seg: Segmenter, video: str, temporal: bool, pan: int) -> dict:
    """Label flicker (motion-compensated for ``pan``) and the smoother's cost per frame."""
    smoother = TemporalSmoother() if temporal else None
    cost = []
    if smoother is not None:
        call = smoother.__call__

        class Timed(TemporalSmoother):
            def __call__(self, probs, features):
                t0 = time.perf_counter()
                out = call(probs, features)
                cost.append((time.perf_counter() - t0) * 1e3)
                return out

        smoother.__class__ = Timed
    labels = [r.labels for _, r in Stream(seg, video, temporal=smoother or False)]
    changed = []
    for prev, cur in zip(labels, labels[1:]):
        a, b = (prev[:, pan:], cur[:, : cur.shape[1] - pan]) if pan else (prev, cur)
        changed.append(float((a != b).mean()))
    return {
        "flicker": round(statistics.mean(changed), 4),
        "labels": labels,
        "cost_ms": round(statistics.median(cost), 3) if cost else 0.0,
    }


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS")) / 1024


def long_run(folder: str, frames: int) -> dict:
    """``frames`` frames through the whole loop (H.264 + JSON Lines outputs) with a small model at a
    64-pixel input; RSS sampled every 0.5 s against the frames processed so far."""
    arch = ArchConfig(embed_dim=32, ffn_dim=64, encoder_layers=1, decoder_layers=1, heads=2, resnet_blocks=(1, 1, 1))
    seg = random_segmenter(
        arch, num_classes=5, prompt_len=12, device="cpu", knn_iters=2, preprocessing=Preprocessing(64, 256)
    )
    video = os.path.join(folder, "long.avi")
    w = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"MJPG"), 25, (96, 64))
    rng = np.random.default_rng(0)
    for _ in range(frames):
        w.write(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8))
    w.release()
    stream = Stream(seg, video, temporal=True)
    samples, done = [], threading.Event()

    def sample():
        while not done.wait(0.5):
            samples.append((stream.summary.processed, rss_mb()))

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    s = run_stream(
        stream,
        OutputOptions(
            save=os.path.join(folder, "long.mp4"), save_json=os.path.join(folder, "long.jsonl"), progress=False
        ),
    )
    done.set()
    t.join()
    warm = [mb for n, mb in samples if n >= frames // 10]
    return {
        "frames": s.processed,
        "fps": round(s.fps, 1),
        "rss_mb_after_warmup": {
            "first": round(warm[0], 1),
            "last": round(warm[-1], 1),
            "min": round(min(warm), 1),
            "max": round(max(warm), 1),
        },
        "rss_samples": [(n, round(mb, 1)) for n, mb in samples[:: max(1, len(samples) // 20)]],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="a real model (default: random OFA weights of --arch)")
    p.add_argument("--bpe-dir")
    p.add_argument("--arch", default="tiny")
    p.add_argument("--short-side", type=int, default=256, help="model input short side (default: 256)")
    p.add_argument("--frames", type=int, default=60, help="frames of the still / panning videos")
    p.add_argument("--long-frames", type=int, default=10_000, help="frames of the memory run (0 skips it)")
    p.add_argument("--repeat", type=int, default=3, help="alternated sequential / pipelined runs (default: 3)")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args()
    knn = dict(knn_iters=25, preprocessing=Preprocessing.short_side_rule(args.short_side))
    report = {"short_side": args.short_side, "frame_size": list(SIZE), "OMP_WAIT_POLICY": os.environ["OMP_WAIT_POLICY"]}
    with tempfile.TemporaryDirectory() as folder:
        if args.checkpoint:
            seg = flicker_seg = Segmenter.load(args.checkpoint, bpe_dir=args.bpe_dir, **knn, device="cpu")
            report["model"] = report["flicker_model"] = args.checkpoint
        else:
            seg = random_segmenter(ofa_preset(args.arch), num_classes=15, prompt_len=40, device="cpu", **knn)
            dev = os.path.join(folder, "dev.pt")
            with lzma.open(SHARED / "fixtures" / "dev" / "checkpoint.pt.xz") as src, open(dev, "wb") as dst:
                shutil.copyfileobj(src, dst)
            flicker_seg = Segmenter.load(dev, bpe_dir=args.bpe_dir or str(SHARED / "bpe"), **knn, device="cpu")
            report["model"], report["flicker_model"] = (
                f"random OFA-{args.arch}, 15 classes",
                "dev fixture (random weights, 4 classes)",
            )
        still = make_video(os.path.join(folder, "still.avi"), args.frames, 0)
        pan = make_video(os.path.join(folder, "pan.avi"), args.frames, PAN_PX)
        runs = {False: [], True: []}
        for _ in range(args.repeat):  # alternated, best of each: the machine may be shared
            for pipelined in (False, True):
                runs[pipelined].append(throughput(seg, still, pipelined, os.path.join(folder, "t.mp4")))
        seq, par = (max(runs[m], key=lambda r: r["fps"]) for m in (False, True))
        report["throughput"] = {"sequential": seq, "pipelined": par, "speed_up": round(par["fps"] / seq["fps"], 2)}
        print(
            f"sequential {seq['fps']} FPS, pipelined {par['fps']} FPS (x{report['throughput']['speed_up']})", flush=True
        )
        for name, video, shift in (("still", still, 0), ("panning", pan, PAN_PX)):
            off, on = flicker(flicker_seg, video, False, shift), flicker(flicker_seg, video, True, shift)
            agree = statistics.mean(float((a == b).mean()) for a, b in zip(off.pop("labels"), on.pop("labels")))
            report[f"flicker_{name}"] = {"off": off, "temporal": on, "agreement_with_off": round(agree, 4)}
            print(
                f"flicker {name}: off {off['flicker']:.4f}, temporal {on['flicker']:.4f} "
                f"(cost {on['cost_ms']} ms/frame, {agree:.3f} of pixels as without)",
                flush=True,
            )
        if args.long_frames:
            report["long_run"] = long_run(folder, args.long_frames)
            lr = report["long_run"]
            print(
                f"long run: {lr['frames']} frames at {lr['fps']} FPS, RSS after warm-up {lr['rss_mb_after_warmup']}",
                flush=True,
            )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
