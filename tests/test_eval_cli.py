"""``ifseg-deploy eval`` end to end: saved label maps with a known answer, every dataset layout on
a tiny model (expected areas computed here from independent Segmenter runs), and bad inputs."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import save_tiny_bundle
from PIL import Image

from ifseg_deploy.cli.main import main
from ifseg_deploy.eval.classes import ADE20K_CLASSES, COCO_STUFF_27, COCO_STUFF_CLASSES, COCO_UNSEEN_15
from ifseg_deploy.eval.datasets import get_dataset
from ifseg_deploy.eval.runner import dataset_segmenter
from ifseg_deploy.postprocess.knn import faiss_available
from ifseg_deploy.runtime.segmenter import Segmenter


def _run(args):
    return main([str(a) for a in args])


def _areas(pairs, n):
    """Independent per-class counts over (pred, gt) pairs; gt < 0 = ignored, pred < 0 = no class."""
    inter = np.array([sum(((g == c) & (p == c)).sum() for p, g in pairs) for c in range(n)])
    label = np.array([sum((g == c).sum() for p, g in pairs) for c in range(n)])
    pred = np.array([sum(((p == c) & (g >= 0)).sum() for p, g in pairs) for c in range(n)])
    return inter, pred + label - inter, label


def _check_report(path, pairs, n):
    doc = json.loads(open(path).read())
    inter, union, label = _areas(pairs, n)
    assert [c["intersect"] for c in doc["per_class"]] == inter.tolist()
    assert [c["union"] for c in doc["per_class"]] == union.tolist()
    assert [c["label"] for c in doc["per_class"]] == label.tolist()
    ok = union > 0
    assert doc["mIoU"] == pytest.approx(np.mean(inter[ok] / union[ok]))
    assert doc["aAcc"] == pytest.approx(inter.sum() / label.sum())
    return doc


def _blocky(rng, h, w, values):
    """A label map of 8x8-pixel blocks drawn from ``values``."""
    small = rng.choice(values, ((h + 7) // 8, (w + 7) // 8))
    return np.kron(small, np.ones((8, 8), small.dtype))[:h, :w]


def _fails(capsys, args, message, out=None):
    code = _run(args)
    err = capsys.readouterr().err
    lines = [line for line in err.replace("\r", "\n").split("\n") if line.strip()]
    assert code == 2, err
    assert message in err, err
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    if out is not None:
        assert not os.path.exists(out)


# --------------------------------------------------------------------------------------------
# --pred-dir / --gt-dir


def test_label_maps_known_answer(tmp_path, capsys):
    rng = np.random.default_rng(1)
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    pairs = []
    for i, (h, w) in enumerate([(40, 56), (33, 17), (64, 64)]):
        gt = _blocky(rng, h, w, np.array([0, 1, 2, 3, 255], np.uint8))
        pred = np.where(rng.random((h, w)) < 0.7, np.where(gt == 255, 4, gt), rng.integers(0, 5, (h, w))).astype(
            np.uint8
        )
        Image.fromarray(gt).save(gt_dir / f"img{i}.png")
        # segment's naming, a plain <stem>.png, and an overlay that must be ignored
        Image.fromarray(pred).save(pred_dir / (f"img{i}_labels.png" if i != 1 else f"img{i}.png"))
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(pred_dir / f"img{i}_overlay.png")
        pairs.append((pred.astype(np.int64), np.where(gt == 255, -1, gt.astype(np.int64))))
    out = tmp_path / "r.json"
    assert _run(["eval", "--pred-dir", pred_dir, "--gt-dir", gt_dir, "--num-classes", 5, "--out", out]) == 0
    doc = _check_report(out, pairs, 5)
    assert doc["images"] == 3
    assert doc["ignore_index"] == 255
    assert doc["per_class"][4]["label"] == 0
    text = capsys.readouterr().out
    assert f"mIoU {100 * doc['mIoU']:.2f}" in text
    assert "Report saved to" in text


def test_label_maps_uint16_and_train_id_names(tmp_path):
    rng = np.random.default_rng(2)
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    gt = _blocky(rng, 48, 40, np.array([0, 150, 299, 1000], np.uint16))
    pred = np.where(rng.random(gt.shape) < 0.5, np.where(gt == 1000, 7, gt), 299).astype(np.uint16)
    Image.fromarray(gt).save(gt_dir / "000139_labelTrainIds.png")
    Image.fromarray(pred).save(pred_dir / "000139_labels.png")
    out = tmp_path / "r.json"
    assert (
        _run(
            [
                "eval",
                "--pred-dir",
                pred_dir,
                "--gt-dir",
                gt_dir,
                "--num-classes",
                300,
                "--ignore-index",
                1000,
                "--out",
                out,
            ]
        )
        == 0
    )
    _check_report(out, [(pred.astype(np.int64), np.where(gt == 1000, -1, gt.astype(np.int64)))], 300)


def _write_pair(tmp_path, gt, pred, name="a"):
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir(exist_ok=True)
    gt_dir.mkdir(exist_ok=True)
    Image.fromarray(np.array(gt, np.uint8)).save(gt_dir / f"{name}.png")
    Image.fromarray(np.array(pred, np.uint8)).save(pred_dir / f"{name}_labels.png")
    return pred_dir, gt_dir


def _table_rows(text):
    """``{name: (iou, acc)}`` from the printed per-class table (percent; None for nan)."""
    rows = {}
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 4 and parts[0].isdigit() and "mIoU" not in line:
            rows[" ".join(parts[1:-2])] = tuple(None if v == "nan" else float(v) for v in parts[-2:])
    return rows


def test_reduce_zero_label_and_class_names(tmp_path, capsys):
    # ADE20K-style ground truth: 0 = ignore, class k stored as k + 1, 255 = ignore
    gt = [[0, 1, 1, 2], [3, 3, 255, 4]]
    pred = [[3, 0, 1, 1], [2, 0, 0, 3]]
    pred_dir, gt_dir = _write_pair(tmp_path, gt, pred)
    names = tmp_path / "classes.txt"
    names.write_text("wall\nbuilding\nsky\nfloor\n")
    out = tmp_path / "r.json"
    # scored pixels: the six whose truth is not 0 / 255; by hand per class (I, U):
    # 0: truth (0,1),(0,2), predicted (0,1),(1,1) -> 1/3;  1: truth (0,3), predicted (0,2),(0,3) -> 1/2
    # 2: truth (1,0),(1,1), predicted (1,0) -> 1/2;       3: truth (1,3), predicted (1,3) -> 1
    assert (
        _run(
            [
                "eval",
                "--pred-dir",
                pred_dir,
                "--gt-dir",
                gt_dir,
                "--reduce-zero-label",
                "--class-names",
                names,
                "--out",
                out,
            ]
        )
        == 0
    )
    doc = json.loads(out.read_text())
    assert [c["name"] for c in doc["per_class"]] == ["wall", "building", "sky", "floor"]
    assert [c["iou"] for c in doc["per_class"]] == pytest.approx([1 / 3, 1 / 2, 1 / 2, 1])
    assert doc["mIoU"] == pytest.approx((1 / 3 + 1 / 2 + 1 / 2 + 1) / 4)
    assert doc["aAcc"] == pytest.approx(4 / 6)
    assert doc["reduce_zero_label"] is True
    assert doc["num_classes"] == 4
    rows = _table_rows(capsys.readouterr().out)
    assert rows == {"wall": (33.33, 50.0), "building": (50.0, 100.0), "sky": (50.0, 50.0), "floor": (100.0, 100.0)}
    # without the flag the stored value 4 is not a class of 4 (0..3): a one-line error saying so
    _fails(
        capsys,
        ["eval", "--pred-dir", pred_dir, "--gt-dir", gt_dir, "--num-classes", 4, "--out", out],
        "label value(s) 4 out of range",
    )
    # --num-classes must agree with the names file
    _fails(
        capsys,
        ["eval", "--pred-dir", pred_dir, "--gt-dir", gt_dir, "--class-names", names, "--num-classes", 5],
        "names 4 classes",
    )


def test_ade20k_label_maps_by_dataset_name(tmp_path, capsys):
    # real ADE20K annotation values: 1..150 are the classes, 0 is ignored; predictions are 0..149 as segment writes them
    gt = [[0, 1], [2, 150]]
    pred = [[5, 0], [0, 149]]
    pred_dir, gt_dir = _write_pair(tmp_path, gt, pred, "ADE_val_00000001")
    out = tmp_path / "r.json"
    assert _run(["eval", "--pred-dir", pred_dir, "--gt-dir", gt_dir, "--dataset", "ade20k", "--out", out]) == 0
    doc = json.loads(out.read_text())
    # wall: truth (0,1), predicted (0,1),(1,0) -> 1/2; building: truth (1,0), never predicted -> 0; flag: 1;
    # class 5 is predicted only on an ignored pixel: no union, left out of the mean
    iou = {c["name"]: c["iou"] for c in doc["per_class"]}
    assert (iou["wall"], iou["building"], iou["flag"], iou["base"]) == (pytest.approx(0.5), 0.0, 1.0, None)
    assert doc["mIoU"] == pytest.approx(0.5)
    assert doc["dataset"] == "ade20k"
    assert doc["reduce_zero_label"] is True
    rows = _table_rows(capsys.readouterr().out)
    assert len(rows) == 150
    assert rows["wall"] == (50.0, 100.0)
    assert rows["flag"] == (100.0, 100.0)
    assert rows["sky"] == (None, None)


def _label_dirs(tmp_path, gt_arrays, pred_arrays):
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir(exist_ok=True)
    gt_dir.mkdir(exist_ok=True)
    for name, a in gt_arrays.items():
        Image.fromarray(a).save(gt_dir / name)
    for name, a in pred_arrays.items():
        Image.fromarray(a).save(pred_dir / name)
    return pred_dir, gt_dir


@pytest.mark.parametrize(
    "gt,pred,extra,message",
    [
        ({"a.png": np.zeros((4, 4), np.uint8)}, {}, [], "no prediction for a.png"),
        (
            {"a.png": np.zeros((4, 4), np.uint8)},
            {"a.png": np.zeros((4, 4), np.uint8), "a_labels.png": np.zeros((4, 4), np.uint8)},
            [],
            "several predictions",
        ),
        ({"a.png": np.zeros((4, 4), np.uint8)}, {"a_labels.png": np.zeros((4, 5), np.uint8)}, [], "same size"),
        (
            {"a.png": np.zeros((4, 4), np.uint8)},
            {"a_labels.png": np.full((4, 4), 7, np.uint8)},
            [],
            "label value(s) 7 out of range",
        ),
        (
            {"a.png": np.full((4, 4), 9, np.uint8)},
            {"a_labels.png": np.zeros((4, 4), np.uint8)},
            [],
            "label value(s) 9 out of range",
        ),
        ({"a.png": np.zeros((4, 4, 3), np.uint8)}, {"a_labels.png": np.zeros((4, 4), np.uint8)}, [], "not a label map"),
        (
            {"a.png": np.zeros((4, 4), np.uint8)},
            {"a_labels.png": np.zeros((4, 4), np.uint8)},
            ["--ignore-index", "2"],
            "--ignore-index",
        ),
        (
            {"a.png": np.zeros((4, 4), np.uint8)},
            {"a_labels.png": np.zeros((4, 4), np.uint8)},
            ["--num-classes", "0"],
            "--num-classes",
        ),
        ({"x.txt": None}, {}, [], "no ground-truth label maps"),
    ],
)
def test_label_maps_bad_input(tmp_path, capsys, gt, pred, extra, message):
    if "x.txt" in gt:
        pred_dir, gt_dir = _label_dirs(tmp_path, {}, {})
        (gt_dir / "x.txt").write_text("x")
    else:
        pred_dir, gt_dir = _label_dirs(tmp_path, gt, pred)
    out = tmp_path / "r.json"
    args = ["eval", "--pred-dir", pred_dir, "--gt-dir", gt_dir, "--num-classes", "5", "--out", out] + extra
    _fails(capsys, args, message, out)


def test_mode_errors(tmp_path, capsys):
    _fails(capsys, ["eval"], "nothing to evaluate")
    _fails(capsys, ["eval", "--pred-dir", tmp_path, "--num-classes", "3"], "--gt-dir")
    _fails(
        capsys,
        ["eval", "--pred-dir", tmp_path / "nope", "--gt-dir", tmp_path, "--num-classes", "3"],
        "--pred-dir folder not found",
    )
    _fails(
        capsys,
        ["eval", "--root", tmp_path, "--pred-dir", tmp_path, "--gt-dir", tmp_path, "--num-classes", "3"],
        "not both (got --root and --pred-dir)",
    )
    _fails(
        capsys,
        ["eval", "--pred-dir", tmp_path, "--gt-dir", tmp_path],
        "needs the classes: --dataset NAME, --class-names FILE or --num-classes N",
    )
    _fails(
        capsys,
        ["eval", "--dataset", "ade20k", "--pred-dir", tmp_path, "--gt-dir", tmp_path, "--num-classes", "3"],
        "ade20k has 150 classes",
    )
    _fails(
        capsys,
        ["eval", "--dataset", "coco-stuff", "--pred-dir", tmp_path, "--gt-dir", tmp_path, "--reduce-zero-label"],
        "drop --reduce-zero-label",
    )
    _fails(
        capsys,
        ["eval", "--dataset", "ade20k", "--pred-dir", tmp_path, "--gt-dir", tmp_path, "--class-names", "x.txt"],
        "drop --class-names",
    )
    _fails(
        capsys,
        [
            "eval",
            "--pred-dir",
            tmp_path,
            "--gt-dir",
            tmp_path,
            "--num-classes",
            "3",
            "--reduce-zero-label",
            "--ignore-index",
            "3",
        ],
        "in 4..65535 (got 3)",
    )
    _fails(capsys, ["eval", "--dataset", "ade20k", "--root", tmp_path], "needs --checkpoint")
    _fails(
        capsys,
        ["eval", "--dataset", "cityscapes", "--root", tmp_path, "--checkpoint", "x"],
        "unknown dataset 'cityscapes'",
    )


# --------------------------------------------------------------------------------------------
# --dataset on each layout


LAYOUTS = {
    # name: (image dir, label dir, label suffix, raw label values, raw -> class index (-1 ignore), classes)
    "ade20k": (
        "ADEChallengeData2016/images/validation",
        "ADEChallengeData2016/annotations/validation",
        "",
        np.arange(0, 151),
        lambda v: v - 1,
        len(ADE20K_CLASSES),
    ),
    "coco-stuff": (
        "images/val2017",
        "annotations/val2017",
        "_labelTrainIds",
        np.r_[np.arange(171), 255],
        lambda v: np.where(v == 255, -1, v),
        len(COCO_STUFF_CLASSES),
    ),
    "coco-stuff-27": (
        "images/val2017",
        "annotations/val2017",
        "_labelTrainIds",
        np.r_[np.arange(171), 255],
        lambda v: np.array(
            [
                -1 if x == 255 else next(i for i, c in enumerate(COCO_STUFF_27) if COCO_STUFF_CLASSES[x] in c.fine)
                for x in v.ravel()
            ]
        ).reshape(v.shape),
        27,
    ),
    "coco-stuff-unseen15": (
        "images/val2017",
        "annotations/val2017",
        "_labelTrainIds",
        np.r_[np.arange(171), 255],
        lambda v: np.array(
            [
                COCO_UNSEEN_15.index(COCO_STUFF_CLASSES[x])
                if x != 255 and COCO_STUFF_CLASSES[x] in COCO_UNSEEN_15
                else -1
                for x in v.ravel()
            ]
        ).reshape(v.shape),
        15,
    ),
}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, bpe_dir):
    return save_tiny_bundle(tmp_path_factory.mktemp("model") / "tiny.safetensors", bpe_dir=bpe_dir)


def _make_dataset(root, name, sizes=((96, 128), (80, 80))):
    img_dir, lbl_dir, suffix, values, _, _ = LAYOUTS[name]
    os.makedirs(root / img_dir)
    os.makedirs(root / lbl_dir)
    rng = np.random.default_rng(len(name))
    files = []
    for i, (h, w) in enumerate(sizes):
        key = f"{i:012d}"
        img = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        if name == "coco-stuff-unseen15":  # make sure unseen classes occur
            values = np.r_[[COCO_STUFF_CLASSES.index(c) for c in COCO_UNSEEN_15], 0, 255]
        lbl = _blocky(rng, h, w, values.astype(np.uint8))
        Image.fromarray(img).save(root / img_dir / f"{key}.jpg", quality=95)
        Image.fromarray(lbl).save(root / lbl_dir / f"{key}{suffix}.png")
        files.append((root / img_dir / f"{key}.jpg", lbl))
    return files


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_dataset_layouts(tmp_path, bundle, bpe_dir, name):
    files = _make_dataset(tmp_path / "data", name)
    spec = get_dataset(name)
    root = tmp_path / "data"
    if name == "coco-stuff-27":  # word-list class embeddings: checked in test_eval_datasets.py
        seg = dataset_segmenter(spec, bundle, bpe_dir)
    else:
        seg = Segmenter.load(bundle, categories=list(spec.categories), bpe_dir=bpe_dir, device="cpu")
    remap, n = LAYOUTS[name][4], LAYOUTS[name][5]
    pairs = [(seg.segment(str(img)).labels, remap(lbl.astype(np.int64))) for img, lbl in files]
    out = tmp_path / "r.json"
    assert (
        _run(["eval", "--dataset", name, "--root", root, "--checkpoint", bundle, "--bpe-dir", bpe_dir, "--out", out])
        == 0
    )
    doc = _check_report(out, pairs, n)
    assert doc["images"] == 2
    assert doc["num_classes"] == n
    assert [c["name"] for c in doc["per_class"]] == list(spec.categories)
    assert doc["protocol"]["knn_iters"] == 25
    assert "without_knn" in doc
    assert doc["protocol"]["knn_backend"] == ("faiss" if faiss_available() else "torch")


def test_segment_outputs_score_like_dataset_mode(tmp_path, bundle, bpe_dir):
    """segment's label maps scored with --pred-dir/--gt-dir equal eval --dataset coco-stuff."""
    _make_dataset(tmp_path / "data", "coco-stuff")
    root = tmp_path / "data"
    seg_out = tmp_path / "seg"
    cats = ", ".join(COCO_STUFF_CLASSES)
    assert (
        _run(
            [
                "segment",
                root / "images/val2017",
                "--checkpoint",
                bundle,
                "--bpe-dir",
                bpe_dir,
                "--categories",
                cats,
                "--out",
                seg_out,
            ]
        )
        == 0
    )
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert (
        _run(
            ["eval", "--pred-dir", seg_out, "--gt-dir", root / "annotations/val2017", "--num-classes", 171, "--out", a]
        )
        == 0
    )
    assert (
        _run(
            [
                "eval",
                "--dataset",
                "coco-stuff",
                "--root",
                root,
                "--checkpoint",
                bundle,
                "--bpe-dir",
                bpe_dir,
                "--out",
                b,
                "--limit",
                5,
            ]
        )
        == 0
    )
    da, db = json.loads(a.read_text()), json.loads(b.read_text())
    areas = lambda d: [(c["intersect"], c["union"], c["pred"], c["label"]) for c in d["per_class"]]  # noqa: E731
    assert areas(da) == areas(db)
    assert da["mIoU"] == db["mIoU"]
    assert da["images"] == db["images"] == 2


