"""Stream building blocks: temporal smoothing, area fractions, the video writer, the pipelined vs
sequential loop, and the package layering (``stream`` sits above runtime / postprocess / visualize)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from stream_media import decoded_frames, write_avi

from ifseg_deploy.errors import IFSegError
from ifseg_deploy.runtime.segmenter import Segmenter
from ifseg_deploy.stream import Stream, TemporalSmoother
from ifseg_deploy.stream import writer as writer_mod
from ifseg_deploy.stream.report import area_fractions
from ifseg_deploy.stream.writer import VideoWriter

PACKAGE = Path(__file__).resolve().parents[1] / "ifseg_deploy"


def _probs(*rows):
    return torch.tensor([rows], dtype=torch.float32)  # (1, hw, N)


def test_temporal_average_with_reset_on_cut_and_changed_cells():
    sm = TemporalSmoother(momentum=0.5, cell_threshold=0.9, cut_threshold=0.6)
    f = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # two cells, orthogonal features
    q1, q2 = _probs([1.0, 0.0], [0.0, 1.0]), _probs([0.0, 1.0], [1.0, 0.0])
    assert torch.equal(sm(q1, f), q1)  # first frame: as is
    assert torch.allclose(sm(q2, f), _probs([0.5, 0.5], [0.5, 0.5]))  # same scene: 0.5 * q1 + 0.5 * q2
    moved = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])  # cell 1's feature changed (mean similarity 0.5 < 0.6): a cut
    assert torch.equal(sm(q1, moved), q1)
    assert sm.cuts == 1
    half = torch.tensor([[[1.0, 0.0], [0.8, 0.6]]])  # cell 1 similarity 0.8: not averaged; mean 0.9: no cut
    assert torch.allclose(sm(q2, half), _probs([0.5, 0.5], [1.0, 0.0]))
    assert sm.cuts == 1
    with pytest.raises(ValueError):
        TemporalSmoother(momentum=1.0)


def test_area_fractions():
    labels = np.array([[0, 0, 2, 2], [2, 2, 2, 2]])
    assert area_fractions(labels, ["a", "b", "c"]) == {"a": 0.25, "c": 0.75}


def test_h264_writer_pads_odd_sizes_and_writes_nothing_without_frames(tmp_path):
    w = VideoWriter(str(tmp_path / "v.mp4"), 25.0)
    for i in range(7):
        w.write(np.full((33, 45, 3), 30 * i, np.uint8))
    assert w.close()
    assert w.codec == "libx264"
    frames = decoded_frames(tmp_path / "v.mp4")
    assert len(frames) == 7
    assert frames[0].shape == (34, 46, 3)
    assert abs(int(frames[3][10, 10, 0]) - 90) <= 3
    empty = VideoWriter(str(tmp_path / "e.mp4"), 25.0)
    assert not empty.close()
    assert os.listdir(tmp_path) == ["v.mp4"]


def test_writer_keeps_timestamps_with_a_keyframe_every_second(tmp_path):
    times = [0.0, 0.04, 0.3, 0.31, 1.2, 1.25, 1.9, 2.6, 2.61, 4.0]  # irregular, as a live capture
    w = VideoWriter(str(tmp_path / "v.mp4"), 25.0)
    for i, t in enumerate(times):
        w.write(np.full((32, 48, 3), 20 * i, np.uint8), 100.0 + t)  # the video starts at the first frame's time
    assert w.close()
    import av

    with av.open(str(tmp_path / "v.mp4")) as c:
        frames = [(float(f.pts * f.time_base), f.key_frame) for f in c.decode(video=0)]
    assert [t for t, _ in frames] == pytest.approx(times, abs=1e-4)
    assert [t for t, key in frames if key] == [0.0, 1.2, 2.6, 4.0]  # at least one keyframe per second of video


def test_a_recording_that_cannot_be_finalised_is_kept_and_named(tmp_path):
    target = tmp_path / "v.mp4"
    w = VideoWriter(str(target), 10.0)
    for i in range(3):
        w.write(np.full((32, 48, 3), 50, np.uint8))
    target.mkdir()  # something in the way of the final name
    (target / "x").write_text("")
    with pytest.raises(IFSegError, match=f"could not finalise .*kept in {w.partial}"):
        w.close()
    assert len(decoded_frames(w.partial)) == 3
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]


def test_writer_falls_back_to_mp4v_with_a_notice(tmp_path, monkeypatch):
    monkeypatch.setattr(writer_mod, "h264_encoder", lambda: None)
    notices = []
    w = VideoWriter(str(tmp_path / "v.mp4"), 10.0, notify=notices.append)
    for i in range(3):
        w.write(np.full((32, 48, 3), 50, np.uint8))
    w.close()
    assert w.codec == "mp4v"
    assert "ifseg-deploy[video]" in notices[0]
    assert len(decoded_frames(tmp_path / "v.mp4")) == 3


def test_pipelined_equals_sequential(tmp_path, tiny_bundle, bpe_dir):
    video = write_avi(tmp_path / "in.avi", 4)
    seg = Segmenter.load(tiny_bundle, bpe_dir=bpe_dir, knn_iters=2, device="cpu")
    runs = {}
    for pipelined in (False, True):
        stream = Stream(seg, video, pipelined=pipelined, temporal=True)
        runs[pipelined] = [(stream.info.index, r.labels, r.probs) for _, r in stream]
    assert [i for i, _, _ in runs[True]] == list(range(4))
    for (i, la, pa), (j, lb, pb) in zip(runs[False], runs[True]):
        assert i == j
        assert np.array_equal(la, lb)
        assert np.allclose(pa, pb, atol=1e-6)


def test_hud_draws_text_in_the_top_right_corner_only():
    from ifseg_deploy.stream.hud import draw_hud

    out = draw_hud(np.full((120, 320, 3), 100, np.uint8), fps=12.3, latency_ms=45.0, dropped=7)
    ys, xs = np.nonzero(np.any(out != 100, axis=2))
    assert ys.max() < 40
    assert xs.min() > 320 // 3  # a dark box with text, away from the legend (top-left)
    assert (out == 255).all(axis=2).any()  # white text
