"""``ifseg-deploy eval``: mIoU / mAcc / aAcc of a model on a validation split, or of saved label maps."""

from __future__ import annotations

import argparse
import os
from typing import Any, Dict, List, Tuple

from ..errors import IFSegError
from ..eval.datasets import DATASETS, find_samples, get_dataset
from ..eval.label_maps import evaluate_label_maps
from ..eval.labels import LabelMapping
from ..eval.pairs import pair_label_maps
from ..eval.report import build_report, format_scores, summary_line, write_report
from ..eval.runner import dataset_segmenter, evaluate_dataset
from ..fileio import check_output_file
from ..postprocess.knn import resolve_backend
from ..text.categories_file import read_categories_file
from .common import BPE_HELP, add_device_arg, add_knn_args, precision_options


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "eval",
        help="mIoU / mAcc / aAcc on a validation split (reference protocol) or of saved label maps",
        description="Either --dataset/--root/--checkpoint (run the model) or --pred-dir/--gt-dir (score label maps; "
        "the classes come "
        "from --dataset, --class-names or --num-classes).",
    )
    p.add_argument(
        "--dataset",
        help=f"one of {', '.join(DATASETS)}: the class list and how its ground truth is stored (both modes)",
    )
    d = p.add_argument_group("model on a dataset")
    d.add_argument(
        "--root",
        help="dataset folder (ADEChallengeData2016, or the COCO-Stuff-164k folder with images/ and annotations/)",
    )
    d.add_argument(
        "--checkpoint", help="a model name (ofa-tiny ... ofa-huge), ofa_*.pt, IFSeg checkpoint or .safetensors bundle"
    )
    d.add_argument(
        "--bpe-dir",
        help=BPE_HELP,
    )
    add_device_arg(d)
    d.add_argument("--half", action="store_true", help="float16 inference (CUDA only)")
    d.add_argument("--limit", type=int, help="evaluate only the first N images (sorted by name)")
    add_knn_args(d)
    m = p.add_argument_group("saved label maps")
    m.add_argument("--pred-dir", help="predicted label maps: <stem>_labels.png (as written by segment) or <stem>.png")
    m.add_argument("--gt-dir", help="ground-truth label maps <stem>.png (or <stem>_labelTrainIds.png)")
    m.add_argument(
        "--num-classes",
        type=int,
        help="number of classes; label values are 0..N-1 (default: from --dataset or --class-names)",
    )
    m.add_argument(
        "--class-names",
        metavar="FILE",
        help="class names in index order, one per line (a categories file as train and segment read it): named table "
        "rows",
    )
    m.add_argument(
        "--reduce-zero-label",
        action="store_true",
        help="ground truth stores 0 = ignore and class k as k+1, as ADE20K's annotations (mmsegmentation's "
        "reduce_zero_label); "
        "automatic with --dataset ade20k",
    )
    m.add_argument(
        "--ignore-index",
        type=int,
        default=255,
        help="value of unlabelled pixels (default: 255): not scored in the ground truth, 'no class' in a prediction",
    )
    p.add_argument("--out", help="JSON report path (default: runs/eval/<dataset or label_maps>.json)")
    return p


def _given(args, names) -> list:
    return [f"--{f.replace('_', '-')}" for f in names if getattr(args, f) not in (None, False)]


def _check_mode(args) -> str:
    model_flags = _given(args, ("root", "checkpoint", "limit"))
    map_flags = _given(args, ("pred_dir", "gt_dir", "num_classes", "class_names", "reduce_zero_label"))
    if model_flags and map_flags:
        raise IFSegError(
            f"use either --root/--checkpoint (run a model) or --pred-dir/--gt-dir (score saved label maps), not both "
            f"(got {model_flags[0]} and {map_flags[0]})"
        )
    if map_flags:
        missing = [f for f in ("--pred-dir", "--gt-dir") if f not in map_flags]
        if missing:
            raise IFSegError(f"scoring label maps needs {', '.join(missing)}")
        if args.num_classes is None and args.dataset is None and args.class_names is None:
            raise IFSegError(
                "scoring label maps needs the classes: --dataset NAME, --class-names FILE or --num-classes N"
            )
        return "label_maps"
    missing = [f"--{f}" for f in ("dataset", "root", "checkpoint") if getattr(args, f) is None]
    if len(missing) == 3:
        raise IFSegError(
            "nothing to evaluate: pass --dataset NAME --root DIR --checkpoint CKPT, or --pred-dir P --gt-dir G "
            "--num-classes N"
        )
    if missing:
        raise IFSegError(f"evaluating a model needs {', '.join(missing)}")
    return "dataset"


