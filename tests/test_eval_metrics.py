"""Metric accumulation: the reference's areas on the dev image, dataset-level sums, NaN rules."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from ifseg_deploy.eval.datasets import DatasetSpec, find_samples
from ifseg_deploy.eval.labels import LabelMapping
from ifseg_deploy.eval.metrics import IGNORE, MetricAccumulator
from ifseg_deploy.eval.report import build_report, write_report
from ifseg_deploy.eval.runner import evaluate_dataset
from ifseg_deploy.runtime.segmenter import Segmenter


def test_reference_areas_on_dev_image(tmp_path, dev_dir, golden, ifseg_checkpoint):
    """Segmenter labels on the dev image vs the remapped GT give exactly the reference's areas,
    for the kNN-smoothed prediction and the plain one (both logged by the reference)."""
    for sub in ("images/validation", "annotations/validation"):
        (tmp_path / sub).mkdir(parents=True)
    Image.open(dev_dir / "image_eval0.png").save(tmp_path / "images/validation/eval0.png")
    Image.open(dev_dir / "label_eval0.png").save(tmp_path / "annotations/validation/eval0.png")
    cats = ("grass", "cat", "giraffe", "concrete wall")
    mapping = LabelMapping.from_pairs({0: IGNORE, 1: 0, 2: 1, 3: 2, 4: 3}, "0..4")
    spec = DatasetSpec("dev", cats, mapping, "images/validation", "annotations/validation", "")
    seg = Segmenter.load(ifseg_checkpoint, device="cpu")
    knn, plain = evaluate_dataset(seg, find_samples(spec, str(tmp_path)), mapping, show_progress=False)
    for acc, suffix in ((knn, "_resnet_postprocess"), (plain, "")):
        s = acc.scores()
        for ours, name in ((s.intersect, "intersect"), (s.pred, "pred_label"), (s.label, "label"), (s.union, "union")):
            np.testing.assert_array_equal(
                ours, golden[f"eval0_area_{name}{suffix}"].astype(np.int64), err_msg=name + suffix
            )
    # The GT remap equals the reference's (value N = 'unknown' there, IGNORE here).
    ref = golden["eval0_ori_semantic_seg"].astype(np.int64)
    ref[ref == len(cats)] = IGNORE
    np.testing.assert_array_equal(
        mapping.apply(np.asarray(Image.open(dev_dir / "label_eval0.png"), np.int64), "x"), ref
    )


def test_dataset_level_sums_and_nan_rules():
    rng = np.random.default_rng(0)
    n = 6
    pairs = []
    for h, w in [(7, 9), (20, 3), (11, 11)]:
        gt = rng.integers(0, 4, (h, w))  # classes 4 and 5 never in the truth
        pred = rng.integers(0, 5, (h, w))  # class 5 never predicted either -> NaN; class 4 predicted only -> IoU 0
        gt[rng.random((h, w)) < 0.2] = IGNORE
        pred[rng.random((h, w)) < 0.05] = IGNORE  # pixels without a prediction
        pairs.append((pred, gt))
    acc = MetricAccumulator(n)
    for p, g in pairs:
        acc.update(p, g)
    s = acc.scores()
    # Independent counts over all images: pixels with an ignored truth are not scored.
    inter = np.array([sum(((g == c) & (p == c)).sum() for p, g in pairs) for c in range(n)])
    label = np.array([sum((g == c).sum() for p, g in pairs) for c in range(n)])
    pred = np.array([sum(((p == c) & (g != IGNORE)).sum() for p, g in pairs) for c in range(n)])
    union = pred + label - inter
    np.testing.assert_array_equal(s.intersect, inter)
    np.testing.assert_array_equal(s.label, label)
    np.testing.assert_array_equal(s.pred, pred)
    np.testing.assert_array_equal(s.union, union)
    assert math.isnan(s.iou[5])
    assert math.isnan(s.acc[5])
    assert s.iou[4] == 0
    assert math.isnan(s.acc[4])
    assert s.miou == pytest.approx(np.mean(inter[:5] / union[:5]))
    assert s.macc == pytest.approx(np.mean(inter[:4] / label[:4]))
    assert s.aacc == pytest.approx(inter.sum() / label.sum())
    # Summed over the dataset, not averaged over images.
    per_image = []
    for p, g in pairs:
        a = MetricAccumulator(n)
        a.update(p, g)
        per_image.append(a.scores().miou)
    assert s.miou != pytest.approx(np.mean(per_image))


def test_report_is_strict_json(tmp_path):
    acc = MetricAccumulator(3)
    acc.update(np.array([[0, 1]]), np.array([[0, 0]]))
    path = tmp_path / "r.json"
    write_report(str(path), build_report(acc.scores(), ["a", "b", "c"], {"mode": "test"}))
    doc = json.loads(path.read_text())
    assert doc["mIoU"] == pytest.approx(0.25)  # IoU a = 1/2, b = 0/1, c undefined
    assert doc["per_class"][2] == dict(index=2, name="c", iou=None, acc=None, intersect=0, union=0, pred=0, label=0)
    assert [f.name for f in tmp_path.iterdir()] == ["r.json"]
