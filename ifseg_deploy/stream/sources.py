"""Video sources: recorded files read in order, live sources read by a thread that keeps the newest frame.

A *recorded* source (a video file) delivers every frame (or every ``vid_stride``-th) in order and
never drops one; unreadable frames are skipped and counted, and a file that ends before the frame
count its header announces is reported as truncated. A *live* source (webcam index, ``rtsp://``,
``http(s)://`` and other network URLs, GStreamer pipelines) is read continuously by a capture thread
that keeps only the newest frame, so the frame handed on is always the most recent one; frames
replaced before anyone took them are counted as dropped. A live source that stops delivering is
reopened with exponential back-off, ``reconnect`` times at most.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol, Tuple, Union

import cv2
import numpy as np

from ..errors import IFSegError
from ..redact import redact_url

log = logging.getLogger(__name__)

#: URL schemes read as live network streams (FFmpeg inside OpenCV).
LIVE_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
#: Frame counts that FFmpeg derives from the duration can be one frame off; fewer frames than the
#: announced count minus this tolerance means the file is truncated.
COUNT_TOLERANCE = 1
#: A network source silent this long (opening or between frames) counts as lost (then reconnected).
NET_TIMEOUT_MS = 5000
#: Longest wait between two reconnect attempts (the wait doubles from ``reconnect_delay``).
MAX_RECONNECT_DELAY_S = 8.0


class Capture(Protocol):
    """What a source reads from: the subset of ``cv2.VideoCapture`` used here (tests pass stand-ins)."""

    def isOpened(self) -> bool: ...  # noqa: N802 (OpenCV's names)

    def read(self) -> Tuple[bool, Optional[np.ndarray]]: ...

    def grab(self) -> bool: ...

    def get(self, prop: int) -> float: ...

    def release(self) -> None: ...


CaptureFactory = Callable[[], Capture]


@dataclass
class Frame:
    """One decoded frame and where it came from."""

    index: int  # 0-based frame number in the source (counts every frame the source produced)
    rgb: np.ndarray  # (H, W, 3) uint8 RGB
    time: float  # seconds: presentation time in the file (its timestamp), or since the live stream started
    captured: float  # time.perf_counter() when the frame was read
    header: Any = None  # bag sources: the message's ifseg_deploy.ros.msgs.Header (stamp, frame_id)
    log_ns: Optional[int] = None  # bag sources: the message's log time in the bag (ns)


@dataclass
class SourceStats:
    """Counters of a source (frames are source frames, before ``vid_stride``)."""

    read: int = 0  # frames decoded
    skipped: int = 0  # unreadable frames skipped
    dropped: int = 0  # live frames replaced by a newer one before being processed
    reconnects: int = 0  # successful reopenings of a live source
    strided: int = 0  # frames left out by vid_stride


@dataclass
class SourceEnd:
    """How a source ended: ``ok`` is False for a truncated file or a lost live source."""

    ok: bool
    message: str


def is_live(spec: str) -> bool:
    """True for a webcam index, a network URL or a GStreamer pipeline (contains ``!``)."""
    return spec.isdigit() or "!" in spec or spec.lower().startswith(LIVE_SCHEMES)


def open_capture(spec: str) -> Capture:
    """An OpenCV capture for ``spec``: webcam index, file, URL (FFmpeg) or GStreamer pipeline.

    Raises:
        IFSegError: the file does not exist or the source cannot be opened (the message shows URLs
        without their password).
    """
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # FFmpeg's per-packet warnings: we count bad frames instead
    if spec.isdigit():
        cap = cv2.VideoCapture(int(spec))
    elif "!" in spec:
        cap = cv2.VideoCapture(spec, cv2.CAP_GSTREAMER)
    else:
        if not is_live(spec) and not os.path.exists(spec):
            raise IFSegError(
                f"video source not found: {redact_url(spec)} (give a video file, a webcam index such as 0, "
                "an rtsp:// URL or a GStreamer pipeline)"
            )
        params = (
            [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, NET_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, NET_TIMEOUT_MS]
            if is_live(spec)
            else []
        )
        cap = cv2.VideoCapture(spec, cv2.CAP_FFMPEG, params)
    if not cap.isOpened():
        cap.release()
        hint = (
            " (this OpenCV build has no GStreamer: use JetPack's OpenCV, see the README)"
            if "!" in spec and not opencv_has("GStreamer")
            else ""
        )
        raise IFSegError(f"cannot open video source '{redact_url(spec)}'{hint}; check the device, path or URL")
    return cap


def opencv_has(feature: str) -> bool:
    """True when OpenCV's build information lists ``feature`` (``"GUI"``, ``"GStreamer"``) as present."""
    lines = [ln for ln in cv2.getBuildInformation().splitlines() if ln.strip().startswith(f"{feature}:")]
    return bool(lines) and lines[0].split(":", 1)[1].strip().upper() not in ("", "NO", "NONE")