def _out_path(args, name: str) -> str:
    return check_output_file(args.out or os.path.join("runs", "eval", f"{name}.json"), "out", "json")


def _run_dataset(args) -> int:
    spec = get_dataset(args.dataset)
    if args.limit is not None and args.limit < 1:
        raise IFSegError("--limit must be >= 1")
    out = _out_path(args, args.dataset)
    samples = find_samples(spec, args.root)[: args.limit]
    seg = dataset_segmenter(
        spec,
        args.checkpoint,
        args.bpe_dir,
        args.device,
        precision_options("torch", args)[0],
        args.knn_k,
        args.knn_iters,
        args.knn_backend,
    )
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
    protocol = dict(
        inference="whole image, batch 1",
        short_side=seg.preprocessing.short_side,
        long_side_max=seg.preprocessing.long_side_max,
        knn_k=seg.knn_k,
        knn_iters=seg.knn_iters,
        knn_backend=backend,
        device=str(device),
        half=args.half,
        metrics_at="original image size",
    )
    info = dict(
        mode="dataset",
        dataset=spec.name,
        root=args.root,
        checkpoint=args.checkpoint,
        images=len(samples),
        num_classes=len(names),
        protocol=protocol,
    )
    write_report(out, build_report(scores, names, info, plain_scores))
    print(f"Report saved to {out}")
    return 0


def _label_map_classes(args) -> Tuple[List[str], LabelMapping, Dict[str, Any]]:
    """Class names (indices as text when unknown), the ground-truth mapping and report fields
    of ``--pred-dir/--gt-dir`` mode, from ``--dataset``, ``--class-names`` or ``--num-classes``."""
    spec = get_dataset(args.dataset) if args.dataset is not None else None
    if spec is not None:
        if args.class_names is not None:
            raise IFSegError(f"--dataset {spec.name} gives the class names; drop --class-names")
        if args.reduce_zero_label and not spec.reduce_zero_label:
            raise IFSegError(
                f"{spec.name} label maps store class k as k (no zero label to reduce); drop --reduce-zero-label"
            )
        names = list(spec.categories)
        if args.num_classes is not None and args.num_classes != len(names):
            raise IFSegError(
                f"{spec.name} has {len(names)} classes, not --num-classes {args.num_classes}; drop --num-classes"
            )
    elif args.class_names is not None:
        names = [c.name for c in read_categories_file(args.class_names)]
        if args.num_classes is not None and args.num_classes != len(names):
            raise IFSegError(
                f"{args.class_names} names {len(names)} classes but --num-classes is {args.num_classes}; they must "
                f"agree"
            )
    else:
        if args.num_classes < 1:
            raise IFSegError("--num-classes must be >= 1")
        names = [str(c) for c in range(args.num_classes)]
    n, ignore = len(names), args.ignore_index
    reduce = spec.reduce_zero_label if spec is not None else args.reduce_zero_label
    low = (
        n + 1 if reduce and spec is None else n
    )  # stored ground-truth classes: 0..N-1, or 1..N with the zero label reduced
    if not low <= ignore <= 65535:
        raise IFSegError(f"--ignore-index must be a value that is not a class, in {low}..65535 (got {ignore})")
    if spec is not None:
        mapping = spec.mapping
    else:
        mapping = LabelMapping.reduce_zero_label(n, [ignore]) if reduce else LabelMapping.identity(n, [ignore])
    info: Dict[str, Any] = dict(dataset=spec.name) if spec is not None else {}
    return names, mapping, dict(info, reduce_zero_label=reduce, ignore_index=ignore)


def _run_label_maps(args) -> int:
    out = _out_path(args, args.dataset or "label_maps")
    names, gt_mapping, info = _label_map_classes(args)
    n = len(names)
    pairs = pair_label_maps(args.pred_dir, args.gt_dir)
    pred_mapping = LabelMapping.identity(n, [args.ignore_index])
    scores = evaluate_label_maps(pairs, n, pred_mapping, gt_mapping).scores()
    print(format_scores(scores, names, f"{len(pairs)} label map{'' if len(pairs) == 1 else 's'}"))
    info = dict(mode="label_maps", pred_dir=args.pred_dir, gt_dir=args.gt_dir, images=len(pairs), num_classes=n, **info)
    write_report(out, build_report(scores, names, info))
    print(f"Report saved to {out}")
    return 0


def run(args) -> int:
    return _run_label_maps(args) if _check_mode(args) == "label_maps" else _run_dataset(args)
