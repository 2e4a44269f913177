"""``bench --compare``: every backend x precision installed here, on one model and one image, in one table.

Each :class:`Variant` row names how its model file is made (nothing for PyTorch, an
``ExportArgs`` for exported formats), the backend options it runs with, and what it needs
(a runtime package, a CUDA device, native bf16). Rows whose needs are not met are listed as
skipped with the reason; adding a row is one line in :data:`VARIANTS`. A reduced-precision graph
whose export gate refuses it (its logits too far from fp32 PyTorch) is listed as skipped with the
gate's message. The int8 graph is calibrated on a small generated set: the compared image plus
:data:`CALIBRATION_SCENES` synthetic scenes of its size (:func:`~ifseg_deploy.exporter.onnx.scene.synthetic_scene`),
which the row's note says; a bundle's own figures need ``export --precision int8 --calib-dir`` on
real images. Every row runs the same
image through the whole pipeline (:func:`~ifseg_deploy.bench.latency.run_benchmark`); fidelity is
measured against the first row (PyTorch fp32): relative RMS of the grid logits and agreement of
the label maps at the original size. Each row's *peak share* is its network's arithmetic rate as a
fraction of the measured matrix-product peak of its precision on the device (:mod:`.peaks`).

On CUDA the PyTorch rows are the CUDA graph (the default: one graph per shape holding the network,
kNN smoothing and up-sampling), eager kernels (``cuda_graph=False``), ``torch.compile`` and TF32;
ONNX Runtime runs on its CUDA and TensorRT execution providers, where this onnxruntime build has them.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import platform
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..errors import IFSegError
from ..exporter.api import export_model
from ..exporter.args import ExportArgs
from ..exporter.formats import export_format
from ..exporter.onnx.scene import synthetic_scene
from ..fileio import write_bytes, write_png
from ..runtime.onnx_backend import PROVIDERS
from ..runtime.segmenter import SegmentationResult, Segmenter
from ..runtime.torch_backend import cpu_has_bf16
from .latency import run_benchmark
from .peaks import matmul_peak, network_flops, peak_share


def _package(name: str) -> Callable[[str], Optional[str]]:
    return lambda device: None if importlib.util.find_spec(name) else f"{name} is not installed"


def _cuda(device: str) -> Optional[str]:
    return None if device.startswith("cuda") and torch.cuda.is_available() else "needs device='cuda'"


def _bf16(device: str) -> Optional[str]:
    if device.startswith("cuda"):
        return None if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no bf16 GPU"
    return None if cpu_has_bf16() else "CPU without AVX512-BF16 / AMX"


def _ort(provider: Optional[str] = None) -> Callable[[str], Optional[str]]:
    """onnxruntime with ``provider``'s execution provider (None: the device's own, CUDA or CPU)."""

    def need(device: str) -> Optional[str]:
        if importlib.util.find_spec("onnxruntime") is None:
            return "onnxruntime is not installed"
        import onnxruntime

        name = PROVIDERS[provider or ("cuda" if device.startswith("cuda") else "cpu")]
        if name not in onnxruntime.get_available_providers():
            return f"this onnxruntime has no {name} (pip install onnxruntime-gpu)"
        return None

    return need


def _cpu(device: str) -> Optional[str]:
    return None if device == "cpu" else "CPU rows run with device='cpu'"


@dataclass(frozen=True)
class Variant:
    """One row: ``export`` (``ExportArgs`` fields; ``None``: the PyTorch checkpoint itself),
    ``options`` (backend options of :meth:`Segmenter.load`) and ``needs`` (checks returning a reason to skip)."""

    name: str
    precision: str
    export: Optional[Tuple[Tuple[str, object], ...]] = None
    options: Tuple[Tuple[str, object], ...] = ()
    needs: Tuple[Callable[[str], Optional[str]], ...] = ()

    def skip_reason(self, device: str) -> Optional[str]:
        """The first unmet need's reason on ``device``, ``None`` when the row can run."""
        return next((r for r in (need(device) for need in self.needs) if r), None)


