"""``ifseg-deploy stream`` on recorded files: outputs, stride, damaged and truncated files, bad options."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
from stream_media import H, W, corrupt_avi_frame, decoded_frames, number_of, write_avi, write_mp4

from ifseg_deploy.cli.main import main


def _args(video, tiny_bundle, bpe_dir, *extra):
    return ["stream", video, "--checkpoint", tiny_bundle, "--bpe-dir", bpe_dir, "--knn-iters", "2", "--quiet", *extra]


def test_saves_h264_video_labels_and_json(tmp_path, tiny_bundle, bpe_dir, capsys):
    video = write_avi(tmp_path / "in.avi", 5, fps=10)
    out, labels, js = tmp_path / "out.mp4", tmp_path / "labels", tmp_path / "frames.jsonl"
    args = _args(
        video,
        tiny_bundle,
        bpe_dir,
        "--save",
        str(out),
        "--vid-stride",
        "2",
        "--save-labels",
        str(labels),
        "--save-json",
        str(js),
    )
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "in = 3, processed = 3, dropped = 0" in text  # frames 0, 2, 4 of 5
    frames = decoded_frames(out)
    assert len(frames) == 3
    assert frames[0].shape == (H, W, 3)
    import av

    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
    assert sorted(os.listdir(labels)) == [".ifseg-deploy", "000000.png", "000002.png", "000004.png"]
    records = [json.loads(line) for line in js.read_text().splitlines()]
    assert [r["frame"] for r in records] == [0, 2, 4]
    assert [r["time"] for r in records] == [0.0, 0.2, 0.4]
    for r in records:  # areas agree with the label PNG, computed here independently
        lab = cv2.imread(str(labels / f"{r['frame']:06d}.png"), cv2.IMREAD_UNCHANGED)
        values, counts = np.unique(lab, return_counts=True)
        expected = {["sky", "grass", "dog"][v]: c / lab.size for v, c in zip(values, counts)}
        assert r["areas"].keys() == expected.keys()
        assert all(abs(r["areas"][k] - expected[k]) < 1e-5 for k in expected)
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]  # no temporary file left


def test_damaged_frame_is_skipped_and_counted(tmp_path, tiny_bundle, bpe_dir, capsys):
    video = write_avi(tmp_path / "in.avi", 8)
    corrupt_avi_frame(video, 3)
    js = tmp_path / "f.jsonl"
    assert main(_args(video, tiny_bundle, bpe_dir, "--save-json", str(js))) == 0
    assert "in = 7, processed = 7, dropped = 0, unreadable = 1" in capsys.readouterr().out
    assert [json.loads(line)["frame"] for line in js.read_text().splitlines()] == [0, 1, 2, 4, 5, 6, 7]


def test_truncated_file_is_an_error_and_keeps_the_video(tmp_path, tiny_bundle, bpe_dir, capsys):
    full = write_mp4(tmp_path / "full.mp4", 30)
    data = open(full, "rb").read()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    readable = len(decoded_frames_tolerant(cut))
    assert 0 < readable < 30
    out = tmp_path / "out.mp4"
    assert main(_args(str(cut), tiny_bundle, bpe_dir, "--save", str(out))) == 2
    captured = capsys.readouterr()
    assert f"ended after {readable} of 30 frames" in captured.err
    assert captured.err.count("\n") == 1
    assert f"processed = {readable}" in captured.out
    frames = decoded_frames(out)
    assert len(frames) == readable


def decoded_frames_tolerant(path) -> list:
    """Frames OpenCV can read from a damaged file, counted here with a plain loop."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    for _ in range(100):
        ok, f = cap.read()
        if ok:
            frames.append(f)
        elif frames:
            break
    return frames


def test_max_frames_and_frame_order(tmp_path, tiny_bundle, bpe_dir):
    video = write_avi(tmp_path / "in.avi", 12, size=(256, 192))  # the legend covers the top-left corner only
    out = tmp_path / "out.avi"
    assert (
        main(_args(video, tiny_bundle, bpe_dir, "--save", str(out), "--max-frames", "4", "--alpha", "0", "--no-hud"))
        == 0
    )
    frames = decoded_frames(out)
    assert [number_of(f) for f in frames] == [0, 1, 2, 3]  # alpha 0, no HUD: the frames, in order


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--save", "x.gif"], ".mp4 or .avi"),
        ([], "nothing to do"),
        (["--save", "o.mp4", "--vid-stride", "0"], "vid-stride"),
        (["--save", "o.mp4", "--max-frames", "0"], "max-frames"),
        (["--save", "o.mp4", "--reconnect", "-1", "--live"], "reconnect"),
        (["--save", "o.mp4", "--alpha", "2"], "alpha"),
    ],
)
def test_bad_arguments(tmp_path, tiny_bundle, bpe_dir, capsys, extra, message):
    video = write_avi(tmp_path / "in.avi", 3)
    os.chdir(tmp_path)
    assert main(["stream", video, "--checkpoint", tiny_bundle, "--bpe-dir", bpe_dir] + extra) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1
    assert not [f for f in os.listdir(tmp_path) if f.endswith((".mp4", ".gif"))]


def test_missing_source(tiny_bundle, bpe_dir, tmp_path, capsys):
    assert (
        main(
            [
                "stream",
                str(tmp_path / "none.mp4"),
                "--checkpoint",
                tiny_bundle,
                "--bpe-dir",
                bpe_dir,
                "--save",
                str(tmp_path / "o.mp4"),
            ]
        )
        == 2
    )
    assert "not found" in capsys.readouterr().err


def test_show_without_gui_names_the_extra(tmp_path, tiny_bundle, bpe_dir, capsys, monkeypatch):
    from ifseg_deploy.stream import runner

    monkeypatch.setattr(runner, "gui_available", lambda: False)
    video = write_avi(tmp_path / "in.avi", 2)
    assert main(["stream", video, "--checkpoint", tiny_bundle, "--bpe-dir", bpe_dir, "--show"]) == 2
    assert "ifseg-deploy[gui]" in capsys.readouterr().err
