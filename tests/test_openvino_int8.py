"""OpenVINO INT8: the IR of the Q/DQ graph, calibrated on --calib-dir, checked against fp32 PyTorch
by logits relative RMS and label agreement, and run through the OpenVINO backend."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("openvino", reason="the openvino package is not installed (pip install 'ifseg-deploy[openvino]')")

from ifseg_deploy.cli.main import main  # noqa: E402
from ifseg_deploy.runtime.openvino_backend import OpenVinoBackend, ir_path  # noqa: E402
from ifseg_deploy.runtime.segmenter import Segmenter  # noqa: E402
from ifseg_deploy.runtime.sidecar import read_vocab  # noqa: E402
from ifseg_deploy.runtime.torch_backend import cpu_has_vnni  # noqa: E402

CATS = "grass, cat, giraffe, concrete wall"


def test_int8_ir_meets_gate_and_runs(ifseg_checkpoint, dev_dir, bpe_dir, tmp_path, capsys):
    calib = tmp_path / "calib"
    calib.mkdir()
    shutil.copy(dev_dir.parents[1] / "media" / "cat_dog.jpeg", calib)
    out = tmp_path / "dev_openvino"
    args = [
        "export",
        "--checkpoint",
        ifseg_checkpoint,
        "--format",
        "openvino",
        "--precision",
        "int8",
        "--calib-dir",
        str(calib),
        "--quantizer",
        "onnxruntime",
        "--out",
        str(out),
        "--bpe-dir",
        bpe_dir,
        "--categories",
        CATS,
    ]
    vnni = cpu_has_vnni()
    code = main(args)
    if code != 0:  # without VNNI, OpenVINO's int8 products saturate: the gate refuses the IR and says why
        err = capsys.readouterr().err.strip()
        assert vnni is False, err
        assert "gate 1e-01" in err
        assert "nothing was written" in err
        assert "no VNNI" in err
        assert "\n" not in err
        assert not out.exists()
        assert main(args + ["--no-gate"]) == 0
    text = capsys.readouterr().out
    assert "INT8 Q/DQ graph" in text
    assert "int8 graph vs fp32 PyTorch" in text
    side = read_vocab(ir_path(str(out)))
    assert side.export["precision"] == "int8"
    assert side.contract.bias_inputs is not None
    backend, _ = OpenVinoBackend.open(str(out))
    assert backend.capabilities.precision == "int8"
    image = str(dev_dir / "image_eval0.png")
    int8 = Segmenter.load(str(out), CATS, bpe_dir=bpe_dir, device="cpu").segment(image)
    ref = Segmenter.load(ifseg_checkpoint, CATS, bpe_dir=bpe_dir, device="cpu").segment(image)
    err = np.sqrt(((int8.logits - ref.logits) ** 2).sum() / (ref.logits**2).sum())
    assert err > 0  # quantized, not the fp32 graph
    if code == 0:  # within the int8 gate
        assert err < 0.1
        assert (int8.labels == ref.labels).mean() > 0.9


def test_int8_ir_needs_calibration_images(ifseg_checkpoint, tmp_path, capsys):
    assert (
        main(
            [
                "export",
                "--checkpoint",
                ifseg_checkpoint,
                "--format",
                "openvino",
                "--precision",
                "int8",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    assert "--calib-dir" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
