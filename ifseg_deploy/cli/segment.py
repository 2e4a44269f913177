"""``ifseg-deploy segment``: label maps, overlays and raw scores for images."""

from __future__ import annotations

import argparse
import os

import numpy as np

from ..errors import IFSegError
from ..fileio import ensure_writable_dir, write_npy, write_png
from ..visualize.overlay import overlay
from .common import add_segmenter_args, expand_images, load_segmenter, output_stems


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("segment", help="segment images into the named categories")
    p.add_argument("images", nargs="+", help="image files or folders")
    add_segmenter_args(p)
    p.add_argument("--out", default="runs/segment", help="output folder (default: runs/segment)")
    p.add_argument("--save-raw", action="store_true", help="also write <stem>_logits.npy and <stem>_probs.npy, (h, w, N) float32")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity in [0, 1] (default: 0.5)")
    p.add_argument("--contours", action="store_true", help="draw class boundaries on the overlay")
    p.add_argument("--batch", type=int, default=1, help="images per forward pass (default: 1)")
    return p


def save_result(out_dir: str, stem: str, rgb: np.ndarray, result, save_raw: bool, alpha: float, contours: bool) -> None:
    """Write ``<stem>_labels.png`` (uint8, uint16 above 255 classes), ``<stem>_overlay.png`` and raw arrays."""
    dtype = np.uint8 if len(result.categories) <= 255 else np.uint16
    write_png(os.path.join(out_dir, f"{stem}_labels.png"), result.labels.astype(dtype))
    write_png(os.path.join(out_dir, f"{stem}_overlay.png"), overlay(rgb, result.labels, result.categories, alpha, contours))
    if save_raw:
        write_npy(os.path.join(out_dir, f"{stem}_logits.npy"), result.logits.astype(np.float32))
        write_npy(os.path.join(out_dir, f"{stem}_probs.npy"), result.probs.astype(np.float32))


def run(args) -> int:
    from ..preprocess import read_image

    if not 0.0 <= args.alpha <= 1.0:
        raise IFSegError("--alpha must be between 0 and 1")
    if args.batch < 1:
        raise IFSegError("--batch must be >= 1")
    paths = expand_images(args.images)
    seg = load_segmenter(args)
    out_dir = ensure_writable_dir(args.out)
    stems = output_stems(paths)
    total = len(paths)
    for start in range(0, total, args.batch):
        chunk = list(range(start, min(total, start + args.batch)))
        rgbs = [read_image(paths[i]) for i in chunk]
        results = seg.segment_batch(rgbs, batch_size=args.batch)
        for i, rgb, res in zip(chunk, rgbs, results):
            save_result(out_dir, stems[i], rgb, res, args.save_raw, args.alpha, args.contours)
            t = res.timings
            stages = ", ".join(f"{k} {v:.1f}ms" for k, v in t.items())
            h, w = res.grid
            print(f"image {i + 1}/{total} {paths[i]}: {rgb.shape[0]}x{rgb.shape[1]}, grid {h}x{w}, {len(res.categories)} classes, {stages}")
    print(f"Results saved to {out_dir}")
    return 0
