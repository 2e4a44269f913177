"""fp32 ONNX graph -> strongly typed mixed-precision fp16 graph, and its fidelity check.

The conversion is onnxconverter-common's ``float16.convert_float_to_float16`` (weights and
matrix products in fp16) with a node block list: the nodes of :func:`.graph_precision.fp32_nodes`
(LayerNorm, Softmax, attention-bias path, post-processing) stay fp32 behind explicit ``Cast``
nodes; graph inputs and outputs stay float32 (the contract of :mod:`ifseg_deploy.runtime.graph_contract`).
Two graph shapes the converter mishandles are prepared first: a float initializer shared by a
kept-fp32 node and a converted one (duplicated), and a graph output that other nodes also read
(routed through an ``Identity``).

The check compares the graph, run by ONNX Runtime (CPU), with the fp32 PyTorch model on the
export's verification images: relative RMS error of the logits, and label agreement at the
image size (logits bilinearly up-sampled, argmax; the reference pipeline's labels). For a trained
bundle the report also carries the held-out accuracy check (:mod:`.holdout_check`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper

from ...errors import IFSegError
from ...model import grid_size
from ...runtime.graph_contract import IMAGES, LOGITS
from .graph_precision import fp32_nodes
from .holdout_check import HoldoutCheck

#: Gate of an fp16 graph: relative RMS error of the logits against the fp32 PyTorch model (fp16
#: keeps 11 significant bits; a few 1e-3 of rounding per layer stays well inside it).
FP16_MAX_REL_RMS = 2e-2


def _route_read_outputs(model: onnx.ModelProto) -> List[str]:
    """Graph outputs that other nodes also read get an ``Identity`` of their own; returns its names."""
    outputs = {o.name for o in model.graph.output}
    read = {i for n in model.graph.node for i in n.input} & outputs
    added = []
    for node in list(model.graph.node):
        for k, name in enumerate(node.output):
            if name not in read:
                continue
            value = name + "/value"
            node.output[k] = value
            for consumer in model.graph.node:
                for j, i in enumerate(consumer.input):
                    if i == name:
                        consumer.input[j] = value
            model.graph.node.append(helper.make_node("Identity", [value], [name], name=name + "/output"))
            added.append(name + "/output")
    return added


def _unshare_initializers(model: onnx.ModelProto, kept: set) -> None:
    """Give the kept-fp32 readers of a float initializer also read by converted nodes their own copy."""
    inits = {i.name: i for i in model.graph.initializer if i.data_type == TensorProto.FLOAT}
    readers: Dict[str, List[Tuple[onnx.NodeProto, int]]] = {}
    for node in model.graph.node:
        for j, name in enumerate(node.input):
            if name in inits:
                readers.setdefault(name, []).append((node, j))
    for name, uses in readers.items():
        if len({n.name in kept for n, _ in uses}) < 2:
            continue
        copy = onnx.TensorProto()
        copy.CopyFrom(inits[name])
        copy.name = name + "/fp32"
        model.graph.initializer.append(copy)
        for node, j in uses:
            if node.name in kept:
                node.input[j] = copy.name


def _dedupe_value_info(model: onnx.ModelProto) -> None:
    """Keep the first ``value_info`` entry of each tensor (the simplifier can leave two; the converter
    retypes only the first, and ONNX Runtime rejects the pair as a type clash)."""
    seen = set()
    unique = [v for v in model.graph.value_info if not (v.name in seen or seen.add(v.name))]
    del model.graph.value_info[:]
    model.graph.value_info.extend(unique)


def _drop_round_trips(model: onnx.ModelProto) -> int:
    """Remove fp32 -> fp16 -> fp32 ``Cast`` pairs the converter puts between two fp32 (blocked) nodes,
    so values passed along the fp32 paths (the attention biases) are never rounded to fp16;
    returns how many fp16 casts went."""
    graph = model.graph
    consumers: Dict[str, List[onnx.NodeProto]] = {}
    for node in graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    outputs = {o.name for o in graph.output}

    def cast_to(node: onnx.NodeProto) -> Optional[int]:
        return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None

    drop, rename = set(), {}
    for node in graph.node:
        readers = consumers.get(node.output[0], []) if cast_to(node) == TensorProto.FLOAT16 else []
        if (
            readers
            and node.output[0] not in outputs
            and all(cast_to(r) == TensorProto.FLOAT and r.output[0] not in outputs for r in readers)
        ):
            drop.add(node.name)
            drop.update(r.name for r in readers)
            rename.update((r.output[0], node.input[0]) for r in readers)
    kept = [n for n in graph.node if n.name not in drop]
    for node in kept:
        for j, name in enumerate(node.input):
            node.input[j] = rename.get(name, name)
    del graph.node[:]
    graph.node.extend(kept)
    return len(drop) - len(rename)


def _float_outputs(model: onnx.ModelProto) -> None:
    """Declare every float graph output float32 again (the converter may leave a trailing fp16 cast)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    for out in model.graph.output:
        if out.type.tensor_type.elem_type != TensorProto.FLOAT16:
            continue
        out.type.tensor_type.elem_type = TensorProto.FLOAT
        node = producers[out.name]
        if node.op_type == "Cast":
            node.attribute[0].CopyFrom(helper.make_attribute("to", TensorProto.FLOAT))
        else:
            node.output[list(node.output).index(out.name)] = out.name + "/fp16"
            model.graph.node.append(
                helper.make_node(
                    "Cast", [out.name + "/fp16"], [out.name], name=out.name + "/to_fp32", to=TensorProto.FLOAT
                )
            )


