"""Library parameter names -> CLI flags, in one place: the library's messages name the parameter
(``window=100: must be ...``), the terminal shows the flag (``--window 100: must be ...``)."""

from __future__ import annotations

import re
from typing import Dict

#: Library parameter -> the flag that sets it. Library messages name parameters (``window=100: ...``,
#: ```window``` ...); the CLI shows them as flags through :func:`flag_names`, here and nowhere else.
FLAGS: Dict[str, str] = {
    # model and runtime (runtime/, cli/common.py)
    "device": "--device",
    "precision": "--precision",
    "providers": "--providers",
    "compile": "--compile",
    "cuda_graph": "--cuda-graph",  # messages say cuda_graph=False, shown as --no-cuda-graph
    "bpe_dir": "--bpe-dir",
    "checkpoint": "--checkpoint",  # hub/: a file or a model name (ofa-tiny, ...)
    "offline": "--offline",
    "categories": "--categories",
    "imgsz": "--imgsz",
    "window": "--window",
    "knn_k": "--knn-k",
    "knn_iters": "--knn-iters",
    "knn_backend": "--knn-backend",
    "url": "--server",
    "timeout": "--timeout",
    # export (export/, triton/)
    "format": "--format",
    "out": "--out",
    "batch": "--batch",
    "imgsz_from": "--imgsz-from",
    "static": "--static",
    "dynamic": "--dynamic",
    "position_biases": "--position-biases",
    "calib_dir": "--calib-dir",
    "quantizer": "--quantizer",
    "int8_scope": "--int8-scope",
    "holdout_dir": "--holdout-dir",
    "max_drop": "--max-drop",
    "gate": "--gate",  # messages say gate=False, shown as --no-gate
    "opset": "--opset",
    "tolerance": "--tolerance",
    "profile": "--profile",
    "upsample": "--upsample",
    "knn": "--knn",
    "timing_cache": "--timing-cache",
    "trt_version": "--trt-version",
    "verify_image": "--verify-image",
    "network": "--network",
    "max_queue_delay_us": "--max-queue-delay-us",
    # segment and stream
    "alpha": "--alpha",
    "exist_ok": "--exist-ok",
    "font": "--font",
    "save": "--save",
    "show": "--show",
    "save_labels": "--save-labels",
    "save_json": "--save-json",
    "max_frames": "--max-frames",
    "vid_stride": "--vid-stride",
    "max_bad": "--max-bad-frames",
    "max_bad_frames": "--max-bad-frames",
    "reconnect": "--reconnect",
    "temporal": "--temporal",
    # ROS bags, Foxglove and the ROS 2 node (ros/, ros2node/)
    "topic": "--topic",
    "foxglove": "--foxglove",
    "domain_id": "--domain-id",
    "input_topic": "--input",
    "namespace": "--name",
    "ros_distro": "--ros-distro",
    # train
    "steps": "--steps",
    "batch_size": "--batch-size",
    "grad_accum": "--grad-accum",
    "lr": "--lr",
    "weight_decay": "--weight-decay",
    "seed": "--seed",
    "save_every": "--save-every",
    "max_cells": "--max-cells",
    "dropout": "--dropout",
    "drop_path": "--drop-path",
    "holdout_size": "--holdout-size",
    "resume": "--resume",
    # eval and bench
    "pred_dir": "--pred-dir",
    "gt_dir": "--gt-dir",
    "num_classes": "--num-classes",
    "ignore": "--ignore-index",
    "reduce_zero_label": "--reduce-zero-label",
    "json": "--json",
    "clients": "--clients",
    "iterations": "--iters",
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