#: Synthetic scenes added to the compared image to calibrate the int8 graph.
CALIBRATION_SCENES = 7

#: The rows, first the fp32 PyTorch reference.
VARIANTS: Tuple[Variant, ...] = (
    Variant("PyTorch", "fp32", options=(("precision", "fp32"),)),
    Variant("PyTorch", "bf16", options=(("precision", "bf16"),), needs=(_bf16,)),
    Variant("PyTorch", "fp16", options=(("precision", "fp16"),), needs=(_cuda,)),
    Variant("PyTorch", "tf32", options=(("precision", "tf32"),), needs=(_cuda,)),
    Variant("PyTorch eager", "fp32", options=(("precision", "fp32"), ("cuda_graph", False)), needs=(_cuda,)),
    Variant("PyTorch compiled", "fp32", options=(("precision", "fp32"), ("compile", True)), needs=(_cuda,)),
    Variant("ONNX Runtime", "fp32", export=(("format", "onnx"),), needs=(_ort(),)),
    Variant("ONNX Runtime", "fp16", export=(("format", "onnx"), ("precision", "fp16")), needs=(_ort(),)),
    # int8: ONNX Runtime's quantizer (the export default: weight products only), then NNCF's (every product)
    Variant("ONNX Runtime", "int8", export=(("format", "onnx"), ("precision", "int8")), needs=(_ort(),)),
    Variant(
        "ONNX Runtime, NNCF",
        "int8",
        export=(("format", "onnx"), ("precision", "int8"), ("quantizer", "nncf")),
        needs=(_ort(),),
    ),
    Variant(
        "OpenVINO",
        "fp32",
        export=(("format", "openvino"), ("precision", "fp32")),
        options=(("precision", "fp32"),),
        needs=(_package("openvino"), _cpu),
    ),
    Variant(
        "OpenVINO fp16 weights",
        "fp32",
        export=(("format", "openvino"), ("precision", "fp16")),
        options=(("precision", "fp32"),),
        needs=(_package("openvino"), _cpu),
    ),
    Variant(
        "OpenVINO",
        "bf16",
        export=(("format", "openvino"), ("precision", "fp32")),
        options=(("precision", "bf16"),),
        needs=(_package("openvino"), _cpu, _bf16),
    ),
    # NNCF's int8 IR (every convolution and matrix product); the IR of ONNX Runtime's Q/DQ graph (INT8
    # weight products only); the bf16 hint runs what stays float in bf16
    Variant(
        "OpenVINO",
        "int8",
        export=(("format", "openvino"), ("precision", "int8")),
        options=(("precision", "fp32"),),
        needs=(_package("openvino"), _cpu),
    ),
    Variant(
        "OpenVINO, NNCF",
        "int8",
        export=(("format", "openvino"), ("precision", "int8"), ("quantizer", "nncf")),
        options=(("precision", "fp32"),),
        needs=(_package("openvino"), _cpu),
    ),
    Variant(  # the convolutions only: the faster model on CPUs without VNNI
        "OpenVINO, NNCF convolutions",
        "int8",
        export=(("format", "openvino"), ("precision", "int8"), ("quantizer", "nncf"), ("int8_scope", "convolutions")),
        options=(("precision", "fp32"),),
        needs=(_package("openvino"), _cpu),
    ),
    Variant(
        "OpenVINO int8 + bf16 hint",
        "int8",
        export=(("format", "openvino"), ("precision", "int8")),
        options=(("precision", "bf16"),),
        needs=(_package("openvino"), _cpu, _bf16),
    ),
    Variant(
        "TensorRT", "fp16", export=(("format", "engine"), ("precision", "fp16")), needs=(_package("tensorrt"), _cuda)
    ),
    Variant(
        "ONNX Runtime TensorRT EP",
        "fp32",
        export=(("format", "onnx"),),
        options=(("providers", "tensorrt"),),
        needs=(_cuda, _ort("tensorrt")),
    ),
    Variant(
        "ONNX Runtime TensorRT EP",
        "fp16",
        export=(("format", "onnx"),),
        options=(("providers", "tensorrt"), ("precision", "fp16")),
        needs=(_cuda, _ort("tensorrt")),
    ),
)


