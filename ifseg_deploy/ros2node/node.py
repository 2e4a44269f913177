"""``ifseg-deploy ros2``: a ROS 2 segmentation node over plain DDS (Cyclone DDS, no ROS install).

Subscribes to a camera topic (sensor_msgs/Image, or CompressedImage), always segments the newest
frame (frames replaced before the network was free are dropped and counted) and publishes, under
the node's namespace and with the input's header, the label map, the overlay and the class list
(:mod:`ifseg_deploy.ros.output`'s topics). The category list can be changed while it runs with a
std_msgs/String on ``<ns>/categories``; the change happens between two frames: the new LabelInfo
goes out before the first label map using the new ids, and no label map mixes two lists.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import numpy as np
from cyclonedds.internal import InvalidSample
from cyclonedds.sub import DataReader

from ..errors import IFSegError
from ..ros.images import to_rgb
from ..ros.msgs import CompressedImage, Header, Image, LabelInfo, String, Time
from ..ros.output import SegmentationMessages, Topics
from ..runtime.segmenter import Segmenter
from ..stream.temporal import TemporalSmoother
from .dds import COMMAND_QOS, INPUT_QOS, LATCHED_QOS, OUTPUT_QOS, DiscoveryInfo, Participant, expand_name

log = logging.getLogger(__name__)

#: Seconds between two status lines (FPS, latency, drops) while frames come in.
LOG_EVERY_S = 1.0
#: Seconds between two "waiting for frames" lines while none come.
IDLE_LOG_EVERY_S = 10.0
#: ROS distributions whose ros_discovery_info layout is known (Gid of 24 bytes on Humble, else 16).
DISTROS = ("humble", "iron", "jazzy", "kilted", "rolling")


@dataclass
class NodeStats:
    """Counters since the node started."""

    received: int = 0  # input messages received
    processed: int = 0  # frames segmented and published
    dropped: int = 0  # frames replaced by a newer one before segmentation
    skipped: int = 0  # frames left out: undecodable (damaged JPEG, unsupported encoding) or refused by the model
    category_changes: int = 0


class SegmentationNode:
    """The node: DDS entities, the newest-frame slot and the segmentation loop (:meth:`spin`).

    Args:
        segmenter: a loaded :class:`Segmenter` (its categories are the initial list).
        input_topic: camera topic (``/camera/image_raw``; relative names are put under ``/``).
        compressed: the input is sensor_msgs/CompressedImage.
        name: node name; the outputs go under ``/<name>`` (``/ifseg/labels``, ...).
        domain_id: DDS domain (ROS_DOMAIN_ID).
        localhost: keep discovery on this machine (default: from ROS_AUTOMATIC_DISCOVERY_RANGE /
            ROS_LOCALHOST_ONLY).
        draw: draws the overlay (``draw(rgb, labels, categories) -> rgb``).
        with_overlay: publish the overlay (False: label maps and LabelInfo only, no overlay topic).
        temporal: smooth labels across frames (restarted when the categories change).
        ros_distro: announce the node on ros_discovery_info in this distro's layout (None: do not).
        notify: receives the status lines and the one-line notices (refused category lists).

    Raises:
        IFSegError: a bad topic or node name, or DDS cannot join the domain.
    """

    def __init__(
        self,
        segmenter: Segmenter,
        input_topic: str,
        *,
        compressed: bool = False,
        name: str = "ifseg",
        domain_id: int = 0,
        localhost: Optional[bool] = None,
        draw: Optional[Callable] = None,
        with_overlay: bool = True,
        temporal: bool = True,
        ros_distro: Optional[str] = "jazzy",
        notify: Callable[[str], None] = print,
    ):
        if not name or not (name[0].isalpha() or name[0] == "_") or not all(c.isalnum() or c == "_" for c in name):
            raise IFSegError(f"namespace={name}: a node name is letters, digits and _ (e.g. ifseg)")
        if ros_distro is not None and ros_distro not in DISTROS:
            raise IFSegError(f"ros_distro={ros_distro}: one of {', '.join(DISTROS)}")
        self.seg = segmenter
        self.input_topic = expand_name(input_topic)
        self.compressed = compressed
        self.notify = notify
        self.topics = Topics.under("/" + name)
        self.messages = SegmentationMessages(self.topics, draw, with_overlay)
        self.smoother = TemporalSmoother() if temporal and segmenter.host_postprocess else None
        self.stats = NodeStats()
        self._cond = threading.Condition()
        self._latest: Optional[Tuple[object, float]] = None  # (message, perf_counter at arrival)
        self._pending: Optional[str] = None  # a category list waiting for the next frame boundary
        self._stop = threading.Event()
        self._frame_id = ""

        self.participant = Participant(domain_id, localhost)
        in_type = CompressedImage if compressed else Image
        self.reader = self.participant.reader(
            self.participant.topic(self.input_topic, in_type), INPUT_QOS, self._on_frame
        )
        self.writers = {
            self.topics.labels: self.participant.writer(self.topics.labels, Image, OUTPUT_QOS),
            self.topics.label_info: self.participant.writer(self.topics.label_info, LabelInfo, LATCHED_QOS),
        }
        if with_overlay:
            self.writers[self.topics.overlay] = self.participant.writer(
                self.topics.overlay, CompressedImage, OUTPUT_QOS
            )
        self.categories_topic = f"/{name}/categories"
        self.command_reader = self.participant.reader(
            self.participant.topic(self.categories_topic, String), COMMAND_QOS, self._on_categories
        )
        if ros_distro is not None:
            self.discovery = DiscoveryInfo(
                self.participant, "/", name, [self.reader, self.command_reader], list(self.writers.values()), ros_distro
            )
        self._publish(self.messages.label_info(self.seg.categories, self._now_header()))

    # ---- reader callbacks (the participant's reader threads): keep them short -----------------

    def _on_frame(self, reader: DataReader) -> None:
        samples = [s for s in reader.take(N=16) if not isinstance(s, InvalidSample)]  # not: a camera that left
        if not samples:
            return
        now = time.perf_counter()
        with self._cond:
            self.stats.received += len(samples)
            self.stats.dropped += len(samples) - 1 + (self._latest is not None)
            self._latest = (samples[-1], now)
            self._cond.notify_all()

    def _on_categories(self, reader: DataReader) -> None:
        samples = [s for s in reader.take(N=16) if not isinstance(s, InvalidSample)]
        if samples:
            with self._cond:
                self._pending = samples[-1].data  # the latest command wins
                self._cond.notify_all()

    # ---- the loop ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Make :meth:`spin` return after the frame in progress (safe from signal handlers)."""
        self._stop.set()

    def close(self) -> None:
        """Stop receiving (no callback runs after this); call once :meth:`spin` returned."""
        self.participant.close()

    def spin(self, max_frames: Optional[int] = None) -> NodeStats:
        """Segment and publish the newest frame until :meth:`stop` (or ``max_frames`` frames); a status
        line every :data:`LOG_EVERY_S` seconds."""
        window: List[float] = []  # latencies (ms) since the last status line
        last_log = last_idle = time.perf_counter()
        last_processed = last_received = 0
        while not self._stop.is_set() and (max_frames is None or self.stats.processed < max_frames):
            item = self._next(timeout=0.1)
            self._apply_categories()  # a frame boundary: nothing is in flight
            if item is not None:
                latency = self._process(*item)
                if latency is not None:
                    window.append(latency)
            now = time.perf_counter()
            if now - last_log >= LOG_EVERY_S:
                if window or self.stats.received != last_received:
                    fps = (self.stats.processed - last_processed) / (now - last_log)
                    mean = sum(window) / len(window) if window else 0.0
                    self.notify(
                        f"{fps:.1f} FPS, latency {mean:.1f} ms, dropped {self.stats.dropped}, "
                        f"received {self.stats.received}, published {self.stats.processed}"
                    )
                elif now - last_idle >= IDLE_LOG_EVERY_S:  # no frames: say so now and then, not every second
                    self.notify(f"waiting for frames on {self.input_topic}")
                    last_idle = now
                window, last_log, last_processed, last_received = [], now, self.stats.processed, self.stats.received
        return self.stats

    def _next(self, timeout: float) -> Optional[Tuple[object, float]]:
        with self._cond:
            if self._latest is None and self._pending is None:
                self._cond.wait(timeout)
            item, self._latest = self._latest, None
            return item

    def _apply_categories(self) -> None:
        with self._cond:
            text, self._pending = self._pending, None
        if text is None:
            return
        old = self.seg.categories
        try:
            self.seg.set_categories(text)
        except IFSegError as e:
            self.notify(f"categories '{text}' refused ({e}); keeping {', '.join(old)}")
            return
        if self.seg.categories == old:
            return
        self.stats.category_changes += 1
        if self.smoother is not None:
            self.smoother.reset()  # probabilities of another class list cannot be averaged in
        self._publish(self.messages.label_info(self.seg.categories, self._now_header()))
        self.notify(f"categories: {', '.join(self.seg.categories)}")

    def _process(self, msg, arrived: float) -> Optional[float]:
        """Segment one input message and publish its outputs; returns the latency (ms) from arrival."""
        rgb = self.decode(msg)
        if rgb is None:
            return None
        try:
            batch = self.seg.preprocess([rgb])
            result = self.seg.postprocess(batch, self.seg.infer(batch), probs_transform=self.smoother)[0]
        except IFSegError as e:  # one bad frame (e.g. too small for the model) never stops the node
            self._skip(e)
            return None
        self.publish_result(msg.header, rgb, result.labels, result.categories)
        return (time.perf_counter() - arrived) * 1e3

    def decode(self, msg) -> Optional[np.ndarray]:
        """The RGB uint8 ``(H, W, 3)`` image of an input message, or None (counted in ``stats.skipped``,
        the reason logged on the first and every 100th frame left out)."""
        try:
            rgb = to_rgb(msg, self.compressed, self.input_topic)
        except IFSegError as e:
            self._skip(e)
            return None
        if rgb is None:
            self._skip(f"topic {self.input_topic}: a compressed image did not decode")
        return rgb

    def _skip(self, why) -> None:
        """Count a frame left out; say why on the first and every 100th."""
        self.stats.skipped += 1
        if self.stats.skipped % 100 == 1:
            self.notify(f"skipped {self.stats.skipped} frames: {why}")

    def publish_result(self, header: Header, rgb, labels, categories: List[str]) -> None:
        """Publish one frame's label map and overlay (and LabelInfo if the list differs from the last
        one published) with the input's ``header``; ``labels`` (H, W) class ids into ``categories``."""
        self._frame_id = header.frame_id
        for topic_msg in self.messages.messages(rgb, labels, categories, header):
            self._publish(topic_msg)
        self.stats.processed += 1

    def _publish(self, topic_msg) -> None:
        topic, msg = topic_msg
        self.writers[topic].write(msg)

    def _now_header(self) -> Header:
        return Header(Time.from_ns(time.time_ns()), self._frame_id)
