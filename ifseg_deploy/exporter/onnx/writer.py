"""PyTorch -> ONNX: one graph (backbone + encoder + parallel decoder), run-time vocabulary, verified.

The graph is traced (TorchScript exporter, opset 17, constant folding), simplified with
onnxslim, checked (ONNX checker, graph policy, TensorRT operator table) and run through ONNX
Runtime against PyTorch. Nothing is written unless everything passes: the ONNX file and its
side file appear together, atomically.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import onnx
import torch

from ...checkpoint import LoadedModel
from ...errors import IFSegError
from ...fileio import atomic_path
from ...model.segofa import position_state
from ...precision import FP16, FP32, INT8
from ...preprocess import read_image
from ...runtime.graph_contract import LOGITS, GraphContract
from ...runtime.sidecar import vocab_path, write_vocab
from ...runtime.vocabulary import PreparedVocabulary, Vocabulary
from ...text.prompt import validate_categories
from ...version import __version__
from ..args import ExportArgs
from ..precision.fp16_graph import FP16_MAX_REL_RMS, PrecisionReport, compare_precision, to_fp16
from ..precision.holdout_check import HoldoutSet, check_holdout, holdout_set
from ..precision.int8_graph import INT8_MAX_REL_RMS, calibration_feeds, to_int8, vocabulary_feeds
from ..precision.nncf_int8 import NNCF, holdout_items, require_labelled, to_int8_nncf
from ..tensorrt.ops import OpCheckReport, check_graph
from .graph import ExportGraph, sample_inputs
from .verify import VerifyReport, graph_policy_problems, run_torch, verify_onnx

METADATA_KEY = "ifseg_deploy"
#: Largest constant the simplifier may create by folding in a dynamic-shape export.
FOLD_LIMIT_BYTES = 1 << 22


@dataclass
class OnnxExport:
    """What :func:`write_onnx` produced."""

    path: str
    vocab_path: str
    metadata: Dict[str, Any]
    verification: VerifyReport
    op_check: OpCheckReport
    precision: Optional[PrecisionReport] = None  # reduced-precision graphs: the check against fp32 PyTorch
    contract: Optional[GraphContract] = None  # the graph's names, shapes and options


def _trace(graph: ExportGraph, feeds: Dict[str, torch.Tensor], path: str, args: ExportArgs) -> None:
    contract = graph.contract
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript-exporter deprecation and tracer notes on shape arithmetic
        torch.onnx.export(
            graph,
            tuple(feeds.values()),
            path,
            dynamo=False,
            opset_version=args.opset,
            do_constant_folding=True,
            input_names=contract.input_names,
            output_names=contract.output_names,
            dynamic_axes=contract.dynamic_axes(),
        )


def _declare_shapes(model: onnx.ModelProto, dims: Dict[str, List[Any]]) -> None:
    """Overwrite the graph's input/output shapes with clean names (the simplifier invents some)."""
    for value in list(model.graph.input) + list(model.graph.output):
        if value.name not in dims:
            continue
        shape = value.type.tensor_type.shape
        del shape.dim[:]
        for d in dims[value.name]:
            dim = shape.dim.add()
            if isinstance(d, str):
                dim.dim_param = d
            else:
                dim.dim_value = int(d)


def alternate_categories(categories: Sequence[str]) -> List[str]:
    """A different list (another length, order and prompt) to check that the vocabulary really is an input."""
    alt = list(reversed(categories))[:-1] or list(categories)
    for extra in ("sky", "traffic light", "tree"):
        if len(alt) > len(categories):
            break
        if extra not in {c.lower() for c in alt}:
            alt.append(extra)
    return validate_categories(alt)


def verification_cases(
    graph: ExportGraph, vocab: PreparedVocabulary, alt: PreparedVocabulary, args: ExportArgs
) -> List[Tuple[str, Dict[str, torch.Tensor]]]:
    """Photo-like scenes (:func:`sample_inputs`) at the export size, another scene with another vocabulary
    (and, when dynamic, a non-square size), and the ``verify_image`` images."""
    h, w = args.traced_size
    cases = [("synthetic scene", sample_inputs(graph, vocab, args.batch, h, w))]
    if args.is_dynamic:
        ah, aw = (w, h) if h != w else (h, w + 11 * 16)
        cases.append(("non-square scene, other categories", sample_inputs(graph, alt, 1, ah, aw, seed=args.batch)))
    else:
        cases.append(("other scene, other categories", sample_inputs(graph, alt, args.batch, h, w, seed=args.batch)))
    for path in args.verify_image:
        rgb = read_image(path)
        x = args.preprocessing(rgb).unsqueeze(0)
        if not args.is_dynamic and tuple(x.shape[2:]) != (h, w):
            raise IFSegError(
                f"verification image {path} preprocesses to {x.shape[2]}x{x.shape[3]}, but the static export is "
                f"{h}x{w}; "
                f"size the export for it with imgsz_from={path}, or use dynamic=True"
            )
        images = x.expand(args.batch if not args.is_dynamic else 1, -1, -1, -1).contiguous()
        feeds = graph.inputs(
            images,
            vocab.prompt_embeds.detach().float().cpu(),
            vocab.class_embeds.detach().float().cpu(),
            tuple(rgb.shape[:2]),
        )
        cases.append((os.path.basename(path), feeds))
    return cases


