"""Video and JSON Lines outputs that survive any stop, a hard kill included.

The video is recorded under a visible name next to the target, ``OUT.mp4.partial-<pid>.mp4``, as a
*fragmented* MP4 (H.264 through PyAV, the ``video`` extra): a keyframe and a fragment at least every
:data:`KEYFRAME_INTERVAL_S` of video, each fragment written out as soon as it is complete, so after
SIGKILL, the OOM killer or a power cut the partial file plays up to about a second before the end.
``close()`` finalises it into a normal MP4 (index in front, as browsers want) under a hidden
temporary name and renames that into place, then removes the partial file. A partial file left by a
killed run is never deleted: the next run writing the same name reports it.

Without PyAV, ``.mp4`` falls back to OpenCV's MPEG-4 Part 2 (``mp4v``) with a notice; ``.avi`` is
Motion-JPEG (OpenCV). OpenCV's writers keep their data in memory until closed, so their partial
files do not survive a hard kill.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
from fractions import Fraction
from typing import Callable, List, Optional

import cv2
import numpy as np

from ..errors import IFSegError
from ..fileio import check_output_file

log = logging.getLogger(__name__)

#: x264 settings: real-time speed on small CPUs, visually lossless-ish quality. ``zerolatency`` (no
#: look-ahead, no B-frames) hands every frame to the file at once, so a hard kill loses nothing held in
#: the encoder, and timestamps stay exact; files are about a sixth larger.
X264_OPTIONS = {"preset": "veryfast", "crf": "23", "tune": "zerolatency"}
#: Frame timestamps use MPEG's 90 kHz clock: exact for 24, 25, 30 and 30000/1001 fps, and for any
#: variable frame rate (phone clips, live captures) to 11 µs.
TIME_BASE = Fraction(1, 90000)
#: A keyframe, hence a new MP4 fragment, at least this often (seconds of video): what a hard kill loses.
KEYFRAME_INTERVAL_S = 1.0
#: Fragmented MP4 written out fragment by fragment: playable however the process ends.
FRAGMENTED_MP4 = {"movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"}


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
    if pid == os.getpid():  # a file carrying our own pid was left by an earlier process (pids repeat in containers)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _files_of_dead_runs(pattern: str, prefix: str) -> List[str]:
    """Files matching ``pattern`` whose name continues ``prefix`` with the pid of a process that is gone."""
    found = []
    for name in sorted(glob.glob(pattern)):
        pid = name[len(prefix) :].split("-")[0].split(".")[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            found.append(name)
    return found


def check_video_path(path: str, option: str = "path") -> str:
    """``path`` if it names a video :class:`VideoWriter` can write (``.mp4`` / ``.avi``) where the
    output policy allows (:func:`ifseg_deploy.fileio.check_output_file`; ``option``: the caller's
    parameter, for messages)."""
    check_output_file(path, option)  # a folder is named as such before its (missing) extension
    if os.path.splitext(path)[1].lower() not in (".mp4", ".avi"):
        raise IFSegError(f"{option}={path}: use a .mp4 or .avi file name")
    return path


class VideoWriter:
    """Writes RGB frames at their timestamps to ``path`` (``.mp4`` or ``.avi``), through a partial file.

    Args:
        path: final file name.
        fps: nominal frame rate: the spacing of frames written without a timestamp.
        notify: receives one-line notices (the ``mp4v`` fall-back, partial files of killed runs).

    Raises:
        IFSegError: unsupported extension or a folder that does not exist / is not writable.
    """

    def __init__(self, path: str, fps: float, notify: Callable[[str], None] = log.warning):
        ext = os.path.splitext(check_video_path(path))[1].lower()
        folder = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            raise IFSegError(f"path={path}: cannot create {folder} ({e.strerror})") from None
        self.path = path
        self.fps = fps
        self.frames = 0
        hidden = os.path.join(folder, f".{os.path.basename(path)}.")
        for tmp in _files_of_dead_runs(glob.escape(hidden) + f"*.tmp{ext}", hidden):
            with contextlib.suppress(OSError):  # a killed run's unfinished copy; its partial file has it all
                os.remove(tmp)
        self.tmp = f"{hidden}{os.getpid()}.tmp{ext}"
        left = _files_of_dead_runs(glob.escape(f"{path}.partial-") + f"*{ext}", f"{path}.partial-")
        if left:
            notify(
                f"kept {', '.join(left)}: recorded by a run that was killed (H.264 plays up to about "
                f"{KEYFRAME_INTERVAL_S:g} s before the kill); delete when no longer needed"
            )
        self.partial = self._free_partial_name(ext)
        self.encoder = h264_encoder() if ext == ".mp4" else None
        if ext == ".mp4" and self.encoder is None:
            notify(
                "PyAV with an H.264 encoder is not installed: writing MPEG-4 Part 2 (mp4v), which browsers do not play "
                "and which does not survive a hard kill; pip install 'ifseg-deploy[video]' for H.264"
            )
        self.codec = self.encoder or ("mp4v" if ext == ".mp4" else "MJPG")
        self._container = self._stream = self._cv = None
        self._last_pts = -1
        self._t0: Optional[float] = None
        self._key_t = -KEYFRAME_INTERVAL_S  # video time of the last forced keyframe

    def _free_partial_name(self, ext: str) -> str:
        name, k = f"{self.path}.partial-{os.getpid()}{ext}", 1
        while os.path.exists(name):  # an earlier process with our pid left one: never overwrite it
            k += 1
            name = f"{self.path}.partial-{os.getpid()}-{k}{ext}"
        return name

    def _open(self, width: int, height: int) -> None:
        if self.encoder is not None:
            import av

            self._container = av.open(self.partial, "w", format="mp4", options=FRAGMENTED_MP4)
            rate = Fraction(self.fps).limit_denominator(1001)
            stream = self._container.add_stream(
                self.encoder, rate=rate, options=X264_OPTIONS if self.encoder == "libx264" else {}
            )
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.codec_context.time_base = TIME_BASE
            self._stream = stream
        else:
            self._cv = cv2.VideoWriter(self.partial, cv2.VideoWriter_fourcc(*self.codec), self.fps, (width, height))
            if not self._cv.isOpened():
                raise IFSegError(f"cannot encode video {self.path} with this OpenCV build; try an .avi file name")

    def write(self, rgb: np.ndarray, t: Optional[float] = None) -> None:
        """Append an RGB uint8 ``(H, W, 3)`` frame shown at ``t`` seconds (the source's presentation or
        capture time; default: ``frames / fps``). The video starts at the first frame's ``t``; H.264 keeps
        every timestamp (a variable frame rate stays variable), OpenCV's writers space frames 1 / fps.

        H.264 needs even sides: an odd last row / column is repeated.
        """
        t = self.frames / self.fps if t is None else t
        if self.encoder is not None:
            rgb = np.pad(rgb, ((0, rgb.shape[0] % 2), (0, rgb.shape[1] % 2), (0, 0)), mode="edge")
        if self._container is None and self._cv is None:
            self._open(rgb.shape[1], rgb.shape[0])
        if self._cv is not None:
            self._cv.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        else:
            from av.video.frame import PictureType, VideoFrame

            frame = VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            self._t0 = t if self._t0 is None else self._t0
            pts = max(round((t - self._t0) / TIME_BASE), self._last_pts + 1)  # strictly increasing
            frame.pts, frame.time_base = pts, TIME_BASE
            seconds = float(pts * TIME_BASE)
            if seconds - self._key_t >= KEYFRAME_INTERVAL_S:
                frame.pict_type = PictureType.I  # a keyframe closes the fragment before it, which is then written out
                self._key_t = seconds
            self._last_pts = pts
            self._container.mux(self._stream.encode(frame))
        self.frames += 1

    def close(self) -> bool:
        """Finalise the recording and rename it into place (True), or remove it when no frame was written.

        Raises:
            IFSegError: the final file could not be written (the partial file is kept and named).
        """
        container, cv_writer = self._container, self._cv
        self._container = self._cv = None
        if cv_writer is not None:
            cv_writer.release()
        if self.frames == 0:
            with contextlib.suppress(OSError):
                os.remove(self.partial)
            return False
        try:
            if container is not None:
                container.mux(self._stream.encode(None))
                container.close()
                self._finalise_mp4()
                os.replace(self.tmp, self.path)
                os.remove(self.partial)
            else:
                os.replace(self.partial, self.path)
        except Exception as e:  # disk full, permissions, FFmpeg: the partial recording stays
            with contextlib.suppress(OSError):
                os.remove(self.tmp)
            raise IFSegError(f"could not finalise {self.path} ({e}); the recording is kept in {self.partial}") from None
        return True

    def _finalise_mp4(self) -> None:
        """Copy the fragmented partial file's packets (no re-encoding) into a normal MP4 at ``self.tmp``."""
        import av

        with (
            av.open(self.partial) as src,
            av.open(self.tmp, "w", format="mp4", options={"movflags": "+faststart"}) as dst,
        ):
            video = src.streams.video[0]
            out = dst.add_stream_from_template(video)
            for packet in src.demux(video):
                if packet.dts is not None:  # the demuxer's final empty packet
                    packet.stream = out
                    dst.mux(packet)


class JsonLinesWriter:
    """``--save-json``: one JSON object per line, each written out whole as it comes (``tail -f`` follows
    it; whatever ends the run, a kill included, the file holds one complete line per frame written).

    The file is created with the first record, so a run that fails before its first frame leaves an
    earlier file of that name untouched.

    Raises:
        IFSegError: the path cannot receive a JSON Lines file (:func:`ifseg_deploy.fileio.check_output_file`).
    """

    def __init__(self, path: str):
        self.path = check_output_file(path, "path", "jsonl")
        self._fh = None

    def write(self, record: dict) -> None:
        """Append ``record`` as one line, in one ``write`` system call (unbuffered): a kill never leaves half a line."""
        if self._fh is None:
            check_output_file(self.path, "path", "jsonl")  # still ours to replace when the first frame comes
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            self._fh = open(self.path, "wb", buffering=0)
        self._fh.write((json.dumps(record) + "\n").encode("utf-8"))

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
