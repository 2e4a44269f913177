"""Live segmentation of a video source (webcam, file, RTSP/HTTP URL, GStreamer pipeline) with overlay."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable, Optional

import cv2
import numpy as np

from .errors import IFSegError
from .runtime.segmenter import Segmenter
from .visualize.overlay import overlay


def open_source(source: str) -> cv2.VideoCapture:
    """A webcam index (``0``), a file, an ``rtsp://``/``http://`` URL or a GStreamer pipeline (contains ``!``)."""
    if source.isdigit():
        cap = cv2.VideoCapture(int(source))
    elif "!" in source:
        cap = cv2.VideoCapture(source, cv2.CAP_GSTREAMER)
    else:
        if "://" not in source and not os.path.exists(source):
            raise IFSegError(f"video source not found: {source}")
        cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        hint = " (this OpenCV build may lack GStreamer support)" if "!" in source else ""
        raise IFSegError(f"cannot open video source '{source}'{hint}; check the device, path or URL")
    return cap


class VideoSink:
    """Writes frames to a temporary video next to ``path``; ``close(ok=True)`` renames it into place."""

    def __init__(self, path: str, fps: float):
        ext = os.path.splitext(path)[1].lower()
        if ext not in (".mp4", ".avi"):
            raise IFSegError(f"--save {path}: use a .mp4 or .avi file name")
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            raise IFSegError(f"--save {path}: folder {folder} does not exist or is not writable")
        self.path = path
        self.tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp{ext}")
        self.fourcc = cv2.VideoWriter_fourcc(*("MJPG" if ext == ".avi" else "mp4v"))
        self.fps = fps
        self.writer: Optional[cv2.VideoWriter] = None

    def write(self, bgr: np.ndarray) -> None:
        if self.writer is None:
            self.writer = cv2.VideoWriter(self.tmp, self.fourcc, self.fps, (bgr.shape[1], bgr.shape[0]))
            if not self.writer.isOpened():
                raise IFSegError(f"cannot encode video {self.path} with this OpenCV build; try an .avi file name")
        self.writer.write(bgr)

    def close(self, ok: bool) -> None:
        if self.writer is not None:
            self.writer.release()
        if ok and self.writer is not None:
            os.replace(self.tmp, self.path)
        elif os.path.exists(self.tmp):
            os.remove(self.tmp)


@dataclass
class StreamStats:
    frames: int = 0
    seconds: float = 0.0

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def run_stream(
    segmenter: Segmenter,
    source: str,
    save: Optional[str] = None,
    show: bool = False,
    max_frames: Optional[int] = None,
    vid_stride: int = 1,
    alpha: float = 0.5,
    contours: bool = False,
    on_frame: Optional[Callable[[int, float], None]] = None,
) -> StreamStats:
    """Segment frames from ``source`` and draw overlays; stops at the end of the source, after
    ``max_frames`` processed frames, on Ctrl-C, or when ``q`` is pressed in the window."""
    if vid_stride < 1:
        raise IFSegError("--vid-stride must be >= 1")
    if show and not _has_gui():
        raise IFSegError("--show needs an OpenCV build with GUI support (pip install opencv-python); use --save instead")
    cap = open_source(source)
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    sink = VideoSink(save, fps / vid_stride) if save else None
    stats = StreamStats()
    index, ok = 0, False
    try:
        while max_frames is None or stats.frames < max_frames:
            grabbed, frame = cap.read()
            if not grabbed:
                break
            index += 1
            if (index - 1) % vid_stride:
                continue
            t0 = time.perf_counter()
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            result = segmenter.segment(rgb)
            out = cv2.cvtColor(overlay(rgb, result.labels, result.categories, alpha, contours), cv2.COLOR_RGB2BGR)
            elapsed = time.perf_counter() - t0
            stats.frames += 1
            stats.seconds += elapsed
            if sink is not None:
                sink.write(out)
            if show:
                cv2.imshow("ifseg-deploy", out)
                if cv2.waitKey(1) & 0xFF == ord("q"):
                    break
            if on_frame is not None:
                on_frame(stats.frames, elapsed * 1e3)
        ok = True
    except KeyboardInterrupt:
        ok = True
    finally:
        cap.release()
        if sink is not None:
            sink.close(ok and stats.frames > 0)
        if show:
            cv2.destroyAllWindows()
    return stats


def _has_gui() -> bool:
    info = cv2.getBuildInformation()
    gui = [line for line in info.splitlines() if line.strip().startswith("GUI:")]
    return bool(gui) and "NONE" not in gui[0].upper()
