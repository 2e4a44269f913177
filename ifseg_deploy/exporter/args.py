"""The arguments of an export: one object whose fields are the ``ifseg-deploy export`` flags
(``--knn-k`` -> ``knn_k``), checked once, by :func:`validate`, before anything is loaded or written.

Messages name the fields (``batch``, ``precision=int8``); the CLI shows them as its flags.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

from ..config import ArchConfig
from ..errors import IFSegError
from ..fileio import check_output_file, check_output_folder
from ..precision import FP32, INT8
from ..preprocess import Preprocessing
from ..runtime.graph_contract import GraphContract
from ..runtime.sidecar import read_vocab, vocab_path
from .formats import ENGINE_SUFFIXES, export_format
from .onnx.verify import ATOL
from .precision.graph_precision import check_graph_precision, check_weight_precision
from .precision.nncf_int8 import ALL, ONNXRUNTIME, check_nncf_args
from .source_size import static_size_for
from .tensorrt.profiles import load_profile

HOST, IN_GRAPH = "host", "in-graph"
#: Where kNN smoothing and up-sampling + argmax run (``knn`` / ``upsample``).
PLACES = (HOST, IN_GRAPH)
#: Where a dynamic graph's position biases come from: ``inputs`` (computed once per input shape by
#: the runtime and fed to the graph), ``graph`` (computed by the graph on every run), ``auto``
#: (inputs for ONNX / OpenVINO exports, graph for TensorRT engines; static graphs fold them).
POSITION_BIASES = ("auto", "inputs", "graph")
#: ONNX opsets the exporter writes (17: the TensorRT 8.6 maximum).
OPSETS = (17, 20)
DEFAULT_OPSET = OPSETS[0]


@dataclass(frozen=True)
class ExportArgs:
    """Every export setting, named as the ``ifseg-deploy export`` flags.

    ``imgsz``: the preprocessing's short side ``S`` (pixels), or ``(H, W)``: a static export of that
    size; ``imgsz_from``: an image or video whose pre-processed size at short side ``imgsz``
    becomes the static size; ``dynamic``: True asks for a dynamic graph (None: dynamic unless
    ``static``, ``imgsz=(H, W)`` or ``imgsz_from``). ``image_size``, not a flag, is the traced
    ``(H, W)``, filled in by :func:`validate` (``(S, S)`` for a dynamic graph); ``slim=False``, not
    a flag either, keeps the graph unsimplified. The graph precision defaults to fp32 for ONNX /
    OpenVINO, the profile's for engines, the graph's own for an engine built from an ``.onnx``.
    """

    format: str = "onnx"
    out: Optional[str] = None  # default: next to the source (see formats.FORMATS)
    categories: Optional[Sequence[str]] = None  # verification list (default: the stored one)
    bpe_dir: Optional[str] = None
    imgsz: Union[int, Tuple[int, int]] = 512
    imgsz_from: Optional[str] = None
    dynamic: Optional[bool] = None
    static: bool = False
    batch: int = 1
    precision: Optional[str] = None
    calib_dir: Optional[str] = None
    # int8: "onnxruntime" (weight products only) or "nncf" (every convolution and product: faster, and
    # opt-in because its activation ranges are the model's to earn: check its gate on your own model)
    quantizer: str = ONNXRUNTIME
    int8_scope: str = ALL  # int8 + nncf: "all" products, or "convolutions" only (faster on CPUs without VNNI)
    holdout_dir: Optional[str] = None  # int8 + nncf: labelled held-out set (images/, labels/) for accuracy control
    max_drop: Optional[float] = None  # largest held-out pixel-accuracy drop (fraction) under accuracy control
    gate: bool = True  # refuse a reduced-precision graph below its fidelity gate (False: write it anyway)
    knn: str = HOST
    knn_k: int = 3
    knn_iters: int = 25
    upsample: str = HOST
    position_biases: str = "auto"
    profile: str = "desktop-rtx"
    opset: int = DEFAULT_OPSET
    trt_version: Optional[str] = None  # operator table of the static TensorRT check (default: the profile's)
    verify_image: Sequence[str] = ()
    tolerance: Optional[float] = None
    timing_cache: Optional[str] = None
    device: str = "cuda"  # GPU the engine is built on
    image_size: Optional[Tuple[int, int]] = None
    slim: bool = True

    @property
    def fixed_size(self) -> bool:
        """The input size is fixed by ``imgsz=(H, W)`` or ``imgsz_from``."""
        return not isinstance(self.imgsz, int) or bool(self.imgsz_from)

    @property
    def is_dynamic(self) -> bool:
        return self.dynamic if self.dynamic is not None else not (self.static or self.fixed_size)

    @property
    def short_side(self) -> int:
        """The preprocessing's short side (pixels)."""
        return self.imgsz if isinstance(self.imgsz, int) else min(self.imgsz)

    @property
    def traced_size(self) -> Tuple[int, int]:
        """``(H, W)`` traced and verified: :attr:`image_size`, else ``imgsz`` as a square or ``(H, W)``."""
        if self.image_size is not None:
            return tuple(self.image_size)
        return (self.imgsz, self.imgsz) if isinstance(self.imgsz, int) else tuple(self.imgsz)

    @property
    def preprocessing(self) -> Preprocessing:
        """The reference resize at the export's short side."""
        return Preprocessing.short_side_rule(self.short_side)

    @property
    def atol(self) -> float:
        return self.tolerance if self.tolerance is not None else ATOL

    @property
    def bias_inputs(self) -> bool:
        """A dynamic graph takes its position biases as inputs (a static one folds them)."""
        wanted = self.position_biases == "inputs" or (self.position_biases == "auto" and self.format != "engine")
        return wanted and self.is_dynamic

    def contract(self, arch: ArchConfig) -> GraphContract:
        """The graph these arguments export for a model of ``arch``."""
        biases = (arch.encoder_layers, arch.decoder_layers, arch.heads) if self.bias_inputs else None
        return GraphContract(
            arch.embed_dim,
            self.knn_k,
            self.knn_iters if self.knn == IN_GRAPH else 0,
            self.upsample == IN_GRAPH,
            self.is_dynamic,
            self.batch,
            self.traced_size,
            biases,
        )

    def rebuild_command(self, source: str) -> str:
        """The ``ifseg-deploy export`` command line that recreates this engine (quoted for a shell)."""
        imgsz = "x".join(map(str, self.imgsz)) if not isinstance(self.imgsz, int) else str(self.imgsz)
        parts = [
            "ifseg-deploy",
            "export",
            "--checkpoint",
            source,
            "--format",
            "engine",
            "--out",
            str(self.out),
            "--profile",
            self.profile,
            "--imgsz",
            imgsz,
            "--precision",
            str(self.precision),
        ]
        parts += ["--imgsz-from", self.imgsz_from] if self.imgsz_from else []
        parts += [] if self.gate else ["--no-gate"]
        parts += ["--dynamic"] if self.is_dynamic else ["--static", "--batch", str(self.batch)]
        if self.calib_dir:
            parts += ["--calib-dir", self.calib_dir]
        if self.precision == INT8 and self.quantizer != ONNXRUNTIME:
            parts += ["--quantizer", self.quantizer]
        if self.int8_scope != ALL:
            parts += ["--int8-scope", self.int8_scope]
        if self.holdout_dir:
            parts += ["--holdout-dir", self.holdout_dir]
        if self.max_drop is not None:
            parts += ["--max-drop", str(self.max_drop)]
        if self.categories:
            parts += ["--categories", ", ".join(self.categories)]
        return " ".join(shlex.quote(p) for p in parts)


