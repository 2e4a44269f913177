"""``ifseg-deploy train``: image-free training from an OFA checkpoint and category names only."""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from ..precision import TRAIN
from .common import BPE_HELP, add_device_arg, announce_device
from .flags import flag_names


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "train",
        help="image-free training: category names in, segmentation bundle out (no images, no labels)",
        description="Train IFSeg's image-free objective and write a .safetensors bundle. "
        "Multi-GPU: launch the same command with torchrun --nproc_per_node=N -m ifseg_deploy train ... "
        "Ctrl-C or SIGTERM: the current update finishes, the state is saved and the command to resume it printed "
        "(exit 130 / 143); a second signal aborts at once.",
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        help="a model name (ofa-tiny ... ofa-huge: downloaded once), ofa_*.pt, or an IFSeg checkpoint / bundle "
        "to continue from",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--categories",
        help='comma-separated class names, e.g. "grass, cat, concrete wall"; '
        'word lists as "animal: zebra, giraffe; grass"',
    )
    src.add_argument(
        "--categories-file",
        help="one class per line, optionally 'class: word, word' (hierarchical); '#' comments; "
        "or a built-in list: coco-stuff-27",
    )
    p.add_argument(
        "--bpe-dir",
        help=BPE_HELP,
    )
    p.add_argument("--out", required=True, help="output bundle, e.g. my_model.safetensors")
    p.add_argument("--steps", type=int, default=2000, help="optimizer updates (default: 2000)")
    p.add_argument(
        "--batch-size", type=int, default=16, help="artificial images per update, all processes together (default: 16)"
    )
    p.add_argument("--lr", type=float, default=5e-5, help="peak learning rate of the cosine schedule (default: 5e-5)")
    p.add_argument("--weight-decay", type=float, default=0.1, help="decoupled weight decay (default: 0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the artificial data and dropout streams (default: 0)")
    add_device_arg(p)
    p.add_argument(
        "--precision",
        default="auto",
        choices=TRAIN,
        help="auto = bf16 (fp16 on GPUs without bf16) mixed precision on CUDA, fp32 on CPU; bf16 also runs on CPU",
    )
    p.add_argument(
        "--grad-accum", type=int, default=1, help="split each update into N sequential micro-batches to save memory"
    )
    p.add_argument(
        "--save-every",
        type=int,
        default=0,
        help="also write the resumable state every N updates, against crashes (default: off; "
        "Ctrl-C and SIGTERM always save it)",
    )
    p.add_argument("--resume", action="store_true", help="continue from <out stem>.state.pt if present")
    p.add_argument(
        "--max-cells", type=int, default=32, help="largest artificial grid side S, sides drawn from 1..S (default: 32)"
    )
    p.add_argument("--dropout", type=float, default=0.1, help="dropout during training (default: 0.1)")
    p.add_argument(
        "--drop-path", type=float, default=0.1, help="largest drop-path rate, linear over layers (default: 0.1)"
    )
    p.add_argument(
        "--holdout-size", type=int, default=32, help="held-out artificial images for the final metrics (default: 32)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run(args) -> int:
    from ..train import (
        TrainConfig,
        TrainingAborted,
        TrainingStopped,
        parse_category_spec,
        read_categories_file,
        state_path,
        train,
    )
    from ..train.distributed import DistContext

    classes = (
        read_categories_file(args.categories_file) if args.categories_file else parse_category_spec(args.categories)
    )
    announce_device(args.device)
    cfg = TrainConfig(
        checkpoint=args.checkpoint,
        classes=classes,
        out=args.out,
        bpe_dir=args.bpe_dir,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        grad_accum=args.grad_accum,
        save_every=args.save_every,
        resume=args.resume,
        max_cells=args.max_cells,
        dropout=args.dropout,
        drop_path=args.drop_path,
        holdout_size=args.holdout_size,
        progress=not args.no_progress,
    )
    try:
        result = train(cfg)
    except TrainingStopped as e:
        if not e.quiet:
            print(
                flag_names(e.line(f"resume with: {resume_command(args)}")), file=sys.stderr
            )  # a peer's error may name parameters
        return e.exit_code
    except TrainingAborted as e:
        if DistContext.from_env().is_main:
            state = state_path(args.out)
            kept = f"the state saved before is intact: {state}" if os.path.exists(state) else "no state had been saved"
            print(f"{e}; {kept}", file=sys.stderr)
        return e.exit_code
    if result is None:  # a non-main torchrun process: the main one reports
        return 0
    print(
        f"trained {len(classes)} classes for {result.steps} updates in {result.seconds:.1f} s "
        f"({result.steps_per_s:.2f} updates/s); final loss {result.final_loss:.4f}; held-out artificial "
        f"pixel accuracy {result.holdout['pixel_acc']:.4f}, mIoU {result.holdout['miou']:.4f}"
    )
    print(f"Bundle saved to {result.bundle}")
    return 0


def resume_command(args: argparse.Namespace) -> str:
    """The shell command that continues this run: every flag that differs from its default, plus
    ``--resume``; under torchrun the launch on one node (``--nproc_per_node``) or the note to
    rerun it on every node."""
    parser = add_parser(argparse.ArgumentParser().add_subparsers())
    words = ["train"]
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help", "resume"):
            continue
        value = getattr(args, action.dest, action.default)
        if value == action.default:
            continue
        flag = action.option_strings[-1]
        words += [flag] if isinstance(action, argparse._StoreTrueAction) else [flag, str(value)]
    words.append("--resume")
    env = os.environ
    if "TORCHELASTIC_RUN_ID" not in env:
        return shlex.join(["ifseg-deploy", *words])
    local, world = env.get("LOCAL_WORLD_SIZE", "1"), env.get("WORLD_SIZE", "1")
    if local == world:
        return shlex.join(["torchrun", "--nproc_per_node", local, "-m", "ifseg_deploy", *words])
    return "the same torchrun launch on every node, ending in: " + shlex.join(["-m", "ifseg_deploy", *words])
