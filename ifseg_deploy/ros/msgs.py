"""The ROS 2 message types ifseg-deploy reads and writes, declared once as Cyclone DDS IDL structs.

The same classes serve the DDS node (:mod:`ifseg_deploy.ros2node`), the MCAP bag writer and the
Foxglove server (their ``serialize()`` gives the CDR bytes, 4-byte encapsulation header included,
that MCAP's ``cdr`` message encoding stores) and the tests.

Wire rules (ros2/rosidl_dds, rmw_cyclonedds ``serdata.cpp``): DDS type name
``<pkg>::msg::dds_::<Name>_``, classic CDR (XCDR1) little-endian, header ``00 01 00 00``, alignment
counted from the byte after the header, field order as in the ``.msg`` files (common_interfaces,
vision_msgs 4.1). The structs are ``final`` (the IdlStruct default): an appendable or mutable type
makes Cyclone write XCDR2, which no ROS reader accepts.

:class:`Image` and :class:`CompressedImage` carry their own ``serialize`` / ``deserialize``: the
generic serialiser walks ``uint8[]`` byte by byte (about 33 ms per 640x480 rgb8 frame), these
join the pixel bytes in one piece and read them back as a NumPy view (well under a millisecond).
"""

# No ``from __future__ import annotations`` here: cyclonedds resolves the field annotations at run time.
import functools
import struct
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence

import numpy as np
from cyclonedds.idl import IdlStruct, types

#: Encapsulation header of classic CDR, little-endian (the only one this module writes).
CDR_LE = b"\x00\x01\x00\x00"


class _Writer:
    """CDR body writer: little-endian, alignment relative to the body start."""

    def __init__(self) -> None:
        self.parts: List[Any] = [CDR_LE]
        self.size = 0  # body bytes so far

    def _pad(self, align: int) -> None:
        pad = -self.size % align
        if pad:
            self.parts.append(b"\x00" * pad)
            self.size += pad

    def u32(self, *values: int) -> None:
        self._pad(4)
        self.parts.append(struct.pack(f"<{len(values)}I", *values))
        self.size += 4 * len(values)

    def u8(self, value: int) -> None:
        self.parts.append(bytes((value,)))
        self.size += 1

    def u16(self, value: int) -> None:
        self._pad(2)
        self.parts.append(struct.pack("<H", value))
        self.size += 2

    def f32(self, value: float) -> None:
        self._pad(4)
        self.parts.append(struct.pack("<f", value))
        self.size += 4

    def string(self, text: str) -> None:
        raw = text.encode("utf-8") + b"\x00"
        self.u32(len(raw))
        self.parts.append(raw)
        self.size += len(raw)

    def header(self, h: "Header") -> None:
        self._pad(4)
        self.parts.append(struct.pack("<iI", h.stamp.sec, h.stamp.nanosec))
        self.size += 8
        self.string(h.frame_id)

    def octets(self, data: Any) -> None:
        """``uint8[]``: count, then the bytes as they are (bytes, memoryview or a C-contiguous array)."""
        if isinstance(data, np.ndarray):
            data = np.ascontiguousarray(data).reshape(-1).view(np.uint8)  # any shape and itemsize, no copy
        view = data if isinstance(data, bytes) else memoryview(data).cast("B")
        self.u32(len(view))
        self.parts.append(view)
        self.size += len(view)

    def bytes(self) -> bytes:
        return b"".join(self.parts)


