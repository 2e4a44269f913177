"""Latency benchmark of the full pipeline (preprocess -> network -> kNN -> upsample), trtexec-style."""

from __future__ import annotations

import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

from ..runtime.segmenter import STAGES, Segmenter


@dataclass
class BenchReport:
    """Per-stage and end-to-end latencies in milliseconds."""

    image_size: List[int]
    batch: int
    iterations: int
    stages: Dict[str, List[float]] = field(default_factory=dict)
    total: List[float] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    peak_cuda_mb: Optional[float] = None

    @staticmethod
    def summary(values: List[float]) -> Dict[str, float]:
        """Min, max, mean, median, p90 and p99 of ``values`` (percentiles: the nearest sorted value)."""
        v = sorted(values)
        return {
            "min": v[0],
            "max": v[-1],
            "mean": statistics.fmean(v),
            "median": statistics.median(v),
            "p90": v[min(len(v) - 1, int(round(0.9 * (len(v) - 1))))],
            "p99": v[min(len(v) - 1, int(round(0.99 * (len(v) - 1))))],
        }

    def to_dict(self) -> dict:
        """The JSON report: end-to-end and per-stage summaries, throughput and peak memory."""
        med = statistics.median(self.total)
        return {
            "image_size": self.image_size,
            "batch": self.batch,
            "iterations": self.iterations,
            "latency_ms": self.summary(self.total),
            "throughput_fps": 1000.0 * self.batch / med if med > 0 else None,
            "stages_ms": {k: self.summary(v) for k, v in self.stages.items()},
            "peak_rss_mb": self.peak_rss_mb,
            "peak_cuda_mb": self.peak_cuda_mb,
        }

    def format(self) -> str:
        """The trtexec-style text summary."""
        d = self.to_dict()
        lat = d["latency_ms"]
        lines = [
            f"=== Performance summary: {self.image_size[0]}x{self.image_size[1]}, batch {self.batch}, "
            f"{self.iterations} iterations ===",
            f"Throughput: {d['throughput_fps']:.3f} images/s",
            "Latency: min = {min:.2f} ms, max = {max:.2f} ms, mean = {mean:.2f} ms, median = {median:.2f} ms, "
            "percentile(90%) = {p90:.2f} ms, percentile(99%) = {p99:.2f} ms".format(**lat),
        ]
        for stage, s in d["stages_ms"].items():
            lines.append(
                f"  {stage:<10} median = {s['median']:9.2f} ms   mean = {s['mean']:9.2f} ms   max = {s['max']:9.2f} ms"
            )
        mem = f"Peak host memory (RSS): {self.peak_rss_mb:.0f} MB"
        if self.peak_cuda_mb is not None:
            mem += f", peak CUDA memory: {self.peak_cuda_mb:.0f} MB"
        lines.append(mem)
        return "\n".join(lines)


def _peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def run_benchmark(
    segmenter: Segmenter,
    image: np.ndarray,
    batch: int = 1,
    warmup: int = 2,
    iterations: int = 10,
    progress: Optional[Callable[[int, int, float], None]] = None,
) -> BenchReport:
    """Time ``segment_batch`` on ``batch`` copies of ``image`` (RGB uint8); ``progress(i, iterations, ms)``
    is called after every timed iteration."""
    images = [image] * batch
    cuda = segmenter.backend.device.type == "cuda"
    for _ in range(warmup):
        segmenter.segment_batch(images, batch_size=batch)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    report = BenchReport(list(image.shape[:2]), batch, iterations, {})
    for i in range(iterations):
        t0 = time.perf_counter()
        results = segmenter.segment_batch(images, batch_size=batch)
        report.total.append((time.perf_counter() - t0) * 1e3)
        for s in STAGES:
            if s in results[0].timings:
                report.stages.setdefault(s, []).append(sum(r.timings[s] for r in results))
        if progress is not None:
            progress(i + 1, iterations, report.total[-1])
    report.peak_rss_mb = _peak_rss_mb()
    if cuda:
        report.peak_cuda_mb = torch.cuda.max_memory_allocated() / 2**20
    return report
