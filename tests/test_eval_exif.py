"""eval keeps the dataset protocol: label maps are aligned with the STORED pixels, so an EXIF
orientation tag on a dataset image is not applied (segment / stream / bench do apply it)."""

from __future__ import annotations

import json

import numpy as np
from conftest import save_tiny_bundle
from PIL import Image

from ifseg_deploy.cli.main import main
from ifseg_deploy.eval.classes import ADE20K_CLASSES
from ifseg_deploy.preprocess import read_image
from ifseg_deploy.runtime.segmenter import Segmenter


def test_eval_ignores_exif_orientation(tmp_path, bpe_dir):
    root = tmp_path / "ADEChallengeData2016"
    (root / "images/validation").mkdir(parents=True)
    (root / "annotations/validation").mkdir(parents=True)
    rng = np.random.default_rng(5)
    stored = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)  # 48 wide x 32 high as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display": viewers show it 32 wide x 48 high
    Image.fromarray(stored).save(root / "images/validation/a.jpg", quality=95, exif=exif.tobytes())
    label = np.kron(rng.integers(0, 151, (4, 6)), np.ones((8, 8), np.int64)).astype(
        np.uint8
    )  # aligned with the stored pixels
    Image.fromarray(label).save(root / "annotations/validation/a.png")
    bundle = save_tiny_bundle(tmp_path / "tiny.safetensors", bpe_dir=bpe_dir)
    out = tmp_path / "r.json"
    assert (
        main(
            [
                "eval",
                "--dataset",
                "ade20k",
                "--root",
                str(root),
                "--checkpoint",
                bundle,
                "--bpe-dir",
                bpe_dir,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    seg = Segmenter.load(bundle, categories=list(ADE20K_CLASSES), bpe_dir=bpe_dir, device="cpu")
    pred = seg.segment(read_image(str(root / "images/validation/a.jpg"), exif=False)).labels
    gt = label.astype(np.int64) - 1  # ADE20K: 0 = ignore (-1 here), k = class k - 1
    inter = [int(((pred == c) & (gt == c)).sum()) for c in range(150)]
    labelled = [int((gt == c).sum()) for c in range(150)]
    doc = json.loads(out.read_text())
    assert [c["intersect"] for c in doc["per_class"]] == inter
    assert [c["label"] for c in doc["per_class"]] == labelled
