"""What a stream did: frame counters, latency statistics and the per-frame JSON record."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence

import numpy as np


def area_fractions(labels: np.ndarray, categories: Sequence[str]) -> Dict[str, float]:
    """Fraction of the pixels of an ``(H, W)`` integer label map taken by each category present (sums to 1)."""
    counts = np.bincount(labels.reshape(-1).astype(np.int64), minlength=len(categories))[: len(categories)]
    total = max(1, labels.size)
    return {categories[i]: round(float(counts[i]) / total, 6) for i in np.flatnonzero(counts)}


def frame_record(index: int, time_s: float, labels: np.ndarray, categories: Sequence[str]) -> dict:
    """One ``--save-json`` line: frame number, its time in seconds, area fraction per class present."""
    return {"frame": int(index), "time": round(float(time_s), 4), "areas": area_fractions(labels, categories)}


class LatencyStats:
    """Mean and percentiles of a stream's latencies in fixed memory, however long it runs.

    The mean is exact (running sum). Percentiles come from a histogram with geometrically spaced bins
    from :attr:`LOW_MS` to :attr:`HIGH_MS`: each value is represented by its bin's geometric centre, so
    a percentile is within :attr:`REL_ERROR` (1 %) of NumPy's ``np.percentile`` of all the values
    (linear interpolation), and always within the exact minimum and maximum.
    """

    REL_ERROR = 0.01
    LOW_MS, HIGH_MS = 0.01, 1e7  # 10 µs to 2.8 h; values outside count in the first / last bin
    _RATIO = (1 + REL_ERROR) ** 2  # bin width: its centre is within REL_ERROR of both edges
    BINS = math.ceil(math.log(HIGH_MS / LOW_MS, _RATIO))

    def __init__(self) -> None:
        self.count = 0
        self._sum = 0.0
        self.min = math.inf
        self.max = -math.inf
        self._counts = np.zeros(self.BINS, np.int64)
        self._centres = self.LOW_MS * self._RATIO ** (np.arange(self.BINS) + 0.5)

    def add(self, ms: float) -> None:
        """Count one latency in milliseconds."""
        self.count += 1
        self._sum += ms
        self.min, self.max = min(self.min, ms), max(self.max, ms)
        k = math.floor(math.log(max(ms, self.LOW_MS) / self.LOW_MS, self._RATIO))
        self._counts[min(k, self.BINS - 1)] += 1

    @property
    def mean(self) -> float:
        """Mean latency in ms (0 before the first value)."""
        return self._sum / self.count if self.count else 0.0

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0-100) in ms, as ``np.percentile`` interpolates (0 before the first value)."""
        if not self.count:
            return 0.0
        rank = q / 100 * (self.count - 1)
        below = math.floor(rank)
        cum = np.cumsum(self._counts)
        lo, hi = np.searchsorted(cum, [below, min(below + 1, self.count - 1)], side="right")  # bins of those ranks
        value = self._centres[lo] + (rank - below) * (self._centres[hi] - self._centres[lo])
        return float(min(max(value, self.min), self.max))


@dataclass
class StreamSummary:
    """Counters of one stream. ``frames_in`` counts decoded source frames; ``processed`` segmented ones."""

    source: str  # as shown: URLs without their password
    live: bool
    total: Optional[int] = None  # frames that will be segmented, when known (files)
    frames_in: int = 0
    processed: int = 0
    dropped: int = 0  # live frames replaced by newer ones before being segmented
    skipped: int = 0  # unreadable frames
    reconnects: int = 0
    seconds: float = 0.0  # wall time of the whole run
    end: str = ""
    ok: bool = True
    latencies: LatencyStats = field(default_factory=LatencyStats, repr=False)

    def add(self, latency_ms: float) -> None:
        """Count one segmented frame with its capture-to-result latency."""
        self.processed += 1
        self.latencies.add(latency_ms)

    @property
    def fps(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def latency(self) -> Dict[str, float]:
        """Mean, median and 99th percentile latency in ms (percentiles within 1 %; 0 before the first frame)."""
        lat = self.latencies
        return {"mean": lat.mean, "p50": lat.percentile(50), "p99": lat.percentile(99)}

    def to_dict(self) -> dict:
        d = {
            k: getattr(self, k)
            for k in ("source", "live", "frames_in", "processed", "dropped", "skipped", "reconnects", "end", "ok")
        }
        d.update(
            seconds=round(self.seconds, 3),
            fps=round(self.fps, 3),
            latency_ms={k: round(v, 2) for k, v in self.latency().items()},
        )
        return d

    def format(self) -> str:
        """The final report, trtexec-style: one line of counters, one of speed."""
        lat = self.latency()
        counts = (
            f"Frames: in = {self.frames_in}, processed = {self.processed}, dropped = {self.dropped}, "
            f"unreadable = {self.skipped}, reconnects = {self.reconnects}"
        )
        speed = (
            f"Throughput: {self.fps:.2f} FPS over {self.seconds:.1f} s; latency mean = {lat['mean']:.1f} ms, "
            f"p50 = {lat['p50']:.1f} ms, p99 = {lat['p99']:.1f} ms"
        )
        return f"{counts}\n{speed}\nEnd: {self.end}"
