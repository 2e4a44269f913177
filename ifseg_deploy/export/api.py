"""Export as a library call: ``export_model(source, ExportConfig(...)) -> ExportResult``.

A checkpoint / bundle becomes a verified ONNX graph and, for ``format="engine"``, a strongly
typed TensorRT engine in the graph's precision; an already exported ``.onnx`` can be turned into
an engine. Every setting is checked before anything is loaded or written.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import tempfile
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

from ..errors import IFSegError
from ..fileio import check_output_file, check_output_folder, write_bytes
from ..preprocess import Preprocessing
from ..runtime.sidecar import read_vocab, vocab_path
from ..runtime.vocabulary import Vocabulary
from .onnx_export import OnnxExport, OnnxExportOptions, export_onnx
from .profiles import TargetProfile, load_profile, trtexec_command
from .source_size import static_size_for
from .graph_precision import check_graph_precision
from .tensorrt_build import EngineBuild, build_engine
from .verify import ATOL

FORMATS = ("onnx", "engine", "openvino")
#: Where a dynamic graph's position biases come from: ``inputs`` (computed once per input shape by
#: the runtime and fed to the graph), ``graph`` (computed by the graph on every run), ``auto``
#: (inputs for ONNX / OpenVINO exports, graph for TensorRT engines; static graphs fold them).
POSITION_BIASES = ("auto", "inputs", "graph")
ENGINE_EXTS = (".engine", ".plan")


@dataclass
class ExportConfig:
    """Every export setting (the ``ifseg-deploy export`` flags).

    ``short_side``: the preprocessing's short side (pixels); ``static_size``: a fixed ``(H, W)``
    input (implies a static graph; its short side becomes the preprocessing's); ``imgsz_from``: an
    image or video whose pre-processed size (at ``short_side``) becomes ``static_size``;
    ``static``: fixed batch and ``short_side`` square input.
    """

    format: str = "onnx"
    out: Optional[str] = None  # default: next to the source, <stem>.onnx / <stem>.engine
    categories: Optional[Sequence[str]] = None  # verification list (default: the stored one)
    bpe_dir: Optional[str] = None
    short_side: int = 512
    static_size: Optional[Tuple[int, int]] = None
    imgsz_from: Optional[str] = None
    static: bool = False
    batch: int = 1
    # graph precision, which a strongly typed engine keeps (default: fp32 for ONNX, the profile's for
    # engines, the graph's own for an engine built from an exported .onnx)
    precision: Optional[str] = None
    calib_dir: Optional[str] = None
    knn_in_graph: bool = False
    knn_k: int = 3
    knn_iters: int = 25
    upsample_in_graph: bool = False
    profile: str = "desktop-rtx"
    opset: int = 17
    trt_version: Optional[str] = None  # operator table of the static TensorRT check (default: the profile's)
    verify_images: Sequence[str] = ()
    tolerance: Optional[float] = None
    timing_cache: Optional[str] = None
    device: str = "cuda"  # GPU the engine is built on
    gate: bool = True  # refuse a reduced-precision graph below its fidelity gate (--no-gate: write it anyway)
    position_biases: str = "auto"  # one of POSITION_BIASES

    @property
    def dynamic(self) -> bool:
        return not (self.static or self.static_size or self.imgsz_from)

    @property
    def image_size(self) -> Tuple[int, int]:
        return self.static_size or (self.short_side, self.short_side)

    def resolved(self, source: str) -> "ExportConfig":
        """A copy with defaults filled in (``out``, ``precision``), after every check that needs no
        model, so bad settings fail before any file is read or written."""
        load_profile(self.profile)
        if self.format not in FORMATS:
            raise IFSegError(f"unknown export format '{self.format}'; use one of {', '.join(FORMATS)}")
        if self.batch < 1:
            raise IFSegError("--batch must be >= 1")
        if min(self.image_size) < 16:
            raise IFSegError(f"--imgsz {self.image_size}: each side must be >= 16 pixels")
        if self.knn_in_graph and (self.knn_k < 1 or self.knn_iters < 1):
            raise IFSegError("--knn in-graph needs --knn-k >= 1 and --knn-iters >= 1")
        if self.position_biases not in POSITION_BIASES:
            raise IFSegError(f"--position-biases {self.position_biases}: use one of {', '.join(POSITION_BIASES)}")
        if self.format == "engine" and self.position_biases == "inputs":
            raise IFSegError("TensorRT engines compute their position biases in the graph (a static engine folds them); "
                             "drop --position-biases inputs")
        if self.format == "openvino":  # an IR folder converted from the verified ONNX graph
            from .openvino_export import check_weight_precision, default_folder

            if source.endswith(".onnx") or not os.path.isfile(source):
                raise IFSegError(f"--format openvino exports from a PyTorch checkpoint or bundle (found: {source})")
            precision = check_weight_precision(self.precision or "fp32")
            check_graph_precision(precision, self.calib_dir)  # int8: the Q/DQ graph, calibrated on --calib-dir
            out = self.out or default_folder(source)
            check_output_folder(out, "--out", "openvino")
            return dataclasses.replace(self, out=out, precision=precision)
        out = self.out or os.path.splitext(source)[0] + (".onnx" if self.format == "onnx" else ".engine")
        want = (".onnx",) if self.format == "onnx" else ENGINE_EXTS
        if not out.endswith(want):
            raise IFSegError(f"--out {out} must end with {' or '.join(want)} for --format {self.format}")
        from_graph = source.endswith(".onnx")
        precision = self.precision or (None if from_graph else "fp32" if self.format == "onnx" else load_profile(self.profile).precision)
        if from_graph and self.calib_dir:
            raise IFSegError("--calib-dir applies when exporting from a checkpoint; an exported .onnx already carries its precision")
        if precision is not None and not (from_graph and precision == "int8"):  # a Q/DQ graph needs no more calibration
            check_graph_precision(precision, self.calib_dir)
        if self.format == "engine" and from_graph and os.path.isfile(source) and read_vocab(source).contract.bias_inputs:
            raise IFSegError(f"{source} takes its position biases as inputs (for ONNX Runtime / OpenVINO); build the engine from the "
                             "checkpoint with --format engine, or from an ONNX exported with --position-biases graph")
        if self.format == "engine":
            if self.upsample_in_graph:
                raise IFSegError("--upsample in-graph is for ONNX exports only (it needs a shape input TensorRT profiles do not cover); "
                                 "use --upsample host")
            from ..runtime.device import cuda_device
            from ..runtime.tensorrt_common import require_tensorrt

            require_tensorrt()
            cuda_device(self.device)
        if source.endswith(".onnx") and self.format == "onnx":
            raise IFSegError("--checkpoint is already an ONNX file; export from the PyTorch checkpoint or use --format engine")
        if not os.path.isfile(source):
            raise IFSegError(f"checkpoint not found: {source}")
        _check_output_files(source, out, self.format, self.timing_cache)
        short_side, static_size = self.short_side, self.static_size
        if self.imgsz_from:
            if source.endswith(".onnx"):
                raise IFSegError(f"--imgsz-from applies when exporting from a checkpoint; {source} already fixes its input size")
            static_size = static_size_for(self.imgsz_from, Preprocessing.short_side_rule(short_side))
            if self.static_size and tuple(self.static_size) != static_size:
                raise IFSegError(f"--imgsz-from {self.imgsz_from} pre-processes to {static_size[0]}x{static_size[1]}, not the "
                                 f"--imgsz {self.static_size[0]}x{self.static_size[1]} given; give --imgsz the short side only, e.g. --imgsz 512")
        elif static_size:
            short_side = min(static_size)
        return dataclasses.replace(self, out=out, precision=precision, short_side=short_side, static_size=static_size)

    def onnx_options(self, trt_target: str) -> OnnxExportOptions:
        return OnnxExportOptions(
            image_size=self.image_size, short_side=self.short_side, dynamic=self.dynamic, batch=self.batch, opset=self.opset, knn_k=self.knn_k,
            knn_iters=self.knn_iters if self.knn_in_graph else 0, upsample=self.upsample_in_graph,
            atol=self.tolerance if self.tolerance is not None else ATOL, trt_target=trt_target, verify_images=self.verify_images,
            precision=self.precision or "fp32", calib_dir=self.calib_dir, gate=self.gate,
            bias_inputs=self.position_biases == "inputs" or (self.position_biases == "auto" and self.format != "engine"))

    def rebuild_command(self, source: str) -> str:
        """The ``ifseg-deploy export`` command line that recreates this engine (quoted for a shell)."""
        imgsz = "x".join(map(str, self.static_size)) if self.static_size and not self.imgsz_from else str(self.short_side)
        parts = ["ifseg-deploy", "export", "--checkpoint", source, "--format", "engine", "--out", str(self.out),
                 "--profile", self.profile, "--imgsz", imgsz, "--precision", str(self.precision)]
        parts += ["--imgsz-from", self.imgsz_from] if self.imgsz_from else []
        parts += [] if self.gate else ["--no-gate"]
        parts += ["--dynamic"] if self.dynamic else ["--static", "--batch", str(self.batch)]
        if self.calib_dir:
            parts += ["--calib-dir", self.calib_dir]
        if self.categories:
            parts += ["--categories", ", ".join(self.categories)]
        return " ".join(shlex.quote(p) for p in parts)


@dataclass
class ExportResult:
    """What :func:`export_model` wrote."""

    onnx_path: str  # "" for OpenVINO (its ONNX graph is an intermediate)
    onnx: Optional[OnnxExport] = None  # None when the source already was an ONNX export
    engine: Optional[EngineBuild] = None
    trtexec_hint: Optional[str] = None  # the trtexec line that builds an engine from the ONNX by hand
    files: List[str] = field(default_factory=list)
    openvino: Optional["OpenVinoExport"] = None  # noqa: F821 (export/openvino_export.py, imported on use)


def _onnx_from_checkpoint(source: str, cfg: ExportConfig, profile: TargetProfile, onnx_path: str) -> Tuple[OnnxExport, Vocabulary]:
    from ..checkpoint import load_model

    loaded = load_model(source)
    vocab = Vocabulary.from_bpe(cfg.bpe_dir, source, loaded.model.embed_tokens.weight, prompt_prefix=loaded.prompt_prefix,
                                stored_categories=loaded.categories, stored_class_embeds=loaded.class_embeds)
    return export_onnx(loaded, onnx_path, vocab, cfg.categories, cfg.onnx_options(cfg.trt_version or profile.tensorrt)), vocab


def _openvino_from_checkpoint(source: str, cfg: ExportConfig, profile: TargetProfile) -> ExportResult:
    from .openvino_export import export_openvino

    # fp32 / fp16: the IR compresses its own weights from the fp32 graph; int8: the IR of the Q/DQ graph
    graph_cfg = dataclasses.replace(cfg, precision="int8" if cfg.precision == "int8" else "fp32")
    with tempfile.TemporaryDirectory() as tmp:
        onnx, vocab = _onnx_from_checkpoint(source, graph_cfg, profile, os.path.join(tmp, "model.onnx"))
        ov = export_openvino(source, onnx, vocab, cfg.categories, cfg.onnx_options(cfg.trt_version or profile.tensorrt), cfg.out, cfg.precision)
    return ExportResult("", openvino=ov, files=ov.files)


def _check_output_files(source: str, out: str, fmt: str, timing_cache: Optional[str]) -> None:
    """Every file an ONNX / engine export writes can be written (:mod:`ifseg_deploy.fileio`'s
    policy), checked before any work."""
    files = [out, vocab_path(out)]
    if fmt == "engine":
        files.append(timing_cache or os.path.splitext(out)[0] + ".timing.cache")
        if not source.endswith(".onnx"):
            onnx_path = os.path.splitext(out)[0] + ".onnx"
            files += [onnx_path, vocab_path(onnx_path)]
    size = os.path.getsize(source) if os.path.isfile(source) else 0  # an fp32 graph holds about the checkpoint's weights
    for path in files:
        check_output_file(path, "--out", size_hint=size if path.endswith((".onnx",) + ENGINE_EXTS) else 0)


def export_model(source: str, config: ExportConfig) -> ExportResult:
    """Export ``source`` (checkpoint, bundle, or an exported ``.onnx`` for ``format="engine"``).

    Raises :class:`IFSegError` with a one-line reason; nothing is written unless every check
    (ONNX checker, graph policy, ONNX Runtime vs PyTorch, TensorRT operator table) passes.
    """
    cfg = config.resolved(source)
    profile = load_profile(cfg.profile)
    if cfg.format == "openvino":
        return _openvino_from_checkpoint(source, cfg, profile)
    static = None if cfg.dynamic else (cfg.batch,) + cfg.image_size
    if source.endswith(".onnx"):  # an earlier export: its shapes, preprocessing and precision come from its side file
        side = read_vocab(source)
        contract = side.contract
        graph_precision = side.export.get("precision", "fp32")
        if cfg.precision not in (None, graph_precision):
            raise IFSegError(f"{source} is an {graph_precision} graph and a strongly typed engine runs in its graph's precision; "
                             f"re-export from the checkpoint with --format engine --precision {cfg.precision}")
        cfg = dataclasses.replace(cfg, short_side=side.preprocessing.short_side, precision=graph_precision)
        static = None if contract.dynamic else (contract.batch,) + tuple(contract.image_size)
        result = ExportResult(source)
    else:
        onnx_path = cfg.out if cfg.format == "onnx" else os.path.splitext(cfg.out)[0] + ".onnx"
        onnx, _ = _onnx_from_checkpoint(source, cfg, profile, onnx_path)
        result = ExportResult(onnx_path, onnx, files=[onnx.path, onnx.vocab_path])
        if cfg.format == "onnx":
            if not onnx.contract.bias_inputs:  # trtexec builds engines from graphs that compute their biases
                engine = os.path.splitext(onnx_path)[0] + ".engine"
                result.trtexec_hint = trtexec_command(profile, onnx_path, engine, onnx.metadata["arch"]["embed_dim"], cfg.short_side, static)
            return result
        if not onnx.op_check.ok:
            raise IFSegError(f"the graph uses operators TensorRT {onnx.op_check.target} does not support "
                             f"({'; '.join(onnx.op_check.errors[:3])}); the engine was not built")
    result.engine = build_engine(result.onnx_path, cfg.out, profile, cfg.short_side, static,
                                 cfg.timing_cache or os.path.splitext(cfg.out)[0] + ".timing.cache", cfg.device,
                                 cfg.rebuild_command(source))
    if vocab_path(result.onnx_path) != vocab_path(cfg.out):  # the engine needs its own copy of the side file
        with open(vocab_path(result.onnx_path), "rb") as fh:
            write_bytes(vocab_path(cfg.out), fh.read())
    result.files += [cfg.out, vocab_path(cfg.out)]
    return result
