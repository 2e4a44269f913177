"""Passwords in source and server URLs never reach the terminal, logs or output files."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from stream_media import MJPEGServer

from ifseg_deploy.cli.main import main
from ifseg_deploy.redact import redact_url

SECRET = "S3cretPw"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize(
    "text,shown",
    [
        ("rtsp://admin:S3cretPw@10.0.0.5:554/live", "rtsp://admin:***@10.0.0.5:554/live"),
        (
            "cannot open 'http://u:p%40ss@cam.local/video.mjpg'; check",
            "cannot open 'http://u:***@cam.local/video.mjpg'; check",
        ),
        (
            "rtsp://u:p@ss@host/x and rtmp://a:b@h2",
            "rtsp://u:***@host/x and rtmp://a:***@h2",
        ),  # raw '@' in a password: hidden whole
        ("rtspsrc location=rtsp://u:pw@h/s ! decodebin", "rtspsrc location=rtsp://u:***@h/s ! decodebin"),
        ("https://ghp_T0ken@github.com/x.mp4", "https://***@github.com/x.mp4"),  # a lone token is all secret
        (
            "http://host:8000/a?next=mail@x, /data/v@2.mp4, me@example.com",
            "http://host:8000/a?next=mail@x, /data/v@2.mp4, me@example.com",
        ),
    ],
)
def test_redact_url(text, shown):
    assert redact_url(text) == shown


def _stream_args(source, tiny_bundle, bpe_dir, tmp_path):
    return [
        "stream",
        source,
        "--checkpoint",
        tiny_bundle,
        "--bpe-dir",
        bpe_dir,
        "--knn-iters",
        "1",
        "--reconnect",
        "1",
        "--save",
        str(tmp_path / "out.mp4"),
        "--save-json",
        str(tmp_path / "out.jsonl"),
    ]


def _assert_nowhere(tmp_path, *texts):
    for text in texts:
        assert SECRET not in text
    for root, _, files in os.walk(tmp_path):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                assert SECRET.encode() not in fh.read(), f


def test_unreachable_rtsp_source_in_process(tmp_path, tiny_bundle, bpe_dir, capsys, caplog):
    rc = main(_stream_args(f"rtsp://user:{SECRET}@127.0.0.1:9/x", tiny_bundle, bpe_dir, tmp_path))
    out = capsys.readouterr()
    assert rc == 2
    assert "error: cannot open video source 'rtsp://user:***@127.0.0.1:9/x'" in out.err
    _assert_nowhere(tmp_path, out.out, out.err, caplog.text)


def test_unreachable_rtsp_source_subprocess(tmp_path, tiny_bundle, bpe_dir):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ifseg_deploy",
            *_stream_args(f"rtsp://user:{SECRET}@127.0.0.1:9/x", tiny_bundle, bpe_dir, tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "rtsp://user:***@127.0.0.1:9/x" in proc.stderr
    _assert_nowhere(tmp_path, proc.stdout, proc.stderr)


def test_lost_source_reconnect_summary_and_records(tmp_path, tiny_bundle, bpe_dir, capsys, caplog):
    """A camera that serves a few frames then goes away: the reconnect notice, the end line, the summary,
    the final error and the JSON Lines all name it without the password."""
    server = MJPEGServer(plan=[4])  # FFmpeg sends the credentials as HTTP basic auth; the stand-in ignores them
    url = server.url.replace("http://", f"http://user:{SECRET}@")
    try:
        rc = main(_stream_args(url, tiny_bundle, bpe_dir, tmp_path))
    finally:
        server.close()
    out = capsys.readouterr()
    shown = url.replace(SECRET, "***")
    assert rc == 2, out.err
    assert server.sent == 4, out.err
    assert f"End: lost {shown} after 1 reconnect attempts" in out.out
    assert f"error: lost {shown}" in out.err
    assert f"{shown}: no frame; reconnect attempt 1/1" in out.err + caplog.text
    _assert_nowhere(tmp_path, out.out, out.err, caplog.text)


def test_triton_messages(capsys):
    from ifseg_deploy.errors import IFSegError
    from ifseg_deploy.triton.client import TritonBackend, parse_server_url

    with pytest.raises(IFSegError) as e:
        TritonBackend(f"http://user:{SECRET}@127.0.0.1:9", timeout=2)
    assert "http://user:***@127.0.0.1:9" in str(e.value)
    assert SECRET not in str(e.value)
    with pytest.raises(IFSegError) as e:
        parse_server_url(f"ftp://user:{SECRET}@host")
    assert "ftp://user:***@host" in str(e.value)
    assert SECRET not in str(e.value)
