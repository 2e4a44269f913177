"""sensor_msgs/Image and sensor_msgs/CompressedImage to RGB arrays.

Works on any message object with the ROS field names (this package's :mod:`.msgs` structs, rosbags'
deserialised messages of ROS 1 and ROS 2 bags). Encodings follow sensor_msgs/image_encodings.hpp.
"""

from __future__ import annotations

from typing import Any, Optional

import cv2
import numpy as np

from ..errors import IFSegError

#: Raw encodings read, -> (channels, bytes per channel).
ENCODINGS = {
    "rgb8": (3, 1),
    "bgr8": (3, 1),
    "rgba8": (4, 1),
    "bgra8": (4, 1),
    "mono8": (1, 1),
    "8UC1": (1, 1),
    "mono16": (1, 2),
    "16UC1": (1, 2),
}


def raw_to_rgb(msg: Any, topic: str = "") -> np.ndarray:
    """The RGB uint8 ``(H, W, 3)`` image of a sensor_msgs/Image (``step`` padding and byte order honoured).

    Colour encodings keep their pixels (alpha dropped); ``mono8`` is repeated into three channels;
    16-bit mono (``mono16``, ``16UC1``: depth, thermal) is stretched per frame from its minimum to its
    maximum onto 0..255, as image viewers show it.

    Raises:
        IFSegError: an encoding outside :data:`ENCODINGS`, or ``data`` shorter than ``height x step``.
    """
    if msg.encoding not in ENCODINGS:
        raise IFSegError(
            f"topic {topic}: image encoding '{msg.encoding}' is not supported; "
            f"publish one of {', '.join(ENCODINGS)} or a sensor_msgs/CompressedImage"
        )
    channels, size = ENCODINGS[msg.encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    buf = np.frombuffer(msg.data, np.uint8) if not isinstance(msg.data, np.ndarray) else msg.data.view(np.uint8)
    if step < width * channels * size or buf.size < height * step:
        raise IFSegError(
            f"topic {topic}: image data holds {buf.size} bytes, {msg.encoding} {width}x{height} with step {step} "
            f"needs {height * step}; the message is damaged"
        )
    rows = buf[: height * step].reshape(height, step)[:, : width * channels * size]
    if size == 2:
        mono = rows.copy().view(">u2" if msg.is_bigendian else "<u2").reshape(height, width).astype(np.float32)
        lo, hi = float(mono.min()), float(mono.max())
        gray = ((mono - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(mono)).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    px = rows.reshape(height, width, channels)
    if channels == 1:
        return np.repeat(px, 3, axis=2)
    if msg.encoding.startswith("bgr"):
        return np.ascontiguousarray(px[..., 2::-1])
    return np.ascontiguousarray(px[..., :3])


def compressed_to_rgb(msg: Any) -> Optional[np.ndarray]:
    """The RGB uint8 ``(H, W, 3)`` image of a sensor_msgs/CompressedImage (JPEG or PNG, by content), or
    None when the bytes do not decode (a damaged frame, which callers skip and count)."""
    bgr = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def to_rgb(msg: Any, compressed: bool, topic: str = "") -> Optional[np.ndarray]:
    """:func:`compressed_to_rgb` or :func:`raw_to_rgb` of ``msg``."""
    return compressed_to_rgb(msg) if compressed else raw_to_rgb(msg, topic)
