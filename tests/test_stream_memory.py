"""Unbounded streams run in bounded memory: no per-frame state is kept for the whole run (latency
percentiles come from a fixed-size histogram)."""

from __future__ import annotations

import json
import time
import tracemalloc

import cv2
import numpy as np
import pytest

from ifseg_deploy.runtime.segmenter import SegmentationResult
from ifseg_deploy.stream import OutputOptions, Stream, run_stream
from ifseg_deploy.stream.report import LatencyStats

FRAMES, WINDOW, WARM_UP = 5000, 500, 1500  # the video path makes a one-off ~60 kB allocation near frame 1000


@pytest.mark.parametrize(
    "values",
    [
        np.random.default_rng(0).lognormal(np.log(40), 0.8, 20000),  # skewed, like latencies
        np.random.default_rng(1).uniform(5, 6, 501),
        np.concatenate([np.full(990, 30.0), np.full(10, 2500.0)]),  # a few stalls: p99 sits between the two
        np.array([12.5]),
    ],
)
def test_latency_percentiles_match_numpy_within_one_percent(values):
    stats = LatencyStats()
    for v in values:
        stats.add(float(v))
    assert stats.mean == pytest.approx(values.mean(), rel=1e-9)
    for q in (0, 1, 50, 90, 99, 99.9, 100):
        assert stats.percentile(q) == pytest.approx(np.percentile(values, q), rel=LatencyStats.REL_ERROR)
    assert LatencyStats().percentile(99) == 0.0


class TinyFrames:
    """A stand-in video file of FRAMES small frames at 25 fps that samples Python's traced memory at
    each read."""

    def __init__(self):
        self.i = 0
        self.samples = np.zeros(FRAMES, np.int64)  # allocated before tracing starts: filling it allocates nothing
        self.bgr = np.random.default_rng(0).integers(
            0, 256, (24, 32, 3), dtype=np.uint8
        )  # items in flight weigh little

    def isOpened(self):  # noqa: N802
        return True

    def read(self):
        if self.i >= FRAMES:
            return False, None
        self.samples[self.i] = tracemalloc.get_traced_memory()[0]
        self.i += 1
        return True, self.bgr

    def get(self, prop):
        return {
            cv2.CAP_PROP_FPS: 25.0,
            cv2.CAP_PROP_FRAME_COUNT: FRAMES,
            cv2.CAP_PROP_POS_MSEC: (self.i - 1) * 40.0,
        }.get(prop, 0.0)

    def release(self):
        pass


class ThresholdSegmenter:
    """Stands in for a Segmenter (the stages Stream calls): label 1 where red > 127."""

    host_postprocess = True
    categories = ["dark", "red"]

    def preprocess(self, images):
        return images

    def infer(self, batch):
        return None

    def postprocess(self, batch, outputs, probs_transform=None):
        grid = np.zeros((1, 1, 2), np.float32)
        return [
            SegmentationResult((rgb[..., 0] > 127).astype(np.int64), grid, grid, self.categories, {"network": 0.0})
            for rgb in batch
        ]


def test_python_memory_stops_growing_on_a_long_stream(tmp_path):
    capture = TinyFrames()
    stream = Stream(ThresholdSegmenter(), "camera.mp4", live=False, temporal=False, capture_factory=lambda: capture)
    js = tmp_path / "f.jsonl"
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        summary = run_stream(stream, OutputOptions(save=str(tmp_path / "out.mp4"), save_json=str(js), progress=False))
        seconds = time.perf_counter() - t0
    finally:
        tracemalloc.stop()
    assert summary.processed == FRAMES
    assert len(js.read_text().splitlines()) == FRAMES
    assert json.loads(js.read_text().splitlines()[-1])["time"] == pytest.approx((FRAMES - 1) * 0.04)
    # the least in use over a window (queues between the stages at their emptiest), after warm-up and at the end
    after_warm_up, at_end = capture.samples[WARM_UP : WARM_UP + WINDOW].min(), capture.samples[-WINDOW:].min()
    growth = int(at_end - after_warm_up)
    print(
        f"{FRAMES} frames in {seconds:.1f} s; Python memory growth over {FRAMES - WARM_UP - WINDOW} frames: {growth} "
        f"bytes"
    )
    assert growth < 24 * 1024  # keeping one float per frame adds 85-95 kB here