@dataclass
class CompareRow:
    """One measured (or skipped) row; times in ms, sizes in MB."""

    backend: str
    precision: str
    file: Optional[str] = None
    file_mb: Optional[float] = None
    p50_ms: Optional[float] = None
    p90_ms: Optional[float] = None
    p99_ms: Optional[float] = None
    fps: Optional[float] = None
    speedup: Optional[float] = None  # over the first row's median
    logits_rel_rms: Optional[float] = None  # ||logits - ref|| / ||ref|| over the grid
    label_agreement: Optional[float] = None  # fraction of original-size pixels with the reference label
    rss_mb: Optional[float] = None  # process resident memory after the row ran
    network_ms: Optional[float] = None  # median network time (a CUDA graph's: with kNN and up-sampling)
    peak_share: Optional[float] = None  # network FLOP/s over the measured matmul peak of the row's precision
    stages_ms: Dict[str, float] = field(default_factory=dict)  # median per stage
    skipped: Optional[str] = None
    note: Optional[str] = None  # e.g. what an int8 graph was calibrated on


@dataclass
class CompareReport:
    """The rows in :data:`VARIANTS` order, the compared image's ``(H, W)`` and :func:`machine_info`."""

    rows: List[CompareRow]
    image_size: List[int]
    machine: Dict[str, object]

    def to_dict(self) -> dict:
        """The JSON report."""
        return {"image_size": self.image_size, "machine": self.machine, "rows": [asdict(r) for r in self.rows]}

    def format(self) -> str:
        """The table, Ultralytics-benchmark style."""
        w = max([len("backend")] + [len(r.backend) for r in self.rows]) + 2
        head = (
            f"{'backend':<{w}}{'prec':<6}{'size MB':>9}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'FPS':>8}"
            f"{'speed-up':>9}"
            f"{'rel-RMS':>10}{'labels %':>10}{'peak %':>8}{'RSS MB':>8}"
        )
        lines = [head]
        for r in self.rows:
            if r.skipped:
                lines.append(f"{r.backend:<{w}}{r.precision:<6}  skipped: {r.skipped}")
                continue
            lines.append(
                f"{r.backend:<{w}}{r.precision:<6}{r.file_mb:>9.1f}{r.p50_ms:>10.1f}{r.p90_ms:>10.1f}{r.p99_ms:>10.1f}"
                f"{r.fps:>8.2f}{r.speedup:>8.2f}x{r.logits_rel_rms:>10.2e}{100 * r.label_agreement:>10.2f}"
                + (f"{100 * r.peak_share:>8.1f}" if r.peak_share is not None else f"{'-':>8}")
                + f"{r.rss_mb:>8.0f}"
                + (f"  ({r.note})" if r.note else "")
            )
        return "\n".join(lines)


def machine_info() -> Dict[str, object]:
    """CPU model, threads and library versions, for the report."""
    cpu = platform.processor()
    if os.path.isfile("/proc/cpuinfo"):
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    return {
        "cpu": cpu,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "bf16_cpu": cpu_has_bf16(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


#: Export precisions whose fidelity gate may refuse a graph (the row is then skipped, not an error).
GATED = ("fp16", "int8")


def _size_mb(path: str) -> float:
    """The model file's size (an OpenVINO folder: its .xml + .bin); side files are not counted, for no row."""
    if os.path.isdir(path):
        return (
            sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path) if f.endswith((".xml", ".bin")))
            / 2**20
        )
    return os.path.getsize(path) / 2**20


