"""``ifseg-deploy segment``: label maps, overlays and raw scores for images."""

from __future__ import annotations

import argparse
import sys

from ..errors import IFSegError
from ..fileio import check_creatable_dir, increment_path
from ..preprocess import read_image
from ..visualize.areas import area_summary, format_area_summary
from .common import add_segmenter_args, expand_images, load_segmenter, output_stems


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("segment", help="segment images into the named categories")
    p.add_argument("images", nargs="+", help="image files, folders or quoted glob patterns ('photos/*.jpg', 'data/**/*.png')")
    add_segmenter_args(p)
    p.add_argument("--out", help="output folder, used as given (default: runs/segment, numbered runs/segment2, ... "
                                 "so an earlier run is never overwritten)")
    p.add_argument("--exist-ok", action="store_true", help="write into runs/segment even if it exists (default: a new numbered folder)")
    p.add_argument("--save-raw", action="store_true", help="also write <stem>_logits.npy and <stem>_probs.npy, (h, w, N) float32")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity in [0, 1] (default: 0.5)")
    p.add_argument("--contours", action="store_true", help="outline each region in its pure class colour on the overlay")
    p.add_argument("--batch", type=int, default=1, help="images per forward pass (default: 1)")
    return p


def run(args) -> int:
    if not 0.0 <= args.alpha <= 1.0:
        raise IFSegError("--alpha must be between 0 and 1")
    if args.batch < 1:
        raise IFSegError("--batch must be >= 1")
    paths, problems = expand_images(args.images)
    if not paths:
        raise IFSegError("; ".join(problems) if problems else "no input images")
    out_dir = check_creatable_dir(args.out or increment_path("runs/segment", args.exist_ok))
    seg = load_segmenter(args)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    stems = output_stems(paths)
    total, done, failed = len(paths), 0, len(problems)
    for start in range(0, total, args.batch):
        chunk = []
        for i in range(start, min(total, start + args.batch)):
            try:  # one unreadable file is reported and skipped; the others are still segmented
                chunk.append((i, read_image(paths[i])))
            except IFSegError as e:
                failed += 1
                print(f"error: image {i + 1}/{total} {paths[i]}: {e}", file=sys.stderr)
        if not chunk:
            continue
        results = seg.segment_batch([rgb for _, rgb in chunk], batch_size=args.batch)
        for (i, _), res in zip(chunk, results):
            res.save(out_dir, stems[i], args.alpha, args.contours, args.save_raw)
            done += 1
            stages = ", ".join(f"{k} {v:.1f}ms" for k, v in res.timings.items())
            h, w = res.grid
            areas = format_area_summary(area_summary(res.labels, res.categories), limit=5)
            print(f"image {i + 1}/{total} {paths[i]}: {res.labels.shape[0]}x{res.labels.shape[1]}, grid {h}x{w}, {areas}; {stages}")
    if done:
        print(f"Results saved to {out_dir}")
    if failed:
        print(f"error: {failed} input(s) failed, {done} of {total} image(s) segmented", file=sys.stderr)
        return 1
    return 0
