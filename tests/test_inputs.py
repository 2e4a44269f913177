"""Inputs as users have them: many files with bad ones among them, globs, numbered run folders,
every image type of the Python API, category strings, results that draw and save themselves."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from conftest import save_tiny_bundle
from PIL import Image

from ifseg_deploy.cli.main import main
from ifseg_deploy.runtime.segmenter import Segmenter
from ifseg_deploy.visualize.overlay import overlay


@pytest.fixture(scope="module")
def model(tmp_path_factory, bpe_dir):
    return save_tiny_bundle(tmp_path_factory.mktemp("m") / "tiny.safetensors", bpe_dir=bpe_dir)


@pytest.fixture(scope="module")
def segmenter(model, bpe_dir):
    return Segmenter.load(model, bpe_dir=bpe_dir, device="cpu", knn_iters=3)


def _photo(path, h=60, w=90, seed=0):
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)
    return rgb


def _folder(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    _photo(photos / "a.png", seed=1)
    (photos / "b.jpg").write_bytes(b"not a jpeg at all")
    _photo(photos / "c.png", seed=2)
    return photos


def test_bad_file_in_a_folder_does_not_stop_the_rest(tmp_path, capsys, model, bpe_dir):
    photos, out = _folder(tmp_path), tmp_path / "out"
    code = main(
        ["segment", str(photos), "--checkpoint", model, "--bpe-dir", bpe_dir, "--out", str(out), "--device", "cpu"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert sorted(os.listdir(out)) == [
        ".ifseg-deploy",
        "a_labels.png",
        "a_overlay.png",
        "c_labels.png",
        "c_overlay.png",
    ]
    assert len(err) == 2
    assert "b.jpg" in err[0]
    assert "cannot decode" in err[0]
    assert "1 input(s) failed, 2 of 3" in err[1]


def test_quoted_glob_and_missing_inputs(tmp_path, capsys, model, bpe_dir):
    photos, out = _folder(tmp_path), tmp_path / "out"
    code = main(
        [
            "segment",
            str(photos / "*.png"),
            str(tmp_path / "missing.png"),
            "--checkpoint",
            model,
            "--bpe-dir",
            bpe_dir,
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert code == 1
    assert "input not found" in capsys.readouterr().err
    assert sorted(f for f in os.listdir(out) if f.endswith("_labels.png")) == ["a_labels.png", "c_labels.png"]


def test_nothing_to_do_creates_no_folder(tmp_path, capsys, model, bpe_dir):
    out = tmp_path / "out"
    code = main(
        ["segment", str(tmp_path / "nothing*.png"), "--checkpoint", model, "--bpe-dir", bpe_dir, "--out", str(out)]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0
    assert "no file matches" in err
    assert not out.exists()
    (tmp_path / "bad.png").write_bytes(b"x")
    code = main(
        [
            "segment",
            str(tmp_path / "bad.png"),
            "--checkpoint",
            model,
            "--bpe-dir",
            bpe_dir,
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert code == 1
    assert not out.exists()


def test_runs_are_numbered_unless_exist_ok(tmp_path, monkeypatch, capsys, model, bpe_dir):
    _photo(tmp_path / "p.png")
    monkeypatch.chdir(tmp_path)
    args = ["segment", "p.png", "--checkpoint", model, "--bpe-dir", bpe_dir]
    assert main(args) == 0
    assert main(args) == 0
    assert main(args + ["--exist-ok"]) == 0
    out = capsys.readouterr().out
    assert "--device auto: using cpu" in out
    assert sorted(os.listdir(tmp_path / "runs")) == ["segment", "segment2"]
    assert "Results saved to runs/segment2" in out
    assert out.strip().endswith("Results saved to runs/segment")


def test_every_api_image_type_gives_the_same_labels(tmp_path, segmenter):
    rgb = _photo(tmp_path / "p.png", 50, 70, seed=3)
    ref = segmenter.segment(str(tmp_path / "p.png"))
    chw = torch.from_numpy(rgb).permute(2, 0, 1).contiguous()
    inputs = [
        tmp_path / "p.png",
        rgb,
        Image.fromarray(rgb),
        chw,
        torch.from_numpy(rgb),
        chw.float() / 255,
        rgb.astype(np.float64) / 255,
    ]
    for image in inputs:
        np.testing.assert_array_equal(segmenter.segment(image).labels, ref.labels)
    gray = rgb[..., 0]
    np.testing.assert_array_equal(segmenter.segment(gray).labels, segmenter.segment(np.stack([gray] * 3, -1)).labels)


@pytest.mark.parametrize(
    "bad, message",
    [
        ("not an image", "not found"),
        (np.zeros((4, 4, 3), np.int32), "dtype"),
        (np.full((4, 4, 3), 2.0), "[0, 1]"),
        (np.zeros((4, 4, 4), np.uint8), "shape"),
        (3.5, "unsupported image type"),
    ],
)
def test_bad_api_images_are_one_line_errors(segmenter, bad, message):
    from ifseg_deploy.errors import IFSegError

    with pytest.raises(IFSegError, match=None) as e:
        segmenter.segment(bad)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_category_string_plot_and_save(tmp_path, segmenter):
    rgb = _photo(tmp_path / "p.png", seed=4)
    segmenter.set_categories("grass, cat ,dog")
    assert segmenter.categories == ["grass", "cat", "dog"]
    res = segmenter.segment(rgb)
    segmenter.set_categories(["grass", "cat", "dog"])
    np.testing.assert_array_equal(segmenter.segment(rgb).probs, res.probs)
    np.testing.assert_array_equal(res.plot(alpha=0.3), overlay(rgb, res.labels, ["grass", "cat", "dog"], 0.3, False))
    written = res.save(str(tmp_path / "out"), "p", raw=True)
    assert [os.path.basename(p) for p in written] == ["p_labels.png", "p_overlay.png", "p_logits.npy", "p_probs.npy"]
    np.testing.assert_array_equal(np.asarray(Image.open(written[0])), res.labels)
    np.testing.assert_array_equal(np.load(written[3]), res.probs)


def test_word_lists_in_categories_and_files(tmp_path, model, bpe_dir):
    """`--categories "animal: cat, dog; grass"` and the same list in a file give the API's result
    with class_words; the built-in coco-stuff-27 file gives 27 classes."""
    rgb = _photo(tmp_path / "p.png", seed=5)
    (tmp_path / "classes.txt").write_text("# mine\nanimal: cat, dog\r\ngrass\r\n", encoding="utf-8-sig")
    api = Segmenter.load(model, ["animal", "grass"], bpe_dir, "cpu", class_words={"animal": ["cat", "dog"]}).segment(
        rgb
    )
    plain = Segmenter.load(model, ["animal", "grass"], bpe_dir, "cpu").segment(rgb)
    assert not np.allclose(api.probs, plain.probs)  # the word lists matter
    for i, spec in enumerate(
        (["--categories", "animal: cat, dog; grass"], ["--categories-file", str(tmp_path / "classes.txt")])
    ):
        out = tmp_path / f"o{i}"
        assert (
            main(
                [
                    "segment",
                    str(tmp_path / "p.png"),
                    "--checkpoint",
                    model,
                    "--bpe-dir",
                    bpe_dir,
                    "--out",
                    str(out),
                    "--device",
                    "cpu",
                    "--save-raw",
                    *spec,
                ]
            )
            == 0
        )
        np.testing.assert_allclose(np.load(out / "p_probs.npy"), api.probs, atol=1e-6)
    out = tmp_path / "coco"
    assert (
        main(
            [
                "segment",
                str(tmp_path / "p.png"),
                "--checkpoint",
                model,
                "--bpe-dir",
                bpe_dir,
                "--out",
                str(out),
                "--device",
                "cpu",
                "--save-raw",
                "--categories-file",
                "coco-stuff-27",
            ]
        )
        == 0
    )
    assert np.load(out / "p_probs.npy").shape[-1] == 27


def test_categories_and_file_together_is_an_error(tmp_path, capsys, model, bpe_dir):
    _photo(tmp_path / "p.png")
    code = main(
        [
            "segment",
            str(tmp_path / "p.png"),
            "--checkpoint",
            model,
            "--bpe-dir",
            bpe_dir,
            "--categories",
            "a, b",
            "--categories-file",
            "coco-stuff-27",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2
    assert "either --categories or --categories-file" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