def _rss_mb() -> float:
    with open("/proc/self/statm", encoding="ascii") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def fidelity(ref: SegmentationResult, out: SegmentationResult) -> Tuple[float, float]:
    """``(relative RMS of the grid logits, label agreement at the original size)`` of ``out`` against ``ref``."""
    a, b = ref.logits.astype(np.float64), out.logits.astype(np.float64)
    rel = float(np.sqrt(np.mean((b - a) ** 2)) / max(np.sqrt(np.mean(a**2)), 1e-30))
    return rel, float((ref.labels == out.labels).mean())


def calibration_folder(image: np.ndarray, folder: str, scenes: int = CALIBRATION_SCENES) -> str:
    """Write ``image`` (RGB uint8 ``(H, W, 3)``) and ``scenes`` synthetic scenes of its size as PNGs
    into ``folder`` (created); returns ``folder``, an int8 ``calib_dir``."""
    os.makedirs(folder, exist_ok=True)
    height, width = image.shape[:2]
    write_png(os.path.join(folder, "image.png"), image)
    for seed in range(scenes):
        write_png(os.path.join(folder, f"scene_{seed}.png"), synthetic_scene(height, width, seed))
    return folder


def _model_file(
    source: str,
    variant: Variant,
    workdir: str,
    categories,
    bpe_dir,
    short_side: int,
    device: str,
    made: Dict[tuple, str],
    image: np.ndarray,
) -> str:
    """The checkpoint itself, or its export for ``variant`` (made once per export setting in ``workdir``;
    an int8 graph calibrated on :func:`calibration_folder` of ``image``)."""
    if variant.export is None:
        return source
    if variant.export in made:
        return made[variant.export]
    settings = dict(variant.export)
    stem = os.path.join(
        workdir, os.path.splitext(os.path.basename(source))[0] + "_" + "_".join(str(v) for v in settings.values())
    )
    out = stem + export_format(settings["format"]).suffix
    if settings.get("precision") == "int8":
        settings["calib_dir"] = calibration_folder(image, os.path.join(workdir, "calibration"))
    export_model(
        source,
        ExportArgs(
            out=out,
            categories=categories,
            bpe_dir=bpe_dir,
            imgsz=short_side,
            device=device if device.startswith("cuda") else "cuda",
            **settings,
        ),
    )
    made[variant.export] = out
    return out


