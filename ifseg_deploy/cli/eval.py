"""``ifseg-deploy eval``: mIoU / mAcc / aAcc of a model on a validation split, or of saved label maps."""

from __future__ import annotations

import argparse
import os

from ..errors import IFSegError
from ..eval.datasets import DATASETS, find_samples, get_dataset
from ..eval.pairs import pair_label_maps
from ..eval.report import build_report, format_scores, summary_line, write_report
from ..eval.runner import dataset_segmenter, evaluate_dataset, evaluate_label_maps
from ..fileio import ensure_writable_dir
from ..postprocess.knn import resolve_backend
from .common import add_knn_args


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "eval",
        help="mIoU / mAcc / aAcc on a validation split (reference protocol) or of saved label maps",
        description="Either --dataset/--root/--checkpoint (run the model) or --pred-dir/--gt-dir/--num-classes (score label maps).",
    )
    d = p.add_argument_group("model on a dataset")
    d.add_argument("--dataset", help=f"one of {', '.join(DATASETS)}")
    d.add_argument("--root", help="dataset folder (ADEChallengeData2016, or the COCO-Stuff-164k folder with images/ and annotations/)")
    d.add_argument("--checkpoint", help="ofa_*.pt, IFSeg checkpoint or .safetensors bundle")
    d.add_argument("--bpe-dir", help="folder with encoder.json, vocab.bpe, dict.txt (default: next to the checkpoint)")
    d.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    d.add_argument("--half", action="store_true", help="float16 inference (CUDA only)")
    d.add_argument("--limit", type=int, help="evaluate only the first N images (sorted by name)")
    add_knn_args(d)
    m = p.add_argument_group("saved label maps")
    m.add_argument("--pred-dir", help="predicted label maps: <stem>_labels.png (as written by segment) or <stem>.png")
    m.add_argument("--gt-dir", help="ground-truth label maps <stem>.png (or <stem>_labelTrainIds.png)")
    m.add_argument("--num-classes", type=int, help="number of classes; label values are 0..N-1")
    m.add_argument("--ignore-index", type=int, default=255, help="value of unlabelled pixels (default: 255): not scored in the ground truth, 'no class' in a prediction")
    p.add_argument("--out", help="JSON report path (default: runs/eval/<dataset or label_maps>.json)")
    return p


def _check_mode(args) -> str:
    model_flags = [f for f in ("dataset", "root", "checkpoint", "limit") if getattr(args, f) is not None]
    map_flags = [f for f in ("pred_dir", "gt_dir", "num_classes") if getattr(args, f) is not None]
    if model_flags and map_flags:
        raise IFSegError("use either --dataset/--root/--checkpoint or --pred-dir/--gt-dir/--num-classes, not both")
    if map_flags:
        missing = [f"--{f.replace('_', '-')}" for f in ("pred_dir", "gt_dir", "num_classes") if getattr(args, f) is None]
        if missing:
            raise IFSegError(f"scoring label maps needs {', '.join(missing)}")
        return "label_maps"
    missing = [f"--{f}" for f in ("dataset", "root", "checkpoint") if getattr(args, f) is None]
    if len(missing) == 3:
        raise IFSegError("nothing to evaluate: pass --dataset NAME --root DIR --checkpoint CKPT, or --pred-dir P --gt-dir G --num-classes N")
    if missing:
        raise IFSegError(f"evaluating a model needs {', '.join(missing)}")
    return "dataset"


def _out_path(args, name: str) -> str:
    path = args.out or os.path.join("runs", "eval", f"{name}.json")
    if os.path.isdir(path):
        raise IFSegError(f"--out {path} is a folder; give a file name such as {os.path.join(path, name + '.json')}")
    ensure_writable_dir(os.path.dirname(os.path.abspath(path)))
    return path


def _run_dataset(args) -> int:
    spec = get_dataset(args.dataset)
    if args.limit is not None and args.limit < 1:
        raise IFSegError("--limit must be >= 1")
    samples = find_samples(spec, args.root)[: args.limit]
    out = _out_path(args, args.dataset)
    seg = dataset_segmenter(spec, args.checkpoint, args.bpe_dir, args.device, args.half, args.knn_k, args.knn_iters, args.knn_backend)
    device = seg.backend.device
    backend = resolve_backend(seg.knn_backend, device)
    knn = f"k={seg.knn_k} x {seg.knn_iters} ({backend})" if seg.knn_iters else "off"
    print(f"{spec.name}: {len(samples)} images, {len(spec.categories)} classes, {device}, kNN {knn}")
    main, plain = evaluate_dataset(seg, samples, spec.mapping)
    scores = main.scores()
    names = list(spec.categories)
    print(format_scores(scores, names, spec.name))
    plain_scores = plain.scores() if plain is not None else None
    if plain_scores is not None:
        print(summary_line(plain_scores, "without kNN"))
    protocol = dict(inference="whole image, batch 1", short_side=seg.preprocessing.short_side, long_side_max=seg.preprocessing.long_side_max, knn_k=seg.knn_k,
                    knn_iters=seg.knn_iters, knn_backend=backend, device=str(device), half=args.half,
                    metrics_at="original image size")
    info = dict(mode="dataset", dataset=spec.name, root=args.root, checkpoint=args.checkpoint, images=len(samples), num_classes=len(names),
                protocol=protocol)
    write_report(out, build_report(scores, names, info, plain_scores))
    print(f"Report saved to {out}")
    return 0


def _run_label_maps(args) -> int:
    n, ignore = args.num_classes, args.ignore_index
    if n < 1:
        raise IFSegError("--num-classes must be >= 1")
    if not n <= ignore <= 65535:
        raise IFSegError(f"--ignore-index must be a value that is not a class, in {n}..65535 (got {ignore})")
    pairs = pair_label_maps(args.pred_dir, args.gt_dir)
    out = _out_path(args, "label_maps")
    scores = evaluate_label_maps(pairs, n, ignore).scores()
    names = [str(c) for c in range(n)]
    print(format_scores(scores, names, f"{len(pairs)} label maps"))
    info = dict(mode="label_maps", pred_dir=args.pred_dir, gt_dir=args.gt_dir, images=len(pairs), num_classes=n, ignore_index=ignore)
    write_report(out, build_report(scores, names, info))
    print(f"Report saved to {out}")
    return 0


def run(args) -> int:
    return _run_label_maps(args) if _check_mode(args) == "label_maps" else _run_dataset(args)
