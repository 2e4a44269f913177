"""``ifseg-deploy ros2`` over real DDS: the node runs in its own process on a private domain id,
localhost only; this test's own Cyclone DDS participant publishes camera frames, receives label maps
and class lists, and changes the categories live."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from cyclonedds.core import Qos  # noqa: E402
from cyclonedds.qos import Policy  # noqa: E402
from cyclonedds.topic import Topic  # noqa: E402
from cyclonedds.util import duration  # noqa: E402

from ifseg_deploy.ros.msgs import CompressedImage, Header, Image, LabelInfo, String, Time, discovery_types  # noqa: E402
from ifseg_deploy.ros2node.dds import Participant  # noqa: E402
from ifseg_deploy.runtime.segmenter import Segmenter  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H, W = 40, 56
RELIABLE = Qos(Policy.Reliability.Reliable(duration(seconds=1)), Policy.History.KeepLast(50))
LATCHED = Qos(
    Policy.Reliability.Reliable(duration(seconds=1)), Policy.History.KeepLast(50), Policy.Durability.TransientLocal
)


def frame(k: int) -> np.ndarray:
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[:, : (8 + 5 * k) % W] = (210, 60, 40)
    rgb[:, (8 + 5 * k) % W :] = (30, 90, 200)
    rgb[: H // 2, ::7] = (80, 220, 80)
    return rgb


class Collector:
    """Everything a reader receives, in arrival order, with a wait for a condition."""

    def __init__(self, participant: Participant, topic, qos: Qos):
        self.items: list = []
        self.cond = threading.Condition()
        self.reader = participant.reader(topic, qos, self._on)

    def _on(self, reader) -> None:
        samples = reader.take(N=64)
        with self.cond:
            self.items.extend((time.monotonic(), s) for s in samples)
            self.cond.notify_all()

    def wait_for(self, predicate, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = [(t, s) for t, s in self.items if predicate(s)]
                if found:
                    return found[0]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("timed out waiting for a message")
                self.cond.wait(left)


@pytest.fixture
def node(tmp_path, tiny_bundle, bpe_dir):
    domain = random.randint(100, 200)
    env = dict(os.environ, PYTHONPATH=ROOT, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID=str(domain))
    cmd = [sys.executable, "-m", "ifseg_deploy", "ros2", "--input", "/robot/cam/image_raw", "--name", "seg"]
    cmd += ["--checkpoint", tiny_bundle, "--bpe-dir", bpe_dir, "--knn-iters", "2", "--no-temporal", "--device", "cpu"]
    log = open(tmp_path / "node.log", "w+")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        yield proc, domain, tmp_path / "node.log"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def me(node):
    """This test's own participant on the node's domain (callbacks stopped at the end)."""
    participant = Participant(node[1], localhost=True, user_data=b"test")
    yield participant
    participant.close()


def test_node_segments_frames_and_follows_category_changes(node, me, tiny_bundle, bpe_dir):
    proc, domain, log_path = node
    labels = Collector(me, me.topic("/seg/labels", Image), RELIABLE)
    infos = Collector(me, me.topic("/seg/label_info", LabelInfo), LATCHED)
    overlays_topic = "/seg/overlay/compressed"
    overlays = Collector(me, me.topic(overlays_topic, CompressedImage), RELIABLE)
    camera = me.writer("/robot/cam/image_raw", Image, Qos(Policy.Reliability.BestEffort, Policy.History.KeepLast(1)))
    commands = me.writer(
        "/seg/categories", String, Qos(Policy.Reliability.Reliable(duration(seconds=1)), Policy.History.KeepLast(10))
    )

    def publish_until_labelled(k: int, text_id: str = "cam_optical"):
        msg = Image(Header(Time(1000 + k, 17 * k), text_id), H, W, "rgb8", 0, W * 3, frame(k).reshape(-1))
        deadline = time.monotonic() + 60
        while True:
            camera.write(msg)
            try:
                return labels.wait_for(lambda m: m.header.stamp.sec == 1000 + k, timeout=0.5)
            except AssertionError:
                assert proc.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()

    # the node is announced on ros_discovery_info (Jazzy layout: 16-byte Gids) with its endpoints
    infos_type = discovery_types("jazzy")[0]
    graph = Collector(me, Topic(me.dp, "ros_discovery_info", infos_type), LATCHED)
    _, announced = graph.wait_for(lambda m: any(n.node_name == "seg" for n in m.node_entities_info_seq), timeout=60)
    node_info = announced.node_entities_info_seq[0]
    assert node_info.node_namespace == "/" and len(announced.gid.data) == 16
    assert len(node_info.reader_gid_seq) == 2 and len(node_info.writer_gid_seq) == 3

    # the latched class list of the start reaches a late subscriber
    _, first_info = infos.wait_for(lambda m: True, timeout=60)
    assert [(c.class_id, c.class_name) for c in first_info.class_map] == [(0, "sky"), (1, "grass"), (2, "dog")]

    seg = Segmenter.load(tiny_bundle, bpe_dir=bpe_dir, knn_iters=2, device="cpu")
    for k in range(2):
        _, got = publish_until_labelled(k)
        assert (got.header.stamp.sec, got.header.stamp.nanosec, got.header.frame_id) == (
            1000 + k,
            17 * k,
            "cam_optical",
        )
        assert (got.encoding, got.height, got.width, got.step) == ("mono8", H, W, W)
        np.testing.assert_array_equal(np.asarray(got.data).reshape(H, W), seg.segment(frame(k)).labels)
        _, ov = overlays.wait_for(lambda m: m.header.stamp.sec == 1000 + k)
        assert ov.format == "jpeg" and bytes(ov.data[:2]) == b"\xff\xd8"

    # a live change while frames stream in: every label map written after the new LabelInfo (DDS
    # source timestamps, set by the node's writers) uses the new ids, every one before it the old ones
    seg_new = Segmenter.load(tiny_bundle, bpe_dir=bpe_dir, knn_iters=2, device="cpu", categories=["road", "sky"])
    commands.write(String("road, sky"))
    k = 10

    def switched() -> bool:
        new = [m for _, m in infos.items if [c.class_name for c in m.class_map] == ["road", "sky"]]
        return bool(new) and any(
            m.sample_info.source_timestamp > new[0].sample_info.source_timestamp for _, m in labels.items
        )

    while not switched():
        publish_until_labelled(k)
        k += 1
        assert k < 60, log_path.read_text()
    _, new_info = infos.wait_for(lambda m: [c.class_name for c in m.class_map] == ["road", "sky"])
    changed_at = new_info.sample_info.source_timestamp
    streamed = [m for _, m in labels.items if m.header.stamp.sec >= 1010]
    for m in streamed:
        model = seg_new if m.sample_info.source_timestamp > changed_at else seg
        expected = model.segment(frame(m.header.stamp.sec - 1000)).labels
        np.testing.assert_array_equal(np.asarray(m.data).reshape(H, W), expected)
    assert any(m.sample_info.source_timestamp > changed_at for m in streamed)
    seg = seg_new

    # a frame of an unsupported encoding is skipped with one log line; the node carries on
    camera.write(Image(Header(Time(2000, 0), "cam_optical"), H, W, "yuv422", 0, W * 2, bytes(H * W * 2)))
    deadline = time.monotonic() + 30
    while "'yuv422' is not supported" not in log_path.read_text():
        if time.monotonic() > deadline:
            raise AssertionError(log_path.read_text())
        camera.write(Image(Header(Time(2000, 0), "cam_optical"), H, W, "yuv422", 0, W * 2, bytes(H * W * 2)))
        time.sleep(0.2)

    # a refused list: one log line, the old list stays (no new LabelInfo, ids still of road/sky)
    commands.write(String(" , "))
    deadline = time.monotonic() + 30
    while "refused" not in log_path.read_text():
        assert time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.1)
    _, got = publish_until_labelled(70)
    np.testing.assert_array_equal(np.asarray(got.data).reshape(H, W), seg.segment(frame(70)).labels)
    assert [[c.class_name for c in m.class_map] for _, m in infos.items] == [["sky", "grass", "dog"], ["road", "sky"]]

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    text = log_path.read_text()
    assert text.count("refused") == 1 and text.count("is not supported") == 1  # logged once, not per frame
    assert "ros2: stopped; received" in text and "category changes 1" in text
