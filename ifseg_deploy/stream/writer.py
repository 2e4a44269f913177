"""Video output that survives any stop: frames go to a hidden temporary file next to the target,
which ``close()`` finalises (encoder flushed, MP4 index written) and renames into place.

``.mp4`` is H.264 (``libx264`` through PyAV, the ``video`` extra), which browsers play; without PyAV
it falls back to OpenCV's MPEG-4 Part 2 (``mp4v``) with a notice. ``.avi`` is Motion-JPEG (OpenCV).
A process killed hard (SIGKILL) leaves only the hidden temporary file, never an unplayable file at
the final name; the next run writing the same name removes such left-overs of dead processes.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
from fractions import Fraction
from typing import Callable, Optional

import cv2
import numpy as np

from ..errors import IFSegError

log = logging.getLogger(__name__)

#: x264 settings: real-time speed on small CPUs, visually lossless-ish quality.
X264_OPTIONS = {"preset": "veryfast", "crf": "23"}
#: Time base of live recordings: frames keep their capture times (variable frame rate), in ms.
LIVE_TIME_BASE = Fraction(1, 1000)


def h264_encoder() -> Optional[str]:
    """Name of a PyAV H.264 encoder, or None when PyAV is missing or has none."""
    try:
        import av
    except ImportError:
        return None
    for name in ("libx264", "libopenh264"):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # PyAV raises UnknownCodecError / ValueError depending on the version
            continue
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class VideoWriter:
    """Writes RGB frames to ``path`` (``.mp4`` or ``.avi``) through a temporary file.

    Args:
        path: final file name.
        fps: frame rate of a recorded source (frames are spaced 1 / fps).
        live: frames carry capture times (``write(rgb, t)``): a variable frame rate keeps real durations.
        notify: receives the one-line notice when falling back to ``mp4v``.

    Raises:
        IFSegError: unsupported extension or a folder that does not exist / is not writable.
    """

    def __init__(self, path: str, fps: float, live: bool = False, notify: Callable[[str], None] = log.warning):
        ext = os.path.splitext(path)[1].lower()
        if ext not in (".mp4", ".avi"):
            raise IFSegError(f"--save {path}: use a .mp4 or .avi file name")
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            raise IFSegError(f"--save {path}: folder {folder} does not exist or is not writable")
        self.path = path
        self.fps = fps
        self.live = live
        self.frames = 0
        self._prefix = os.path.join(folder, f".{os.path.basename(path)}.")
        self._remove_stale_temps(ext)
        self.tmp = f"{self._prefix}{os.getpid()}.tmp{ext}"
        self.encoder = h264_encoder() if ext == ".mp4" else None
        if ext == ".mp4" and self.encoder is None:
            notify("PyAV with an H.264 encoder is not installed: writing MPEG-4 Part 2 (mp4v), which browsers do not play; "
                   "pip install 'ifseg-deploy[video]' for H.264")
        self.codec = self.encoder or ("mp4v" if ext == ".mp4" else "MJPG")
        self._container = self._stream = self._cv = None
        self._last_pts = -1
        self._t0: Optional[float] = None

    def _remove_stale_temps(self, ext: str) -> None:
        for tmp in glob.glob(glob.escape(self._prefix) + f"*.tmp{ext}"):
            pid = tmp[len(self._prefix):-len(f".tmp{ext}")]
            if pid.isdigit() and not _pid_alive(int(pid)):
                with contextlib.suppress(OSError):
                    os.remove(tmp)
                    log.warning("removed %s, left by an earlier run that was killed", tmp)

    def _open(self, width: int, height: int) -> None:
        if self.encoder is not None:
            import av

            self._container = av.open(self.tmp, "w", format="mp4", options={"movflags": "+faststart"})
            rate = Fraction(self.fps).limit_denominator(1001)
            stream = self._container.add_stream(self.encoder, rate=rate, options=X264_OPTIONS if self.encoder == "libx264" else {})
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.codec_context.time_base = LIVE_TIME_BASE if self.live else 1 / rate
            self._stream = stream
        else:
            self._cv = cv2.VideoWriter(self.tmp, cv2.VideoWriter_fourcc(*self.codec), self.fps, (width, height))
            if not self._cv.isOpened():
                raise IFSegError(f"cannot encode video {self.path} with this OpenCV build; try an .avi file name")

    def write(self, rgb: np.ndarray, t: Optional[float] = None) -> None:
        """Append an RGB uint8 ``(H, W, 3)`` frame; ``t``: its capture time in seconds (live recordings).

        H.264 needs even sides: an odd last row / column is repeated.
        """
        if self.encoder is not None:
            rgb = np.pad(rgb, ((0, rgb.shape[0] % 2), (0, rgb.shape[1] % 2), (0, 0)), mode="edge")
        if self._container is None and self._cv is None:
            self._open(rgb.shape[1], rgb.shape[0])
        if self._cv is not None:
            self._cv.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        else:
            import av

            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            if self.live and t is not None:  # capture time since the first frame, in ms, strictly increasing
                self._t0 = t if self._t0 is None else self._t0
                pts = max(round((t - self._t0) * 1000), self._last_pts + 1)
            else:
                pts = self.frames
            frame.pts, frame.time_base = pts, self._stream.codec_context.time_base
            self._last_pts = pts
            self._container.mux(self._stream.encode(frame))
        self.frames += 1

    def close(self) -> bool:
        """Finalise the file and rename it into place (True), or remove it when no frame was written."""
        if self._container is not None:
            self._container.mux(self._stream.encode(None))
            self._container.close()
        if self._cv is not None:
            self._cv.release()
        self._container = self._cv = None
        if self.frames == 0:
            with contextlib.suppress(OSError):
                os.remove(self.tmp)
            return False
        os.replace(self.tmp, self.path)
        return True


class JsonLinesWriter:
    """``--save-json``: one JSON object per line, written to a temporary file renamed into place by ``close()``
    (also after an interrupted run, so the file always holds whole lines for the frames processed)."""

    def __init__(self, path: str):
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            raise IFSegError(f"--save-json {path}: folder {folder} does not exist or is not writable")
        self.path = path
        self.tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
        self._fh = open(self.tmp, "w", encoding="utf-8")

    def write(self, record: dict) -> None:
        self._fh.write(json.dumps(record) + "\n")

    def close(self) -> None:
        self._fh.close()
        os.replace(self.tmp, self.path)
