"""The streaming loop: ``for frame, result in Stream(seg, source): ...``.

Pipelined (default), every stage runs in its own thread with small bounded queues between them, so
decoding, pre-processing, the network, post-processing (kNN, up-sampling) and whatever the caller does
with each result (drawing, encoding) overlap; throughput approaches 1 / (slowest stage) rather than
1 / (sum of stages). One thread runs the network, so one inference runs at a time.

Recorded files go decode -> preprocess -> network -> postprocess in order, nothing dropped. For live
sources the network thread takes the newest captured frame and pre-processes it itself, so what it
segments is never older than the frame being captured when it started (stale frames are dropped by
the source and counted); post-processing and the caller's work still overlap with the network.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np

from ..errors import IFSegError
from ..runtime.segmenter import SegmentationResult, Segmenter
from .report import StreamSummary
from .sources import CaptureFactory, Frame, LiveSource, Source, open_source
from .temporal import TemporalSmoother

log = logging.getLogger(__name__)

_END = object()  # end-of-stream marker passed down the queues
_POLL_S = 0.05  # how often blocked threads look at the stop flag


class StreamError(IFSegError):
    """The source ended abnormally: a truncated file or a live source lost after its reconnects."""


@dataclass
class FrameInfo:
    """What is known about the frame just yielded."""

    index: int  # frame number in the source (0-based)
    time: float  # seconds: presentation time in the file, or since a live stream started
    latency_ms: float  # from reading the frame to its result being ready
    age: int  # live sources: frames captured after this one when the network started on it (0 for files)
    timings: Dict[str, float] = field(default_factory=dict)  # ms per stage (SegmentationResult.timings)
    header: Any = None  # bag sources: the input message's ifseg_deploy.ros.msgs.Header
    log_ns: Optional[int] = None  # bag sources: the input message's log time in the bag (ns)


@dataclass
class _Item:
    frame: Frame
    age: int = 0
    batch: object = None
    out: object = None
    result: Optional[SegmentationResult] = None


class Stream:
    """Iterate over ``(frame, result)`` pairs of a video source: ``frame`` is the RGB uint8 ``(H, W, 3)``
    image, ``result`` its :class:`SegmentationResult`; :attr:`info` describes the frame just yielded
    and :attr:`summary` counts frames, drops, reconnects and latencies.

    Example::

        for frame, result in Stream(seg, "video.mp4", temporal=True):
            ...

    Args:
        segmenter: a loaded :class:`Segmenter`.
        source: webcam index (``"0"``), video file, ``rtsp://`` / ``http(s)://`` URL, GStreamer pipeline,
            or ROS bag (``.mcap``, ``.db3``, ``.bag``, bag folder; the ``ros`` extra).
        topic: ROS bags: the image topic (default: the bag's only one).
        live: treat the source as live (newest frame only) or recorded; default: from ``source``.
        vid_stride: recorded files: segment every N-th frame.
        max_frames: stop after this many segmented frames.
        temporal: smooth labels across frames (default; or a configured :class:`TemporalSmoother`; False: off).
        pipelined: run the stages in parallel threads (False: one after the other, for comparison).
        reconnect: live sources: reopen attempts after the source is lost.
        reconnect_delay: live sources: the first wait before reopening (s, doubling).
        max_bad_frames: recorded files: unreadable frames in a row before the file counts as ended.
        capture_factory: returns an opened ``cv2.VideoCapture``-like object instead of opening ``source``.
        notify: receives one-line notices (reconnects).

    Raises:
        IFSegError: the source cannot be opened or an option is out of range (at construction).
        StreamError: at the end of the iteration, when the source ended abnormally (the frames
            before were all yielded).
    """

    def __init__(
        self,
        segmenter: Segmenter,
        source: str,
        *,
        live: Optional[bool] = None,
        vid_stride: int = 1,
        max_frames: Optional[int] = None,
        temporal: Union[bool, TemporalSmoother] = True,
        pipelined: bool = True,
        reconnect: int = 5,
        reconnect_delay: float = 0.5,
        max_bad_frames: int = 30,
        capture_factory: Optional[CaptureFactory] = None,
        notify: Callable[[str], None] = log.warning,
        topic: Optional[str] = None,
    ):
        if max_frames is not None and max_frames < 1:
            raise IFSegError(f"max_frames={max_frames}: must be >= 1")
        self.segmenter = segmenter
        self.max_frames = max_frames
        self.pipelined = pipelined
        if temporal is not False and not segmenter.host_postprocess:  # e.g. a Triton server up-samples itself
            notify("temporal smoothing is off: the server post-processes the results")
            temporal = False
        self.smoother = (
            temporal if isinstance(temporal, TemporalSmoother) else (TemporalSmoother() if temporal else None)
        )
        self.source: Source = open_source(
            source, live, vid_stride, max_bad_frames, reconnect, reconnect_delay, capture_factory, notify, topic
        )
        self.summary = StreamSummary(source=self.source.name, live=self.source.live, total=self._total())
        self.info: Optional[FrameInfo] = None
        self._stop = threading.Event()  # take no new frame; those in flight still come out
        self._abort = threading.Event()  # the consumer left or a stage failed: threads exit at once
        self._stop_reason: Optional[str] = None
        self._taken = 0
        self._error: Optional[BaseException] = None
        self._smoothed_vocab = None  # the category list the smoother's average was built with

    @property
    def fps(self) -> float:
        """Nominal frame rate of the source (after ``vid_stride`` for files)."""
        return self.source.fps / getattr(self.source, "vid_stride", 1)

    def _total(self) -> Optional[int]:
        total = self.source.total
        if self.max_frames is not None:
            return self.max_frames if total is None else min(total, self.max_frames)
        return total

    def stop(self, reason: str = "stopped") -> None:
        """Ask the stream to end after the frames in flight (safe from signal handlers and other threads)."""
        if self._stop_reason is None:
            self._stop_reason = reason
        self._stop.set()
        if isinstance(self.source, LiveSource):
            self.source.request_stop()

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stop.is_set()

    def close(self) -> None:
        """Release the source of a stream that will not be iterated (iteration releases it itself)."""
        self.stop()
        self.source.close()

    # ---- stages -------------------------------------------------------------------------------

    def _take(self) -> Optional[_Item]:
        """The next frame to segment, or None when the source ended, max_frames was reached or stop() was called."""
        if self._stop.is_set() or (self.max_frames is not None and self._taken >= self.max_frames):
            return None
        frame = self.source.next()
        if frame is None:
            return None
        self._taken += 1
        age = max(0, self.source.newest_index - frame.index) if isinstance(self.source, LiveSource) else 0
        return _Item(frame, age)

    def _preprocess(self, item: _Item) -> _Item:
        item.batch = self.segmenter.preprocess([item.frame.rgb])
        return item

    def _infer(self, item: _Item) -> _Item:
        item.out = self.segmenter.infer(item.batch)
        return item

    def _postprocess(self, item: _Item) -> _Item:
        if self.smoother is not None and item.batch.vocab is not self._smoothed_vocab:
            self.smoother.reset()  # after set_categories: class i of the new list is not class i of the old one
            self._smoothed_vocab = item.batch.vocab
        item.result = self.segmenter.postprocess(item.batch, item.out, probs_transform=self.smoother)[0]
        item.batch = item.out = None
        return item

    def _take_and_infer(self) -> Optional[_Item]:
        item = self._take()
        return None if item is None else self._infer(self._preprocess(item))

    # ---- running ------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Tuple[np.ndarray, SegmentationResult]]:
        started = time.perf_counter()
        threads: List[threading.Thread] = []
        try:
            if self.pipelined:
                items, threads = self._start_threads()
            else:
                items = self._sequential()
            for item in items:
                self._record(item)
                yield item.frame.rgb, item.result
            if self._error is not None:
                raise self._error
        finally:
            self._abort.set()
            self.stop(self._stop_reason or "stopped")
            for t in threads:
                t.join(timeout=5.0)
            self.source.close()
            self._finish(time.perf_counter() - started)
        end = self.source.end
        if end is not None and not end.ok and self._stop_reason == "end":
            raise StreamError(f"{end.message}; {self.summary.processed} frames processed")

    def _record(self, item: _Item) -> None:
        latency = (time.perf_counter() - item.frame.captured) * 1e3
        frame = item.frame
        self.info = FrameInfo(
            frame.index, frame.time, latency, item.age, dict(item.result.timings), frame.header, frame.log_ns
        )
        self.summary.add(latency)
        self._sync_counters()

    def _sync_counters(self) -> None:
        stats = self.source.stats
        self.summary.frames_in, self.summary.skipped = stats.read, stats.skipped
        self.summary.dropped, self.summary.reconnects = stats.dropped, stats.reconnects

    def _finish(self, seconds: float) -> None:
        self._sync_counters()
        self.summary.seconds = seconds
        end = self.source.end
        if self._stop_reason == "end":
            self.summary.end = end.message if end is not None else "end of source"
            self.summary.ok = end is None or end.ok
        else:
            self.summary.end = self._stop_reason or "stopped"

    def _sequential(self) -> Iterator[_Item]:
        while True:
            item = self._take()
            if item is None:
                self._ended()
                return
            yield self._postprocess(self._infer(self._preprocess(item)))

    def _ended(self) -> None:
        if not self._stop.is_set():
            self._stop_reason = "end" if self.max_frames is None or self._taken < self.max_frames else "max-frames"

    def _start_threads(self) -> Tuple[Iterator[_Item], List[threading.Thread]]:
        if isinstance(self.source, LiveSource):
            stages = [self._take_and_infer, self._postprocess]
        else:
            stages = [self._take, self._preprocess, self._infer, self._postprocess]
        queues = [queue.Queue(maxsize=2) for _ in stages]
        threads = [
            threading.Thread(
                target=self._worker,
                args=(fn, queues[i - 1] if i else None, queues[i]),
                name=f"ifseg-{fn.__name__.strip('_')}",
                daemon=True,
            )
            for i, fn in enumerate(stages)
        ]
        for t in threads:
            t.start()
        return self._drain(queues[-1]), threads

    def _worker(self, fn, inq: Optional[queue.Queue], outq: queue.Queue) -> None:
        try:
            while True:
                if inq is None:
                    item = fn()
                    if item is None:
                        self._ended()
                        break
                else:
                    item = self._get(inq)
                    if item is _END:
                        break
                    item = fn(item)
                if not self._put(outq, item):
                    return
        except BaseException as e:  # handed to the consumer, which raises it
            self._error = e
            self._abort.set()
            return
        self._put(outq, _END)

    def _get(self, q: queue.Queue):
        while True:
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                if self._abort.is_set():
                    return _END

    def _put(self, q: queue.Queue, item) -> bool:
        while True:
            try:
                q.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                if self._abort.is_set():
                    return False

    def _drain(self, q: queue.Queue) -> Iterator[_Item]:
        while True:
            item = self._get(q)
            if item is _END:
                return
            yield item
