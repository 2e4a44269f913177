"""What ``ifseg-deploy app`` serves, without the web part: one model, one *tile* per video source, the
newest encoded result of each tile, the category list in force, and recordings.

Each tile runs a :class:`~ifseg_deploy.stream.Stream` on its own thread over a *live* source, so the
network always takes the newest frame (frames the model is too slow for are dropped and counted, never
queued). A video file is played as a live camera, at its frame rate, from the start again at its end; with
``realtime=False`` it is read as ``stream`` reads it (every frame in order, as fast as the model goes), again
and again. The browser's own camera is a live source fed by the frames the page sends.

Every result is encoded once, on its tile's thread (frame as JPEG, class colours as PNG, the legend), and
kept as the tile's newest :class:`Shown`; however many browsers watch, none of them makes the model or the
encoders do more work, and a slow one simply gets a newer frame next time.

A category change (:meth:`Session.set_categories`) takes effect at the next frame the network starts; a
result still computed with the previous list when it comes out is not shown (counted as superseded), so
every frame shown after the change answers has the new list. The previous list stays when the new one is
refused.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Deque, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from ..errors import IFSegError
from ..fileio import ResultFolder
from ..redact import redact_url
from ..ros.bag import is_bag
from ..runtime.segmenter import STAGES, Batch, Segmenter
from ..stream import Stream, StreamError
from ..stream.hud import RateMeter, draw_hud
from ..stream.report import area_fractions
from ..stream.sources import is_live, open_capture
from ..stream.writer import VideoWriter
from ..visualize.overlay import overlay
from ..visualize.palette import palette

log = logging.getLogger(__name__)

#: Longest category list accepted (names and their words), in characters, and most classes in one list.
MAX_CATEGORY_TEXT = 8192
MAX_CATEGORIES = 256
#: Results kept per tile, so a snapshot or label map of the frame a paused page shows can still be fetched.
KEEP_SHOWN = 8
#: Frames over which FPS and the mean stage latencies are reported.
STATS_WINDOW = 30
#: Seconds between attempts to reopen a source that was lost after the stream's own reconnects.
RETRY_S = 5.0
#: JPEG quality of the frames sent to the browsers.
JPEG_QUALITY = 85
#: Largest side, in pixels, of a frame the browser's camera may send.
MAX_CAMERA_SIDE = 4096


@dataclass
class Shown:
    """One result as the browsers get it."""

    seq: int  # per-tile counter of results shown
    index: int  # frame number in the source
    captured_unix: float  # seconds since the epoch when the frame was read (source-to-browser latency)
    frame: np.ndarray = field(repr=False)  # (H, W, 3) RGB uint8
    labels: np.ndarray = field(repr=False)  # (H, W) int64 class index per pixel
    categories: List[str] = field(default_factory=list)
    legend: List[dict] = field(default_factory=list)  # [{"name", "color": "#rrggbb", "share": 0..1}] classes present
    latency_ms: float = 0.0  # capture to result ready
    stages_ms: Dict[str, float] = field(default_factory=dict)
    jpeg: bytes = field(default=b"", repr=False)  # the frame
    colors: bytes = field(default=b"", repr=False)  # PNG: each pixel in its class's colour, the frame's size


def legend(labels: np.ndarray, categories: Sequence[str]) -> List[dict]:
    """Colour (the palette of :func:`~ifseg_deploy.visualize.overlay.overlay`) and share of the frame of
    each class present in ``labels`` ``(H, W)``, largest first."""
    colors = palette(categories)
    shares = area_fractions(labels, categories)
    rows = [
        {"name": name, "color": "#%02x%02x%02x" % tuple(int(c) for c in colors[categories.index(name)]), "share": s}
        for name, s in shares.items()
    ]
    return sorted(rows, key=lambda r: -r["share"])


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8/uint16 gray ``(H, W)`` or RGB ``(H, W, 3)`` array (fast compression)."""
    arr = np.ascontiguousarray(image[..., ::-1] if image.ndim == 3 else image)
    ok, buf = cv2.imencode(".png", arr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise IFSegError("could not encode a PNG image")
    return buf.tobytes()


def label_png(shown: Shown) -> bytes:
    """The label map as ``segment --save-labels`` writes it: uint8 PNG, uint16 above 255 classes."""
    return encode_png(shown.labels.astype(np.uint8 if len(shown.categories) <= 255 else np.uint16))


def category_value(value: object) -> Union[str, List[str]]:
    """A category list as a client sends it (the CLI's string, or a list of names), checked for type and
    size. Raises :class:`IFSegError` naming ``categories``."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        text = ", ".join(value)
    else:
        raise IFSegError('categories must be a string ("grass, cat, dog") or a list of names')
    if len(text) > MAX_CATEGORY_TEXT:
        raise IFSegError(f"categories: the list is {len(text)} characters long; at most {MAX_CATEGORY_TEXT}")
    if len(value if isinstance(value, list) else text.replace(";", ",").split(",")) > MAX_CATEGORIES:
        raise IFSegError(f"categories: more than {MAX_CATEGORIES} classes in one list")
    return value


class _SharedModel:
    """The one :class:`Segmenter` of all tiles: pre- and post-processing run on each tile's threads, the
    network on one frame at a time (a CUDA graph, a TensorRT context or a server connection is not made to
    run from two threads at once)."""

    def __init__(self, seg: Segmenter, lock: threading.Lock):
        self._seg = seg
        self._lock = lock

    def __getattr__(self, name: str):
        return getattr(self._seg, name)

    def infer(self, batch: Batch):
        with self._lock:
            return self._seg.infer(batch)


class PacedFile:
    """A video file read like a camera (the :class:`~ifseg_deploy.stream.sources.Capture` protocol): at its
    frame rate, from the start again after its last frame."""

    def __init__(self, spec: str):
        self.spec = spec
        self.cap = open_capture(spec)
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and 0 < fps < 1000 else 30.0
        self._t0: Optional[float] = None
        self._n = 0
        # Read ahead once: a file FFmpeg opens but cannot decode fails here, in one line, as `stream` does
        self._first = self.cap.read()
        if not self._first[0]:
            self.cap.release()
            raise IFSegError(f"no frame could be decoded from {redact_url(spec)}: not a video file, or damaged")

    def isOpened(self) -> bool:  # noqa: N802 (OpenCV's names)
        return self.cap.isOpened()

    def read(self):
        (ok, bgr), self._first = self._first or self.cap.read(), None
        if not ok and self._n:  # the end: from the start again (reopened: not every container can seek)
            self.cap.release()
            self.cap = open_capture(self.spec)
            ok, bgr = self.cap.read()
        if ok:
            now = time.perf_counter()
            if self._t0 is None or now - (self._t0 + self._n / self.fps) > 1.0:  # start, or fell behind: no burst
                self._t0, self._n = now, 0
            time.sleep(max(0.0, self._t0 + self._n / self.fps - now))
        self._n += ok
        return ok, bgr

    def grab(self) -> bool:
        return self.read()[0]

    def get(self, prop: int) -> float:
        return self.cap.get(prop)

    def release(self) -> None:
        self.cap.release()


class BrowserCamera:
    """A browser's camera as a capture: :meth:`put` takes the JPEG / PNG / WebP bytes the page sends, and
    :meth:`read` returns the newest decoded frame (frames replaced before being read are counted in
    ``dropped``). Ends when :meth:`close` is called."""

    def __init__(self):
        self._data: Optional[bytes] = None
        self._cond = threading.Condition()
        self.closed = False
        self.dropped = 0
        self.undecodable = 0

    def put(self, data: bytes) -> None:
        with self._cond:
            self.dropped += self._data is not None
            self._data = data
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def isOpened(self) -> bool:  # noqa: N802 (OpenCV's names)
        return not self.closed

    def read(self):
        while True:
            with self._cond:
                while self._data is None and not self.closed:
                    self._cond.wait(0.25)
                if self.closed:
                    return False, None
                data, self._data = self._data, None
            bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if bgr is not None and max(bgr.shape[:2]) <= MAX_CAMERA_SIDE:
                return True, bgr
            self.undecodable += 1  # not an image, or too large: the next one may be fine

    def grab(self) -> bool:
        return self.read()[0]

    def get(self, prop: int) -> float:
        return 30.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def release(self) -> None:
        pass  # the page stops sending; close() ends the source


class Recording:
    """A recording of one tile: its overlay frames (with the HUD, as ``stream --save``) through
    :class:`~ifseg_deploy.stream.writer.VideoWriter` into ``path``."""

    def __init__(self, path: str, fps: float, alpha: float, font: Optional[str]):
        self.path = path
        self.writer = VideoWriter(path, fps)
        self.alpha = alpha
        self.font = font

    def add(self, shown: Shown, t: float, fps: float, dropped: int) -> None:
        drawn = overlay(shown.frame, shown.labels, shown.categories, self.alpha, font=self.font)
        self.writer.write(draw_hud(drawn, fps, shown.latency_ms, dropped), t)


class Tile:
    """One source: a :class:`Stream` on its own thread, its newest results and its counters."""

    def __init__(self, session: "Session", tile_id: str, spec: str, camera: Optional[BrowserCamera] = None):
        self.session = session
        self.id = tile_id
        self.spec = spec
        self.camera = camera
        self.file = camera is None and not is_live(spec)  # a video file: played again from the start at its end
        self.status = "starting"  # what the page shows under the tile: "live", a reconnect notice, a lost source
        self.frames = 0  # results shown
        self.superseded = 0  # results computed with a category list replaced meanwhile
        self.dropped_before = 0  # drops counted by streams of this tile that ended (reopened sources)
        self.recording: Optional[Recording] = None
        self.recorded = 0
        self.shown: Deque[Shown] = collections.deque(maxlen=KEEP_SHOWN)
        self._rate = RateMeter(STATS_WINDOW)
        self.fps = 0.0
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.stream: Optional[Stream] = None
        self.stream = self._open()  # a source that cannot be opened at all fails here, in one line
        self._thread = threading.Thread(target=self._run, name=f"ifseg-app-{tile_id}", daemon=True)
        self._thread.start()

    @property
    def name(self) -> str:
        return self.stream.source.name if self.stream is not None else self.spec

    @property
    def dropped(self) -> int:
        """Frames replaced by a newer one before the model took them (the page's camera frames included)."""
        dropped = self.dropped_before + (self.stream.source.stats.dropped if self.stream is not None else 0)
        return dropped + (self.camera.dropped if self.camera is not None else 0)

    @property
    def skipped(self) -> int:
        """Frames that could not be decoded (of the current file, or sent by the page)."""
        if self.camera is not None:
            return self.camera.undecodable
        return self.stream.source.stats.skipped if self.stream is not None else 0

    @property
    def newest(self) -> Optional[Shown]:
        return self.shown[-1] if self.shown else None

    def find(self, seq: Optional[int]) -> Optional[Shown]:
        """The result numbered ``seq`` if still kept, else the newest."""
        for s in reversed(self.shown):
            if s.seq == seq:
                return s
        return self.newest

    def _open(self) -> Stream:
        s = self.session
        if self.camera is not None:
            factory = lambda: self.camera  # noqa: E731
        elif self.file and s.realtime and not is_bag(self.spec):
            factory = lambda: PacedFile(self.spec)  # noqa: E731
        else:
            factory = None  # as `stream` opens them: webcams, URLs, pipelines live; files every frame in order
        return Stream(
            s.model,
            self.spec,
            topic=s.topic,
            live=not (self.file and not s.realtime),
            temporal=s.temporal,
            reconnect=s.reconnect,
            capture_factory=factory,
            notify=self._notice,
        )

    def _notice(self, message: str) -> None:
        self.status = message
        log.warning(message)

    def _run(self) -> None:
        while not self._closed.is_set():
            stream = self.stream
            try:
                if stream is None:
                    stream = self.stream = self._open()
                for frame, result in stream:
                    if self._closed.is_set():
                        break
                    self._show(frame, result, stream)
                if not self._closed.is_set():
                    self.status = f"{stream.source.name} ended"
                    if self.file and stream.summary.ok:  # --no-realtime: from the start again, at once
                        self.dropped_before += stream.source.stats.dropped
                        self.stream = None
                        continue
            except (IFSegError, StreamError) as e:  # lost after the reconnects, or cannot be reopened
                self.status = str(e)
                log.warning(str(e))
            except Exception as e:  # a failing stage: shown on the page, the server goes on
                self.status = f"stopped: {type(e).__name__}: {str(e)[:200]}"
                log.error(self.status)
            if stream is not None:
                self.dropped_before += stream.source.stats.dropped
            self.stream = None
            if self.camera is not None:  # the browser camera stopped: nothing to reopen
                return
            self._closed.wait(RETRY_S)

    def _show(self, frame: np.ndarray, result, stream: Stream) -> None:
        if result.categories != self.session.categories:
            self.superseded += 1  # computed with the list that was just replaced
            return
        info = stream.info
        self.status = "live"  # frames again after a reconnect notice
        colors = palette(result.categories)[np.clip(result.labels, 0, len(result.categories) - 1)]
        ok, jpeg = cv2.imencode(".jpg", frame[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        shown = Shown(
            seq=self.frames + 1,
            index=info.index,
            captured_unix=time.time() - info.latency_ms / 1e3,  # the frame's latency was measured just now
            frame=frame,
            labels=result.labels,
            categories=list(result.categories),
            legend=legend(result.labels, result.categories),
            latency_ms=info.latency_ms,
            stages_ms=dict(info.timings),
            jpeg=jpeg.tobytes() if ok else b"",
            colors=encode_png(colors),
        )
        with self._lock:
            self.fps = self._rate.tick()
            self.frames += 1
            self.shown.append(shown)
            if self.recording is not None:
                try:
                    self.recording.add(shown, info.time, self.fps, self.dropped)
                    self.recorded += 1
                except (IFSegError, OSError) as e:  # disk full: the segmentation goes on, the fragments written stay
                    self.status = f"recording stopped: {str(e).splitlines()[0]}"
                    log.error(self.status)
                    self.recording = None
        self.session.shown(self, shown)

    def start_recording(self, path: str, alpha: float, font: Optional[str]) -> None:
        with self._lock:
            if self.recording is None:
                fps = self.stream.fps if self.stream is not None else 30.0
                self.recording = Recording(path, fps, alpha, font)
                self.recorded = 0

    def stop_recording(self) -> Optional[dict]:
        """Finalise the recording (None when none runs): ``{"path", "frames"}``."""
        with self._lock:
            rec, self.recording = self.recording, None
            if rec is None:
                return None
            written = rec.writer.close()
            return {"path": rec.path, "frames": rec.writer.frames if written else 0}

    def close(self) -> None:
        """Stop the stream; a recording in progress is finalised."""
        self._closed.set()
        stream = self.stream
        if stream is not None:
            stream.stop("closed")
        if self.camera is not None:
            self.camera.close()
        self._thread.join(timeout=10.0)
        self.stop_recording()

    def status_dict(self) -> dict:
        s = self.newest
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "fps": round(self.fps, 2),
            "frames": self.frames,
            "dropped": self.dropped,
            "skipped": self.skipped,
            "superseded": self.superseded,
            "width": int(s.frame.shape[1]) if s else None,
            "height": int(s.frame.shape[0]) if s else None,
            "latency_ms": round(s.latency_ms, 2) if s else None,
            "recording": self.recording is not None,
            "recorded": self.recorded if self.recording is not None else 0,
        }


class Session:
    """The model and the tiles of one ``ifseg-deploy app`` run.

    Args:
        segmenter: the loaded model (any backend: checkpoint, exported graph, Triton server).
        sources: one tile per source, as ``stream`` takes them (a file plays in a loop).
        out: base name of the run folder that receives recordings (``runs/app``, ``runs/app2``, ...).
        realtime: files play at their frame rate (False: every frame, as fast as the model goes).
        temporal / reconnect: as for :class:`~ifseg_deploy.stream.Stream`.
        alpha: opacity of the class colours in recordings.
        font: legend font of recordings (see :func:`~ifseg_deploy.visualize.overlay.overlay`).
        topic: ROS bag sources: the image topic (default: the bag's only one).

    Raises:
        IFSegError: a source cannot be opened, or the run folder cannot be written.
    """

    def __init__(
        self,
        segmenter: Segmenter,
        sources: Sequence[str],
        out: str = "runs/app",
        realtime: bool = True,
        temporal: bool = True,
        reconnect: int = 5,
        alpha: float = 0.5,
        font: Optional[str] = None,
        topic: Optional[str] = None,
    ):
        if not 0.0 <= alpha <= 1.0:
            raise IFSegError(f"alpha={alpha}: must be between 0 and 1")
        self.segmenter = segmenter
        self.model = _SharedModel(segmenter, threading.Lock())
        self.folder = ResultFolder(out, "out", numbered=True, kind="app recordings")
        self.realtime, self.temporal, self.reconnect = realtime, temporal, reconnect
        self.alpha, self.font, self.topic = alpha, font, topic
        self.categories: List[str] = segmenter.categories
        self.category_text = ", ".join(self.categories)
        self.recordings: Dict[str, str] = {}  # file name -> path, of finished recordings (what may be downloaded)
        self.listeners: List[Callable[[Tile, Shown], None]] = []
        self._stages: Deque[Dict[str, float]] = collections.deque(maxlen=STATS_WINDOW)
        self._lock = threading.Lock()
        self._numbers = collections.Counter()
        self.tiles: Dict[str, Tile] = {}
        try:
            for k, spec in enumerate(sources):
                self.tiles[str(k)] = Tile(self, str(k), spec)
        except BaseException:
            self.close()
            raise

    # -- categories -------------------------------------------------------------------------

    def set_categories(self, value: object) -> List[str]:
        """Switch every tile to a new list (the CLI's string, word lists included, or a list of names)
        from the next frame on; returns the list in force. Raises :class:`IFSegError` (the one-line
        reason) and keeps the previous list when ``value`` is refused."""
        value = category_value(value)
        with self._lock:
            self.segmenter.set_categories(value)
            self.categories = self.segmenter.categories
            self.category_text = value if isinstance(value, str) else ", ".join(value)
        return self.categories

    # -- tiles ------------------------------------------------------------------------------

    def shown(self, tile: Tile, shown: Shown) -> None:
        self._stages.append(shown.stages_ms)
        for fn in list(self.listeners):
            fn(tile, shown)

    def add_camera(self) -> Tuple[str, BrowserCamera]:
        """A new tile fed by a browser's camera: ``(tile id, the capture to put frames into)``."""
        camera = BrowserCamera()
        with self._lock:
            self._numbers["camera"] += 1
            tile_id = f"camera{self._numbers['camera']}"
        self.tiles[tile_id] = Tile(self, tile_id, "browser camera", camera)
        return tile_id, camera

    def remove(self, tile_id: str) -> None:
        tile = self.tiles.pop(tile_id, None)
        if tile is not None:
            result = tile.stop_recording()
            tile.close()
            if result:
                self._finished(result)

    def tile(self, tile_id: Optional[str]) -> Tile:
        """The tile ``tile_id`` (default: the first). Raises :class:`IFSegError` for an unknown one."""
        if tile_id is None and self.tiles:
            return next(iter(self.tiles.values()))
        if tile_id not in self.tiles:
            raise IFSegError(f"tile={tile_id}: no such tile; one of {', '.join(self.tiles) or 'none'}")
        return self.tiles[tile_id]

    # -- recordings -------------------------------------------------------------------------

    def start_recording(self, tile_id: Optional[str] = None) -> dict:
        """Record the tile's overlay into ``recording-N.mp4`` in the run folder."""
        tile = self.tile(tile_id)
        if tile.recording is None:
            with self._lock:
                self._numbers["recording"] += 1
                name = f"recording-{self._numbers['recording']:03d}.mp4"
            tile.start_recording(self.folder.file(name), self.alpha, self.font)
        return {"recording": True, "tile": tile.id, "file": os.path.basename(tile.recording.path)}

    def stop_recording(self, tile_id: Optional[str] = None) -> dict:
        """Finalise the tile's recording; ``{"recording": False, "file", "frames"}`` (file None when none ran)."""
        tile = self.tile(tile_id)
        result = tile.stop_recording()
        if result is None:
            return {"recording": False, "tile": tile.id, "file": None, "frames": 0}
        return self._finished(result) | {"tile": tile.id}

    def _finished(self, result: dict) -> dict:
        name = os.path.basename(result["path"])
        if result["frames"]:
            self.recordings[name] = result["path"]
        return {"recording": False, "file": name if result["frames"] else None, "frames": result["frames"]}

    # -- status -----------------------------------------------------------------------------

    def status(self) -> dict:
        """What ``GET /api/status`` answers."""
        tiles = [t.status_dict() for t in list(self.tiles.values())]
        caps = self.segmenter.backend.capabilities
        stages: Dict[str, float] = {}
        recent = list(self._stages)
        for name in STAGES:
            values = [s[name] for s in recent if name in s]
            if values:
                stages[name] = round(sum(values) / len(values), 3)
        return {
            "backend": self.segmenter.backend.name,
            "precision": caps.precision,
            "device": str(caps.device),
            "categories": list(self.categories),
            "categories_text": self.category_text,
            "fps": round(sum(t["fps"] for t in tiles), 2),
            "frames": sum(t["frames"] for t in tiles),
            "dropped": sum(t["dropped"] for t in tiles),
            "stages_ms": stages,
            "tiles": tiles,
            "recordings": sorted(self.recordings),
        }

    def close(self) -> None:
        """Stop every tile; recordings in progress are finalised (and listed)."""
        for tile_id in list(self.tiles):
            self.remove(tile_id)
