"""Full INT8 with NNCF: post-training quantisation of every convolution and matrix product, activations
included, for the OpenVINO IR (NNCF's OpenVINO backend) and the ONNX graph (NNCF's ONNX backend: Q/DQ
pairs, the explicit quantisation TensorRT and ONNX Runtime read).

``nncf.quantize(model, calibration, model_type=TRANSFORMER, preset=...)``: per-channel symmetric
7-bit weights (NNCF's overflow fix, for CPUs without VNNI), asymmetric u8 activations for OpenVINO
(``MIXED``) and symmetric ones for ONNX (``PERFORMANCE``; NNCF makes those after a ReLU unsigned, which
:func:`signed_activations` turns into int8: TensorRT reads only INT8 Q/DQ), SmoothQuant
on the matrix products and fast bias correction;
the transformer model type keeps LayerNorm, Softmax and the additions of the attention biases in
float (NNCF inserts no quantiser in front of them). The ignored scope is :data:`IGNORED_NAMES`, the
logits product, whose class-embedding operand is a run-time input (see ``docs/int8.md``); with
``scope="convolutions"`` (:data:`INT8_SCOPES`) it also holds every matrix product and attention, so
only the convolutions are int8: the faster model on CPUs without VNNI, whose int8 matrix-product
kernels are no faster than their float ones.

With a labelled held-out set (``holdout_dir``: ``images/<stem>.<ext>`` and ``labels/<stem>.png``
whose pixels are indices into the export's categories, 255 = ignored),
``nncf.quantize_with_accuracy_control`` scores the fp32 and the quantised model by pixel accuracy
on it and returns quantisers to float, most harmful first, until the drop is at most ``max_drop``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from ...errors import IFSegError
from ...fileio import list_images
from ...runtime import openvino_core
from ...runtime.graph_contract import IMAGES, LOGITS
from ...runtime.qdq import signed_activations
from .calibrator import fit_image

NNCF, ONNXRUNTIME = "nncf", "onnxruntime"
#: INT8 quantisers: NNCF (every convolution and matrix product) or ONNX Runtime's ``quantize_static``
#: (only the weight matrix products, :mod:`.int8_graph`).
QUANTIZERS: Tuple[str, ...] = (NNCF, ONNXRUNTIME)
#: Products NNCF keeps float: the logits product (decoder features x class embeddings). Its output is
#: the logits themselves, and its class-embedding operand is a run-time input that changes with the
#: vocabulary, so ranges calibrated on the export's categories need not hold for another list.
#: NNCF's ONNX backend also leaves attention x values (the product after Softmax) float, which its
#: OpenVINO backend quantises.
IGNORED_NAMES: Tuple[str, ...] = ("/model/decoder/MatMul", "logits")  # its ONNX name; OpenVINO names it by its output
ALL, CONVOLUTIONS = "all", "convolutions"
#: What NNCF quantises: every convolution and matrix product (``all``), or the convolutions only.
INT8_SCOPES: Tuple[str, ...] = (ALL, CONVOLUTIONS)
#: What each scope makes int8, in words.
SCOPE_WORDS: Dict[str, str] = {ALL: "every convolution and matrix product", CONVOLUTIONS: "the convolutions only"}
#: Operator types NNCF leaves float per scope (ONNX and OpenVINO names; NNCF skips the other backend's).
#: Measured on an AVX2 CPU without VNNI (docs/int8.md): OpenVINO runs int8 convolutions 2.3x faster than
#: float ones, but int8 fully connected layers (oneDNN's gemm) no faster than float ones (brgemm / MLAS),
#: and quantised attention is split out of its fused float kernel.
IGNORED_TYPES: Dict[str, Tuple[str, ...]] = {ALL: (), CONVOLUTIONS: ("MatMul", "Gemm", "ScaledDotProductAttention")}
#: Default largest drop of held-out pixel accuracy (fraction: 0.01 = 1 point) for ``holdout_dir``.
DEFAULT_MAX_DROP = 0.01
#: Label value of unlabelled pixels in a held-out label map.
IGNORE_LABEL = 255
#: Operators counted as products (ONNX / OpenVINO names).
ONNX_PRODUCTS = ("Conv", "MatMul", "Gemm")
OV_PRODUCTS = ("Convolution", "MatMul")

HoldoutItem = Tuple[Dict[str, np.ndarray], np.ndarray]  # (graph inputs, (1, H, W) int64 labels)


def check_nncf_args(
    quantizer: str,
    precision: Optional[str],
    max_drop: Optional[float],
    holdout_dir: Optional[str],
    int8_scope: str = ALL,
) -> None:
    """``quantizer`` is one of :data:`QUANTIZERS` and ``int8_scope`` one of :data:`INT8_SCOPES`; a scope
    other than ``all``, ``max_drop`` (a fraction in (0, 1)) and ``holdout_dir`` (a folder with ``images/``
    and ``labels/``) go with ``precision=int8`` and ``quantizer=nncf``, and ``max_drop`` needs
    ``holdout_dir``. Raises :class:`IFSegError` naming the parameter."""
    if quantizer not in QUANTIZERS:
        raise IFSegError(f"quantizer={quantizer}: use one of {', '.join(QUANTIZERS)}")
    if int8_scope not in INT8_SCOPES:
        raise IFSegError(f"int8_scope={int8_scope}: use one of {', '.join(INT8_SCOPES)}")
    if int8_scope != ALL and (precision != "int8" or quantizer != NNCF):
        raise IFSegError(f"int8_scope={int8_scope} applies to precision=int8 with quantizer=nncf")
    if max_drop is None and holdout_dir is None:
        return
    if precision != "int8" or quantizer != NNCF:
        raise IFSegError("`max_drop` and `holdout_dir` apply to precision=int8 with quantizer=nncf")
    if max_drop is not None and not 0 < max_drop < 1:
        raise IFSegError(f"max_drop={max_drop}: give a fraction of pixel accuracy in (0, 1), e.g. 0.01 for 1 point")
    if holdout_dir is None:
        raise IFSegError(
            "`max_drop` needs `holdout_dir`, a labelled held-out set (images/ and labels/) to measure it on"
        )
    for sub in ("images", "labels"):
        if not os.path.isdir(os.path.join(holdout_dir, sub)):
            raise IFSegError(
                f"holdout_dir={holdout_dir} has no {sub}/ folder; it needs images/<stem>.<ext> and labels/<stem>.png"
            )


def holdout_items(
    holdout_dir: str, batch: int, height: int, width: int, fixed: Dict[str, np.ndarray], classes: int
) -> List[HoldoutItem]:
    """The labelled held-out set of ``holdout_dir``, each image and its label map fitted to
    ``height x width`` like the calibration images (:func:`.calibrator.fit_image`; labels by nearest
    neighbour) and repeated to ``batch`` (a static graph's), with the ``fixed`` vocabulary inputs. Label
    values are category indices ``0..classes-1`` or :data:`IGNORE_LABEL`; raises :class:`IFSegError`
    naming ``holdout_dir`` for a missing or bad label map."""
    from ...eval.labels import read_label_map
    from ...preprocess import normalize, read_image

    files = list_images(os.path.join(holdout_dir, "images"))
    if not files:
        raise IFSegError(f"holdout_dir={holdout_dir}: images/ holds no images")
    items = []
    for f in files:
        label_file = os.path.join(holdout_dir, "labels", os.path.splitext(os.path.basename(f))[0] + ".png")
        if not os.path.isfile(label_file):
            raise IFSegError(f"holdout_dir={holdout_dir}: no label map labels/{os.path.basename(label_file)}")
        rgb, labels = read_image(f), read_label_map(label_file)
        if labels.shape != rgb.shape[:2]:
            raise IFSegError(f"holdout_dir={holdout_dir}: {os.path.basename(label_file)} is not the size of its image")
        bad = np.setdiff1d(np.unique(labels), np.r_[np.arange(classes), IGNORE_LABEL])
        if bad.size:
            raise IFSegError(
                f"holdout_dir={holdout_dir}: {os.path.basename(label_file)} holds values {bad[:5].tolist()}; "
                f"use category indices 0..{classes - 1} or {IGNORE_LABEL} (ignored)"
            )
        image = np.repeat(normalize(fit_image(rgb, height, width)).numpy()[None], batch, axis=0)
        labels = fit_image(labels.astype(np.uint16), height, width, nearest=True).astype(np.int64)  # cv2 has no int64
        items.append((dict(fixed, **{IMAGES: image}), np.repeat(labels[None], batch, axis=0)))
    return items


def pixel_accuracy(run: Callable[[Dict[str, np.ndarray]], np.ndarray], items: Iterable[HoldoutItem]) -> float:
    """Fraction of labelled pixels whose label (logits up-sampled to the image, argmax) is the truth;
    ``run`` maps graph inputs to ``(B, h*w, N)`` logits."""
    from .fp16_graph import image_labels  # reads ONNX graphs: imported when scoring, not with the CLI

    right = total = 0
    for feeds, labels in items:
        pred = image_labels(run(feeds), *labels.shape[1:])
        valid = labels != IGNORE_LABEL
        right += int((pred == labels)[valid].sum())
        total += int(valid.sum())
    return right / max(total, 1)


def _runner(model: Any) -> Callable[[Dict[str, np.ndarray]], np.ndarray]:
    """Logits of an OpenVINO compiled model or an ONNX Runtime session (what NNCF validates)."""
    if hasattr(model, "get_inputs"):  # onnxruntime.InferenceSession
        names = {i.name for i in model.get_inputs()}
        return lambda feeds: model.run([LOGITS], {k: v for k, v in feeds.items() if k in names})[0]
    names = {n for i in model.inputs for n in i.get_names()}
    out = next(o for o in model.outputs if LOGITS in o.get_names())
    return lambda feeds: np.asarray(model({k: v for k, v in feeds.items() if k in names})[out])


def quantize(
    model: Any,
    calibration: Sequence[Dict[str, np.ndarray]],
    holdout: Optional[Sequence[HoldoutItem]] = None,
    max_drop: Optional[float] = None,
    scope: str = ALL,
) -> Any:
    """``model`` (an ``openvino.Model`` or an ``onnx.ModelProto``, fp32) quantised by NNCF on the
    ``calibration`` inputs, the operators of ``scope`` (:data:`INT8_SCOPES`); with ``holdout``, under
    accuracy control to at most ``max_drop`` (default :data:`DEFAULT_MAX_DROP`) of pixel accuracy.
    Raises :class:`IFSegError` when nncf is missing or fails on the graph."""
    try:
        import nncf
    except ImportError:
        raise IFSegError(
            "quantizer=nncf needs nncf: pip install 'ifseg-deploy[openvino]', or use quantizer=onnxruntime"
        ) from None
    onnx_graph = type(model).__name__ == "ModelProto"
    common = dict(
        model_type=nncf.ModelType.TRANSFORMER,
        # ONNX: symmetric activations (made signed afterwards, the only Q/DQ TensorRT reads); OpenVINO: asymmetric u8
        preset=nncf.QuantizationPreset.PERFORMANCE if onnx_graph else nncf.QuantizationPreset.MIXED,
        subset_size=len(calibration),
        ignored_scope=nncf.IgnoredScope(names=list(IGNORED_NAMES), types=list(IGNORED_TYPES[scope]), validate=False),
    )
    # 7-bit weights in every layer: without VNNI, x86 multiplies u8 x s8 pairs into saturating int16
    # (vpmaddubsw), which 8-bit weights overflow; ONNX Runtime's quantizer calls the same fix reduce_range
    advanced = nncf.AdvancedQuantizationParameters(overflow_fix=nncf.OverflowFix.ENABLE)
    try:
        with openvino_core.keep_signal_stack():  # NNCF's OpenVINO engines are Cores of their own
            return _nncf_quantize(nncf, model, calibration, holdout, max_drop, advanced, common)
    except IFSegError:
        raise
    except Exception as e:  # NNCF raises its own and plain exceptions for graphs it cannot handle
        raise IFSegError(
            f"NNCF INT8 quantization failed ({str(e).strip().splitlines()[0][:160]}); nothing was written"
        ) from None


def _nncf_quantize(nncf, model, calibration, holdout, max_drop, advanced, common):
    """``nncf.quantize``, or ``nncf.quantize_with_accuracy_control`` when ``holdout`` (see :func:`quantize`)."""
    if holdout:
        return nncf.quantize_with_accuracy_control(
            model,
            nncf.Dataset(list(calibration)),
            nncf.Dataset(list(holdout)),
            lambda compiled, items: pixel_accuracy(_runner(compiled), items),
            max_drop=DEFAULT_MAX_DROP if max_drop is None else max_drop,
            drop_type=nncf.DropType.ABSOLUTE,
            advanced_quantization_parameters=advanced,
            **common,
        )
    return nncf.quantize(model, nncf.Dataset(list(calibration)), advanced_parameters=advanced, **common)


def onnx_float_products(model: Any) -> List[str]:
    """Names of the Conv / MatMul / Gemm nodes of an ONNX graph with an input that no
    ``DequantizeLinear`` produces, directly or through data movement or a ``MaxPool`` (the products left
    in float)."""
    producers = {o: n for n in model.graph.node for o in n.output}

    def quantized(name: str) -> bool:
        node = producers.get(name)
        if node is not None and node.op_type in ("MaxPool", "Reshape", "Transpose"):  # int8 values stay int8
            return quantized(node.input[0])
        return node is not None and node.op_type == "DequantizeLinear"

    return [
        n.name for n in model.graph.node if n.op_type in ONNX_PRODUCTS and not all(quantized(i) for i in n.input[:2])
    ]


def openvino_float_products(model: Any) -> List[str]:
    """Friendly names of the Convolution / MatMul nodes of an ``openvino.Model`` with an input that
    is neither a ``FakeQuantize`` (directly or through a ``MaxPool``) nor an int8 weight (a low-precision
    constant and its dequantisation)."""

    def quantized(node, depth: int = 4) -> bool:
        kind = node.get_type_name()
        if kind == "FakeQuantize" or (kind == "Constant" and node.get_element_type().get_type_name() in ("i8", "u8")):
            return True
        if depth and kind in ("Convert", "Multiply", "Subtract", "Reshape", "Transpose", "MaxPool"):
            return any(quantized(i.get_source_output().get_node(), depth - 1) for i in node.inputs())
        return False

    return [
        op.get_friendly_name()
        for op in model.get_ordered_ops()
        if op.get_type_name() in OV_PRODUCTS
        and not all(quantized(i.get_source_output().get_node()) for i in op.inputs()[:2])
    ]


@dataclass
class LabelledCheck:
    """Pixel accuracy of the fp32 and the int8 model on a labelled held-out set (``holdout_dir``)."""

    images: int
    fp32: float  # fraction
    int8: float
    max_drop: float

    @property
    def drop(self) -> float:
        return self.fp32 - self.int8

    @property
    def ok(self) -> bool:
        return self.drop <= self.max_drop + 1e-12

    def lines(self) -> List[str]:
        return [
            f"labelled held-out set ({self.images} images): pixel acc fp32 {100 * self.fp32:.2f}%, int8 "
            f"{100 * self.int8:.2f}%; drop {100 * self.drop:.2f} pt (max_drop {100 * self.max_drop:.1f} pt); "
            f"{'ok' if self.ok else 'BELOW GATE'}"
        ]

    def to_dict(self) -> dict:
        return {"images": self.images, "fp32": self.fp32, "int8": self.int8, "max_drop": self.max_drop, "ok": self.ok}


def labelled_check(
    fp32: Callable[[Dict[str, np.ndarray]], np.ndarray],
    int8: Callable[[Dict[str, np.ndarray]], np.ndarray],
    holdout: Sequence[HoldoutItem],
    max_drop: Optional[float],
) -> LabelledCheck:
    """:func:`pixel_accuracy` of the ``fp32`` and ``int8`` runners on ``holdout``."""
    return LabelledCheck(
        len(holdout),
        pixel_accuracy(fp32, holdout),
        pixel_accuracy(int8, holdout),
        DEFAULT_MAX_DROP if max_drop is None else max_drop,
    )


def require_labelled(check: Optional[LabelledCheck], gated: bool) -> None:
    """Raise :class:`IFSegError` when ``check`` misses its ``max_drop`` and the gate is on."""
    if check is not None and not check.ok and gated:
        raise IFSegError(
            f"the int8 model loses {100 * check.drop:.2f} points of pixel accuracy on holdout_dir against fp32 "
            f"({100 * check.int8:.2f}% vs {100 * check.fp32:.2f}%; max_drop {check.max_drop}) even after NNCF's "
            "accuracy control; nothing was written (raise max_drop, or gate=False writes it anyway)"
        )


def to_int8_nncf(
    model: Any,
    out_path: str,
    calibration: Sequence[Dict[str, np.ndarray]],
    holdout: Optional[Sequence[HoldoutItem]],
    max_drop: Optional[float],
    scope: str = ALL,
) -> Tuple[Any, int, Optional[LabelledCheck]]:
    """The ONNX graph ``model`` (fp32, verified) quantised by NNCF (:func:`quantize`, ``scope``) and saved to
    ``out_path``: ``(Q/DQ graph, number of products left float, the labelled check when ``holdout``)``."""
    import onnx
    import onnxruntime as ort

    quantized = quantize(model, calibration, holdout, max_drop, scope)
    signed_activations(quantized)  # TensorRT reads INT8 Q/DQ only
    onnx.save(quantized, out_path)
    check = None
    if holdout:

        def session(m):
            return _runner(ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]))

        check = labelled_check(session(model), session(quantized), holdout, max_drop)
    return quantized, len(onnx_float_products(quantized)), check


def openvino_int8(
    ir: Any,
    calibration: Sequence[Dict[str, np.ndarray]],
    holdout: Optional[Sequence[HoldoutItem]],
    max_drop: Optional[float],
    scope: str = ALL,
) -> Tuple[Any, int, Optional[LabelledCheck]]:
    """The ``openvino.Model`` ``ir`` (fp32) quantised by NNCF (:func:`quantize`, ``scope``): ``(int8 model,
    number of products left float, the labelled check when ``holdout``)``; models compared on the CPU in
    float32."""
    quantized = quantize(ir, calibration, holdout, max_drop, scope)
    check = None
    if holdout:

        def compiled(m):
            return _runner(openvino_core.core().compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}))

        check = labelled_check(compiled(ir), compiled(quantized), holdout, max_drop)
    return quantized, len(openvino_float_products(quantized)), check
