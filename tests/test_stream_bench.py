"""``ifseg-deploy bench`` on a tiny model, and an exported engine serving bench and stream
(the stream tests proper are in test_stream*.py)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from ifseg_deploy.cli.main import main


@pytest.fixture
def video(tmp_path):
    path = str(tmp_path / "in.avi")
    w = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10, (80, 48))
    rng = np.random.default_rng(0)
    for _ in range(5):
        w.write(rng.integers(0, 256, (48, 80, 3), dtype=np.uint8))
    w.release()
    return path


def _frames(path):
    cap = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            return frames
        frames.append(f)


def test_bench_reports_stages(tmp_path, tiny_bundle, bpe_dir, capsys):
    report = tmp_path / "bench.json"
    args = [
        "bench",
        "--checkpoint",
        tiny_bundle,
        "--bpe-dir",
        bpe_dir,
        "--source-size",
        "64,96",
        "--iters",
        "3",
        "--warmup",
        "1",
        "--json",
        str(report),
    ]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "Latency: min =" in text
    assert "Throughput:" in text
    d = json.loads(report.read_text())
    assert d["iterations"] == 3
    assert d["image_size"] == [64, 96]
    lat = d["latency_ms"]
    assert 0 < lat["min"] <= lat["median"] <= lat["max"]
    assert set(d["stages_ms"]) == {"preprocess", "backbone", "encoder", "decoder", "knn", "upsample"}
    assert sum(s["median"] for s in d["stages_ms"].values()) <= lat["max"] * 1.05


def test_bench_random_arch_needs_no_files(capsys):
    from ifseg_deploy.bench.latency import run_benchmark
    from ifseg_deploy.bench.synthetic import random_segmenter
    from ifseg_deploy.config import ArchConfig

    arch = ArchConfig(embed_dim=32, ffn_dim=64, encoder_layers=1, decoder_layers=1, heads=2, resnet_blocks=(1, 1, 1))
    seg = random_segmenter(arch, num_classes=5, prompt_len=12, device="cpu", knn_iters=1)
    rep = run_benchmark(seg, np.zeros((40, 40, 3), np.uint8), batch=2, warmup=0, iterations=2)
    assert rep.to_dict()["batch"] == 2
    assert len(rep.total) == 2
    assert rep.peak_rss_mb > 0


def test_engine_runs_in_bench_and_stream(tmp_path, video, tiny_bundle, bpe_dir, capsys):
    """An exported ONNX model serves bench and stream like a checkpoint (one runtime interface)."""
    onnx_path = str(tmp_path / "tiny.onnx")
    assert (
        main(
            [
                "export",
                "--checkpoint",
                tiny_bundle,
                "--bpe-dir",
                bpe_dir,
                "--format",
                "onnx",
                "--out",
                onnx_path,
                "--imgsz",
                "128",
            ]
        )
        == 0
    )
    report = tmp_path / "bench.json"
    assert (
        main(
            [
                "bench",
                "--engine",
                onnx_path,
                "--bpe-dir",
                bpe_dir,
                "--source-size",
                "64,96",
                "--iters",
                "2",
                "--warmup",
                "0",
                "--json",
                str(report),
            ]
        )
        == 0
    )
    stages = json.loads(report.read_text())["stages_ms"]
    assert "network" in stages
    assert "backbone" not in stages
    out = str(tmp_path / "out.avi")
    assert main(["stream", video, "--engine", onnx_path, "--bpe-dir", bpe_dir, "--save", out, "--max-frames", "2"]) == 0
    assert len(_frames(out)) == 2
    assert main(["bench", "--checkpoint", tiny_bundle, "--providers", "cpu", "--iters", "1"]) == 2
    assert "--providers applies to --engine" in capsys.readouterr().err
