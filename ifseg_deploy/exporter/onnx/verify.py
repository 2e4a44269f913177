"""Checks every export must pass: graph policy (opset, no loops, finite constants) and
ONNX Runtime (CPU) against the PyTorch module on the same inputs (in-graph kNN smoothing
compared wherever its neighbour sets are determined, see :mod:`.knn_ties`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ...model import grid_size
from ...runtime.graph_contract import FEATURES, IMAGES, KNN_PROBS, LABELS, LOGITS
from .graph import ExportGraph
from .knn_ties import near_tied_cells, undetermined_cells, undetermined_pixels

if TYPE_CHECKING:  # the CLI starts (e.g. `checks` on a bare install) without the onnx package
    import onnx

MIN_OPSET = 17
#: Control flow / sequence operators a deployable graph must not contain (the decoder runs in one pass).
FORBIDDEN_OPS = {
    "Loop",
    "Scan",
    "SequenceAt",
    "SequenceConstruct",
    "SequenceInsert",
    "SequenceEmpty",
    "SplitToSequence",
    "ConcatFromSequence",
}
#: Element-wise agreement: ``|ort - torch| <= ATOL + RTOL * max|torch|`` per output.
ATOL, RTOL = 2e-4, 1e-4


def opset_of(model: onnx.ModelProto) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def _float_constants(model: onnx.ModelProto):
    from onnx import helper, numpy_helper

    for init in model.graph.initializer:
        yield init.name, numpy_helper.to_array(init)
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    yield node.output[0], numpy_helper.to_array(a.t)
                elif a.name in ("value_float", "value_floats"):
                    yield node.output[0], np.asarray(helper.get_attribute_value(a), dtype=np.float32)


def graph_policy_problems(model: onnx.ModelProto) -> List[str]:
    """Opset >= 17, no loop/sequence operators, LayerNormalization as single nodes, no inf/NaN constants."""
    problems = []
    opset = opset_of(model)
    if opset < MIN_OPSET:
        problems.append(f"opset {opset} < {MIN_OPSET}")
    ops = {n.op_type for n in model.graph.node}
    problems += [f"contains {op} nodes" for op in sorted(ops & FORBIDDEN_OPS)]
    if "LayerNormalization" not in ops:
        problems.append("no LayerNormalization nodes (layer norms were decomposed)")
    for name, value in _float_constants(model):
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            problems.append(f"constant {name} holds inf/NaN")
    return problems


@dataclass
class CaseResult:
    """ORT vs PyTorch on one set of inputs."""

    name: str
    shapes: Dict[str, Tuple[int, ...]]
    max_abs: Dict[str, float] = field(default_factory=dict)
    label_agreement: float = 1.0
    unexplained_flips: int = 0  # label differences where the PyTorch top-2 margin exceeds the numeric error
    knn_masked: Optional[Tuple[int, int]] = None  # (cells left out, cells) of in-graph kNN: near-tied neighbours
    problems: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        img = "x".join(str(d) for d in self.shapes.get("images", ()))
        deltas = ", ".join(f"{k} {v:.2e}" for k, v in self.max_abs.items())
        state = "ok" if self.ok else "FAILED: " + "; ".join(self.problems)
        knn = ""
        if self.knn_masked is not None:
            masked, cells = self.knn_masked
            knn = f"; kNN compared on {cells - masked} of {cells} cells ({masked} left out: near-tied neighbours)"
        return (
            f"{self.name} [{img}, L={self.shapes['prompt_embeds'][1]}, N={self.shapes['class_embeds'][0]}]: max|delta| "
            f"{deltas}; "
            f"labels {100 * self.label_agreement:.3f}% agree{knn}; {state}"
        )


@dataclass
class VerifyReport:
    cases: List[CaseResult]

    @property
    def problems(self) -> List[str]:
        """Findings about the verification as a whole: in-graph kNN that no case could compare."""
        knn = [c.knn_masked for c in self.cases if c.knn_masked is not None]
        if knn and all(masked == cells for masked, cells in knn):
            return [
                "in-graph kNN could not be compared: every cell of every verification image has near-tied "
                "neighbours; add `verify_image` with a photo"
            ]
        return []

    @property
    def ok(self) -> bool:
        return not self.problems and all(c.ok for c in self.cases)

    def failure(self) -> str:
        """What went wrong, for a one-line error ('' when ok)."""
        bad = [f"on '{c.name}' ({'; '.join(c.problems)})" for c in self.cases if not c.ok][:1]
        return "; ".join(bad + self.problems)

    def lines(self) -> List[str]:
        return [c.line() for c in self.cases] + [f"FAILED: {p}" for p in self.problems]

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "atol": ATOL,
            "rtol": RTOL,
            "problems": self.problems,
            "cases": [
                {
                    "name": c.name,
                    "max_abs": c.max_abs,
                    "label_agreement": c.label_agreement,
                    "ok": c.ok,
                    **({"knn_masked_cells": c.knn_masked[0], "cells": c.knn_masked[1]} if c.knn_masked else {}),
                }
                for c in self.cases
            ],
        }


def label_flips(ref: np.ndarray, out: np.ndarray, max_abs: float) -> Tuple[float, int]:
    """Argmax agreement over the last axis, and the number of flips not explained by a near tie."""
    a, b = ref.argmax(-1), out.argmax(-1)
    differ = a != b
    if not differ.any():
        return 1.0, 0
    top2 = np.sort(ref, axis=-1)[..., -2:]
    margin = top2[..., 1] - top2[..., 0]
    return float(1.0 - differ.mean()), int((differ & (margin > 2 * max_abs)).sum())


def knn_keep_masks(
    feeds: Dict[str, Tensor], ref: Dict[str, np.ndarray], out: Dict[str, np.ndarray], knn: Tuple[int, int]
) -> Dict[str, np.ndarray]:
    """Boolean masks of the ``knn_probs`` cells ``(B, hw)`` and ``labels`` pixels ``(B, H, W)`` whose
    values the model determines (see :mod:`.knn_ties`); everything else may differ legitimately."""
    k, iters = knn
    tied, neighbours = near_tied_cells(ref[FEATURES], out[FEATURES], k)
    cells = undetermined_cells(tied, neighbours, iters)
    keep = {KNN_PROBS: ~cells}
    if LABELS in ref:
        keep[LABELS] = ~undetermined_pixels(cells, grid_size(*feeds[IMAGES].shape[2:]), ref[LABELS].shape[1:])
    return keep


def compare_outputs(
    name: str,
    feeds: Dict[str, Tensor],
    ref: Dict[str, np.ndarray],
    out: Dict[str, np.ndarray],
    atol: float = ATOL,
    rtol: float = RTOL,
    knn: Optional[Tuple[int, int]] = None,
) -> CaseResult:
    """Compare ORT outputs with the PyTorch ones (float outputs element-wise, label maps by agreement).

    ``knn``: ``(k, iters)`` of in-graph kNN smoothing; its outputs are compared where the
    neighbour sets are determined (:func:`knn_keep_masks`), and the left-out cells are counted.
    """
    case = CaseResult(name, {k: tuple(v.shape) for k, v in feeds.items()})
    keep: Dict[str, np.ndarray] = {}
    if knn is not None and ref[FEATURES].shape == out[FEATURES].shape:
        keep = knn_keep_masks(feeds, ref, out, knn)
        case.knn_masked = (int((~keep[KNN_PROBS]).sum()), keep[KNN_PROBS].size)
    compared: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
    for key, r in ref.items():
        o = out[key]
        if o.shape != r.shape:
            case.problems.append(f"{key} shape {o.shape} != {r.shape}")
            continue
        if key in keep:
            r, o = r[keep[key]], o[keep[key]]
        compared[key] = (r, o)
        if key == LABELS:
            agree = float((o == r).mean()) if r.size else 1.0
            if agree < 0.999:
                case.problems.append(f"label map agrees on {100 * agree:.2f}% of pixels only")
            continue
        delta = float(np.abs(o.astype(np.float64) - r).max()) if r.size else 0.0
        case.max_abs[key] = delta
        bound = atol + rtol * float(np.abs(r).max(initial=0.0))
        if not np.isfinite(o).all():
            case.problems.append(f"{key} has non-finite values")
        elif delta > bound:
            case.problems.append(f"{key} max|delta| {delta:.2e} > {bound:.2e}")
    scores = KNN_PROBS if KNN_PROBS in ref else LOGITS
    if scores in compared:
        agreement, flips = label_flips(*compared[scores], case.max_abs.get(scores, 0.0))
        case.label_agreement = agreement
        case.unexplained_flips = flips
        if flips:
            case.problems.append(f"{flips} grid label(s) differ beyond near ties")
    return case


def run_torch(graph: ExportGraph, feeds: Dict[str, Tensor], names: Sequence[str]) -> Dict[str, np.ndarray]:
    with torch.inference_mode():
        outputs = graph(*feeds.values())
    return {n: o.cpu().numpy() for n, o in zip(names, outputs)}


def verify_onnx(
    path: str,
    graph: ExportGraph,
    cases: Sequence[Tuple[str, Dict[str, Tensor]]],
    atol: float = ATOL,
    rtol: float = RTOL,
) -> VerifyReport:
    """Run each case through ONNX Runtime (CPU) and the PyTorch graph; compare every output (in-graph
    kNN where its neighbour sets are determined; refused when that is nowhere)."""
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    knn = graph.contract.in_graph_knn
    results = []
    for name, feeds in cases:
        ref = run_torch(graph, feeds, names)
        out = dict(zip(names, session.run(names, {k: v.numpy() for k, v in feeds.items()})))
        results.append(compare_outputs(name, feeds, ref, out, atol, rtol, knn))
    return VerifyReport(results)
