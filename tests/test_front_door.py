"""The front door: ``from ifseg_deploy import Segmenter, Stream, export, load``."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import save_tiny_bundle

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_import_stays_light_and_names_resolve():
    code = (
        "import sys, ifseg_deploy; light = 'torch' not in sys.modules; "
        "from ifseg_deploy import Segmenter, Stream, export, load; "
        "print(light, Segmenter.__name__, Stream.__name__, sorted(ifseg_deploy.__all__))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    ).stdout.split()
    assert out[:3] == ["True", "Segmenter", "Stream"]
    assert "".join(out[3:]) == str(["Segmenter", "Stream", "__version__", "export", "load"]).replace(" ", "")


def test_load_segment_and_export(tmp_path, bpe_dir):
    import ifseg_deploy
    import ifseg_deploy.exporter.api  # noqa: F401  (a sub-package imported first must not shadow the function)
    from ifseg_deploy import export, load
    from ifseg_deploy.errors import IFSegError

    assert callable(export)
    assert export is ifseg_deploy.export
    model = save_tiny_bundle(tmp_path / "t.safetensors", bpe_dir=bpe_dir)
    seg = load(model, "grass, cat", bpe_dir=bpe_dir, device="cpu", knn_iters=1)
    assert isinstance(seg, ifseg_deploy.Segmenter)
    assert seg.categories == ["grass", "cat"]
    assert seg.segment(np.zeros((40, 50, 3), np.uint8)).labels.shape == (40, 50)
    result = export(model, format="onnx", imgsz=64, bpe_dir=bpe_dir, out=str(tmp_path / "m.onnx"))
    assert sorted(os.path.basename(f) for f in result.files) == ["m.onnx", "m.vocab.safetensors"]
    assert load(str(tmp_path / "m.onnx"), bpe_dir=bpe_dir, device="cpu").backend.name != seg.backend.name
    with pytest.raises(IFSegError, match="network=onnx applies to format='triton' only"):
        export(model, network="onnx")
    with pytest.raises(AttributeError):
        ifseg_deploy.Segmentr  # noqa: B018
