"""Hostile input: inputs that expand to the same file many times, and every CLI entry point driven
with generated paths, URLs, sizes, category lists and option values."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from ifseg_deploy.cli.common import expand_images


def _photo(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(path)
    return path


def test_symlink_loops_and_repeats_yield_each_file_once(tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    _photo(photos / "a.png")
    _photo(photos / "sub" / "b.png", 1)
    (photos / "sub" / "up").symlink_to(photos, target_is_directory=True)  # a loop: sub/up/sub/up/...
    (photos / "alias.png").symlink_to(photos / "a.png")
    monkeypatch.chdir(tmp_path)
    found = expand_images(["photos/**/*.png", "photos", str(photos / "a.png"), "photos/sub/b.png"])
    assert sorted(os.path.realpath(p) for p in found.paths) == sorted(str(p) for p in (photos / "a.png", photos / "sub" / "b.png"))
    assert found.repeats >= 4 and found.problems == []


def test_segment_reports_the_repeats_it_skipped(tmp_path, monkeypatch, capsys, bpe_dir):
    from conftest import save_tiny_bundle
    from ifseg_deploy.cli.main import main

    photos = tmp_path / "photos"
    _photo(photos / "a.png")
    (photos / "loop").symlink_to(photos, target_is_directory=True)
    model = save_tiny_bundle(tmp_path / "tiny.safetensors", bpe_dir=bpe_dir)
    monkeypatch.chdir(tmp_path)
    assert main(["segment", "photos/**/*.png", "--checkpoint", model, "--bpe-dir", bpe_dir, "--out", "out", "--device", "cpu",
                 "--knn-iters", "1"]) == 0
    out = capsys.readouterr().out
    assert sum(line.startswith("image ") for line in out.splitlines()) == 1 and "skipped" in out and "repeated input" in out
    assert [p.name for p in (tmp_path / "out").glob("*_labels.png")] == ["a_labels.png"]