def _check_graph_args(args: ExportArgs, precision: Optional[str]) -> None:
    """The graph's own settings (shape, post-processing, opset, ``precision`` unless None);
    :class:`IFSegError` naming the field."""
    if args.batch < 1:
        raise IFSegError("`batch` must be >= 1")
    h, w = args.traced_size
    if min(h, w) < 16:
        raise IFSegError(f"imgsz={h}x{w}: each side must be >= 16 pixels (the stride-16 grid)")
    for name in ("knn", "upsample"):
        if getattr(args, name) not in PLACES:
            raise IFSegError(f"{name}={getattr(args, name)}: use {' or '.join(PLACES)}")
    if args.knn == IN_GRAPH and (args.knn_k < 1 or args.knn_iters < 1):
        raise IFSegError("knn=in-graph needs `knn_k` >= 1 and `knn_iters` >= 1")
    if args.position_biases not in POSITION_BIASES:
        raise IFSegError(f"position_biases={args.position_biases}: use one of {', '.join(POSITION_BIASES)}")
    if not OPSETS[0] <= args.opset <= OPSETS[1]:
        raise IFSegError(
            f"opset={args.opset} is not supported; use {OPSETS[0]}..{OPSETS[1]} (17 is the TensorRT 8.6 maximum)"
        )
    if precision is not None:
        check_graph_precision(precision, args.calib_dir)
    check_nncf_args(args.quantizer, precision, args.max_drop, args.holdout_dir, args.int8_scope)