def compare(
    source: str,
    image: np.ndarray,
    workdir: str,
    categories: Optional[Sequence[str]] = None,
    bpe_dir: Optional[str] = None,
    device: str = "auto",
    short_side: Optional[int] = None,
    warmup: int = 2,
    iterations: int = 10,
    variants: Sequence[Variant] = VARIANTS,
    progress: Optional[Callable[[int, int, str], None]] = None,
    **segmenter_kwargs,
) -> CompareReport:
    """Benchmark every available variant of checkpoint ``source`` on ``image`` (RGB uint8).

    Exports are written to ``workdir``; ``short_side`` is the inference short side (default: the
    model's). ``progress(done, total, label)`` is called after every timed iteration.
    Raises :class:`IFSegError` when the reference row (the first) cannot run.
    """
    from ..preprocess import Preprocessing
    from ..runtime.device import parse_device

    device = str(parse_device(device))  # "auto" -> "cpu" / "cuda"
    peaks: Dict[str, Optional[float]] = {}  # measured once per precision
    flops: Optional[float] = None  # of the network on the compared image (the reference row's shapes)
    rows: List[CompareRow] = []
    ref: Optional[SegmentationResult] = None
    made: Dict[tuple, str] = {}
    runnable = [v for v in variants if v.skip_reason(device) is None]
    total, done = len(runnable) * iterations, [0]
    for variant in variants:
        row = CompareRow(variant.name, variant.precision, skipped=variant.skip_reason(device))
        rows.append(row)
        if row.skipped:
            if ref is None:
                raise IFSegError(f"the reference row {variant.name} {variant.precision} cannot run: {row.skipped}")
            continue
        try:
            path = _model_file(source, variant, workdir, categories, bpe_dir, short_side or 512, device, made, image)
        except IFSegError as e:
            if variant.export is None or dict(variant.export).get("precision") not in GATED:
                raise
            row.skipped = f"export refused: {e}"  # the fidelity gate of a reduced-precision graph
            continue
        notes = []
        if variant.precision == "int8":
            notes.append(f"calibrated on the compared image + {CALIBRATION_SCENES} synthetic scenes")
        extra = {} if short_side is None else {"preprocessing": Preprocessing.short_side_rule(short_side)}
        options = dict(variant.options)
        seg = Segmenter.load(
            path,
            categories,
            bpe_dir,
            device,
            options.pop("precision", None),
            backend_options=options,
            **extra,
            **segmenter_kwargs,
        )

        def tick(i, n, ms, label=f"{variant.name} {variant.precision}"):
            done[0] += 1
            if progress is not None:
                progress(done[0], total, label)

        report = run_benchmark(seg, image, 1, warmup, iterations, progress=tick)
        result = seg.segment(image)
        if getattr(seg.backend, "graphs", None) is not None:
            notes.append("CUDA graph: network + kNN + up-sampling")
        row.note = "; ".join(notes) or None
        if ref is None:
            ref = result
            batch = seg.preprocess([image])
            vocab = batch.vocab
            flops = network_flops(
                seg.backend.arch, tuple(batch.images.shape[2:]), vocab.prompt_embeds.shape[1], len(vocab.categories)
            )
        summary = report.summary(report.total)
        row.file, row.file_mb = path, _size_mb(path)
        row.p50_ms, row.p90_ms, row.p99_ms = summary["median"], summary["p90"], summary["p99"]
        row.fps = 1000.0 / row.p50_ms
        row.speedup = rows[0].p50_ms / row.p50_ms
        row.logits_rel_rms, row.label_agreement = fidelity(ref, result)
        row.rss_mb = _rss_mb()
        row.stages_ms = {k: float(np.median(v)) for k, v in report.stages.items()}
        row.network_ms = row.stages_ms.get("network") or sum(
            row.stages_ms.get(k, 0.0) for k in ("backbone", "encoder", "decoder")
        )
        if variant.precision not in peaks:
            peaks[variant.precision] = matmul_peak(variant.precision, torch.device(device))
        row.peak_share = peak_share(flops, row.network_ms / 1e3, peaks[variant.precision])
        del seg
    machine = dict(machine_info(), matmul_peak_flops=peaks, network_gflop=None if flops is None else flops / 1e9)
    return CompareReport(rows, list(image.shape[:2]), machine)


def write_json(report: CompareReport, path: str) -> None:
    """Write :meth:`CompareReport.to_dict` to ``path`` as indented JSON."""
    write_bytes(path, (json.dumps(report.to_dict(), indent=2) + "\n").encode())


def write_chart(report: CompareReport, path: str) -> None:
    """A PNG bar chart of the median latency per row, annotated with speed-up and rel-RMS (matplotlib)."""
    try:
        import matplotlib
    except ImportError:
        raise IFSegError("the chart needs matplotlib: pip install 'ifseg-deploy[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report.rows if not r.skipped]
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(rows) + 1.5))
    labels = [f"{r.backend} {r.precision}" for r in rows]
    ax.barh(labels, [r.p50_ms for r in rows], color="tab:blue")
    for i, r in enumerate(rows):
        ax.text(
            r.p50_ms,
            i,
            f" {r.p50_ms:.0f} ms, {r.speedup:.2f}x, rel-RMS {r.logits_rel_rms:.1e}",
            va="center",
            fontsize=8,
        )
    ax.invert_yaxis()
    ax.set_xlabel("median latency per image, end to end (ms)")
    ax.set_title(
        f"{report.machine['cpu']}, {report.machine['threads']} threads, {report.image_size[0]}x{report.image_size[1]} "
        f"image",
        fontsize=9,
    )
    ax.set_xlim(0, 1.5 * max(r.p50_ms for r in rows))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    write_bytes(path, buf.getvalue())