@dataclass
class Time(IdlStruct, typename="builtin_interfaces::msg::dds_::Time_"):
    """builtin_interfaces/Time: seconds and nanoseconds since the epoch (or since a bag's clock start)."""

    sec: types.int32 = 0
    nanosec: types.uint32 = 0

    @classmethod
    def from_ns(cls, ns: int) -> "Time":
        """The stamp of ``ns`` nanoseconds."""
        return cls(ns // 1_000_000_000, ns % 1_000_000_000)

    def to_ns(self) -> int:
        return self.sec * 1_000_000_000 + self.nanosec


@dataclass
class Header(IdlStruct, typename="std_msgs::msg::dds_::Header_"):
    """std_msgs/Header: acquisition time and coordinate frame of the data."""

    stamp: Time = field(default_factory=Time)
    frame_id: str = ""


@dataclass
class String(IdlStruct, typename="std_msgs::msg::dds_::String_"):
    """std_msgs/String."""

    data: str = ""


@dataclass
class VisionClass(IdlStruct, typename="vision_msgs::msg::dds_::VisionClass_"):
    """vision_msgs/VisionClass: one class id and its name (vision_msgs >= 4.1)."""

    class_id: types.uint16 = 0
    class_name: str = ""


@dataclass
class LabelInfo(IdlStruct, typename="vision_msgs::msg::dds_::LabelInfo_"):
    """vision_msgs/LabelInfo: the class list of the label maps published beside it (vision_msgs >= 4.1)."""

    header: Header = field(default_factory=Header)
    class_map: types.sequence[VisionClass] = field(default_factory=list)
    threshold: types.float32 = 0.0

    def serialize(self, buffer=None, endianness=None, use_version_2: Optional[bool] = None) -> bytes:
        """XCDR1 little-endian bytes, header included (the generic serialiser took ~1 ms for 8 classes)."""
        w = _Writer()
        w.header(self.header)
        w.u32(len(self.class_map))
        for c in self.class_map:
            w.u16(c.class_id)
            w.string(c.class_name)
        w.f32(self.threshold)
        return w.bytes()


class _Reader:
    """CDR body reader (either byte order, from the encapsulation header)."""

    def __init__(self, data: bytes, has_header: bool = True):
        self.buf = memoryview(data)
        big = has_header and self.buf[1] == 0  # 00 00 = CDR_BE, 00 01 = CDR_LE
        self.order = ">" if big else "<"
        self.base = 4 if has_header else 0
        self.pos = self.base

    def _align(self, align: int) -> None:
        self.pos += -(self.pos - self.base) % align

    def u32(self) -> int:
        self._align(4)
        (value,) = struct.unpack_from(self.order + "I", self.buf, self.pos)
        self.pos += 4
        return value

    def u8(self) -> int:
        value = self.buf[self.pos]
        self.pos += 1
        return value

    def string(self) -> str:
        n = self.u32()
        text = bytes(self.buf[self.pos : self.pos + n - 1]).decode("utf-8")
        self.pos += n
        return text

    def header(self) -> Header:
        self._align(4)
        sec, nanosec = struct.unpack_from(self.order + "iI", self.buf, self.pos)
        self.pos += 8
        return Header(Time(sec, nanosec), self.string())

    def octets(self) -> np.ndarray:
        n = self.u32()
        view = np.frombuffer(self.buf, np.uint8, n, self.pos)
        self.pos += n
        return view


@dataclass
class Image(IdlStruct, typename="sensor_msgs::msg::dds_::Image_"):
    """sensor_msgs/Image. ``data`` may be bytes or any C-contiguous uint8 array on write; read back it
    is a read-only NumPy uint8 view of the received buffer (no copy)."""

    header: Header = field(default_factory=Header)
    height: types.uint32 = 0
    width: types.uint32 = 0
    encoding: str = ""
    is_bigendian: types.uint8 = 0
    step: types.uint32 = 0
    data: types.sequence[types.uint8] = b""

    def serialize(self, buffer=None, endianness=None, use_version_2: Optional[bool] = None) -> bytes:
        """XCDR1 little-endian bytes, header included, pixels joined in one copy (the DDS fast path)."""
        w = _Writer()
        w.header(self.header)
        w.u32(self.height, self.width)
        w.string(self.encoding)
        w.u8(self.is_bigendian)
        w.u32(self.step)
        w.octets(self.data)
        return w.bytes()

    @classmethod
    def deserialize(cls, data: bytes, has_header: bool = True, use_version_2: Optional[bool] = None) -> "Image":
        r = _Reader(data, has_header)
        header = r.header()
        height, width = r.u32(), r.u32()
        encoding = r.string()
        is_bigendian = r.u8()
        return cls(header, height, width, encoding, is_bigendian, r.u32(), r.octets())


@dataclass
class CompressedImage(IdlStruct, typename="sensor_msgs::msg::dds_::CompressedImage_"):
    """sensor_msgs/CompressedImage: ``format`` is ``jpeg`` or ``png`` (image_transport also writes
    ``rgb8; jpeg compressed bgr8``); ``data`` as in :class:`Image`."""

    header: Header = field(default_factory=Header)
    format: str = ""
    data: types.sequence[types.uint8] = b""

    def serialize(self, buffer=None, endianness=None, use_version_2: Optional[bool] = None) -> bytes:
        """XCDR1 little-endian bytes, header included (the DDS fast path)."""
        w = _Writer()
        w.header(self.header)
        w.string(self.format)
        w.octets(self.data)
        return w.bytes()

    @classmethod
    def deserialize(
        cls, data: bytes, has_header: bool = True, use_version_2: Optional[bool] = None
    ) -> "CompressedImage":
        r = _Reader(data, has_header)
        header = r.header()
        return cls(header, r.string(), r.octets())


def label_info(header: Header, categories: Sequence[str]) -> LabelInfo:
    """The LabelInfo of ``categories``: class id = index in the list (the label map's pixel value)."""
    return LabelInfo(header, [VisionClass(i, name) for i, name in enumerate(categories)], 0.0)


def label_image(header: Header, labels: np.ndarray, num_classes: int, out: Optional[np.ndarray] = None) -> Image:
    """A label map ``(H, W)`` of class indices (any integer dtype) as a ``mono8`` Image for at most 255
    classes, ``mono16`` (little-endian) above: the rule of ``segment --save-labels`` (uint8 / uint16 PNGs).

    ``out``: a buffer to convert into (reused when its shape and dtype fit, see ``image.data``): a fresh
    1080p buffer per frame costs page faults that took longer than the conversion itself.
    """
    dtype = np.dtype(np.uint8 if num_classes <= 255 else "<u2")
    if out is None or out.shape != labels.shape or out.dtype != dtype:
        out = np.empty(labels.shape, dtype)
    np.copyto(out, labels, casting="unsafe")
    height, width = out.shape
    return Image(header, height, width, "mono8" if dtype.itemsize == 1 else "mono16", 0, width * dtype.itemsize, out)


#: ROS 2 ``.msg`` definitions of the published types with their dependencies, in the layout MCAP's
#: ``ros2msg`` schema encoding and Foxglove expect (main type first, then ``MSG: pkg/Name`` blocks).
_SEP = "=" * 80
_HEADER_DEPS = (
    f"{_SEP}\nMSG: std_msgs/Header\nbuiltin_interfaces/Time stamp\nstring frame_id\n"
    f"{_SEP}\nMSG: builtin_interfaces/Time\nint32 sec\nuint32 nanosec\n"
)
MSGDEFS = {
    "sensor_msgs/msg/Image": (
        "std_msgs/Header header\nuint32 height\nuint32 width\nstring encoding\nuint8 is_bigendian\nuint32 step\n"
        "uint8[] data\n" + _HEADER_DEPS
    ),
    "sensor_msgs/msg/CompressedImage": "std_msgs/Header header\nstring format\nuint8[] data\n" + _HEADER_DEPS,
    "vision_msgs/msg/LabelInfo": (
        "std_msgs/Header header\nvision_msgs/VisionClass[] class_map\nfloat32 threshold\n"
        + _HEADER_DEPS
        + f"{_SEP}\nMSG: vision_msgs/VisionClass\nuint16 class_id\nstring class_name\n"
    ),
}


@functools.lru_cache(maxsize=None)  # one set of classes per distro: DDS types are registered once
def discovery_types(distro: str):
    """``(ParticipantEntitiesInfo, NodeEntitiesInfo, Gid)`` IDL structs of rmw_dds_common for ``distro``
    (Gid is ``char[24]`` on Humble, ``char[16]`` from Iron on)."""
    size = 24 if distro == "humble" else 16

    @dataclass
    class Gid(IdlStruct, typename="rmw_dds_common::msg::dds_::Gid_"):
        data: types.array[types.uint8, size] = field(default_factory=lambda: [0] * size)

    @dataclass
    class NodeEntitiesInfo(IdlStruct, typename="rmw_dds_common::msg::dds_::NodeEntitiesInfo_"):
        node_namespace: types.bounded_str[256] = "/"
        node_name: types.bounded_str[256] = ""
        reader_gid_seq: types.sequence[Gid] = field(default_factory=list)
        writer_gid_seq: types.sequence[Gid] = field(default_factory=list)

    @dataclass
    class ParticipantEntitiesInfo(IdlStruct, typename="rmw_dds_common::msg::dds_::ParticipantEntitiesInfo_"):
        gid: Gid = field(default_factory=Gid)
        node_entities_info_seq: types.sequence[NodeEntitiesInfo] = field(default_factory=list)

    return ParticipantEntitiesInfo, NodeEntitiesInfo, Gid
