"""Static exports sized for a source (``export --imgsz-from``): a 640x480 video or image gets exactly
the input it pre-processes to, runs through ``segment`` / ``stream --engine``, and a static graph fed
another size names the size and the flag that gives it."""

from __future__ import annotations

import cv2
import numpy as np
import onnx
import pytest
from conftest import save_tiny_bundle
from PIL import Image

from ifseg_deploy.cli.main import main
from ifseg_deploy.errors import IFSegError
from ifseg_deploy.exporter.source_size import source_size, static_size_for
from ifseg_deploy.preprocess import Preprocessing

SHORT = 64  # the export's short side: a 640x480 source becomes 64 x 640 * 64 / 480 = 64 x 85.3 -> 64x85
EXPECTED = (SHORT, int(640 * SHORT / 480 + 0.5))


def _frame() -> np.ndarray:
    """A 480x640 BGR frame with structure (two halves and a disc)."""
    frame = np.full((480, 640, 3), (40, 160, 60), np.uint8)
    frame[:200] = (230, 180, 120)
    cv2.circle(frame, (400, 300), 90, (20, 20, 200), -1)
    return frame


@pytest.fixture(scope="module")
def sources(tmp_path_factory, bpe_dir):
    folder = tmp_path_factory.mktemp("imgsz_from")
    video = str(folder / "clip.avi")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"MJPG"), 10, (640, 480))
    for _ in range(3):
        writer.write(_frame())
    writer.release()
    image = str(folder / "frame.png")
    cv2.imwrite(image, _frame())
    bundle = save_tiny_bundle(folder / "tiny.safetensors", bpe_dir=bpe_dir)
    return {"video": video, "image": image, "bundle": bundle, "folder": folder}


def _input_dims(path):
    graph = onnx.load(str(path), load_external_data=False).graph
    return next([d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input if i.name == "images")


def test_static_export_from_a_video_runs_that_video(sources, bpe_dir, capsys):
    folder = sources["folder"]
    onnx_path = folder / "clip.onnx"
    assert (
        main(
            [
                "export",
                "--checkpoint",
                sources["bundle"],
                "--bpe-dir",
                bpe_dir,
                "--imgsz",
                str(SHORT),
                "--imgsz-from",
                sources["video"],
                "--out",
                str(onnx_path),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert f"Static input {EXPECTED[0]}x{EXPECTED[1]}" in printed
    assert _input_dims(onnx_path) == [1, 3, *EXPECTED]
    out = folder / "seg"
    assert main(["segment", sources["image"], "--engine", str(onnx_path), "--bpe-dir", bpe_dir, "--out", str(out)]) == 0
    labels = cv2.imread(str(out / "frame_labels.png"), cv2.IMREAD_UNCHANGED)
    assert labels.shape == (480, 640)
    saved = str(folder / "overlay.avi")
    assert (
        main(
            [
                "stream",
                sources["video"],
                "--engine",
                str(onnx_path),
                "--bpe-dir",
                bpe_dir,
                "--save",
                saved,
                "--max-frames",
                "2",
            ]
        )
        == 0
    )
    assert "processed = 2," in capsys.readouterr().out
    # the same video in portrait (480x640 frames) pre-processes to 85x64: the error names that size and the flags
    portrait = folder / "portrait.png"
    cv2.imwrite(str(portrait), np.ascontiguousarray(_frame().transpose(1, 0, 2)))
    assert (
        main(["segment", str(portrait), "--engine", str(onnx_path), "--bpe-dir", bpe_dir, "--out", str(folder / "p")])
        == 1
    )
    lines = capsys.readouterr().err.strip().splitlines()  # the image's own error line, then the summary
    assert len(lines) == 2
    assert "1 input(s) failed, 0 of 1" in lines[1]
    err = lines[0]
    assert "portrait.png" in err
    assert f"fixed {EXPECTED[0]}x{EXPECTED[1]} inputs" in err
    assert f"preprocesses to {EXPECTED[1]}x{EXPECTED[0]}" in err
    assert f"--imgsz {EXPECTED[1]}x{EXPECTED[0]}" in err
    assert "--imgsz-from" in err
    assert "--dynamic" in err


def test_source_size_of_images_videos_and_rotated_photos(sources, tmp_path):
    assert source_size(sources["video"]) == (480, 640)
    assert source_size(sources["image"]) == (480, 640)
    # a phone photo stored 640x480 and tagged "rotate 90 degrees clockwise" (EXIF orientation 6) shows 480 wide
    photo = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(_frame()[..., ::-1]).save(photo, exif=exif.tobytes())
    assert source_size(str(photo)) == (640, 480)
    assert static_size_for(str(photo), Preprocessing.short_side_rule(SHORT)) == EXPECTED[::-1]
    assert (
        static_size_for(sources["video"], Preprocessing.short_side_rule(512))
        == (512, int(640 * 512 / 480 + 0.5))
        == (512, 683)
    )
    # a panorama whose long side hits the cap (4 x short side): 100x1000 -> 25.6x256 -> 26x256
    wide = tmp_path / "wide.png"
    cv2.imwrite(str(wide), np.zeros((100, 1000, 3), np.uint8))
    assert static_size_for(str(wide), Preprocessing.short_side_rule(SHORT)) == (26, 256)


def test_unreadable_sources(tmp_path):
    with pytest.raises(IFSegError, match="file not found"):
        source_size(str(tmp_path / "missing.mp4"))
    junk = tmp_path / "notes.mp4"
    junk.write_bytes(b"this is not a video" * 10)
    with pytest.raises(IFSegError, match="neither an image nor a video"):
        source_size(str(junk))


@pytest.mark.parametrize(
    "extra,match",
    [
        (["--dynamic"], "--dynamic contradicts"),
        (["--imgsz", "64x85"], "short side only"),
    ],
)
def test_imgsz_from_bad_combinations(sources, tmp_path, capsys, extra, match):
    out = tmp_path / "out"
    rc = main(
        [
            "export",
            "--checkpoint",
            sources["bundle"],
            "--imgsz-from",
            sources["video"],
            "--out",
            str(out / "m.onnx"),
            *extra,
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.startswith("error: "), err
    assert "\n" not in err, err
    assert match in err, err
    assert not out.exists()
