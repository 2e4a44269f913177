"""What a smaller inference size (``--imgsz``) costs: label agreement with 512 at the original size, and time.

Segments one photo with one model at several short sides (the model's stored preprocessing
replaced by ``Preprocessing(S, 4 S)``, as ``--imgsz S`` does), end to end, median of
``--rounds`` alternating rounds, and compares each label map (original resolution) with the one
at 512. With random weights the class margins are tiny, so agreement is a pessimistic signal;
use a trained bundle for real figures.

    python3 benchmarks/imgsz_cost.py --checkpoint model.safetensors --image photo.jpg \\
        [--sizes 512 448 384 320 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import List

from ifseg_deploy.preprocess import Preprocessing, read_image
from ifseg_deploy.runtime.segmenter import Segmenter


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--bpe-dir")
    parser.add_argument("--categories", default="cat, dog, grass, floor, wall, sky, tree, person")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 448, 384, 320, 256])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    rgb = read_image(args.image)
    cats = [c.strip() for c in args.categories.split(",")]
    base = Segmenter.load(args.checkpoint, cats, args.bpe_dir, "cpu", args.precision)
    segs = {
        s: Segmenter(base.backend, base.vocabulary, cats, preprocessing=Preprocessing.short_side_rule(s))
        for s in args.sizes
    }
    labels = {s: seg.segment(rgb).labels for s, seg in segs.items()}  # also the warm-up of each shape
    times = {s: [] for s in args.sizes}
    for _ in range(args.rounds):
        for s, seg in segs.items():
            t0 = time.perf_counter()
            seg.segment(rgb)
            times[s].append((time.perf_counter() - t0) * 1e3)
    ref = labels[512] if 512 in labels else labels[args.sizes[0]]
    rows = {
        s: {
            "ms": statistics.median(times[s]),
            "agreement_vs_512": float((labels[s] == ref).mean()),
            "grid": [(x - 1) // 16 + 1 for x in segs[s].preprocessing(rgb).shape[1:]],
        }
        for s in args.sizes
    }
    print(f"{args.image} {rgb.shape[1]}x{rgb.shape[0]}, {args.precision}, median of {args.rounds} rounds")
    for s, r in rows.items():
        print(
            f"  --imgsz {s:<5} grid {r['grid'][0]:>3}x{r['grid'][1]:<3} {r['ms']:8.0f} ms  "
            f"{100 * r['agreement_vs_512']:6.2f}% pixels agree with 512"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
