"""Segmentation of live and recorded video: ``for frame, result in Stream(seg, source): ...``.

Modules: ``sources`` (files in order, live sources newest-frame-only with reconnects), ``pipeline``
(the threaded stages and the :class:`Stream` iterator), ``temporal`` (label smoothing across frames),
``writer`` (video / JSON Lines outputs that survive any stop), ``report`` (counters, latencies,
per-frame records), ``hud`` (on-frame HUD, progress), ``runner`` (the ``ifseg-deploy stream`` loop).
"""

from .pipeline import FrameInfo, Stream, StreamError
from .report import StreamSummary
from .runner import OutputOptions, run_stream
from .temporal import TemporalSmoother

__all__ = ["FrameInfo", "OutputOptions", "Stream", "StreamError", "StreamSummary", "TemporalSmoother", "run_stream"]
