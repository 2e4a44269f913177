"""``ifseg-deploy segment``: label maps, overlays and raw scores for images."""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import IFSegError
from ..fileio import ResultFolder
from ..preprocess import read_image
from ..runtime.segmenter import segment_each
from ..visualize.areas import area_summary, format_area_summary
from ..visualize.fonts import resolve_font
from .common import add_font_arg, add_segmenter_args, expand_images, load_segmenter, result_names
from .flags import flag_names


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("segment", help="segment images into the named categories")
    p.add_argument(
        "images", nargs="+", help="image files, folders or quoted glob patterns ('photos/*.jpg', 'data/**/*.png')"
    )
    add_segmenter_args(p)
    p.add_argument(
        "--out",
        help="output folder, used as given when it is new, empty or an earlier results folder (default: "
        "runs/segment, numbered runs/segment2, ... so an earlier run is never overwritten); results "
        "mirror the inputs' paths below their common folder",
    )
    p.add_argument(
        "--exist-ok",
        action="store_true",
        help="write into runs/segment even if it exists, or into an --out folder that "
        "holds other files (none of them is ever replaced)",
    )
    p.add_argument(
        "--save-raw", action="store_true", help="also write <stem>_logits.npy and <stem>_probs.npy, (h, w, N) float32"
    )
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity in [0, 1] (default: 0.5)")
    p.add_argument(
        "--contours", action="store_true", help="outline each region in its pure class colour on the overlay"
    )
    p.add_argument("--batch", type=int, default=1, help="images per forward pass (default: 1)")
    add_font_arg(p)
    return p


def run(args) -> int:
    if not 0.0 <= args.alpha <= 1.0:
        raise IFSegError("--alpha must be between 0 and 1")
    if args.batch < 1:
        raise IFSegError("--batch must be >= 1")
    font = resolve_font(args.font)
    inputs = expand_images(args.images)
    if not inputs.paths:
        raise IFSegError("; ".join(inputs.problems) if inputs.problems else "no input images")
    if args.out:
        out = ResultFolder(args.out, "out", exist_ok=args.exist_ok)
    else:
        out = ResultFolder("runs/segment", "out", exist_ok=args.exist_ok, numbered=True)
    seg = load_segmenter(args)
    for problem in inputs.problems:
        print(f"error: {flag_names(problem)}", file=sys.stderr)
    if inputs.repeats:
        print(f"skipped {inputs.repeats} repeated input(s) (the same file listed again or reached through a link)")
    paths, names = inputs.paths, result_names(inputs.paths)
    total, done, failed = len(paths), 0, len(inputs.problems)

    def fail(i: int, reason: str) -> None:
        nonlocal failed
        failed += 1
        print(f"error: image {i + 1}/{total} {paths[i]}: {flag_names(reason)}", file=sys.stderr)

    for start in range(0, total, args.batch):
        chunk = []
        for i in range(start, min(total, start + args.batch)):
            try:  # a bad file is reported and skipped; the others are still segmented
                chunk.append((i, read_image(paths[i])))
            except IFSegError as e:
                fail(i, str(e))
        results = segment_each(seg, [rgb for _, rgb in chunk], args.batch) if chunk else []
        for (i, _), res in zip(chunk, results):
            if isinstance(res, IFSegError):
                fail(i, str(res))
                continue
            try:
                written = res.save(out, names[i], args.alpha, args.contours, args.save_raw, font)
            except IFSegError as e:
                fail(i, str(e))
                continue
            done += 1
            stages = ", ".join(f"{k} {v:.1f}ms" for k, v in res.timings.items())
            h, w = res.grid
            areas = format_area_summary(area_summary(res.labels, res.categories), limit=5)
            print(
                f"image {i + 1}/{total} {paths[i]}: {res.labels.shape[0]}x{res.labels.shape[1]}, grid {h}x{w}, "
                f"{areas}; {stages} "
                f"-> {os.path.relpath(written[0], out.path)[: -len('_labels.png')]}_*"
            )
    if done:
        print(f"Results saved to {out.path}")
    if failed:
        print(f"error: {failed} input(s) failed, {done} of {total} image(s) segmented", file=sys.stderr)
        return 1
    return 0
