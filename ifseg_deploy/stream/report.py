"""What a stream did: frame counters, latency statistics and the per-frame JSON record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np


def area_fractions(labels: np.ndarray, categories: Sequence[str]) -> Dict[str, float]:
    """Fraction of the pixels of an ``(H, W)`` integer label map taken by each category present (sums to 1)."""
    counts = np.bincount(labels.reshape(-1).astype(np.int64), minlength=len(categories))[: len(categories)]
    total = max(1, labels.size)
    return {categories[i]: round(float(counts[i]) / total, 6) for i in np.flatnonzero(counts)}


def frame_record(index: int, time_s: float, labels: np.ndarray, categories: Sequence[str]) -> dict:
    """One ``--save-json`` line: frame number, its time in seconds, area fraction per class present."""
    return {"frame": int(index), "time": round(float(time_s), 4), "areas": area_fractions(labels, categories)}


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
    latencies_ms: List[float] = field(default_factory=list, repr=False)

    def add(self, latency_ms: float) -> None:
        """Count one segmented frame with its capture-to-result latency."""
        self.processed += 1
        self.latencies_ms.append(latency_ms)

    @property
    def fps(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def latency(self) -> Dict[str, float]:
        """Mean and 99th percentile latency in ms (0 before the first frame)."""
        if not self.latencies_ms:
            return {"mean": 0.0, "p99": 0.0}
        v = np.asarray(self.latencies_ms)
        return {"mean": float(v.mean()), "p99": float(np.percentile(v, 99))}

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("source", "live", "frames_in", "processed", "dropped", "skipped", "reconnects", "end", "ok")}
        d.update(seconds=round(self.seconds, 3), fps=round(self.fps, 3), latency_ms={k: round(v, 2) for k, v in self.latency().items()})
        return d

    def format(self) -> str:
        """The final report, trtexec-style: one line of counters, one of speed."""
        lat = self.latency()
        counts = f"Frames: in = {self.frames_in}, processed = {self.processed}, dropped = {self.dropped}, " \
                 f"unreadable = {self.skipped}, reconnects = {self.reconnects}"
        speed = f"Throughput: {self.fps:.2f} FPS over {self.seconds:.1f} s; latency mean = {lat['mean']:.1f} ms, p99 = {lat['p99']:.1f} ms"
        return f"{counts}\n{speed}\nEnd: {self.end}"
