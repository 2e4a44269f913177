"""The ``ifseg-deploy stream`` loop on top of :class:`Stream`: draw, display and save each result, and
finalise every output on any stop (end of file, ``--max-frames``, ``q``, Ctrl-C, SIGTERM, source
loss, an error)."""

from __future__ import annotations

import contextlib
import signal
import threading
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from ..errors import IFSegError
from ..fileio import ResultFolder, check_output_file, write_png
from ..visualize.overlay import overlay
from .hud import Progress, RateMeter, draw_hud
from .pipeline import FrameInfo, Stream
from .report import StreamSummary, frame_record
from .sources import opencv_has
from .writer import JsonLinesWriter, VideoWriter, check_video_path

WINDOW = "ifseg-deploy"


@dataclass
class OutputOptions:
    """Where results go. ``save``: overlay video (.mp4 / .avi) or ROS 2 bag (.mcap: label maps, overlays,
    class lists; :mod:`ifseg_deploy.ros.output`); ``save_labels``: folder of label PNGs (``<frame>.png``,
    uint8, uint16 above 255 classes); ``save_json``: JSON Lines file; ``foxglove``: port to serve the
    bag's topics live on (Foxglove WebSocket, bound to ``foxglove_host``)."""

    save: Optional[str] = None
    show: bool = False
    save_labels: Optional[str] = None
    save_json: Optional[str] = None
    hud: bool = True
    alpha: float = 0.5
    contours: bool = False
    progress: bool = True
    exist_ok: bool = False  # save_labels may be a folder holding other files (none of them is replaced)
    font: Optional[str] = None  # legend font file (default: an installed font covering the names)
    foxglove: Optional[int] = None
    foxglove_host: str = "127.0.0.1"

    @property
    def save_bag(self) -> bool:
        """True when ``save`` names an MCAP bag rather than a video."""
        return bool(self.save) and self.save.lower().endswith(".mcap")

    def check(self) -> None:
        """Raise IFSegError for a run with nothing to do, a setting out of range or an output path
        that cannot be written (:mod:`ifseg_deploy.fileio`'s policy), before any work."""
        if not (self.save or self.show or self.save_labels or self.save_json or self.foxglove is not None):
            raise IFSegError(
                "nothing to do: pass save=OUT.mp4 (or .mcap), show=True, save_labels=DIR, save_json=FILE and/or "
                "foxglove=PORT"
            )
        if self.save_bag or self.foxglove is not None:
            from ..ros import require_ros_extra

            require_ros_extra("save=OUT.mcap" if self.save_bag else "foxglove")
        if self.save_bag:
            from ..ros.output import check_bag_path

            check_bag_path(self.save, "save")
        elif self.save:
            check_video_path(self.save, "save")
        if self.save_json:
            check_output_file(self.save_json, "save_json", "jsonl")
        if self.save_labels:
            self.labels_folder()
        if not 0.0 <= self.alpha <= 1.0:
            raise IFSegError(f"alpha={self.alpha}: must be between 0 and 1")
        if self.show and not gui_available():
            raise IFSegError(
                "show=True needs OpenCV with GUI support, but the headless build is installed: "
                "pip uninstall -y opencv-python-headless && pip install 'ifseg-deploy[gui]'; or use `save`"
            )

    def labels_folder(self) -> ResultFolder:
        """The ``save_labels`` folder (created with its first file)."""
        return ResultFolder(self.save_labels, "save_labels", exist_ok=self.exist_ok, kind="label maps")


def gui_available() -> bool:
    """True when this OpenCV build can open windows."""
    return opencv_has("GUI")


class _Outputs:
    """The open outputs of one run."""

    def __init__(self, opts: OutputOptions, stream: Stream):
        opts.check()
        self.opts = opts
        self.video = VideoWriter(opts.save, stream.fps) if opts.save and not opts.save_bag else None
        self.labels = opts.labels_folder() if opts.save_labels else None
        self.json = JsonLinesWriter(opts.save_json) if opts.save_json else None
        self.ros = None
        if opts.save_bag or opts.foxglove is not None:
            from ..ros.output import RosOutputs

            def draw(rgb, labels, categories):
                return overlay(rgb, labels, categories, opts.alpha, opts.contours, font=opts.font)

            self.ros = RosOutputs(opts.save if opts.save_bag else None, opts.foxglove, opts.foxglove_host, draw)

    def add(self, frame: np.ndarray, result, info: FrameInfo, fps: float, dropped: int) -> Optional[np.ndarray]:
        """Write one frame's outputs; return the drawn image when it is needed (video or window)."""
        if self.json is not None:
            self.json.write(frame_record(info.index, info.time, result.labels, result.categories))
        if self.ros is not None:
            self.ros.write(frame, result.labels, result.categories, info.header, info.time, info.log_ns)
        if self.labels is not None:
            dtype = np.uint8 if len(result.categories) <= 255 else np.uint16  # as `segment --save-labels`
            write_png(self.labels.file(f"{info.index:06d}.png"), result.labels.astype(dtype))
        if self.video is None and not self.opts.show:
            return None
        drawn = overlay(
            frame, result.labels, result.categories, self.opts.alpha, self.opts.contours, font=self.opts.font
        )
        if self.opts.hud:
            draw_hud(drawn, fps, info.latency_ms, dropped)
        if self.video is not None:
            self.video.write(drawn, info.time)
        return drawn

    def close(self) -> None:
        try:
            if self.video is not None:
                self.video.close()
        finally:  # a video that cannot be finalised still leaves the other outputs closed
            if self.json is not None:
                self.json.close()
            if self.ros is not None:
                self.ros.close()
            if self.opts.show:
                cv2.destroyAllWindows()


@contextlib.contextmanager
def _stop_on_signals(stream: Stream):
    """SIGINT / SIGTERM end the stream gracefully (outputs finalised); a second signal aborts."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, _frame):
        if stream.stopping:
            raise KeyboardInterrupt
        stream.stop(signal.Signals(signum).name)

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def run_stream(stream: Stream, opts: OutputOptions) -> StreamSummary:
    """Segment every frame of ``stream`` into the outputs of ``opts``; return the summary.

    Every output is finalised whatever ends the run. Raises IFSegError for bad options (before any
    frame is read) and :class:`StreamError` after finalising, when the source ended abnormally.
    """
    try:
        outputs = _Outputs(opts, stream)
    except BaseException:
        stream.close()
        raise
    progress = Progress(stream.summary, opts.progress)
    rate = RateMeter()
    try:
        with _stop_on_signals(stream):
            for frame, result in stream:
                fps = rate.tick()
                drawn = outputs.add(frame, result, stream.info, fps, stream.summary.dropped)
                if opts.show:
                    cv2.imshow(WINDOW, cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
                    if cv2.waitKey(1) & 0xFF == ord("q"):
                        stream.stop("q pressed")
                progress.update(fps)
    finally:
        progress.close()
        outputs.close()
    return stream.summary
