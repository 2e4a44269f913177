"""``ifseg-deploy`` entry point: sub-command discovery and one-line error reporting."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import re
import sys
from typing import Dict, List, Optional

from .. import __version__
from ..errors import IFSegError
from ..redact import redact_url


#: Library parameter -> the flag that sets it. Library messages name parameters (``window=100: ...``,
#: ```window``` ...); the CLI shows them as flags through :func:`flag_names`, here and nowhere else.
FLAGS: Dict[str, str] = {
    # model and runtime (runtime/, cli/common.py)
    "device": "--device", "precision": "--precision", "providers": "--providers", "compile": "--compile",
    "bpe_dir": "--bpe-dir", "categories": "--categories", "imgsz": "--imgsz",
    "window": "--window", "knn_k": "--knn-k", "knn_iters": "--knn-iters", "knn_backend": "--knn-backend",
    "url": "--server", "timeout": "--timeout",
    # export (export/, triton/)
    "format": "--format", "out": "--out", "batch": "--batch", "imgsz_from": "--imgsz-from", "static": "--static",
    "dynamic": "--dynamic", "position_biases": "--position-biases", "calib_dir": "--calib-dir",
    "gate": "--gate",  # messages say gate=False, shown as --no-gate
    "opset": "--opset", "tolerance": "--tolerance", "profile": "--profile", "upsample": "--upsample", "knn": "--knn",
    "timing_cache": "--timing-cache", "trt_version": "--trt-version", "verify_image": "--verify-image",
    "network": "--network", "max_queue_delay_us": "--max-queue-delay-us",
    # segment and stream
    "alpha": "--alpha", "exist_ok": "--exist-ok", "font": "--font", "save": "--save", "show": "--show",
    "save_labels": "--save-labels", "save_json": "--save-json", "max_frames": "--max-frames", "vid_stride": "--vid-stride",
    "max_bad": "--max-bad-frames", "max_bad_frames": "--max-bad-frames", "reconnect": "--reconnect", "temporal": "--temporal",
    # train
    "steps": "--steps", "batch_size": "--batch-size", "grad_accum": "--grad-accum", "lr": "--lr", "weight_decay": "--weight-decay",
    "seed": "--seed", "save_every": "--save-every", "max_cells": "--max-cells", "dropout": "--dropout", "drop_path": "--drop-path",
    "holdout_size": "--holdout-size", "resume": "--resume",
    # eval and bench
    "pred_dir": "--pred-dir", "gt_dir": "--gt-dir", "num_classes": "--num-classes", "ignore": "--ignore-index",
    "reduce_zero_label": "--reduce-zero-label", "json": "--json", "clients": "--clients", "iterations": "--iters",
    "warmup": "--warmup",
}

# ```name``` or ``name=value``; the value runs to a blank, ``,``, ``;``, ``)`` or ``": "`` (so URLs and
# ``cuda:0`` stay whole), or is quoted. Not after a word, path or query character (``a/out=1``, ``?seed=2``).
_PARAMETER = re.compile(
    r"`(?P<bare>[a-z_][a-z0-9_]*)`"
    r"|(?<![\w./?&=-])(?P<name>[a-z_][a-z0-9_]*)=(?P<value>'[^']*'|\"[^\"]*\"|[^\s,;)]+?)(?=:?(?:[\s,;)]|$))"
)


def _flag(match: "re.Match[str]") -> str:
    bare, name, value = match.group("bare", "name", "value")
    flag = FLAGS.get(bare or name)
    if flag is None:  # not a parameter the CLI sets: left as written
        return match.group(0)
    if bare or value == "True":
        return flag
    if value == "False":
        return f"--no-{flag[2:]}"
    if value[0] in "'\"" and not any(c.isspace() for c in value):
        value = value[1:-1]  # a shell word needs no quotes
    return f"{flag} {value}"


def flag_names(message: str) -> str:
    """``message`` with the parameters it names (:data:`FLAGS`) as the flags that set them:
    ``"window=100: must be ..."`` -> ``"--window 100: must be ..."``, ```resume``` -> ``--resume``,
    ``gate=False`` -> ``--no-gate``."""
    return _PARAMETER.sub(_flag, message)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ifseg-deploy",
        description="Image-free semantic segmentation (IFSeg) for edge deployment.",
    )
    parser.add_argument("--version", action="version", version=f"ifseg-deploy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    package = importlib.import_module(__package__)
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name == "main":
            continue
        module = importlib.import_module(f"{__package__}.{info.name}")
        if hasattr(module, "add_parser"):
            p = module.add_parser(sub)
            p.add_argument("--verbose", action="store_true", help="also print OpenCV's and FFmpeg's own log messages")
            p.set_defaults(_run=module.run)
    return parser


class _RedactingFormatter(logging.Formatter):
    """Log lines (reconnect notices, warnings) never show a password of a URL, and name flags."""

    def format(self, record: logging.LogRecord) -> str:
        return flag_names(redact_url(super().format(record)))


def native_logging(verbose: bool) -> None:
    """OpenCV's and FFmpeg's own log lines (``[ WARN:0@...]``, ``[h264 @ 0x...]``) only with ``--verbose``:
    otherwise the project's one-line messages say what went wrong, alone."""
    import cv2

    if not verbose:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # FFmpeg inside OpenCV: see stream.sources
        return
    os.environ["OPENCV_FFMPEG_LOGLEVEL"] = "24"  # AV_LOG_WARNING; read when OpenCV first opens a video
    try:
        import av.logging
    except ImportError:  # the video extra is optional
        return
    av.logging.set_level(av.logging.WARNING)  # PyAV keeps FFmpeg silent by default


def main(argv: Optional[List[str]] = None) -> int:
    handler = logging.StreamHandler()
    handler.setFormatter(_RedactingFormatter("%(levelname)s: %(message)s"))
    logging.basicConfig(handlers=[handler], level=logging.WARNING)
    logging.addLevelName(logging.WARNING, "warning")
    parser = build_parser()
    args = parser.parse_args(argv)
    native_logging(args.verbose)
    try:
        return int(args._run(args) or 0)
    except IFSegError as e:  # the message is redacted where it is made; this is the last line of defence
        print(f"error: {flag_names(redact_url(str(e)))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (``| head``): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes stdout
        return 141
    except Exception as e:  # last resort: still one line, traceback on request
        if os.environ.get("IFSEG_DEBUG"):
            raise
        msg = redact_url(str(e).strip().splitlines()[0]) if str(e).strip() else ""
        print(f"error: unexpected {type(e).__name__}: {msg[:200]} (set IFSEG_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
