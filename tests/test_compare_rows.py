"""bench --compare's ONNX Runtime fp16 / int8 rows: the int8 graph's generated calibration set,
and a gate refusal listed as a skipped row instead of an error."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import save_tiny_bundle

from ifseg_deploy.bench import compare as compare_mod
from ifseg_deploy.bench.compare import VARIANTS, calibration_folder, compare
from ifseg_deploy.errors import IFSegError

pytest.importorskip("onnxruntime")

REFERENCE = VARIANTS[0]
ORT = {v.precision: v for v in VARIANTS if v.name == "ONNX Runtime"}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, bpe_dir):
    return save_tiny_bundle(tmp_path_factory.mktemp("cmp") / "tiny.safetensors", bpe_dir=bpe_dir)


def _image() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (80, 120, 3), dtype=np.uint8)


def test_calibration_folder_holds_the_image_and_scenes(tmp_path):
    from PIL import Image

    image = _image()
    folder = calibration_folder(image, str(tmp_path / "calib"), scenes=3)
    assert sorted(os.listdir(folder)) == ["image.png", "scene_0.png", "scene_1.png", "scene_2.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(os.path.join(folder, "image.png"))), image)
    scenes = [np.asarray(Image.open(os.path.join(folder, f"scene_{i}.png"))) for i in range(3)]
    assert all(s.shape == (80, 120, 3) for s in scenes)
    assert not np.array_equal(scenes[0], scenes[1])


def test_ort_fp16_and_int8_rows(bundle, bpe_dir, tmp_path):
    assert set(ORT) == {"fp32", "fp16", "int8"}
    report = compare(
        bundle,
        _image(),
        str(tmp_path),
        bpe_dir=bpe_dir,
        device="cpu",
        short_side=64,
        warmup=0,
        iterations=1,
        variants=(REFERENCE, ORT["fp16"], ORT["int8"]),
        knn_iters=1,
    )
    ref, fp16, int8 = report.rows
    assert ref.skipped is None
    assert ref.logits_rel_rms == 0.0
    # int8: calibrated on the compared image + the generated scenes (8 PNGs), then exported through its
    # gate; on random weights the gate may refuse the graph (the quantiser's rounding varies between
    # ONNX Runtime releases): then a skipped row with the gate's one-line reason
    assert sorted(os.listdir(tmp_path / "calibration")) == ["image.png"] + [
        f"scene_{i}.png" for i in range(compare_mod.CALIBRATION_SCENES)
    ]
    if int8.skipped is None:
        assert "calibrated on the compared image" in int8.note
        assert "calibrated" in report.format()
        assert os.path.dirname(int8.file) == str(tmp_path)
        assert int8.file.endswith(".onnx")
        assert 0.0 < int8.logits_rel_rms < 1.0
        assert 0.0 <= int8.label_agreement <= 1.0
    else:
        assert int8.skipped.startswith("export refused: ")
        assert "gate" in int8.skipped
        assert "\n" not in int8.skipped
    # fp16: either within its gate, or refused by it and listed with the gate's one-line reason
    if fp16.skipped is None:
        assert fp16.logits_rel_rms < 0.05
    else:
        assert fp16.skipped.startswith("export refused: ")
        assert "gate" in fp16.skipped
        assert "\n" not in fp16.skipped
        assert "skipped: export refused" in report.format()


def test_gate_refusal_skips_the_row_but_other_export_errors_raise(bundle, bpe_dir, tmp_path, monkeypatch):
    def refuse(source, cfg):
        raise IFSegError(f"the {cfg.precision or 'fp32'} graph's logits differ (gate); nothing was written")

    monkeypatch.setattr(compare_mod, "export_model", refuse)
    kwargs = dict(bpe_dir=bpe_dir, device="cpu", short_side=64, warmup=0, iterations=1, knn_iters=1)
    report = compare(bundle, _image(), str(tmp_path), variants=(REFERENCE, ORT["int8"]), **kwargs)
    assert report.rows[1].skipped == "export refused: the int8 graph's logits differ (gate); nothing was written"
    with pytest.raises(IFSegError, match="fp32 graph's logits differ"):
        compare(bundle, _image(), str(tmp_path), variants=(REFERENCE, ORT["fp32"]), **kwargs)


def test_peak_share_and_cuda_rows(bundle, bpe_dir, tmp_path, monkeypatch):
    """Each measured row reports its network time and its share of the measured matmul peak of its
    precision (the peak taken once per precision); on a CPU every CUDA row is listed as skipped with
    its reason."""
    from ifseg_deploy.bench import peaks

    measured = []
    monkeypatch.setattr(compare_mod, "matmul_peak", lambda p, d: measured.append(p) or 1e9)
    report = compare(
        bundle, _image(), str(tmp_path), bpe_dir=bpe_dir, device="cpu", short_side=64, warmup=0, iterations=2,
        variants=(REFERENCE, ORT["fp32"]) + tuple(v for v in VARIANTS if v.name.startswith("PyTorch ")),
        knn_iters=1,
    )  # fmt: skip
    ref = report.rows[0]
    flops = peaks.network_flops(compare_mod.Segmenter.load(bundle, bpe_dir=bpe_dir).backend.arch, (64, 96), 18, 3)
    assert report.machine["network_gflop"] == pytest.approx(flops / 1e9)
    assert ref.network_ms > 0 and ref.peak_share == pytest.approx(flops / (ref.network_ms / 1e3) / 1e9)
    assert measured == ["fp32"]  # one measurement for both fp32 rows
    assert "peak %" in report.format()
    cuda_rows = report.rows[2:]
    assert {r.backend for r in cuda_rows} == {"PyTorch eager", "PyTorch compiled"}
    assert all(r.skipped == "needs device='cuda'" for r in cuda_rows)


def test_matmul_peaks_per_precision():
    import torch

    from ifseg_deploy.bench.peaks import matmul_peak, peak_unavailable

    cpu = torch.device("cpu")
    assert matmul_peak("fp32", cpu, n=128, repeats=1) > 0
    assert matmul_peak("int8", cpu, n=128, repeats=1) > 0  # torch._int_mm
    assert matmul_peak("tf32", cpu) is None and peak_unavailable("fp16", cpu) == "fp16 is a CUDA precision"
    with pytest.raises(IFSegError, match=r"^unknown precision='int4' for a matmul peak"):
        matmul_peak("int4", cpu)
