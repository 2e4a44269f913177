"""The ROS 2 node's own cost per frame, segmentation excluded (not a test).

Runs the node's code (:class:`ifseg_deploy.ros2node.node.SegmentationNode`) with a stand-in
segmenter, on a private localhost-only DDS domain with a subscriber on every output in this process:

* receive: ``Image.deserialize`` of the camera message's CDR bytes (what ``DataReader.take`` calls)
  and its conversion to RGB;
* DDS publish: label map (mono8), overlay (CompressedImage with the JPEG already made) and
  LabelInfo (sent only when the categories change; here every frame): CDR serialisation and
  ``DataWriter.write``;
* reported apart, image work the node does besides DDS: the label map's conversion from the
  Segmenter's int64 labels to uint8 (memory-bound: 16 MB read at 1080p), and overlay drawing + JPEG.

For comparison the generic cyclonedds serialiser of the same messages (``uint8[]`` byte by byte),
which the node's CDR fast path replaces. Median of ``--iters`` frames.

    PYTHONPATH=. python3 benchmarks/ros2_overhead.py [--iters 50] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

import cv2
import numpy as np
from cyclonedds.core import Qos
from cyclonedds.idl import IdlStruct
from cyclonedds.qos import Policy
from cyclonedds.sub import DataReader
from cyclonedds.util import duration

from ifseg_deploy.ros.msgs import CompressedImage, Header, Image, LabelInfo, Time, label_image, label_info
from ifseg_deploy.ros.output import overlay_message
from ifseg_deploy.ros2node.dds import Participant
from ifseg_deploy.ros2node.node import SegmentationNode
from ifseg_deploy.visualize.overlay import overlay

CATEGORIES = ["road", "sidewalk", "building", "vegetation", "sky", "person", "car", "bicycle"]


class StandInSegmenter:
    """What the node needs of a Segmenter, without a network (segmentation is excluded here)."""

    host_postprocess = False

    def __init__(self, categories):
        self.categories = list(categories)


def median_ms(fn, iters: int) -> float:
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def measure(width: int, height: int, iters: int, node: SegmentationNode) -> dict:
    # A camera-like frame (smooth gradients, mild noise) and region-like labels (a coarse grid scaled
    # up): random pixels would make a JPEG many times larger than a real overlay's.
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) * 127 // (width + height)], -1)
    rgb = np.clip(rgb + rng.normal(0, 4, rgb.shape), 0, 255).astype(np.uint8)
    coarse = rng.integers(0, len(CATEGORIES), (height // 40 + 1, width // 40 + 1))
    labels = cv2.resize(coarse.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(np.int64)
    header = Header(Time(1, 2), "camera_optical_frame")
    camera = Image(header, height, width, "rgb8", 0, width * 3, rgb.reshape(-1))
    raw = camera.serialize()
    jpeg = overlay_message(header, rgb, labels, CATEGORIES, lambda a, b, c: overlay(a, b, c))
    writers = node.writers
    t = node.topics

    def receive():
        node.decode(Image.deserialize(raw))

    buffer = label_image(header, labels, len(CATEGORIES)).data  # reused frame after frame, as the node does
    label_map = label_image(header, labels, len(CATEGORIES), buffer)

    def convert_labels():
        label_image(header, labels, len(CATEGORIES), buffer)

    def publish():
        writers[t.labels].write(label_map)
        writers[t.overlay].write(CompressedImage(header, "jpeg", jpeg.data))
        writers[t.label_info].write(label_info(header, CATEGORIES))

    def draw_and_jpeg():
        overlay_message(header, rgb, labels, CATEGORIES, lambda a, b, c: overlay(a, b, c))

    generic_label = label_image(header, labels, len(CATEGORIES))
    generic_label.data = generic_label.data.tobytes()
    generic_jpeg = CompressedImage(header, "jpeg", jpeg.data.tobytes())

    def generic():  # the same messages through cyclonedds' generic serialiser (byte by byte)
        IdlStruct.serialize(generic_label)
        IdlStruct.serialize(generic_jpeg)
        IdlStruct.deserialize.__func__(Image, raw)

    row = {
        "size": f"{width}x{height}",
        "receive_ms": median_ms(receive, iters),
        "publish_ms": median_ms(publish, iters),
        "label_convert_ms": median_ms(convert_labels, iters),
        "overlay_draw_jpeg_ms": median_ms(draw_and_jpeg, max(5, iters // 5)),
    }
    row["jpeg_kb"] = round(jpeg.data.size / 1024)
    row["generic"] = generic  # measured after every fast-path row: its garbage slows what follows
    row["dds_overhead_ms"] = row["receive_ms"] + row["publish_ms"]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()
    domain = random.randint(100, 200)
    node = SegmentationNode(
        StandInSegmenter(CATEGORIES),
        "/camera/image_raw",
        domain_id=domain,
        localhost=True,
        ros_distro=None,
        notify=lambda line: None,
    )
    sub = Participant(domain, localhost=True, user_data=b"bench")
    qos = Qos(Policy.Reliability.Reliable(duration(seconds=1)), Policy.History.KeepLast(1))
    readers = [
        DataReader(sub.dp, sub.topic(node.topics.labels, Image), qos=qos),
        DataReader(sub.dp, sub.topic(node.topics.overlay, CompressedImage), qos=qos),
        DataReader(sub.dp, sub.topic(node.topics.label_info, LabelInfo), qos=qos),
    ]
    time.sleep(1.0)  # discovery: the writers deliver to matched readers
    rows = [measure(640, 480, args.iters, node), measure(1920, 1080, max(5, args.iters // 3), node)]
    got = [len(r.take(N=100)) for r in readers]
    for r in rows:
        r["generic_cdr_ms"] = median_ms(r.pop("generic"), 3)
    head = ("size", "receive", "publish", "DDS total", "int64->u8", "draw+JPEG", "generic CDR")
    print(" ".join(f"{h:>11}" for h in head) + "  (ms, median)")
    for r in rows:
        keys = (
            "receive_ms",
            "publish_ms",
            "dds_overhead_ms",
            "label_convert_ms",
            "overlay_draw_jpeg_ms",
            "generic_cdr_ms",
        )
        print(f"{r['size']:>11} " + " ".join(f"{r[k]:11.2f}" for k in keys))
    print(f"JPEG overlay sizes: {[r['jpeg_kb'] for r in rows]} kB")
    print(f"subscriber took {got} samples (labels, overlay, label_info): the writes were delivered")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rows": rows, "delivered": got}, fh, indent=1)


if __name__ == "__main__":
    main()