def reduce_precision(
    model: onnx.ModelProto,
    graph: ExportGraph,
    cases: Sequence[Tuple[str, Dict[str, torch.Tensor]]],
    path: str,
    args: ExportArgs,
    vocab: PreparedVocabulary,
    holdout: Optional[HoldoutSet],
    no_holdout: str,
) -> Tuple[onnx.ModelProto, PrecisionReport]:
    """The fp16 or INT8 graph of the verified fp32 ``model``, saved to ``path``, compared with the
    fp32 PyTorch ``graph`` on ``cases`` and, when a trained bundle's ``holdout`` set is given, with
    the fp32 graph on it (``no_holdout``: why there is none); raises :class:`IFSegError` below a gate
    unless ``args.gate`` is off. INT8 calibrates on ``args.calib_dir`` with the ``vocab`` inputs."""
    precision, labelled = args.precision, None
    if precision == FP16:
        reduced, kept = to_fp16(model)
        onnx.save(reduced, path)
        gate = FP16_MAX_REL_RMS
    else:
        h, w = args.traced_size
        fixed = vocabulary_feeds(graph, vocab, h, w)
        calibration = calibration_feeds(args.calib_dir, args.batch, h, w, fixed)
        if args.quantizer == NNCF:
            labelled = args.holdout_dir and holdout_items(
                args.holdout_dir, args.batch, h, w, fixed, len(vocab.categories)
            )
            reduced, kept, labelled = to_int8_nncf(
                model, path, calibration, labelled or None, args.max_drop, args.int8_scope
            )
        else:
            kept = to_int8(model, path, calibration)
            reduced = onnx.load(path)
        gate = INT8_MAX_REL_RMS
    names = graph.contract.output_names
    reference = [(name, feeds, run_torch(graph, feeds, names)[LOGITS]) for name, feeds in cases]
    report = compare_precision(path, reference, precision, gate, kept, gated=args.gate)
    report.labelled = labelled
    require_labelled(labelled, args.gate)
    if not report.logits_ok and args.gate:
        worst = max(report.cases, key=lambda c: c.rel_rms)
        raise IFSegError(
            f"the {precision} graph's logits differ from fp32 PyTorch by rel-RMS {worst.rel_rms:.2e} on '{worst.name}' "
            f"(gate {report.max_rel_rms:.0e}); nothing was written (gate=False writes it anyway)"
        )
    report.holdout = check_holdout(model, reduced, holdout, graph.contract, precision, args.gate, no_holdout)
    if not report.holdout.ok and args.gate:
        h = report.holdout
        raise IFSegError(
            f"the {precision} graph loses {100 * h.drop:.2f} points of held-out accuracy against the fp32 graph "
            f"(pixel acc {100 * h.reduced['pixel_acc']:.2f}% vs {100 * h.fp32['pixel_acc']:.2f}%, mIoU "
            f"{100 * h.reduced['miou']:.2f}% "
            f"vs {100 * h.fp32['miou']:.2f}%; gate {100 * h.max_drop:.1f} points); nothing was written (gate=False "
            f"writes it anyway)"
        )
    return reduced, report


def export_metadata(
    loaded: LoadedModel, vocab: PreparedVocabulary, args: ExportArgs, contract: GraphContract
) -> Dict[str, Any]:
    """The description stored in the ONNX ``metadata_props`` and the side file."""
    return {
        "arch": loaded.arch.to_dict(),
        "categories": loaded.categories,
        "prompt_prefix": loaded.prompt_prefix,
        "preprocessing": args.preprocessing.to_dict(),
        "export": {
            "version": __version__,
            "source": os.path.basename(loaded.path),
            "source_kind": loaded.kind,
            "categories": list(vocab.categories),
            "prompt_ids": list(vocab.prompt_ids),
            "opset": args.opset,
            **contract.to_meta(),
        },
    }


