"""The segmentation topics: each result as ROS 2 messages, written to an MCAP bag and/or served live
to Foxglove.

Per frame, with the input frame's header (stamp, frame_id):

* ``<ns>/labels``: sensor_msgs/Image, the label map (pixel = class id), ``mono8`` up to 255 classes,
  ``mono16`` above;
* ``<ns>/overlay/compressed``: sensor_msgs/CompressedImage, the overlay (class colours and legend)
  as JPEG (``<base>/compressed`` is where image_transport and rqt/rviz look for a compressed image);
* ``<ns>/label_info``: vision_msgs/LabelInfo, the class list (id = index): before the first label
  map and again before the first label map of a changed list, never in between.

``<ns>`` is ``/ifseg`` by default. :class:`SegmentationMessages` makes the messages (also for the
DDS node); here they are serialised once (:mod:`.msgs`' CDR, MCAP's ``cdr`` encoding with
``ros2msg`` schemas) and the same bytes go to every sink.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..errors import IFSegError
from ..fileio import atomic_path, check_output_file
from ..visualize.overlay import overlay
from .msgs import MSGDEFS, CompressedImage, Header, Time, label_image, label_info

#: Default namespace of the segmentation topics.
NAMESPACE = "/ifseg"
#: JPEG quality of the overlay (OpenCV's scale, 0..100).
JPEG_QUALITY = 90
#: Foxglove clients have no latched topics: the class list is sent again this often (s).
LABEL_INFO_REPEAT_S = 1.0


@dataclass(frozen=True)
class Topics:
    """The three topic names under one namespace."""

    labels: str
    overlay: str
    label_info: str

    @classmethod
    def under(cls, namespace: str = NAMESPACE) -> "Topics":
        """The topics under ``namespace`` (``/ifseg`` -> ``/ifseg/labels``, ...).

        Raises:
            IFSegError: ``namespace`` is not an absolute ROS name (``/`` then letters, digits, ``_``, ``/``).
        """
        ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
        if not namespace.startswith("/") or not all(p and (p[0].isalpha() or p[0] == "_") for p in ns.split("/")[1:]):
            raise IFSegError(f"namespace={namespace}: use an absolute ROS name such as /ifseg")
        if not all(c.isalnum() or c in "_/" for c in ns):
            raise IFSegError(f"namespace={namespace}: letters, digits, _ and / only")
        return cls(f"{ns}/labels", f"{ns}/overlay/compressed", f"{ns}/label_info")

    def names(self) -> List[str]:
        """The three names: labels, overlay, label_info."""
        return [self.labels, self.overlay, self.label_info]


def header_of(header: Optional[Header], t: float) -> Header:
    """The input's header, or (inputs without one: videos, webcams) a header stamped ``t`` seconds
    (the frame's presentation or capture time) with an empty frame_id."""
    return header if header is not None else Header(Time.from_ns(int(round(t * 1e9))), "")


def overlay_message(
    header: Header, rgb: np.ndarray, labels: np.ndarray, categories: Sequence[str], draw: Callable[..., np.ndarray]
) -> CompressedImage:
    """The overlay of ``labels`` on ``rgb`` (drawn by ``draw(rgb, labels, categories)``) as a JPEG CompressedImage.

    Raises:
        IFSegError: OpenCV cannot encode the image.
    """
    drawn = draw(rgb, labels, categories)
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise IFSegError("could not encode the overlay as JPEG")
    return CompressedImage(header, "jpeg", jpeg.reshape(-1))


class SegmentationMessages:
    """Turns each result into the serialised messages of the segmentation topics, in publishing order.

    Args:
        topics: where the messages go.
        draw: draws the overlay: ``draw(rgb, labels, categories) -> rgb`` (default: :func:`overlay`).
        with_overlay: False leaves the overlay out (drawing and JPEG encoding cost more than all the rest).
    """

    def __init__(self, topics: Topics, draw: Optional[Callable[..., np.ndarray]] = None, with_overlay: bool = True):
        self.topics = topics
        self.with_overlay = with_overlay
        self.draw = draw or (lambda rgb, labels, cats: overlay(rgb, labels, cats))
        self._categories: Optional[List[str]] = None
        self._labels: Optional[np.ndarray] = None  # the label map's buffer, reused frame after frame

    def label_info(self, categories: Sequence[str], header: Header) -> Tuple[str, Any]:
        """``(topic, LabelInfo)`` announcing ``categories``; the next frame of the same list repeats none."""
        self._categories = list(categories)
        return self.topics.label_info, label_info(header, categories)

    def messages(
        self, rgb: np.ndarray, labels: np.ndarray, categories: Sequence[str], header: Header
    ) -> List[Tuple[str, Any]]:
        """``[(topic, message)]`` of one frame: LabelInfo first when the category list changed (or on
        the first frame), then the label map and the overlay, all with ``header``. The label map's
        pixels live in a buffer the next call reuses: serialise or write the messages before it.

        ``rgb``: (H, W, 3) uint8; ``labels``: (H, W) integer class ids into ``categories``.
        """
        out: List[Tuple[str, Any]] = []
        if self._categories != list(categories):
            out.append(self.label_info(categories, header))
        label_map = label_image(header, labels, len(categories), self._labels)
        self._labels = label_map.data
        out.append((self.topics.labels, label_map))
        if self.with_overlay:
            out.append((self.topics.overlay, overlay_message(header, rgb, labels, categories, self.draw)))
        return out


#: Message type of each topic kind (field name of :class:`Topics`).
TOPIC_TYPES = {"labels": "sensor_msgs/msg/Image", "overlay": "sensor_msgs/msg/CompressedImage"}
TOPIC_TYPES["label_info"] = "vision_msgs/msg/LabelInfo"


def check_bag_path(path: str, option: str = "save") -> str:
    """``path`` if an MCAP bag may be written there (:func:`ifseg_deploy.fileio.check_output_file`)."""
    return check_output_file(path, option, "mcap")


class McapWriter:
    """Writes the segmentation topics to a ROS 2 MCAP file (chunked, zstd or lz4 when available).

    The file is written under a hidden temporary name beside ``path`` and renamed into place by
    :meth:`close` (:func:`ifseg_deploy.fileio.atomic_path`), which runs on every stop of ``stream``
    (end, Ctrl-C, SIGTERM, an error): what was written is kept. A hard kill leaves the temporary
    file, whose chunks ``mcap recover`` reads back.

    Raises:
        IFSegError: ``path`` cannot receive an MCAP file.
    """

    def __init__(self, path: str, topics: Topics, option: str = "save"):
        from mcap.writer import Writer

        self.path = check_bag_path(path, option)
        self._ctx = atomic_path(path, "mcap", option)
        tmp = self._ctx.__enter__()
        self._fh = open(tmp, "wb")
        self._writer = Writer(self._fh)
        self._writer.start(profile="ros2", library="ifseg-deploy")
        self._channels = {}
        self._seq = 0
        self.messages = 0
        for kind, ros_type in TOPIC_TYPES.items():
            schema = self._writer.register_schema(ros_type, "ros2msg", MSGDEFS[ros_type].encode())
            self._channels[getattr(topics, kind)] = self._writer.register_channel(getattr(topics, kind), "cdr", schema)

    def write(self, messages: Sequence[Tuple[str, bytes]], log_ns: int, publish_ns: int) -> None:
        """Append ``[(topic, CDR bytes)]`` logged at ``log_ns`` (ns), published at ``publish_ns``."""
        for topic, data in messages:
            self._writer.add_message(self._channels[topic], log_ns, data, publish_ns, self._seq)
            self._seq += 1
            self.messages += 1

    def close(self) -> None:
        """Finish the file (summary, index) and rename it into place."""
        if self._fh is None:
            return
        fh, self._fh = self._fh, None
        try:
            self._writer.finish()
            fh.close()
        except BaseException as e:
            fh.close()
            self._ctx.__exit__(type(e), e, e.__traceback__)
            raise
        self._ctx.__exit__(None, None, None)


class FoxgloveServer:
    """Serves the segmentation topics live over the Foxglove WebSocket protocol (``foxglove-sdk``).

    Open ``ws://HOST:PORT`` in Foxglove (Open connection -> Foxglove WebSocket). Binds ``host``
    (127.0.0.1 by default: this machine only); port 0 picks a free port (see :attr:`port`). The
    protocol has no latched topics, so the class list is sent again every
    :data:`LABEL_INFO_REPEAT_S` for clients that connect later.

    Raises:
        IFSegError: the port cannot be bound.
    """

    def __init__(self, topics: Topics, port: int = 8765, host: str = "127.0.0.1"):
        import foxglove

        if not 0 <= port <= 65535:
            raise IFSegError(f"foxglove={port}: a port is 0..65535")
        self._ctx = foxglove.Context()
        try:
            self._server = foxglove.start_server(name="ifseg-deploy", host=host, port=port, context=self._ctx)
        except Exception as e:
            raise IFSegError(f"foxglove={port}: cannot serve on {host}:{port} ({e}); choose another port") from None
        self.port = self._server.port
        self._label_info_topic = topics.label_info
        self._label_info: Optional[bytes] = None
        self._label_info_ns = 0  # when it was last sent (time.monotonic_ns)
        self._channels = {}
        for kind, ros_type in TOPIC_TYPES.items():
            topic = getattr(topics, kind)
            schema = foxglove.Schema(name=ros_type, encoding="ros2msg", data=MSGDEFS[ros_type].encode())
            self._channels[topic] = foxglove.Channel(topic, schema=schema, message_encoding="cdr", context=self._ctx)

    def write(self, messages: Sequence[Tuple[str, bytes]], log_ns: int, publish_ns: int) -> None:
        """Send ``[(topic, CDR bytes)]`` to the connected clients, stamped ``log_ns`` (the last class
        list again first when it was sent longer than :data:`LABEL_INFO_REPEAT_S` ago)."""
        now = time.monotonic_ns()
        info = [data for topic, data in messages if topic == self._label_info_topic]
        if info:
            self._label_info = info[-1]
        elif self._label_info is not None and now - self._label_info_ns > LABEL_INFO_REPEAT_S * 1e9:
            messages = [(self._label_info_topic, self._label_info), *messages]
        for topic, data in messages:
            if topic == self._label_info_topic:
                self._label_info_ns = now
            self._channels[topic].log(data, log_time=log_ns)

    def close(self) -> None:
        """Stop serving (clients are disconnected)."""
        self._server.stop()


class RosOutputs:
    """``stream --save OUT.mcap`` and/or ``--foxglove [PORT]``: each frame's segmentation topics to an
    MCAP bag and/or a Foxglove WebSocket server.

    Args:
        mcap: MCAP file to write, or None.
        foxglove: port to serve on, or None; ``host``: address to bind.
        draw: draws the overlay (``draw(rgb, labels, categories) -> rgb``).
        namespace: of the topics.
        notify: receives the server's address.
    """

    def __init__(
        self,
        mcap: Optional[str] = None,
        foxglove: Optional[int] = None,
        host: str = "127.0.0.1",
        draw: Optional[Callable[..., np.ndarray]] = None,
        namespace: str = NAMESPACE,
        notify: Callable[[str], None] = print,
    ):
        topics = Topics.under(namespace)
        self.messages = SegmentationMessages(topics, draw)
        self.sinks: List[Any] = []
        try:
            if mcap:
                self.sinks.append(McapWriter(mcap, topics))
            if foxglove is not None:
                server = FoxgloveServer(topics, foxglove, host)
                self.sinks.append(server)
                notify(f"Foxglove: open ws://{host}:{server.port} (topics {', '.join(topics.names())})")
        except BaseException:
            self.close()
            raise

    def write(
        self,
        rgb: np.ndarray,
        labels: np.ndarray,
        categories: Sequence[str],
        header: Optional[Header],
        t: float,
        log_ns: Optional[int] = None,
    ) -> None:
        """Publish one frame: ``rgb`` (H, W, 3) uint8, ``labels`` (H, W) class ids; ``header``: the
        input's (None: stamped ``t`` s); ``log_ns``: the input's log time in its bag (default: now)."""
        now = time.time_ns()
        messages = self.messages.messages(rgb, labels, categories, header_of(header, t))
        encoded = [(topic, msg.serialize()) for topic, msg in messages]  # once for every sink
        for sink in self.sinks:
            sink.write(encoded, now if log_ns is None else log_ns, now)

    def close(self) -> None:
        """Finalise the bag and stop the server (each, even if another fails)."""
        with contextlib.ExitStack() as stack:
            for sink in self.sinks:
                stack.callback(sink.close)