def test_dataset_bad_input(tmp_path, capsys, bundle, bpe_dir):
    base = ["--checkpoint", bundle, "--bpe-dir", bpe_dir]
    out = tmp_path / "r.json"
    _fails(
        capsys,
        ["eval", "--dataset", "ade20k", "--root", tmp_path / "nope", "--out", out] + base,
        "dataset folder not found",
        out,
    )
    _fails(
        capsys,
        ["eval", "--dataset", "coco-stuff", "--root", tmp_path, "--out", out] + base,
        "expected images/val2017/ and annotations/val2017/",
        out,
    )
    files = _make_dataset(tmp_path / "ade", "ade20k")
    root = tmp_path / "ade"
    lbl_dir = root / LAYOUTS["ade20k"][1]
    img_dir = root / LAYOUTS["ade20k"][0]
    _fails(capsys, ["eval", "--dataset", "ade20k", "--root", root, "--limit", "0", "--out", out] + base, "--limit", out)
    # label with a value that ADE20K does not have
    Image.fromarray(np.full((96, 128), 151, np.uint8)).save(lbl_dir / "000000000000.png")
    _fails(
        capsys,
        ["eval", "--dataset", "ade20k", "--root", root, "--out", out] + base,
        "label value(s) 151 out of range (expected 0 (ignore), 1..150 or 255 (ignore))",
        out,
    )
    # label / image size mismatch
    Image.fromarray(np.ones((50, 128), np.uint8)).save(lbl_dir / "000000000000.png")
    _fails(capsys, ["eval", "--dataset", "ade20k", "--root", root, "--out", out] + base, "same size", out)
    # image without label, label without image
    os.remove(lbl_dir / "000000000000.png")
    _fails(
        capsys,
        ["eval", "--dataset", "ade20k", "--root", root, "--out", out] + base,
        "1 image(s) have no label map",
        out,
    )
    os.remove(files[0][0])
    Image.fromarray(np.ones((96, 128), np.uint8)).save(lbl_dir / "000000000000.png")
    _fails(
        capsys,
        ["eval", "--dataset", "ade20k", "--root", root, "--out", out] + base,
        "1 label map(s) have no image",
        out,
    )
    assert os.listdir(img_dir) == ["000000000001.jpg"]