def _attach_metadata(model: onnx.ModelProto, meta: Dict[str, Any]) -> None:
    model.producer_name = "ifseg-deploy"
    model.producer_version = __version__
    model.doc_string = (
        "IFSeg / SegOFA segmentation; vocabulary (prompt_embeds, class_embeds) is an input, "
        "see the .vocab.safetensors side file"
    )
    props = {
        METADATA_KEY: json.dumps(meta),
        "categories": ", ".join(meta["export"]["categories"]),
        "prompt_prefix": meta["prompt_prefix"],
        "preprocessing": json.dumps(meta["preprocessing"]),
        "version": __version__,
    }
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def read_onnx_metadata(path: str) -> Dict[str, Any]:
    """The ``ifseg_deploy`` metadata of an exported ONNX file (without loading its weights)."""
    model = onnx.load(path, load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return json.loads(prop.value)
    raise IFSegError(
        f"{path} was not exported by ifseg-deploy (no '{METADATA_KEY}' metadata); re-export it with ifseg-deploy export"
    )


def write_onnx(loaded: LoadedModel, out_path: str, vocabulary: Vocabulary, args: ExportArgs) -> OnnxExport:
    """Export ``loaded`` as ``args`` say (the graph :meth:`ExportArgs.contract` describes, verified
    with ``args.categories``, default: the stored list), simplify, check and verify; write
    ``out_path`` and its side file only if all checks pass. ``args`` are taken as given: callers
    check them first (:func:`~ifseg_deploy.exporter.args.validate`). Raises :class:`IFSegError` when
    a check of the graph fails."""
    import onnxslim

    precision = args.precision or FP32
    contract = args.contract(loaded.arch)
    vocab = vocabulary.prepare(args.categories)
    alt = vocabulary.prepare(alternate_categories(vocab.categories))
    graph = ExportGraph(loaded.model.float().eval(), contract).eval()
    cases = verification_cases(graph, vocab, alt, args)
    meta = export_metadata(loaded, vocab, args, contract)
    with atomic_path(out_path) as tmp:
        _trace(graph, cases[0][1], tmp, args)
        model = onnx.load(tmp)
        if args.slim:
            # Static shapes: fold everything, including the per-layer position biases. Dynamic shapes:
            # keep large lookups (relative-position tables gathered over the 32x32 grid) as graph ops.
            model = onnxslim.slim(model, size_threshold=None if not args.is_dynamic else FOLD_LIMIT_BYTES)
        _declare_shapes(model, contract.dims())
        problems = graph_policy_problems(model)
        if problems:
            raise IFSegError(
                "the exported graph breaks the deployment rules (" + "; ".join(problems) + "); nothing was written"
            )
        try:
            onnx.checker.check_model(model, full_check=True)
        except onnx.checker.ValidationError as e:
            raise IFSegError(
                f"the ONNX checker rejects the graph ({str(e).splitlines()[0][:160]}); nothing was written"
            ) from None
        onnx.save(model, tmp)
        report = verify_onnx(tmp, graph, cases, atol=args.atol)
        if not report.ok:
            raise IFSegError(f"ONNX Runtime disagrees with PyTorch {report.failure()}; the ONNX file was not written")
        meta["export"]["verification"] = report.to_dict()
        meta["export"]["precision"] = precision
        if precision == INT8:
            meta["export"]["quantizer"] = args.quantizer
            if args.quantizer == NNCF:
                meta["export"]["int8_scope"] = args.int8_scope
        reduced = None
        if precision != FP32:
            no_holdout = (
                f"{os.path.basename(loaded.path)} stores no held-out figures; bundles from ifseg-deploy train do"
            )
            model, reduced = reduce_precision(
                model,
                graph,
                cases,
                tmp,
                dataclasses.replace(args, precision=precision),
                vocab,
                holdout_set(loaded, vocabulary, contract),
                no_holdout,
            )
            meta["export"]["verification"]["precision"] = reduced.to_dict()
        _attach_metadata(model, meta)
        onnx.save(model, tmp)
        op_check = check_graph(model, args.trt_version)
        side = vocab_path(out_path)
        write_vocab(
            side,
            loaded.model.embed_tokens.weight,
            loaded.class_embeds,
            meta,
            position_state(loaded.model) if contract.bias_inputs else None,
        )
    return OnnxExport(out_path, side, meta, report, op_check, reduced, contract)
