"""Live sources: newest frame only (drops, bounded lag), reconnects and loss against a local MJPEG server,
and recordings that survive SIGTERM / SIGINT / SIGKILL of a running ``ifseg-deploy stream``."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import cv2
import pytest
from stream_media import MJPEGServer, decoded_frames, frame_times, number_of, numbered, write_avi

from ifseg_deploy.cli.main import main
from ifseg_deploy.runtime.segmenter import Segmenter
from ifseg_deploy.stream import Stream, StreamError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FastCamera:
    """A stand-in capture producing numbered frames every ``period_s`` (faster than the model)."""

    def __init__(self, period_s: float = 0.01, frames: int = 10_000):
        self.period_s, self.frames = period_s, frames
        self.count = 0  # frames produced so far

    def isOpened(self):  # noqa: N802
        return True

    def read(self):
        if self.count >= self.frames:
            return False, None
        time.sleep(self.period_s)
        self.count += 1
        return True, cv2.cvtColor(numbered(self.count - 1, 128, 96), cv2.COLOR_RGB2BGR)

    def get(self, prop):
        return 0.0

    def release(self):
        pass


@pytest.fixture
def seg(tiny_bundle, bpe_dir):
    return Segmenter.load(tiny_bundle, bpe_dir=bpe_dir, knn_iters=2, device="cpu")


def test_live_source_keeps_the_newest_frame(seg):
    camera = FastCamera()
    ages = []
    infer = seg.infer

    def timed_infer(batch):  # how many frames the camera produced after the one the network starts on
        ages.append((camera.count - 1 - number_of(batch.originals[0])) % 256)  # numbers wrap at 256
        time.sleep(0.06)  # a model much slower than the camera
        return infer(batch)

    seg.infer = timed_infer
    stream = Stream(seg, "camera", live=True, capture_factory=lambda: camera, max_frames=25)
    indices = []
    for frame, result in stream:
        assert number_of(frame) == stream.info.index % 256
        assert result.labels.shape == frame.shape[:2]
        indices.append(stream.info.index)
    assert len(indices) == 25
    assert indices == sorted(set(indices))
    assert indices[-1] - indices[0] > 2 * 24  # the camera ran ahead: frames in between were dropped ...
    s = stream.summary
    assert s.dropped > 0
    assert s.frames_in >= s.processed + s.dropped
    assert max(ages) <= 2  # ... and the frame segmented is always (nearly) the newest one


def test_reconnects_then_reports_a_lost_source(seg):
    server = MJPEGServer(plan=[6, 0, 6])  # 6 frames, refused once, 6 frames, then refused for good
    notices = []
    try:
        stream = Stream(seg, server.url, reconnect=2, reconnect_delay=0.05, notify=notices.append)
        got = []
        with pytest.raises(StreamError, match="lost .* after 2 reconnect attempts"):
            for frame, _ in stream:
                got.append(number_of(frame))
    finally:
        server.close()
    assert stream.summary.reconnects == 1
    assert server.connections == 5  # 3 planned + 2 refused attempts at the end
    assert any("reconnected" in n for n in notices)
    assert got == sorted(got)
    assert got
    assert max(got) >= 6  # frames from after the reconnect were segmented


def test_lost_source_exits_non_zero_and_keeps_the_video(tmp_path, tiny_bundle, bpe_dir, capsys):
    server = MJPEGServer(plan=[8])
    out = tmp_path / "live.mp4"
    try:
        rc = main(
            [
                "stream",
                server.url,
                "--checkpoint",
                tiny_bundle,
                "--bpe-dir",
                bpe_dir,
                "--knn-iters",
                "1",
                "--reconnect",
                "1",
                "--save",
                str(out),
                "--quiet",
            ]
        )
    finally:
        server.close()
    captured = capsys.readouterr()
    assert rc == 2
    assert "lost http://127.0.0.1" in captured.err
    processed = int(captured.out.split("processed = ")[1].split(",")[0])
    assert processed > 0
    assert len(decoded_frames(out)) == processed


def _start(tmp_path, tiny_bundle, bpe_dir, frames: int = 3):
    video = write_avi(tmp_path / "long.avi", 3000)  # minutes of work: it only ends by the signal
    out, labels, js = tmp_path / "out.mp4", tmp_path / "labels", tmp_path / "f.jsonl"
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [
        sys.executable,
        "-m",
        "ifseg_deploy",
        "stream",
        video,
        "--checkpoint",
        tiny_bundle,
        "--bpe-dir",
        bpe_dir,
        "--knn-iters",
        "1",
        "--save",
        str(out),
        "--save-labels",
        str(labels),
        "--save-json",
        str(js),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 60
    while not (labels.is_dir() and len(list(labels.glob("*.png"))) >= frames):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, proc.communicate()
        time.sleep(0.1)
    return proc, out, js


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_finalises_the_recording(tmp_path, tiny_bundle, bpe_dir, sig):
    proc, out, js = _start(tmp_path, tiny_bundle, bpe_dir)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    processed = int(stdout.split("processed = ")[1].split(",")[0])
    assert f"End: {sig.name}" in stdout
    frames = decoded_frames(out)
    records = [json.loads(line) for line in js.read_text().splitlines()]
    assert 3 <= processed == len(frames) == len(records)
    assert [r["frame"] for r in records] == list(range(processed))
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".") or ".partial-" in f]


def test_sigkill_leaves_a_playable_recording_that_the_next_run_keeps(tmp_path, tiny_bundle, bpe_dir, caplog):
    proc, out, js = _start(tmp_path, tiny_bundle, bpe_dir, frames=45)  # 10 fps: more than 4 s of video
    proc.kill()
    proc.wait(timeout=30)
    assert not out.exists()  # nothing unfinished at the final name ...
    records = [json.loads(line) for line in js.read_text().splitlines()]  # ... but every line written is whole
    n = len(records)
    assert n >= 45
    assert [r["frame"] for r in records] == list(range(n))
    partial = tmp_path / f"out.mp4.partial-{proc.pid}.mp4"
    times = frame_times(partial)  # the partial recording plays, up to the last keyframe (one per second)
    assert n - 12 <= len(times) <= n
    assert times == pytest.approx([i / 10 for i in range(len(times))], abs=1e-3)
    digest = hashlib.sha256(partial.read_bytes()).hexdigest()

    video = write_avi(tmp_path / "short.avi", 2)
    assert (
        main(
            [
                "stream",
                video,
                "--checkpoint",
                tiny_bundle,
                "--bpe-dir",
                bpe_dir,
                "--knn-iters",
                "1",
                "--quiet",
                "--save",
                str(out),
            ]
        )
        == 0
    )
    reports = [line for m in caplog.messages for line in m.splitlines() if partial.name in line]
    assert len(reports) == 1
    assert "killed" in reports[0]  # the next run says what was left, on one line ...
    assert hashlib.sha256(partial.read_bytes()).hexdigest() == digest  # ... and keeps it as it was
    assert len(decoded_frames(out)) == 2
