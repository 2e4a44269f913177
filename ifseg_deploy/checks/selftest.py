"""``checks --self-test``: export a small random-weight model to every format this machine can write,
run it on every backend it can run, and judge each row against the project's export gates.

No file is needed: the model (:data:`SELFTEST_ARCH`, random weights) and byte-level BPE files
(:func:`write_byte_bpe`) are made in a temporary folder, deleted afterwards. The rows are
:mod:`ifseg_deploy.bench.compare`'s variants, exported and timed by its :func:`~ifseg_deploy.bench.compare.compare`
on a synthetic scene: first on the CPU, then, with a CUDA device, on the GPU (PyTorch, ONNX
Runtime's CUDA and TensorRT providers, a TensorRT engine). Each row is measured against PyTorch
fp32 on the same device: relative RMS of the grid logits (gated) and label agreement (reported).

Gates, by the precision a row computes in (a reduced-precision export's, else the run's):

- fp32: the RMS of the logit difference within the ONNX export check's element-wise tolerance,
  ``ATOL + RTOL * max|ref|`` (:mod:`ifseg_deploy.exporter.onnx.verify`), i.e. rel-RMS at most
  ``(ATOL + RTOL * max|ref|) / rms(ref)``;
- fp16 and bf16: the fp16 export gate :data:`~ifseg_deploy.exporter.precision.fp16_graph.FP16_MAX_REL_RMS`
  (no export writes bf16; it is the reduced-precision float gate);
- int8: the int8 export gate :data:`~ifseg_deploy.exporter.precision.int8_graph.INT8_MAX_REL_RMS`.

An export its own gate refuses is a failed row; a row whose runtime, device or CPU feature is
missing is skipped with the reason. One failing export or backend fails its rows only.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..bench.compare import VARIANTS, CompareRow, Variant, compare
from ..bench.synthetic import CATEGORIES, structured_model
from ..checkpoint.bundle import save_bundle
from ..config import ArchConfig
from ..exporter.onnx.scene import synthetic_scene
from ..exporter.onnx.verify import ATOL, RTOL
from ..exporter.precision.fp16_graph import FP16_MAX_REL_RMS
from ..exporter.precision.int8_graph import INT8_MAX_REL_RMS
from ..fileio import write_bytes
from ..precision import BF16, FP16, FP32, INT8
from ..preprocess import Preprocessing
from ..runtime.segmenter import Segmenter
from ..runtime.vocabulary import Vocabulary
from ..text.prompt import DEFAULT_PROMPT_PREFIX
from ..text.tokenizer import OFATokenizer
from .environment import cuda_unavailable_reason, one_line

#: A 32-wide, one-layer SegOFA with one block per ResNet stage on an 8x8 grid (128-pixel short
#: side): every operator of the full model, exported and verified in seconds. The vocabulary holds
#: the 4 fairseq specials and the 256 byte symbols of :func:`write_byte_bpe`.
SELFTEST_ARCH = ArchConfig(
    embed_dim=32,
    ffn_dim=64,
    encoder_layers=1,
    decoder_layers=1,
    heads=2,
    resnet_blocks=(1, 1, 1),
    vocab_size=512,
    encoder_grid=8,
    seg_grid=8,
)
#: Inference short side (pixels; the model's 8x8 grid) and the scene's ``(H, W)``: not square, so the
#: dynamic graphs resize like real images.
SHORT_SIDE = SELFTEST_ARCH.image_size
IMAGE_SIZE = (128, 160)
SELFTEST_CATEGORIES = CATEGORIES[:5]
WARMUP, ITERATIONS = 1, 3
PASS, FAIL, SKIPPED = "PASS", "FAIL", "SKIPPED"

_BY_KEY = {(v.name, v.precision): v for v in VARIANTS}


def _ort_provider(provider: str) -> Callable[[str], Optional[str]]:
    """A need: the onnxruntime build has ``provider``."""

    def need(device: str) -> Optional[str]:
        try:
            import onnxruntime
        except ImportError:
            return "onnxruntime is not installed"
        have = onnxruntime.get_available_providers()
        return None if provider in have else f"this onnxruntime build has no {provider} (it has {', '.join(have)})"

    return need


#: Rows run with device="cpu" (the reference first).
CPU_VARIANTS: Tuple[Variant, ...] = tuple(
    _BY_KEY[k]
    for k in (
        ("PyTorch", FP32),
        ("PyTorch", BF16),
        ("ONNX Runtime", FP32),
        ("ONNX Runtime", INT8),
        ("OpenVINO", FP32),
        ("OpenVINO", BF16),
        ("OpenVINO", INT8),
    )
)
#: Rows run with device="cuda" (the reference first), where PyTorch sees a CUDA device.
CUDA_VARIANTS: Tuple[Variant, ...] = (
    _BY_KEY[("PyTorch", FP32)],
    _BY_KEY[("PyTorch", BF16)],
    _BY_KEY[("PyTorch", FP16)],
    Variant(
        "ONNX Runtime CUDA EP",
        FP32,
        export=(("format", "onnx"),),
        options=(("providers", ("cuda",)),),
        needs=(_ort_provider("CUDAExecutionProvider"),),
    ),
    Variant(
        "ONNX Runtime TensorRT EP",
        FP16,
        export=(("format", "onnx"),),
        options=(("precision", FP16), ("providers", ("tensorrt",))),
        needs=(_ort_provider("TensorrtExecutionProvider"),),
    ),
    _BY_KEY[("TensorRT", FP16)],
)


@dataclass
class SelfTestRow:
    """One row: its device, backend and precision, ``status`` (:data:`PASS` / :data:`FAIL` /
    :data:`SKIPPED`) with the ``reason`` of a failure or skip, the logits' relative RMS against
    PyTorch fp32 on the same device and its ``gate``, label agreement (fraction of pixels), median ms."""

    device: str
    backend: str
    precision: str
    status: str
    reason: Optional[str] = None
    logits_rel_rms: Optional[float] = None
    gate: Optional[float] = None
    label_agreement: Optional[float] = None
    p50_ms: Optional[float] = None


@dataclass
class SelfTestReport:
    """The rows, CPU first; the scene's ``(H, W)``, the model's short side and the wall time (s)."""

    rows: List[SelfTestRow]
    image_size: List[int]
    short_side: int
    seconds: float = 0.0
    model: Dict[str, object] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """No row failed."""
        return all(r.status != FAIL for r in self.rows)

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "model": self.model,
            "image_size": self.image_size,
            "short_side": self.short_side,
            "seconds": round(self.seconds, 1),
            "rows": [asdict(r) for r in self.rows],
        }


def write_byte_bpe(folder: str) -> str:
    """Write GPT-2 byte-level BPE files into ``folder`` (created): the 256 byte symbols of
    ``tokenizers``' ByteLevel alphabet and no merges, so every text is one token per byte, and a
    ``dict.txt`` mapping them to dictionary ids 4..259. Returns ``folder`` (a ``bpe_dir``)."""
    from tokenizers import pre_tokenizers

    os.makedirs(folder, exist_ok=True)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    write_bytes(os.path.join(folder, "encoder.json"), json.dumps({c: i for i, c in enumerate(alphabet)}).encode())
    write_bytes(os.path.join(folder, "vocab.bpe"), b"#version: 0.2\n")
    write_bytes(os.path.join(folder, "dict.txt"), "".join(f"{i} 1\n" for i in range(len(alphabet))).encode())
    return folder


def selftest_bundle(folder: str, seed: int = 0) -> Tuple[str, str]:
    """Write :func:`~ifseg_deploy.bench.synthetic.structured_model` of :data:`SELFTEST_ARCH` as a
    bundle (class embeddings of :data:`SELFTEST_CATEGORIES` from its token table, as a trained model's
    start) and byte-level BPE files into ``folder``; returns ``(bundle path, bpe_dir)``."""
    bpe_dir = write_byte_bpe(os.path.join(folder, "bpe"))
    model = structured_model(SELFTEST_ARCH, seed)
    classes = Vocabulary(OFATokenizer(bpe_dir), model.embed_tokens.weight).class_embeddings(SELFTEST_CATEGORIES)
    path = os.path.join(folder, "selftest.safetensors")
    meta = {"arch": SELFTEST_ARCH.to_dict(), "categories": SELFTEST_CATEGORIES, "prompt_prefix": DEFAULT_PROMPT_PREFIX}
    save_bundle(path, model.state_dict(), classes, meta)
    return path, bpe_dir


def computes_in(variant: Variant) -> str:
    """The precision a row's numbers are computed in: a reduced-precision export's (fp16 weights of
    an fp32-run OpenVINO IR count as fp16), else the precision it runs in."""
    exported = dict(variant.export or ()).get("precision")
    return exported if exported in (FP16, INT8) else variant.precision


def gate(precision: str, ref_logits: np.ndarray) -> float:
    """The largest logits rel-RMS a row computing in ``precision`` may have against ``ref_logits``
    (PyTorch fp32's, any shape): see the module docstring."""
    if precision == INT8:
        return INT8_MAX_REL_RMS
    if precision in (FP16, BF16):
        return FP16_MAX_REL_RMS
    ref = ref_logits.astype(np.float64)
    return float((ATOL + RTOL * np.abs(ref).max()) / max(np.sqrt(np.mean(ref**2)), 1e-30))


def _judge(device: str, variant: Variant, row: CompareRow, ref_logits: np.ndarray) -> SelfTestRow:
    """A compared row as PASS / FAIL (its gate, or an export its gate refused) / SKIPPED."""
    out = SelfTestRow(device, variant.name, variant.precision, SKIPPED)
    if row.skipped:
        refused = row.skipped.startswith("export refused")
        out.status, out.reason = (FAIL if refused else SKIPPED), row.skipped
        return out
    out.gate = gate(computes_in(variant), ref_logits)
    out.logits_rel_rms, out.label_agreement, out.p50_ms = row.logits_rel_rms, row.label_agreement, row.p50_ms
    out.status = PASS if row.logits_rel_rms <= out.gate else FAIL
    if out.status == FAIL:
        out.reason = f"logits rel-RMS {row.logits_rel_rms:.2e} above the {computes_in(variant)} gate {out.gate:.2e}"
    return out


def _groups(variants: Sequence[Variant]) -> List[List[Variant]]:
    """``variants`` (the reference first) in groups sharing one model file."""
    groups: Dict[object, List[Variant]] = {}
    for v in variants:
        groups.setdefault(v.export, []).append(v)
    return list(groups.values())


def _run_device(
    device: str,
    variants: Sequence[Variant],
    source: str,
    bpe_dir: str,
    image: np.ndarray,
    workdir: str,
    progress: Optional[Callable[[str], None]],
) -> List[SelfTestRow]:
    """Every row of ``variants`` on ``device`` (``"cpu"`` / ``"cuda"``), against its first row: one
    :func:`compare` call, and, when an export or backend raises, one call per model file so that
    only the broken one's rows fail."""
    pre = Preprocessing.short_side_rule(SHORT_SIDE)
    try:
        ref = Segmenter.load(source, None, bpe_dir, device, FP32, preprocessing=pre).segment(image).logits
    except Exception as e:  # without the reference nothing on this device can be judged
        return [SelfTestRow(device, v.name, v.precision, FAIL, f"reference failed: {one_line(e)}") for v in variants]
    seen = set()

    def tick(done: int, total: int, label: str) -> None:
        if progress is not None and label not in seen:
            seen.add(label)
            progress(f"{label} ({device})")

    def run(runs: Sequence[Variant], folder: str) -> List[CompareRow]:
        kwargs = dict(bpe_dir=bpe_dir, device=device, short_side=SHORT_SIDE, warmup=WARMUP, iterations=ITERATIONS)
        return compare(source, image, os.path.join(workdir, folder), variants=runs, progress=tick, **kwargs).rows

    try:
        return [_judge(device, v, r, ref) for v, r in zip(variants, run(variants, device))]
    except Exception:  # an export or backend that breaks: found below, group by group
        pass
    rows = []
    for i, group in enumerate(_groups(variants)):
        runs = group if group[0] is variants[0] else [variants[0]] + group
        try:
            done = run(runs, f"{device}_{i}")[len(runs) - len(group) :]
        except Exception as e:
            for v in group:
                skip = v.skip_reason(device)
                rows.append(SelfTestRow(device, v.name, v.precision, SKIPPED if skip else FAIL, skip or one_line(e)))
            continue
        rows += [_judge(device, v, r, ref) for v, r in zip(group, done)]
    return rows


def _no_cuda_reason(variant: Variant, no_cuda: str) -> str:
    """Why a CUDA row is skipped: no CUDA device, and its missing package or provider if any."""
    reason = f"no CUDA device: {no_cuda}"
    need = variant.skip_reason("cuda")
    return reason + (f"; {need}" if need and ("not installed" in need or "has no" in need) else "")


def run_selftest(progress: Optional[Callable[[str], None]] = None) -> SelfTestReport:
    """The self-test (module docstring), in a temporary folder deleted afterwards; ``progress(label)``
    is called before each group of rows runs."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ifseg-checks-") as folder:
        source, bpe_dir = selftest_bundle(folder)
        image = synthetic_scene(*IMAGE_SIZE, seed=0)
        rows = _run_device("cpu", CPU_VARIANTS, source, bpe_dir, image, folder, progress)
        no_cuda = cuda_unavailable_reason()
        if no_cuda is None:
            rows += _run_device("cuda", CUDA_VARIANTS, source, bpe_dir, image, folder, progress)
        else:
            rows += [
                SelfTestRow("cuda", v.name, v.precision, SKIPPED, _no_cuda_reason(v, no_cuda)) for v in CUDA_VARIANTS
            ]
    a = SELFTEST_ARCH
    model = {
        "weights": "random",
        "embed_dim": a.embed_dim,
        "layers": [a.encoder_layers, a.decoder_layers],
        "resnet_blocks": list(a.resnet_blocks),
        "categories": SELFTEST_CATEGORIES,
    }
    return SelfTestReport(rows, list(IMAGE_SIZE), SHORT_SIDE, time.perf_counter() - start, model)
