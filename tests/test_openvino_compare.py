"""OpenVINO export + backend against PyTorch, the loader's choice of backend, and bench --compare."""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest
from conftest import save_tiny_bundle

from ifseg_deploy.cli.main import main
from ifseg_deploy.runtime.loader import backend_for
from ifseg_deploy.runtime.segmenter import Segmenter
from ifseg_deploy.runtime.torch_backend import cpu_has_bf16

needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, bpe_dir):
    folder = tmp_path_factory.mktemp("ov")
    bundle = save_tiny_bundle(folder / "tiny.safetensors", bpe_dir=bpe_dir)
    return bundle, str(folder / "tiny_openvino")


@needs_openvino
def test_openvino_export_and_backend_match_pytorch(exported, bpe_dir, capsys):
    bundle, folder = exported
    assert main(["export", "--checkpoint", bundle, "--bpe-dir", bpe_dir, "--format", "openvino", "--imgsz", "128"]) == 0
    assert "OpenVINO (CPU, fp32 compute, fp32 weights) vs PyTorch" in capsys.readouterr().out
    assert sorted(os.listdir(folder)) == [".ifseg-deploy", "tiny.bin", "tiny.vocab.safetensors", "tiny.xml"]
    assert backend_for(folder) == "openvino"
    assert backend_for(os.path.join(folder, "tiny.xml")) == "openvino"
    rgb = np.random.default_rng(0).integers(0, 255, (100, 150, 3), dtype=np.uint8)
    ref = Segmenter.load(bundle, bpe_dir=bpe_dir, device="cpu", knn_iters=2).segment(rgb)
    seg = Segmenter.load(folder, bpe_dir=bpe_dir, device="cpu", knn_iters=2)
    assert seg.backend.name == "openvino"
    out = seg.segment(rgb)
    scale = np.abs(ref.logits).max()
    np.testing.assert_allclose(out.logits, ref.logits, atol=1e-4 * scale + 2e-4)
    assert (out.labels == ref.labels).mean() > 0.99


@needs_openvino
def test_openvino_errors(exported, bpe_dir, tmp_path, capsys):
    bundle, folder = exported
    if not os.path.isdir(folder):
        assert (
            main(["export", "--checkpoint", bundle, "--bpe-dir", bpe_dir, "--format", "openvino", "--imgsz", "128"])
            == 0
        )
    img = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(img)
    assert (
        main(
            [
                "segment",
                "--engine",
                folder,
                "--bpe-dir",
                bpe_dir,
                str(img),
                "--out",
                str(tmp_path / "o"),
                "--device",
                "cuda",
            ]
        )
        == 2
    )
    assert "not an OpenVINO device" in capsys.readouterr().err
    assert (
        main(["export", "--checkpoint", bundle, "--bpe-dir", bpe_dir, "--format", "openvino", "--precision", "int8"])
        == 2
    )
    assert "--calib-dir" in capsys.readouterr().err  # int8 IRs come from the calibrated Q/DQ graph
    empty = tmp_path / "plain"
    empty.mkdir()
    assert main(["segment", "--engine", str(empty), "--bpe-dir", bpe_dir, str(img), "--out", str(tmp_path / "o")]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_bench_compare_writes_rows_json_and_png(tmp_path, bpe_dir):
    bundle = save_tiny_bundle(tmp_path / "tiny.safetensors", bpe_dir=bpe_dir)
    report = tmp_path / "cmp" / "compare.json"
    assert (
        main(
            [
                "bench",
                "--compare",
                "--checkpoint",
                bundle,
                "--bpe-dir",
                bpe_dir,
                "--source-size",
                "80,120",
                "--imgsz",
                "64",
                "--iters",
                "2",
                "--warmup",
                "0",
                "--knn-iters",
                "1",
                "--json",
                str(report),
            ]
        )
        == 0
    )
    rows = json.loads(report.read_text())["rows"]
    ran = {(r["backend"], r["precision"]) for r in rows if r["skipped"] is None}
    expected = {("PyTorch", "fp32"), ("ONNX Runtime", "fp32")}
    if cpu_has_bf16():
        expected.add(("PyTorch", "bf16"))
    if importlib.util.find_spec("openvino"):
        expected |= {("OpenVINO", "fp32"), ("OpenVINO fp16 weights", "fp32")}
        expected |= {("OpenVINO", "bf16")} if cpu_has_bf16() else set()
    gated = {("ONNX Runtime", "fp16"), ("ONNX Runtime", "int8")}
    if importlib.util.find_spec("openvino"):
        gated |= {("OpenVINO", "int8")} | ({("OpenVINO int8 + bf16 hint", "int8")} if cpu_has_bf16() else set())
    if importlib.util.find_spec("nncf"):
        gated |= {("ONNX Runtime, NNCF", "int8")}
        if importlib.util.find_spec("openvino"):
            gated |= {("OpenVINO, NNCF", "int8"), ("OpenVINO, NNCF convolutions", "int8")}
    for r in rows:  # random weights: an fp16 / int8 gate may refuse the graph, a skipped row with the gate's reason
        if (r["backend"], r["precision"]) in gated:
            if r["skipped"] is None:
                expected.add((r["backend"], r["precision"]))
            else:
                assert r["skipped"].startswith("export refused: "), r["skipped"]
                assert "gate" in r["skipped"], r["skipped"]
    assert ran == expected
    assert {r["backend"] for r in rows if r["skipped"]} >= {"TensorRT"}  # listed with its reason
    first = rows[0]
    assert first["speedup"] == 1.0
    assert first["logits_rel_rms"] == 0.0
    assert first["label_agreement"] == 1.0
    for r in rows:
        if r["skipped"] is None:
            assert r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
            assert r["fps"] == pytest.approx(1000 / r["p50_ms"])
            assert r["file_mb"] > 0
            assert 0.0 <= r["label_agreement"] <= 1.0
    onnx = next(r for r in rows if r["backend"] == "ONNX Runtime")  # the first: fp32
    assert onnx["logits_rel_rms"] < 1e-4  # an fp32 graph of the same weights
    png = report.with_suffix(".png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
