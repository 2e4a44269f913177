"""Throughput and latency of a Triton server under N concurrent clients, following
perf_analyzer's conventions: each client keeps one request in flight (concurrency N), throughput
is completed inferences per second of the measurement window, latency is the client-side round
trip (p50 / p90 / p95 / p99), and the server's dynamic batching shows as the average batch size
it formed: ``inference_count / execution_count`` over the window, from Triton's statistics API.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

import numpy as np

from ..errors import IFSegError
from ..runtime.segmenter import Segmenter
from ..triton.client import TritonBackend


@dataclass
class ServerBenchReport:
    """One measurement window."""

    url: str
    clients: int
    batch: int  # images per request
    image_size: List[int]
    seconds: float = 0.0
    latencies_ms: List[float] = field(default_factory=list)  # per request, all clients
    inference_count: int = 0  # images the server ran in the window
    execution_count: int = 0  # batches the server ran in the window

    @property
    def throughput(self) -> float:
        """Inferences (images) per second."""
        return len(self.latencies_ms) * self.batch / self.seconds if self.seconds > 0 else 0.0

    @property
    def average_batch(self) -> Optional[float]:
        """Images per batch the server formed (``None`` when it ran none in the window)."""
        return self.inference_count / self.execution_count if self.execution_count else None

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0-100) of the request latencies in ms, as ``np.percentile`` interpolates."""
        return float(np.percentile(self.latencies_ms, q))

    def to_dict(self) -> dict:
        """The JSON report."""
        return {
            "server": self.url,
            "clients": self.clients,
            "batch": self.batch,
            "image_size": self.image_size,
            "requests": len(self.latencies_ms),
            "seconds": self.seconds,
            "throughput_infer_per_s": self.throughput,
            "latency_ms": {
                "avg": statistics.fmean(self.latencies_ms),
                "p50": self.percentile(50),
                "p90": self.percentile(90),
                "p95": self.percentile(95),
                "p99": self.percentile(99),
            },
            "server_inference_count": self.inference_count,
            "server_execution_count": self.execution_count,
            "average_batch": self.average_batch,
        }

    def format(self) -> str:
        """The perf_analyzer-style text summary."""
        d = self.to_dict()
        lat = d["latency_ms"]
        batch = "n/a" if self.average_batch is None else f"{self.average_batch:.2f}"
        return "\n".join(
            [
                f"=== Triton {self.url}: {self.image_size[0]}x{self.image_size[1]}, batch {self.batch}, "
                f"{len(self.latencies_ms)} requests ===",
                f"Concurrency: {self.clients}, throughput: {self.throughput:.2f} infer/sec, latency "
                f"{lat['avg'] * 1e3:.0f} usec",
                "Latency: avg = {avg:.2f} ms, p50 = {p50:.2f} ms, p90 = {p90:.2f} ms, p95 = {p95:.2f} ms, p99 = "
                "{p99:.2f} ms".format(**lat),
                f"Server: inference count {self.inference_count}, execution count {self.execution_count}, average "
                f"batch {batch}",
            ]
        )


def run_server_benchmark(
    connect: Callable[[], Segmenter],
    image: np.ndarray,
    clients: int = 1,
    batch: int = 1,
    warmup: int = 2,
    iterations: int = 10,
    progress: Optional[Callable[[int, int], None]] = None,
) -> ServerBenchReport:
    """``clients`` threads, each with its own connection (``connect()`` in the thread: HTTP
    clients are bound to theirs), send ``warmup`` then ``iterations`` requests of ``batch``
    copies of ``image`` back to back; one more connection reads the server statistics. A
    connection is a Segmenter over the server (:func:`ifseg_deploy.triton.client.connect`). The
    first error of any client stops the run and is raised."""
    if clients < 1 or batch < 1 or iterations < 1 or warmup < 0:
        raise IFSegError("`clients`, `batch` and `iterations` must be >= 1 and `warmup` >= 0")
    stats = connect()
    server = stats.backend
    initial = server.statistics()
    report = ServerBenchReport(server.url, clients, batch, list(image.shape[:2]))
    images = [image] * batch
    warm, go = threading.Barrier(clients + 1), threading.Barrier(clients + 1)
    lock = threading.Lock()
    errors: List[BaseException] = []

    def worker() -> None:
        conn = None
        try:
            conn = connect()
            for _ in range(warmup):
                conn.segment_batch(images, batch)
        except BaseException as e:  # reported by the main thread
            errors.append(e)
        warm.wait()
        go.wait()
        for _ in range(iterations if not errors else 0):
            t0 = time.perf_counter()
            try:
                conn.segment_batch(images, batch)
            except BaseException as e:
                errors.append(e)
                break
            with lock:
                report.latencies_ms.append((time.perf_counter() - t0) * 1e3)
                if progress is not None:
                    progress(len(report.latencies_ms), clients * iterations)
            if errors:
                break
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    warm.wait()
    try:
        before = _settled(server, initial[0] + warmup * clients * batch) if not errors else (0, 0)
    finally:
        go.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    report.seconds = time.perf_counter() - t0
    try:
        if errors:
            raise (
                errors[0] if isinstance(errors[0], IFSegError) else IFSegError(f"benchmark client failed: {errors[0]}")
            )
        after = _settled(server, before[0] + len(report.latencies_ms) * batch)
    finally:
        stats.close()
    report.inference_count, report.execution_count = after[0] - before[0], after[1] - before[1]
    return report


def _settled(server: TritonBackend, inferences: int, wait_s: float = 5.0) -> Tuple[int, int]:
    """The server's ``(inference_count, execution_count)`` once it counts ``inferences``: Triton
    updates its statistics just after the responses leave, so a read right after the last answer
    can miss the last batch."""
    deadline = time.monotonic() + wait_s
    counts = server.statistics()
    while counts[0] < inferences and time.monotonic() < deadline:
        time.sleep(0.02)
        counts = server.statistics()
    return counts
