"""Frame timing: a variable-frame-rate file keeps its presentation times in the JSON Lines and in the
recorded video."""

from __future__ import annotations

import json

import pytest
from stream_media import frame_times, write_vfr

from ifseg_deploy.cli.main import main

#: A phone clip that pauses: 0.0-0.5 s, then 2.5-3.0 s, 10 frames per second while it runs.
TIMES = [round(0.1 * i, 1) for i in range(6)] + [round(2.5 + 0.1 * i, 1) for i in range(6)]
FRAME = 0.1  # one frame at the running rate


@pytest.mark.parametrize("fmt,ext", [("mp4", "mp4"), ("matroska", "mkv")])
def test_variable_frame_rate_is_kept(tmp_path, tiny_bundle, bpe_dir, capsys, fmt, ext):
    video = write_vfr(tmp_path / f"phone.{ext}", TIMES, fmt)
    assert frame_times(video) == pytest.approx(TIMES, abs=1e-3)  # the source really is VFR
    out, js = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    args = [
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
        "--save-json",
        str(js),
    ]
    assert main(args) == 0  # Matroska's frame count is duration x rate (31 here): not a truncated file
    assert f"End: end of {video}" in capsys.readouterr().out
    records = [json.loads(line) for line in js.read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(len(TIMES)))
    assert [r["time"] for r in records] == pytest.approx(TIMES, abs=FRAME / 2)
    assert frame_times(out) == pytest.approx(TIMES, abs=FRAME / 2)  # the output is VFR too: the pause is kept
