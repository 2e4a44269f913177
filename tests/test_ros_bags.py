"""ROS bags in and out of ``stream``: MCAP / .db3 / ROS 1 inputs of every supported encoding, the MCAP
output read back with the ``mcap`` + ``mcap_ros2`` decoders, and the Foxglove WebSocket server."""

from __future__ import annotations

import asyncio
import json
import os
import struct
import time

import cv2
import numpy as np
import pytest
from rosbags.rosbag1 import Writer as Writer1  # noqa: E402
from rosbags.rosbag2 import StoragePlugin, Writer  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402

from ifseg_deploy.cli.main import main  # noqa: E402
from ifseg_deploy.runtime.segmenter import Segmenter  # noqa: E402

TS = get_typestore(Stores.ROS2_JAZZY)
TS1 = get_typestore(Stores.ROS1_NOETIC)
H, W = 48, 64


def scene(i: int) -> np.ndarray:
    """An RGB frame that differs per index (halves of two colours, shifted)."""
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[:, : 10 + 8 * i] = (200, 40, 30)
    rgb[:, 10 + 8 * i :] = (20, 120, 220)
    rgb[: H // 3] = (90 + 30 * i, 200, 90)
    return rgb


def image_msg(ts, i: int, encoding: str, frame_id: str = "cam_optical"):
    rgb = scene(i)
    Image, Header, Time = (
        ts.types[t] for t in ("sensor_msgs/msg/Image", "std_msgs/msg/Header", "builtin_interfaces/msg/Time")
    )
    if encoding == "bgr8":
        px = rgb[..., ::-1]
    elif encoding == "mono8":
        px = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[..., None]
    else:
        px = rgb
    step = W * px.shape[2] + 4  # padded rows: step is honoured
    data = np.zeros((H, step), np.uint8)
    data[:, : W * px.shape[2]] = px.reshape(H, -1)
    kw = dict(stamp=Time(sec=100 + i, nanosec=1000 * i), frame_id=frame_id)
    if ts is TS1:
        kw["seq"] = i
    return Image(
        header=Header(**kw), height=H, width=W, encoding=encoding, is_bigendian=0, step=step, data=data.reshape(-1)
    )


def jpeg_msg(ts, i: int):
    CImage, Header, Time = (
        ts.types[t] for t in ("sensor_msgs/msg/CompressedImage", "std_msgs/msg/Header", "builtin_interfaces/msg/Time")
    )
    ok, jpg = cv2.imencode(".jpg", scene(i)[..., ::-1])
    return CImage(
        header=Header(stamp=Time(sec=100 + i, nanosec=7), frame_id="jpeg_cam"), format="jpeg", data=jpg.reshape(-1)
    )


def write_bag2(path, topics: dict, storage=StoragePlugin.MCAP) -> str:
    """A ROS 2 bag (folder) with ``{topic: [msg, ...]}``; returns what to pass to stream."""
    with Writer(path, version=9, storage_plugin=storage) as w:
        for topic, msgs in topics.items():
            if not msgs:
                continue
            con = w.add_connection(topic, msgs[0].__msgtype__, typestore=TS)
            for i, m in enumerate(msgs):
                w.write(con, 1_000_000_000 * (i + 1), TS.serialize_cdr(m, m.__msgtype__))
    files = [f for f in os.listdir(path) if f.endswith((".mcap", ".db3"))]
    return str(path / files[0]) if storage == StoragePlugin.MCAP and files else str(path)


def _args(bag, tiny_bundle, bpe_dir, *extra):
    return ["stream", bag, "--checkpoint", tiny_bundle, "--bpe-dir", bpe_dir, "--knn-iters", "2", "--quiet", *extra]


def read_back(path) -> dict:
    """``{topic: [(log_time, decoded message)]}`` of an MCAP file, decoded with mcap_ros2 (independent of us)."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    out: dict = {}
    with open(path, "rb") as fh:
        for _schema, channel, message, decoded in make_reader(
            fh, decoder_factories=[DecoderFactory()]
        ).iter_decoded_messages():
            out.setdefault(channel.topic, []).append((message.log_time, decoded))
    return out


def label_array(msg) -> np.ndarray:
    dtype = {"mono8": np.uint8, "mono16": "<u2"}[msg.encoding]
    return np.frombuffer(bytes(msg.data), dtype).reshape(msg.height, msg.width)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8", "jpeg"])
def test_bag_to_mcap_labels_equal_segment(tmp_path, tiny_bundle, bpe_dir, encoding):
    n = 3
    msgs = [jpeg_msg(TS, i) if encoding == "jpeg" else image_msg(TS, i, encoding) for i in range(n)]
    bag = write_bag2(tmp_path / "in", {"/robot/camera/image_raw": msgs})
    out = tmp_path / "seg.mcap"
    assert main(_args(bag, tiny_bundle, bpe_dir, "--save", str(out), "--no-temporal")) == 0
    got = read_back(out)
    assert set(got) == {"/ifseg/labels", "/ifseg/overlay/compressed", "/ifseg/label_info"}
    labels = got["/ifseg/labels"]
    assert len(labels) == n and len(got["/ifseg/overlay/compressed"]) == n
    assert [lt for lt, _ in labels] == [1_000_000_000 * (i + 1) for i in range(n)]  # the input's log times
    seg = Segmenter.load(tiny_bundle, bpe_dir=bpe_dir, knn_iters=2)
    for i, (_, msg) in enumerate(labels):
        src = msgs[i]
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (src.header.stamp.sec, src.header.stamp.nanosec)
        assert msg.header.frame_id == src.header.frame_id
        assert msg.encoding == "mono8" and (msg.height, msg.width) == (H, W)
        # What `segment` gives on the same image, decoded here independently of the bag reader
        if encoding == "jpeg":
            rgb = cv2.imdecode(np.frombuffer(bytes(src.data), np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
        else:
            rows = np.asarray(src.data).reshape(H, src.step)
            ch = 1 if encoding == "mono8" else 3
            px = rows[:, : W * ch].reshape(H, W, ch)
            rgb = np.repeat(px, 3, axis=2) if ch == 1 else (px[..., ::-1] if encoding == "bgr8" else px)
        expected = seg.segment(np.ascontiguousarray(rgb)).labels
        np.testing.assert_array_equal(label_array(msg), expected)
    overlay = got["/ifseg/overlay/compressed"][0][1]
    assert overlay.format == "jpeg"
    assert cv2.imdecode(np.frombuffer(bytes(overlay.data), np.uint8), cv2.IMREAD_COLOR).shape == (H, W, 3)
    infos = got["/ifseg/label_info"]
    assert len(infos) == 1  # categories never changed
    assert [(c.class_id, c.class_name) for c in infos[0][1].class_map] == [(0, "sky"), (1, "grass"), (2, "dog")]
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]  # no temporary file left


def test_db3_folder_and_ros1_bag(tmp_path, tiny_bundle, bpe_dir):
    folder = write_bag2(
        tmp_path / "db3", {"/cam/image": [image_msg(TS, i, "rgb8") for i in range(2)]}, StoragePlugin.SQLITE3
    )
    ros1 = tmp_path / "old.bag"
    with Writer1(ros1) as w:
        con = w.add_connection("/cam1/image_raw", "sensor_msgs/msg/Image", typestore=TS1)
        for i in range(2):
            w.write(
                con,
                1_000_000_000 * (i + 1),
                TS1.serialize_ros1(image_msg(TS1, i, "bgr8", "cam1"), "sensor_msgs/msg/Image"),
            )
    for bag, frame_id in ((folder, "cam_optical"), (str(ros1), "cam1")):
        out = tmp_path / f"{os.path.basename(bag)}.mcap"
        assert main(_args(bag, tiny_bundle, bpe_dir, "--save", str(out))) == 0
        labels = read_back(out)["/ifseg/labels"]
        assert [(m.header.stamp.sec, m.header.frame_id) for _, m in labels] == [(100, frame_id), (101, frame_id)]


def test_topic_choice_and_listing(tmp_path, tiny_bundle, bpe_dir, capsys):
    topics = {"/front/image_raw": [image_msg(TS, 0, "rgb8")], "/rear/image_raw": [image_msg(TS, 1, "rgb8")] * 2}
    bag = write_bag2(tmp_path / "two", topics)
    out = tmp_path / "o.mcap"
    assert main(_args(bag, tiny_bundle, bpe_dir, "--save", str(out))) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "/front/image_raw, /rear/image_raw" in err and "--topic" in err
    assert not out.exists()
    assert main(_args(bag, tiny_bundle, bpe_dir, "--save", str(out), "--topic", "/rear/image_raw")) == 0
    assert len(read_back(out)["/ifseg/labels"]) == 2
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["stream", bag, "--list-topics"])
    assert e.value.code == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed == [
        "/front/image_raw\tsensor_msgs/msg/Image\t1 messages",
        "/rear/image_raw\tsensor_msgs/msg/Image\t2 messages",
    ]


def test_empty_bag_and_unsupported_encoding(tmp_path, tiny_bundle, bpe_dir, capsys):
    empty = write_bag2(tmp_path / "empty", {})
    assert main(_args(empty, tiny_bundle, bpe_dir, "--save", str(tmp_path / "a.mcap"))) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds no image topic" in err
    odd = image_msg(TS, 0, "rgb8")
    odd.encoding = "yuv422"
    bag = write_bag2(tmp_path / "odd", {"/cam/image": [odd]})
    assert main(_args(bag, tiny_bundle, bpe_dir, "--save", str(tmp_path / "b.mcap"))) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'yuv422' is not supported" in err


def test_mono16_input_and_string_of_unpadded_rows(tmp_path):
    from ifseg_deploy.ros.images import raw_to_rgb

    depth = np.array([[1000, 2000], [3000, 5000]], np.uint16)
    Image = TS.types["sensor_msgs/msg/Image"]
    Header = TS.types["std_msgs/msg/Header"]
    Time = TS.types["builtin_interfaces/msg/Time"]
    for big in (0, 1):
        data = depth.astype(">u2" if big else "<u2").tobytes()
        msg = Image(Header(Time(0, 0), ""), 2, 2, "mono16", big, 4, np.frombuffer(data, np.uint8))
        rgb = raw_to_rgb(msg)
        assert rgb.shape == (2, 2, 3)
        np.testing.assert_array_equal(rgb[..., 0], [[0, 63], [127, 255]])  # min..max stretched onto 0..255


async def _foxglove_receive(port: int, topics: set, timeout: float = 20.0) -> dict:
    """Subscribe to ``topics`` with a plain aiohttp client (foxglove.websocket.v1) and return the first
    binary message payload of each (foxglove-sdk speaks foxglove.sdk.v1, the successor of
    foxglove.websocket.v1 with the same framing: opcode 1, subscription id, log time, data)."""
    import aiohttp

    got: dict = {}
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(
            f"ws://127.0.0.1:{port}", protocols=["foxglove.sdk.v1", "foxglove.websocket.v1"]
        ) as ws:
            subs: dict = {}

            async def loop():
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        data = json.loads(msg.data)
                        if data.get("op") == "advertise":
                            new = [
                                {"id": len(subs) + k, "channelId": c["id"]}
                                for k, c in enumerate(data["channels"])
                                if c["topic"] in topics
                            ]
                            for s, c in zip(new, [c for c in data["channels"] if c["topic"] in topics]):
                                subs[s["id"]] = (c["topic"], c["schemaName"], c["encoding"])
                            if new:
                                await ws.send_str(json.dumps({"op": "subscribe", "subscriptions": new}))
                    elif msg.type == aiohttp.WSMsgType.BINARY and msg.data[0] == 1:
                        sub_id, log_time = struct.unpack_from("<IQ", msg.data, 1)
                        got.setdefault(subs[sub_id], (log_time, bytes(msg.data[13:])))
                        if len(got) == len(topics):
                            return

            await asyncio.wait_for(loop(), timeout)
    return got


def test_foxglove_clients_receive_every_topic():
    """The server of ``stream --foxglove``: a client that connects after the first frame still gets each
    topic (the class list is repeated every second), payloads decode as the advertised ROS types."""
    import threading

    from ifseg_deploy.ros.msgs import Header, Time
    from ifseg_deploy.ros.output import RosOutputs

    lines: list = []
    outputs = RosOutputs(foxglove=0, notify=lines.append)
    port = int(lines[0].split("ws://127.0.0.1:")[1].split()[0])
    topics = {"/ifseg/labels", "/ifseg/overlay/compressed", "/ifseg/label_info"}
    stop = threading.Event()

    def publish():
        k = 0
        while not stop.is_set():
            labels = np.full((H, W), k % 2, np.int64)
            outputs.write(scene(0), labels, ["road", "sky"], Header(Time(7, k), "cam"), 0.0)
            k += 1
            stop.wait(0.05)

    thread = threading.Thread(target=publish)
    thread.start()
    try:
        stop.wait(0.3)  # frames (and the first LabelInfo) go out before the client connects
        got = asyncio.run(_foxglove_receive(port, topics))
    finally:
        stop.set()
        thread.join()
        outputs.close()
    assert {key[0] for key in got} == topics
    by_topic = {key[0]: (key, payload) for key, payload in got.items()}
    for topic, ros_type in (
        ("/ifseg/labels", "sensor_msgs/msg/Image"),
        ("/ifseg/overlay/compressed", "sensor_msgs/msg/CompressedImage"),
        ("/ifseg/label_info", "vision_msgs/msg/LabelInfo"),
    ):
        (_, schema, encoding), (_, payload) = by_topic[topic]
        assert (schema, encoding) == (ros_type, "cdr")
    (_, (_, payload)) = by_topic["/ifseg/labels"]
    msg = TS.deserialize_cdr(payload, "sensor_msgs/msg/Image")
    assert (msg.header.stamp.sec, msg.header.frame_id, msg.encoding, msg.height, msg.width) == (7, "cam", "mono8", H, W)
    (_, (_, payload)) = by_topic["/ifseg/label_info"]
    # vision_msgs is not in rosbags' store: LabelInfo read by hand (header 7 s, "cam", then the class map)
    assert payload[4:8] == struct.pack("<i", 7) and b"road\x00" in payload and b"sky\x00" in payload


def test_sigterm_finalises_the_bag(tmp_path, tiny_bundle, bpe_dir):
    """Stopped by SIGTERM mid-bag, ``stream`` still leaves a complete MCAP at the final name holding one
    label map per frame it processed (counted here from its --save-json lines), and no temporary file."""
    import signal
    import subprocess
    import sys
    import time

    bag = write_bag2(tmp_path / "long", {"/cam/image_raw": [image_msg(TS, i % 5, "rgb8") for i in range(400)]})
    out, js = tmp_path / "seg.mcap", tmp_path / "frames.jsonl"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    cmd = [sys.executable, "-m", "ifseg_deploy", *_args(bag, tiny_bundle, bpe_dir, "--save", str(out)), "--save-json"]
    proc = subprocess.Popen([*cmd, str(js)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while not (js.exists() and len(js.read_text().splitlines()) >= 3):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "End: SIGTERM" in stdout
    written = len(js.read_text().splitlines())
    got = read_back(out)
    assert 3 <= written == len(got["/ifseg/labels"]) == len(got["/ifseg/overlay/compressed"]) < 400
    assert [m.header.stamp.sec for _, m in got["/ifseg/labels"]] == [100 + i % 5 for i in range(written)]
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]


def test_app_plays_a_bag_topic(tmp_path, tiny_bundle, bpe_dir):
    """The web app takes a bag wherever a video is accepted: its frames reach the tile, from the chosen topic."""
    from ifseg_deploy.app.session import Session

    bag = write_bag2(
        tmp_path / "two",
        {"/front/image": [image_msg(TS, i, "rgb8") for i in range(3)], "/rear/image": [jpeg_msg(TS, 0)]},
    )
    seg = Segmenter.load(tiny_bundle, bpe_dir=bpe_dir, device="cpu", knn_iters=2)
    session = Session(seg, [bag], out=str(tmp_path / "runs"), realtime=False, topic="/front/image")
    try:
        tile = session.tile("0")
        deadline = time.monotonic() + 60
        while tile.frames < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tile.frames >= 3, tile.status
        assert tile.newest.labels.shape == (H, W)
        assert any(np.array_equal(tile.newest.frame, scene(i)) for i in range(3))  # the rgb8 topic, not the JPEG
    finally:
        session.close()
