"""OpenCV's and FFmpeg's own log lines stay out of the way: a bad video ends with exactly one
``error:`` line on stderr, and ``--verbose`` brings the libraries' lines back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from stream_media import write_mp4

from ifseg_deploy.checkpoint.bundle import load_bundle, save_bundle

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def quiet_bundle(tiny_bundle, tmp_path) -> str:
    """The tiny bundle with a stored prompt, so that loading it prints no warning."""
    state, classes, meta = load_bundle(tiny_bundle)
    path = str(tmp_path / "quiet.safetensors")
    save_bundle(path, state, classes, dict(meta, prompt_prefix="what is the segmentation map of the image? object:"))
    return path


def _videos(tmp_path):
    corrupt = Path(write_mp4(tmp_path / "corrupt.mp4", 10))  # its header announces 10 frames, whose data is zeroed:
    data = bytearray(corrupt.read_bytes())  # FFmpeg complains about each one
    start = data.find(b"mdat") + 4
    data[start:] = bytes(len(data) - start)
    corrupt.write_bytes(bytes(data))
    text = tmp_path / "notes.avi"  # nothing FFmpeg can open: OpenCV warns about its backends
    text.write_text("not a video\n")
    return {
        "missing": (str(tmp_path / "none.mp4"), "video source not found"),
        "corrupt": (str(corrupt), "no frame could be decoded from"),
        "text": (str(text), "cannot open video source"),
    }


def _run(source, bundle, bpe_dir, tmp_path, *extra):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("OPENCV_LOG_LEVEL", None), env.pop("OPENCV_FFMPEG_LOGLEVEL", None)
    cmd = [
        sys.executable,
        "-m",
        "ifseg_deploy",
        "stream",
        source,
        "--checkpoint",
        bundle,
        "--bpe-dir",
        bpe_dir,
        "--save",
        str(tmp_path / "out.mp4"),
        *extra,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("kind", ["missing", "corrupt", "text"])
def test_bad_video_gives_exactly_one_error_line(tmp_path, quiet_bundle, bpe_dir, kind):
    source, message = _videos(tmp_path)[kind]
    proc = _run(source, quiet_bundle, bpe_dir, tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: "), proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert message in proc.stderr, proc.stderr
    assert "WARN" not in proc.stdout
    assert "FFMPEG" not in proc.stdout.upper()  # (OpenCV logs its lower levels to stdout)
    assert not (tmp_path / "out.mp4").exists()


def test_verbose_shows_the_libraries_lines(tmp_path, quiet_bundle, bpe_dir):
    videos = _videos(tmp_path)
    corrupt = _run(videos["corrupt"][0], quiet_bundle, bpe_dir, tmp_path, "--verbose")
    assert corrupt.returncode == 2
    assert "No JPEG data found" in corrupt.stdout + corrupt.stderr  # FFmpeg's own
    assert corrupt.stderr.splitlines()[-1].startswith("error: no frame could be decoded")
    text = _run(videos["text"][0], quiet_bundle, bpe_dir, tmp_path, "--verbose")
    assert text.returncode == 2
    assert "[ WARN:" in text.stderr  # OpenCV's own
