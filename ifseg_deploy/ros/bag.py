"""Image topics of ROS bags as a frame source: ROS 2 MCAP files, ROS 2 ``.db3`` bag folders, ROS 1 ``.bag``.

Reading is done by ``rosbags`` (its ``AnyReader``: no ROS install), message by message in bag
order. sensor_msgs/Image and sensor_msgs/CompressedImage are read (:mod:`.images`); each frame
keeps its message's header (stamp and frame_id) and its log time in the bag.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterator, Optional

import numpy as np

from ..errors import IFSegError
from .images import to_rgb

if TYPE_CHECKING:
    from .msgs import Header

#: Endings of bag files (a ROS 2 bag folder is recognised by its metadata.yaml).
BAG_SUFFIXES = (".mcap", ".db3", ".bag")
#: Image message types read (ROS 1 types carry the same names in rosbags).
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")


def is_bag(spec: str) -> bool:
    """True when ``spec`` names a bag: an ``.mcap`` / ``.db3`` / ``.bag`` file or a ROS 2 bag folder."""
    if spec.lower().endswith(BAG_SUFFIXES):
        return True
    return os.path.isdir(spec) and os.path.isfile(os.path.join(spec, "metadata.yaml"))


def _bag_path(spec: str) -> Path:
    """What rosbags opens: a ROS 2 ``.db3`` file is read through its folder (which holds metadata.yaml)."""
    path = Path(spec)
    if not path.exists():
        raise IFSegError(f"bag not found: {spec}")
    if path.suffix.lower() == ".db3" and path.is_file():
        return path.parent
    return path


def _open(spec: str):
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    reader = AnyReader([_bag_path(spec)], default_typestore=get_typestore(Stores.ROS2_JAZZY))
    try:
        reader.open()
    except Exception as e:  # rosbags' own errors (damaged file, missing metadata) in one line
        raise IFSegError(f"cannot read bag {spec}: {str(e).strip().splitlines()[0] if str(e).strip() else e}") from None
    return reader


def image_topics(spec: str) -> Dict[str, tuple]:
    """Image topics of the bag ``spec``: ``{topic: (ROS type, message count)}``, sorted by topic.

    Raises:
        IFSegError: the bag does not exist or cannot be read.
    """
    reader = _open(spec)
    try:
        found: Dict[str, list] = {}
        for con in reader.connections:
            if con.msgtype in IMAGE_TYPES:
                entry = found.setdefault(con.topic, [con.msgtype, 0])
                entry[1] += con.msgcount
        return {t: tuple(found[t]) for t in sorted(found)}
    finally:
        reader.close()


@dataclass
class BagFrame:
    """One image message of a bag, decoded."""

    rgb: Optional[np.ndarray]  # (H, W, 3) uint8 RGB; None when a compressed image does not decode
    header: Header  # the message's header (stamp, frame_id)
    log_ns: int  # the message's log time in the bag (ns since the epoch, as recorded)


class BagReader:
    """The frames of one image topic of a bag, in bag order.

    Args:
        spec: ``.mcap`` / ``.db3`` / ``.bag`` file or ROS 2 bag folder.
        topic: the image topic; may be None when the bag holds exactly one image topic.

    Raises:
        IFSegError: the bag cannot be read, holds no image topic, ``topic`` is None while it holds
        several (the message lists them), or ``topic`` is not an image topic of the bag.
    """

    def __init__(self, spec: str, topic: Optional[str] = None):
        self.name = spec
        topics = image_topics(spec)
        if not topics:
            raise IFSegError(f"{spec} holds no image topic (sensor_msgs/Image or sensor_msgs/CompressedImage)")
        if topic is None:
            if len(topics) > 1:
                raise IFSegError(
                    f"{spec} holds {len(topics)} image topics ({', '.join(topics)}): choose one with `topic`"
                )
            topic = next(iter(topics))
        if topic not in topics:
            raise IFSegError(f"topic={topic}: not an image topic of {spec}; its image topics: {', '.join(topics)}")
        self.topic = topic
        self.msgtype, self.count = topics[topic]
        self.compressed = self.msgtype.endswith("CompressedImage")
        self._reader = _open(spec)
        self.connections = [c for c in self._reader.connections if c.topic == topic]
        self.start_ns, self.end_ns = self._reader.start_time, self._reader.end_time

    @property
    def fps(self) -> float:
        """Mean message rate of the topic over the bag's duration (30 when it cannot be told)."""
        seconds = (self.end_ns - self.start_ns) / 1e9
        return (self.count - 1) / seconds if self.count > 1 and seconds > 0 else 30.0

    def frames(self) -> Iterator[BagFrame]:
        """Decode the topic's messages in bag order.

        Raises:
            IFSegError: a raw image of an unsupported encoding or damaged size (one line naming it).
        """
        from .msgs import Header, Time  # cyclonedds (the ros extra): not needed by is_bag

        for con, log_ns, raw in self._reader.messages(connections=self.connections):
            msg = self._reader.deserialize(raw, con.msgtype)
            stamp = msg.header.stamp
            header = Header(Time(int(stamp.sec), int(stamp.nanosec)), str(msg.header.frame_id))
            yield BagFrame(to_rgb(msg, self.compressed, self.topic), header, int(log_ns))

    def close(self) -> None:
        """Close the bag."""
        self._reader.close()
