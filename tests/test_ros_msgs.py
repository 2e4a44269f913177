"""The ROS 2 message types on the wire: the CDR fast paths against the published golden bytes and
cyclonedds' own generic serialiser, NumPy views on read, names, domain ids and discovery settings."""

from __future__ import annotations

import numpy as np
import pytest
from cyclonedds.idl import IdlStruct

from ifseg_deploy.errors import IFSegError
from ifseg_deploy.ros.msgs import (
    CompressedImage,
    Header,
    Image,
    LabelInfo,
    Time,
    VisionClass,
    discovery_types,
    label_image,
)
from ifseg_deploy.ros.output import Topics
from ifseg_deploy.ros2node.dds import domain_id_from, expand_name, localhost_only

#: LabelInfo{stamp 1 s 2 ns, frame_id "cam", [(0, "bg"), (1, "person")], threshold 0.5} in XCDR1 LE, as
#: cyclonedds 11.0.1 writes it and as computed by hand from the CDR rules (ros2-over-dds reference).
GOLDEN_LABEL_INFO = bytes.fromhex(
    "0001000001000000020000000400000063616d00020000000000000003000000626700000100000007000000706572736f6e00000000003f"
)


def test_label_info_matches_the_golden_bytes():
    msg = LabelInfo(Header(Time(1, 2), "cam"), [VisionClass(0, "bg"), VisionClass(1, "person")], 0.5)
    assert msg.serialize() == GOLDEN_LABEL_INFO
    assert LabelInfo.deserialize(GOLDEN_LABEL_INFO) == msg


@pytest.mark.parametrize("frame_id", ["", "c", "cam", "camera_optical_frame"])
@pytest.mark.parametrize("encoding", ["", "rgb8", "mono16", "x"])
def test_fast_paths_write_what_the_generic_serialiser_writes(frame_id, encoding):
    """Every alignment case of the strings before the pixels: the fast path is byte-identical."""
    pixels = bytes(range(7))
    image = Image(Header(Time(-3, 999_999_999), frame_id), 1, 7, encoding, 1, 7, pixels)
    compressed = CompressedImage(Header(Time(5, 6), frame_id), encoding, pixels)
    info = LabelInfo(Header(Time(5, 6), frame_id), [VisionClass(i, encoding * i) for i in range(3)], 0.25)
    for msg in (image, compressed, info):
        assert msg.serialize() == IdlStruct.serialize(msg)
    back = Image.deserialize(image.serialize())
    assert (back.header, back.encoding, back.is_bigendian, back.step) == (image.header, encoding, 1, 7)
    assert isinstance(back.data, np.ndarray) and back.data.tobytes() == pixels  # a view, not a list of ints
    back = CompressedImage.deserialize(compressed.serialize())
    assert (back.header, back.format, back.data.tobytes()) == (compressed.header, encoding, pixels)


def test_big_endian_input_is_read():
    """A CDR_BE message (encapsulation 00 00) from a big-endian peer reads the same."""
    be = bytes.fromhex("0000 0000 00000001 00000002 00000002 6100 0000 00000001 00000003 00000002 6200 00 00 00000003")
    be += bytes.fromhex("00000003 010203")
    msg = Image.deserialize(be)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (1, 2, "a")
    assert (msg.height, msg.width, msg.encoding, msg.step, msg.data.tobytes()) == (1, 3, "b", 3, b"\x01\x02\x03")


def test_label_image_encoding_follows_the_class_count():
    labels = np.array([[0, 1], [2, 300]])
    small = label_image(Header(), labels % 3, 3)
    assert (small.encoding, small.step, small.data.dtype) == ("mono8", 2, np.uint8)
    big = label_image(Header(), labels, 301)
    assert (big.encoding, big.step) == ("mono16", 4)
    assert np.frombuffer(Image.deserialize(big.serialize()).data, "<u2").tolist() == [0, 1, 2, 300]


@pytest.mark.parametrize("distro,size", [("humble", 24), ("jazzy", 16), ("rolling", 16)])
def test_discovery_gid_size_per_distro(distro, size):
    infos, node, gid = discovery_types(distro)
    data = infos(gid(list(range(size))), [node("/", "ifseg", [gid([1] * size)], [])]).serialize()
    assert data[4 : 4 + size] == bytes(range(size))  # the participant Gid: char[size] right after the header


def test_names_domains_and_discovery_range():
    assert Topics.under("/robot/seg").names() == [
        "/robot/seg/labels",
        "/robot/seg/overlay/compressed",
        "/robot/seg/label_info",
    ]
    for bad in ("ifseg", "/1x", "/a b"):
        with pytest.raises(IFSegError, match="namespace"):
            Topics.under(bad)
    assert expand_name("camera/image_raw") == "/camera/image_raw"
    with pytest.raises(IFSegError, match="input_topic"):
        expand_name("/camera//image")
    assert domain_id_from(None, {}) == 0
    assert domain_id_from(None, {"ROS_DOMAIN_ID": "42"}) == 42
    assert domain_id_from(7, {"ROS_DOMAIN_ID": "42"}) == 7
    for bad_env in ({"ROS_DOMAIN_ID": "x"}, {"ROS_DOMAIN_ID": "300"}):
        with pytest.raises(IFSegError):
            domain_id_from(None, bad_env)
    assert localhost_only({"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"})
    assert localhost_only({"ROS_LOCALHOST_ONLY": "1"})
    assert not localhost_only({"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"})


def test_a_missing_ros_package_is_named_with_the_install_command(monkeypatch, tmp_path):
    import importlib.util

    from ifseg_deploy.stream import OutputOptions

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "rosbags" else real(name, *a))
    with pytest.raises(IFSegError, match=r"save=OUT.mcap needs rosbags: pip install 'ifseg-deploy\[ros\]'"):
        OutputOptions(save=str(tmp_path / "out.mcap")).check()
