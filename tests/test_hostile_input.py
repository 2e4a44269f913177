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
    assert sorted(os.path.realpath(p) for p in found.paths) == sorted(
        str(p) for p in (photos / "a.png", photos / "sub" / "b.png")
    )
    assert found.repeats >= 4
    assert found.problems == []


def test_segment_reports_the_repeats_it_skipped(tmp_path, monkeypatch, capsys, bpe_dir):
    from conftest import save_tiny_bundle

    from ifseg_deploy.cli.main import main

    photos = tmp_path / "photos"
    _photo(photos / "a.png")
    (photos / "loop").symlink_to(photos, target_is_directory=True)
    model = save_tiny_bundle(tmp_path / "tiny.safetensors", bpe_dir=bpe_dir)
    monkeypatch.chdir(tmp_path)
    assert (
        main(
            [
                "segment",
                "photos/**/*.png",
                "--checkpoint",
                model,
                "--bpe-dir",
                bpe_dir,
                "--out",
                "out",
                "--device",
                "cpu",
                "--knn-iters",
                "1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert sum(line.startswith("image ") for line in out.splitlines()) == 1
    assert "skipped" in out
    assert "repeated input" in out
    assert [p.name for p in (tmp_path / "out").glob("*_labels.png")] == ["a_labels.png"]


# -- every entry point, generated arguments ------------------------------------------------------------

from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

#: Paths relative to the test's working folder: missing, a folder, a file of another kind, here, above.
PATHS = st.sampled_from(
    [
        "missing.pt",
        "in",
        "in/",
        "in/notes.txt",
        "in/photo.png",
        ".",
        "..",
        "out/a",
        "out/a.onnx",
        "out/r.json",
        "out/v.mp4",
        "/proc/1/x/y",
        "in/notes.txt/sub",
        "",
        " ",
        "-",
        "é/ü.png",
        "a" * 300,
    ]
)
URLS = st.sampled_from(
    [
        "rtsp://user:S3cretPw@127.0.0.1:1/cam",
        "http://user:S3cretPw@127.0.0.1:1/x",
        "grpc://127.0.0.1:1",
        "ftp://x",
        "grpc://user:S3cretPw@[::1]:1",
        "not a url",
    ]
)
NUMBERS = st.sampled_from(
    ["0", "-1", "1", "3", "16", "1e9", "nan", "inf", "-inf", "99999999999999999999", "x", "", "512x683", "0x0", "17,5"]
)
CATEGORIES = st.one_of(
    st.sampled_from(
        [
            "",
            ",",
            "a",
            "a, a",
            "A, a",
            "cat, dog",
            "animal: cat, dog; plant: grass",
            ":",
            ";;",
            "x:",
            "cat,,dog",
            "草, 猫",
        ]
    ),
    st.text(max_size=40),
)
OPTIONS = {
    "segment": [
        "--checkpoint",
        "--engine",
        "--server",
        "--out",
        "--categories",
        "--categories-file",
        "--bpe-dir",
        "--imgsz",
        "--batch",
        "--alpha",
        "--window",
        "--knn-k",
        "--knn-iters",
        "--device",
        "--font",
        "--timeout",
        "--precision",
    ],
    "export": [
        "--checkpoint",
        "--out",
        "--format",
        "--imgsz",
        "--batch",
        "--categories",
        "--precision",
        "--calib-dir",
        "--profile",
        "--opset",
        "--tolerance",
        "--knn-k",
        "--imgsz-from",
        "--bpe-dir",
    ],
    "bench": [
        "--checkpoint",
        "--server",
        "--json",
        "--iters",
        "--warmup",
        "--batch",
        "--imgsz",
        "--source",
        "--source-size",
        "--clients",
        "--timeout",
        "--num-classes",
    ],
    "eval": [
        "--pred-dir",
        "--gt-dir",
        "--num-classes",
        "--out",
        "--dataset",
        "--root",
        "--checkpoint",
        "--limit",
        "--ignore-index",
    ],
    "train": [
        "--checkpoint",
        "--out",
        "--categories",
        "--steps",
        "--batch-size",
        "--lr",
        "--dropout",
        "--holdout-size",
        "--bpe-dir",
        "--save-every",
        "--device",
    ],
    "stream": [
        "--checkpoint",
        "--server",
        "--save",
        "--save-json",
        "--save-labels",
        "--categories",
        "--vid-stride",
        "--max-frames",
        "--reconnect",
        "--alpha",
        "--timeout",
    ],
    "info": [],
}
VALUES = {
    "--server": URLS,
    "--categories": CATEGORIES,
    "--timeout": st.sampled_from(["0.2", "0", "-1", "nan"]),
    "--reconnect": st.sampled_from(["0", "-1"]),
    "--iters": st.sampled_from(["-1", "0", "1"]),
    "--steps": st.sampled_from(["-1", "0", "1"]),
    "--max-frames": st.sampled_from(["-1", "0", "1"]),
}
MODEL = "model/tiny.safetensors"
NUMERIC = {
    "--imgsz",
    "--batch",
    "--alpha",
    "--window",
    "--knn-k",
    "--knn-iters",
    "--opset",
    "--tolerance",
    "--warmup",
    "--clients",
    "--num-classes",
    "--limit",
    "--ignore-index",
    "--batch-size",
    "--lr",
    "--dropout",
    "--holdout-size",
    "--save-every",
    "--vid-stride",
    "--source-size",
}


@st.composite
def command_lines(draw):
    command = draw(st.sampled_from(sorted(OPTIONS)))
    argv = [command]
    if command in ("segment", "info", "stream"):
        argv.append(draw(st.one_of(PATHS, URLS) if command == "stream" else PATHS))
    for flag in draw(st.lists(st.sampled_from(OPTIONS[command]), unique=True, max_size=5)) if OPTIONS[command] else []:
        if flag in VALUES:
            value = VALUES[flag]
        elif flag == "--checkpoint" and command in ("segment", "bench", "stream"):
            value = st.one_of(PATHS, st.just(MODEL))  # a real model: the writers run
        else:
            value = (
                NUMBERS if flag in NUMERIC else st.one_of(PATHS, st.sampled_from(["cpu", "cuda", "fp16", "int8", "x"]))
            )
        argv += [flag, draw(value)]
    return argv


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(argv=command_lines())
def test_generated_command_lines_end_in_one_line(argv, tmp_path, monkeypatch, capsys, bpe_dir):
    """Exit 0, 1 or 2; no traceback and no "unexpected" error; no password printed; nothing written
    outside the output paths the command line names (or the default run folders)."""
    from ifseg_deploy.cli.main import main

    work = tmp_path / "work"
    if not work.exists():
        (work / "in").mkdir(parents=True)
        (work / "in" / "notes.txt").write_text("user notes\n")
        _photo(work / "in" / "photo.png")
        from conftest import save_tiny_bundle

        (work / "model").mkdir()
        save_tiny_bundle(work / MODEL, bpe_dir=bpe_dir)
        for name in ("encoder.json", "vocab.bpe", "dict.txt"):  # found next to the model, as users keep them
            (work / "model" / name).symlink_to(Path(bpe_dir) / name)
    monkeypatch.chdir(work)
    before = _tree(work)
    try:
        code = main(argv)
    except SystemExit as e:  # argparse: usage and one error line
        code = e.code
    captured = capsys.readouterr()
    text = captured.out + captured.err
    event(f"exit {code}")
    assert code in (0, 1, 2), (argv, text)
    assert "Traceback" not in text, (argv, text)
    assert "unexpected" not in text, (argv, text)
    assert "S3cretPw" not in text, (argv, text)
    named = [v for f, v in zip(argv, argv[1:]) if f in ("--out", "--json", "--save", "--save-json", "--save-labels")]
    allowed = tuple(os.path.normpath(v) for v in named if v.strip()) + ("runs",)
    changed = [k for k, v in _tree(work).items() if before.get(k) != v]
    outside = [k for k in changed if not any(k == a or k.startswith(a + "/") for a in allowed)]
    assert not outside, (argv, outside)
    assert (work / "in" / "notes.txt").read_text() == "user notes\n"
