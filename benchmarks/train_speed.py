"""Image-free training speed and peak memory for the official OFA shapes (random weights).

For each size, a fresh process builds a random SegOFA of that shape, stores it as a bundle,
and runs the real trainer (``ifseg_deploy.train.Trainer``: artificial batch on the device,
forward, banded up-sampled loss, backward, clipping, fairseq Adam) for ``--warmup`` untimed
and ``--steps`` timed updates. Reported: updates/s, images/s, and peak memory: on CUDA the
peak allocated by PyTorch during the timed updates; on CPU the process's peak resident size
(``ru_maxrss``) and its growth over the resident size before the first update.

    python3 benchmarks/train_speed.py [--sizes tiny base] [--device cpu|cuda] [--batch-size B]
                                      [--steps 3] [--warmup 1] [--precision auto] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Dict

CATEGORIES = "grass, cat, dog, sky, building, road, tree, person, car, concrete wall"
BPE = os.environ.get("IFSEG_BPE", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "bpe"))


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker(size: str, device: str, batch: int, steps: int, warmup: int, precision: str) -> Dict[str, object]:
    import torch

    from ifseg_deploy.bench.synthetic import random_model
    from ifseg_deploy.checkpoint.bundle import save_bundle
    from ifseg_deploy.config import ofa_preset
    from ifseg_deploy.train import TrainConfig, Trainer, parse_category_spec

    arch = ofa_preset(size)
    model = random_model(arch)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"random_{size}.safetensors")
        save_bundle(
            path, model.state_dict(), torch.randn(1, arch.embed_dim), {"arch": arch.to_dict(), "categories": ["thing"]}
        )
        del model
        cfg = TrainConfig(
            checkpoint=path,
            classes=parse_category_spec(CATEGORIES),
            out=os.path.join(tmp, "out.safetensors"),
            bpe_dir=BPE,
            steps=warmup + steps,
            batch_size=batch,
            device=device,
            precision=precision,
            progress=False,
        )
        trainer = Trainer(cfg)
    dev = trainer.device
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        trainer.train_step()
    sync()
    rss_before = _rss_bytes()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    sync()
    seconds = time.perf_counter() - t0
    result: Dict[str, object] = {
        "size": size,
        "device": str(dev),
        "precision": trainer.precision,
        "batch_size": batch,
        "threads": torch.get_num_threads(),
        "trainable_params": sum(p.numel() for p in trainer.params),
        "updates_per_s": steps / seconds,
        "images_per_s": steps * batch / seconds,
        "seconds_per_update": seconds / steps,
    }
    if dev.type == "cuda":
        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated(dev) / 2**20
        result["gpu"] = torch.cuda.get_device_name(dev)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        result["peak_rss_mib"] = peak / 2**20
        result["training_rss_growth_mib"] = max(0, peak - rss_before) / 2**20
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["tiny", "base"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, help="images per update (default: 16 on CUDA, 2 on CPU)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    batch = args.batch_size or (16 if args.device.startswith("cuda") else 2)
    if args.worker:
        print(json.dumps(worker(args.worker, args.device, batch, args.steps, args.warmup, args.precision)))
        return
    results = []
    for size in args.sizes:
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            size,
            "--device",
            args.device,
            "--batch-size",
            str(batch),
            "--steps",
            str(args.steps),
            "--warmup",
            str(args.warmup),
            "--precision",
            args.precision,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{size}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(r)
        mem = (
            f"peak GPU {r['peak_gpu_mib']:.0f} MiB"
            if "peak_gpu_mib" in r
            else (f"peak RSS {r['peak_rss_mib']:.0f} MiB (+{r['training_rss_growth_mib']:.0f} MiB while training)")
        )
        print(
            f"OFA-{size:<6} {r['device']:<7} {r['precision']:<5} batch {batch:>3}: {r['updates_per_s']:.3f} updates/s "
            f"({r['images_per_s']:.2f} images/s, {r['seconds_per_update']:.2f} s/update), {mem}, "
            f"{r['trainable_params'] / 1e6:.1f} M trainable, {r['threads']} threads"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