def to_fp16(model: onnx.ModelProto) -> Tuple[onnx.ModelProto, int]:
    """The mixed-precision fp16 graph of a verified fp32 export, and how many nodes stay fp32.

    Inputs/outputs keep their float32 declarations; raises :class:`IFSegError` when the
    converted graph fails the ONNX checker.
    """
    try:
        from onnxconverter_common import float16
    except ImportError:
        raise IFSegError(
            "precision=fp16 needs onnxconverter-common (pip install 'ifseg-deploy[cpu]' or pip install "
            "onnxconverter-common)"
        ) from None
    model = onnx.ModelProto.FromString(model.SerializeToString())
    _dedupe_value_info(model)
    routed = _route_read_outputs(model)
    kept = set(fp32_nodes(model)) | set(routed)
    _unshare_initializers(model, kept)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # notes on values clipped to the fp16 range
        half = float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=sorted(kept))
    _float_outputs(half)
    _drop_round_trips(half)
    try:
        onnx.checker.check_model(half)
    except onnx.checker.ValidationError as e:
        raise IFSegError(
            f"the fp16 graph fails the ONNX checker ({str(e).splitlines()[0][:160]}); nothing was written"
        ) from None
    return half, len(kept)


@dataclass
class PrecisionCase:
    name: str
    rel_rms: float
    label_agreement: float  # at the image size


@dataclass
class PrecisionReport:
    """Reduced-precision graph vs the fp32 PyTorch model (logits) and, for a trained bundle, vs the
    fp32 graph on the bundle's held-out set (:mod:`.holdout_check`)."""

    precision: str
    max_rel_rms: float
    fp32_nodes: int
    cases: List[PrecisionCase] = field(default_factory=list)
    gated: bool = True
    holdout: Optional[HoldoutCheck] = None
    labelled: Optional[Any] = None  # NNCF int8 with ``holdout_dir``: its .nncf_int8.LabelledCheck

    @property
    def rel_rms(self) -> float:
        return max((c.rel_rms for c in self.cases), default=0.0)

    @property
    def logits_ok(self) -> bool:
        return self.rel_rms <= self.max_rel_rms

    @property
    def ok(self) -> bool:
        return (
            self.logits_ok and (self.holdout is None or self.holdout.ok) and (self.labelled is None or self.labelled.ok)
        )

    def lines(self) -> List[str]:
        head = (
            f"{self.precision} graph vs fp32 PyTorch ({self.fp32_nodes} nodes kept fp32): logits rel-RMS "
            f"{self.rel_rms:.2e} "
            f"(gate {self.max_rel_rms:.0e}{'' if self.gated else ', not enforced: gate=False'}); "
            f"{'ok' if self.logits_ok else 'BELOW GATE'}"
        )
        cases = [
            f"  {c.name}: rel-RMS {c.rel_rms:.2e}, labels {100 * c.label_agreement:.2f}% agree at image size"
            for c in self.cases
        ]
        return (
            [head]
            + cases
            + (self.holdout.lines() if self.holdout is not None else [])
            + (self.labelled.lines() if self.labelled is not None else [])
        )

    def to_dict(self) -> dict:
        out = {
            "precision": self.precision,
            "ok": self.ok,
            "gated": self.gated,
            "logits_rel_rms": self.rel_rms,
            "max_rel_rms": self.max_rel_rms,
            "fp32_nodes": self.fp32_nodes,
            "cases": [
                {"name": c.name, "logits_rel_rms": c.rel_rms, "label_agreement": c.label_agreement} for c in self.cases
            ],
        }
        if self.holdout is not None:
            out["holdout"] = self.holdout.to_dict()
        if self.labelled is not None:
            out["labelled_holdout"] = self.labelled.to_dict()
        return out


def rel_rms(ref: np.ndarray, out: np.ndarray) -> float:
    """``||out - ref||_2 / ||ref||_2`` over all elements (float64)."""
    ref64 = ref.astype(np.float64)
    return float(np.sqrt(((out.astype(np.float64) - ref64) ** 2).sum() / max((ref64**2).sum(), 1e-30)))


def image_labels(logits: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(B, h*w, N)`` logits -> ``(B, H, W)`` labels: bilinear up-sampling to the image, argmax."""
    gh, gw = grid_size(height, width)
    grid = (
        torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))
        .reshape(logits.shape[0], gh, gw, -1)
        .permute(0, 3, 1, 2)
    )
    return F.interpolate(grid, size=(height, width), mode="bilinear", align_corners=False).argmax(1).numpy()


def compare_precision(
    path: str,
    reference: Sequence[Tuple[str, Dict[str, torch.Tensor], np.ndarray]],
    precision: str,
    max_rel_rms: float,
    kept: int,
    gated: bool = True,
) -> PrecisionReport:
    """Run the graph at ``path`` (ONNX Runtime, CPU) on each ``(name, feeds, fp32 PyTorch logits)``."""
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    report = PrecisionReport(precision, max_rel_rms, kept, gated=gated)
    for name, feeds, ref in reference:
        out = session.run([LOGITS], {k: v.numpy() for k, v in feeds.items()})[0]
        h, w = feeds[IMAGES].shape[2:]
        agree = float((image_labels(out, h, w) == image_labels(ref, h, w)).mean())
        report.cases.append(PrecisionCase(name, rel_rms(ref, out) if np.isfinite(out).all() else float("inf"), agree))
    return report
