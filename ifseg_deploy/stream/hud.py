"""What the user sees while a stream runs: the on-frame HUD and the terminal progress / status line."""

from __future__ import annotations

import sys
import time
from typing import Optional, TextIO

import cv2
import numpy as np

from .report import StreamSummary

#: Terminal status line refresh interval for live sources (seconds).
STATUS_INTERVAL_S = 0.5


def draw_hud(rgb: np.ndarray, fps: float, latency_ms: float, dropped: int) -> np.ndarray:
    """Write ``FPS | latency | dropped`` in the top-right corner of an RGB uint8 image, in place."""
    text = f"{fps:.1f} FPS  {latency_ms:.0f} ms  {dropped} dropped"
    h, w = rgb.shape[:2]
    scale = max(0.35, min(0.8, w / 1400))
    thick = 1 if scale < 0.6 else 2
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    x0, y1 = max(0, w - tw - 10), min(h, th + base + 8)
    roi = rgb[:y1, x0:]
    roi[:] = (roi.astype(np.float32) * 0.35).astype(np.uint8)
    cv2.putText(rgb, text, (x0 + 5, th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return rgb


class RateMeter:
    """Frames per second over a sliding window of recent frames."""

    def __init__(self, window: int = 30):
        self.window = window
        self._times = []

    def tick(self) -> float:
        """Count one frame now; return the current rate."""
        self._times.append(time.perf_counter())
        del self._times[: -self.window - 1]
        span = self._times[-1] - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else 0.0


class Progress:
    """A progress bar with total and ETA for files (tqdm), a one-line status for live sources (stderr)."""

    def __init__(self, summary: StreamSummary, enabled: bool = True, stream: Optional[TextIO] = None):
        self.summary = summary
        self.stream = stream or sys.stderr  # looked up now: sys.stderr may have been replaced since import
        self._bar = None
        self._last = 0.0
        self.enabled = enabled
        if enabled and not summary.live:
            from tqdm import tqdm

            self._bar = tqdm(total=summary.total, unit="frame", file=stream, dynamic_ncols=True, leave=True)

    def update(self, fps: float) -> None:
        """After each processed frame."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(1)
            return
        now = time.perf_counter()
        if now - self._last >= STATUS_INTERVAL_S:
            self._last = now
            s = self.summary
            self.stream.write(f"\r{s.processed} frames  {fps:.1f} FPS  {s.dropped} dropped  {s.reconnects} reconnects ")
            self.stream.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.enabled and self._last:
            self.stream.write("\n")
            self.stream.flush()