def validate(args: ExportArgs, source: str) -> ExportArgs:
    """``args`` checked against each other, the profile, the format and ``source`` (checkpoint, bundle,
    or for ``format="engine"`` an exported ``.onnx``), with ``out``, ``precision`` and ``image_size``
    filled in. Every check that needs no model happens here, so bad settings fail before any file
    is read or written. Raises :class:`IFSegError` with a one-line reason naming the field."""
    if args.dynamic and (args.static or args.fixed_size):
        raise IFSegError(
            "dynamic=True contradicts static=True / imgsz=HxW / `imgsz_from` (a fixed input size); "
            "with dynamic=True pass the short side only, e.g. imgsz=512"
        )
    if args.imgsz_from and not isinstance(args.imgsz, int):
        raise IFSegError("`imgsz_from` sets HxW from the source; give `imgsz` the short side only, e.g. imgsz=512")
    profile = load_profile(args.profile)
    fmt = export_format(args.format)
    from_graph = source.endswith(".onnx")
    if args.format == "engine" and args.position_biases == "inputs":
        raise IFSegError(
            "TensorRT engines compute their position biases in the graph (a static engine folds them); "
            "drop position_biases=inputs"
        )
    if args.format == "openvino" and (from_graph or not os.path.isfile(source)):
        raise IFSegError(f"format=openvino exports from a PyTorch checkpoint or bundle (found: {source})")
    if from_graph and args.format == "onnx":
        raise IFSegError(f"{source} is already an ONNX file; export from the PyTorch checkpoint or use format=engine")
    out = args.out or fmt.default_out(source)
    if fmt.suffix.startswith(".") and not out.endswith(fmt.suffixes):
        raise IFSegError(f"out={out} must end with {' or '.join(fmt.suffixes)} for format={args.format}")
    if from_graph and args.calib_dir:
        raise IFSegError(
            "`calib_dir` applies when exporting from a checkpoint; an exported .onnx already carries its precision"
        )
    default = profile.precision if args.format == "engine" else FP32
    precision = args.precision or (None if from_graph else default)
    image_size = args.image_size
    if from_graph:  # an earlier export: its shapes and preprocessing come from its side file
        if args.imgsz_from:
            raise IFSegError(
                f"`imgsz_from` applies when exporting from a checkpoint; {source} already fixes its input size"
            )
        if os.path.isfile(source) and read_vocab(source).contract.bias_inputs:
            raise IFSegError(
                f"{source} takes its position biases as inputs (for ONNX Runtime / OpenVINO); build the engine from "
                f"the "
                "checkpoint with format=engine, or from an ONNX exported with position_biases=graph"
            )
    resolved = dataclasses.replace(args, out=out, precision=precision)
    _check_graph_args(
        resolved, None if from_graph and precision == INT8 else precision
    )  # a Q/DQ graph needs no more calibration
    if args.format == "openvino":
        check_weight_precision(precision)
        check_output_folder(out, "out", "openvino")
    if args.format == "engine":
        if args.upsample == IN_GRAPH:
            raise IFSegError(
                "upsample=in-graph is for ONNX exports only (it needs a shape input TensorRT profiles do not cover); "
                "use upsample=host"
            )
        from ..runtime.device import cuda_device
        from ..runtime.tensorrt_common import require_tensorrt

        require_tensorrt()
        cuda_device(args.device)
    if not os.path.isfile(source):
        raise IFSegError(f"checkpoint not found: {source}")
    if args.format != "openvino":
        _check_output_files(source, out, args.format, args.timing_cache)
    if args.imgsz_from:
        image_size = static_size_for(args.imgsz_from, resolved.preprocessing)
    return dataclasses.replace(resolved, image_size=image_size or resolved.traced_size)


def _check_output_files(source: str, out: str, fmt: str, timing_cache: Optional[str]) -> None:
    """Every file an ONNX / engine export writes can be written (:mod:`ifseg_deploy.fileio`'s
    policy), checked before any work."""
    files = [out, vocab_path(out)]
    if fmt == "engine":
        files.append(timing_cache or os.path.splitext(out)[0] + ".timing.cache")
        if not source.endswith(".onnx"):
            onnx_path = os.path.splitext(out)[0] + ".onnx"
            files += [onnx_path, vocab_path(onnx_path)]
    size = (
        os.path.getsize(source) if os.path.isfile(source) else 0
    )  # an fp32 graph holds about the checkpoint's weights
    for path in files:
        check_output_file(path, "out", size_hint=size if path.endswith((".onnx",) + ENGINE_SUFFIXES) else 0)