def _to_rgb(bgr: np.ndarray) -> np.ndarray:
    if bgr.ndim == 2:
        return cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
    if bgr.shape[2] == 4:
        return cv2.cvtColor(bgr, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class FileSource:
    """A recorded video read frame by frame, in order (every ``vid_stride``-th frame).

    Frames carry the file's own presentation times, so a variable-frame-rate file (phone clips) keeps
    its timing. An unreadable frame is skipped and counted; ``max_bad`` failed reads in a row end the
    file. The end is an error (``end.ok`` False) when the file stops short of the frame count and
    duration its header announces.

    Raises:
        IFSegError: a setting is out of range, or the file cannot be opened or holds no decodable frame.
    """

    live = False

    def __init__(
        self, spec: str, vid_stride: int = 1, max_bad: int = 30, capture_factory: Optional[CaptureFactory] = None
    ):
        if vid_stride < 1:
            raise IFSegError(f"vid_stride={vid_stride}: must be >= 1")
        if max_bad < 1:
            raise IFSegError(f"max_bad={max_bad}: must be >= 1")
        self.name = redact_url(spec)  # what messages show
        self.vid_stride = vid_stride
        self.max_bad = max_bad
        self.cap = capture_factory() if capture_factory else open_capture(spec)
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and 0 < fps < 1000 else 30.0
        count = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.announced: Optional[int] = count if count > 0 else None
        self.stats = SourceStats()
        self.end: Optional[SourceEnd] = None
        self._consumed = 0  # frames read or skipped as unreadable (file position)
        self._last = (-1, -1.0)  # (index, time in s) of the last frame decoded
        # Read ahead once: a file FFmpeg opens but cannot decode (not a video, damaged) fails here, in one line
        self._first = self._read()
        if self._first is None:
            self.cap.release()
            raise IFSegError(f"no frame could be decoded from {self.name}: not a video file, or damaged")

    @property
    def total(self) -> Optional[int]:
        """Frames this source will deliver, when the header announces a count."""
        return None if self.announced is None else -(-self.announced // self.vid_stride)

    def next(self) -> Optional[Frame]:
        """The next frame in order, or None at the end (then ``end`` says how it ended)."""
        frame, self._first = self._first, None
        if frame is None:
            return self._read()
        frame.captured = time.perf_counter()  # read ahead at open: its latency counts from now
        return frame

    def _read(self) -> Optional[Frame]:
        if self.end is not None:
            return None
        pending = 0  # failed reads since the last good one: bad frames if a good one follows, else the end
        while True:
            wanted = self._consumed % self.vid_stride == 0
            ok, bgr = self.cap.read() if wanted else (self.cap.grab(), None)
            if not ok:
                if self.announced is not None and self._consumed >= self.announced:
                    return self._finish(pending)  # every announced frame was consumed: end of file
                pending += 1
                self._consumed += 1
                if pending >= self.max_bad:
                    return self._finish(pending)
                continue
            self._consumed += 1
            self.stats.skipped += pending
            pending = 0
            index = self._consumed - 1
            t = self._time(index)
            if not wanted:
                self.stats.strided += 1
                continue
            self.stats.read += 1
            return Frame(index, _to_rgb(bgr), t, time.perf_counter())

    def _time(self, index: int) -> float:
        """Presentation time of the frame just decoded: FFmpeg's timestamp (OpenCV's POS_MSEC, read right
        after the frame); a capture without increasing timestamps counts frames at the nominal rate."""
        pts = self.cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        last_index, last_t = self._last
        t = pts if pts > last_t else last_t + (index - last_index) / self.fps
        self._last = (index, t)
        return t

    def _finish(self, pending: int) -> None:
        frames = self._consumed - pending
        # OpenCV derives a missing header count from duration x average rate, which a variable-rate file
        # (Matroska, WebM) does not reach in frames: it ended early only if its last frame is also early.
        short = self.announced is not None and frames < self.announced - COUNT_TOLERANCE
        if short and self._last[1] < (self.announced - COUNT_TOLERANCE - 1.5) / self.fps:
            self.end = SourceEnd(
                False,
                f"{self.name} ended after {frames} of {self.announced} frames "
                f"({self.stats.skipped} unreadable frames skipped): the file is truncated or damaged",
            )
        else:
            self.end = SourceEnd(True, f"end of {self.name}")
        return None

    def close(self) -> None:
        self.cap.release()


class LiveSource:
    """A live source read continuously by a capture thread that keeps only the newest frame.

    ``next()`` returns the most recent frame not yet handed out; frames replaced before being taken are
    counted in ``stats.dropped``. When a read fails, the source is reopened after
    ``reconnect_delay``, then twice as long each time (at most :data:`MAX_RECONNECT_DELAY_S`),
    ``reconnect`` attempts in all; each success is announced through ``notify`` and counted.
    """

    live = True
    total = None

    def __init__(
        self,
        spec: str,
        reconnect: int = 5,
        reconnect_delay: float = 0.5,
        capture_factory: Optional[CaptureFactory] = None,
        notify: Callable[[str], None] = log.warning,
    ):
        if reconnect < 0:
            raise IFSegError(f"reconnect={reconnect}: must be >= 0")
        self.name = redact_url(spec)  # what messages show
        self.reconnect = reconnect
        self.reconnect_delay = reconnect_delay
        self.notify = notify
        self._factory: CaptureFactory = capture_factory or (lambda: open_capture(spec))
        self._cap = self._factory()
        if not self._cap.isOpened():
            raise IFSegError(f"cannot open video source '{self.name}'; check the device, path or URL")
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and 0 < fps < 1000 else 30.0
        self.stats = SourceStats()
        self.end: Optional[SourceEnd] = None
        self.newest_index = -1  # index of the newest frame captured so far
        self._latest: Optional[Frame] = None
        self._done = False
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._capture, name="ifseg-capture", daemon=True)
        self._thread.start()

    def _capture(self) -> None:
        index = 0
        try:
            while not self._stop.is_set():
                ok, bgr = self._cap.read()
                if not ok:
                    if self._stop.is_set() or not self._reopen():
                        break
                    continue
                now = time.perf_counter()
                frame = Frame(index, _to_rgb(bgr), now - self._t0, now)
                with self._cond:
                    if self._latest is not None:
                        self.stats.dropped += 1
                    self._latest = frame
                    self.stats.read += 1
                    self.newest_index = index
                    self._cond.notify_all()
                index += 1
        finally:
            self._cap.release()
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def _reopen(self) -> bool:
        self._cap.release()
        for attempt in range(1, self.reconnect + 1):
            delay = min(self.reconnect_delay * 2 ** (attempt - 1), MAX_RECONNECT_DELAY_S)
            self.notify(f"{self.name}: no frame; reconnect attempt {attempt}/{self.reconnect} in {delay:.1f} s")
            if self._stop.wait(delay):
                return False
            try:
                cap = self._factory()
            except IFSegError:
                continue
            if cap.isOpened():
                self._cap = cap
                self.stats.reconnects += 1
                self.notify(f"{self.name}: reconnected")
                return True
            cap.release()
        self.end = SourceEnd(
            False, f"lost {self.name} after {self.reconnect} reconnect attempts ({self.stats.read} frames read)"
        )
        return False

    def next(self) -> Optional[Frame]:
        """The newest frame not yet handed out (waits for one), or None once the source ended or was closed."""
        with self._cond:
            while self._latest is None and not self._done and not self._stop.is_set():
                self._cond.wait(0.1)
            frame, self._latest = self._latest, None
            return frame

    def request_stop(self) -> None:
        """Make ``next()`` return None and the capture thread end (safe from signal handlers)."""
        self._stop.set()

    def close(self) -> None:
        """Stop the capture thread (it releases the capture once its current read returns)."""
        self._stop.set()
        self._thread.join(timeout=1.0)
        with self._cond:
            self._done = True
            self._cond.notify_all()


class BagSource:
    """An image topic of a ROS bag (:class:`ifseg_deploy.ros.bag.BagReader`) read in bag order, every
    ``vid_stride``-th message; frames carry their message's header and log time. Time is seconds since
    the bag's first message. Compressed images that do not decode are skipped and counted.

    Raises:
        IFSegError: as BagReader (no image topic, several without ``topic``, unknown ``topic``).
    """

    live = False

    def __init__(self, spec: str, topic: Optional[str] = None, vid_stride: int = 1):
        from ..ros import require_ros_extra

        require_ros_extra("reading a ROS bag")
        from ..ros.bag import BagReader

        if vid_stride < 1:
            raise IFSegError(f"vid_stride={vid_stride}: must be >= 1")
        self.name, self.vid_stride = spec, vid_stride
        self.reader = BagReader(spec, topic)
        self.fps = self.reader.fps
        self.total = -(-self.reader.count // vid_stride)
        self.stats = SourceStats()
        self.end: Optional[SourceEnd] = None
        self._frames = enumerate(self.reader.frames())

    def next(self) -> Optional[Frame]:
        """The next decodable frame in bag order, or None at the end."""
        for index, bag_frame in self._frames:
            if index % self.vid_stride:
                self.stats.strided += 1
                continue
            if bag_frame.rgb is None:
                self.stats.skipped += 1
                continue
            self.stats.read += 1
            t = (bag_frame.log_ns - self.reader.start_ns) / 1e9
            return Frame(index, bag_frame.rgb, t, time.perf_counter(), bag_frame.header, bag_frame.log_ns)
        self.end = SourceEnd(True, f"end of {self.name} {self.reader.topic}")
        return None

    def close(self) -> None:
        self.reader.close()


Source = Union[FileSource, LiveSource, BagSource]


def open_source(
    spec: str,
    live: Optional[bool] = None,
    vid_stride: int = 1,
    max_bad: int = 30,
    reconnect: int = 5,
    reconnect_delay: float = 0.5,
    capture_factory: Optional[CaptureFactory] = None,
    notify: Callable[[str], None] = log.warning,
    topic: Optional[str] = None,
) -> Source:
    """A :class:`LiveSource` for webcams, URLs and pipelines (or ``live=True``), a :class:`BagSource`
    for ROS bags (``topic``: its image topic), else a :class:`FileSource`.

    ``vid_stride`` and ``max_bad`` apply to files, ``reconnect`` and ``reconnect_delay`` (seconds) to
    live sources. Raises IFSegError when the source cannot be opened or a setting is out of range.
    """
    from ..ros.bag import is_bag  # no third-party import: the ros extra is needed only to read a bag

    if is_bag(spec) and not live:
        return BagSource(spec, topic, vid_stride)
    if live if live is not None else is_live(spec):
        return LiveSource(spec, reconnect, reconnect_delay, capture_factory, notify)
    return FileSource(spec, vid_stride, max_bad, capture_factory)
