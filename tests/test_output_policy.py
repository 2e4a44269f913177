"""The output policy of every writer: the user's files next to or inside an output path are never
removed or replaced, folders holding other files are refused (or, with --exist-ok, written beside),
runs never share a folder, and bad output paths fail before any work with one line."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import save_tiny_bundle
from PIL import Image

from ifseg_deploy import fileio
from ifseg_deploy.cli.common import result_names
from ifseg_deploy.cli.main import main
from ifseg_deploy.errors import IFSegError
from ifseg_deploy.fileio import MARKER, ResultFolder, atomic_folder, atomic_path, check_output_file, write_bytes


def _snapshot(folder: Path) -> dict:
    """Every file below ``folder`` (relative path -> sha256), our marker excluded."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = Path(root) / name
            out[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _user_folder(path: Path) -> Path:
    """A folder as a user has it: notes, a photo, an older model in a sub-folder."""
    (path / "old_model").mkdir(parents=True)
    (path / "notes.txt").write_text("my notes\n")
    (path / "old_model" / "model.xml").write_text("<net/>")
    Image.fromarray(np.full((8, 8, 3), 7, np.uint8)).save(path / "photo.png")
    return path


def _read_only_folder(tmp_path: Path) -> str:
    """A folder nothing can be created in (chmod for ordinary users; root ignores modes: a kernel folder)."""
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        return str(folder)
    for cand in ("/sys", "/proc/1"):
        try:
            os.mkdir(os.path.join(cand, "ifseg-probe"))
            os.rmdir(os.path.join(cand, "ifseg-probe"))
        except OSError:
            return cand
    pytest.skip("running as root with no read-only folder to write into (/sys and /proc/1 accept folders here)")


def _one_error(capsys, code: int, *words: str) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error: "), err
    assert "\n" not in err, err
    assert "unexpected" not in err, err
    for w in words:
        assert w in err, err
    return err


@pytest.fixture(scope="module")
def model(tmp_path_factory, bpe_dir):
    return save_tiny_bundle(tmp_path_factory.mktemp("m") / "tiny.safetensors", bpe_dir=bpe_dir)


def _photo(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(path)
    return path


# -- the primitives ---------------------------------------------------------------------------------


def test_files_are_replaced_only_by_their_own_kind(tmp_path):
    notes = tmp_path / "m.onnx"
    notes.write_text("my notes, not a model")
    with pytest.raises(IFSegError, match="exists and is not an ONNX model"):
        check_output_file(str(notes), "--out")
    assert notes.read_text() == "my notes, not a model"
    png = tmp_path / "a.png"
    fileio.write_png(str(png), np.zeros((4, 4), np.uint8))
    fileio.write_png(str(png), np.ones((4, 4), np.uint8))  # a PNG replaced by a PNG
    assert np.asarray(Image.open(png)).max() == 1
    with pytest.raises(IFSegError, match="is not a JSON file"):
        write_bytes(str(png), b"{}", "json")
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"")
    write_bytes(str(empty), b"{}\n", "json")  # an empty file holds nothing to lose
    assert empty.read_bytes() == b"{}\n"


@pytest.mark.parametrize("path", ["folder", "folder/", "new/"])
def test_folder_paths_are_refused_for_files(tmp_path, path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(IFSegError, match="is a folder; give a file name"):
        check_output_file(str(tmp_path / path) + ("/" if path.endswith("/") else ""), "--json", "json")
    assert not (tmp_path / "new").exists()


def test_failed_write_leaves_nothing_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "r.json"
    target.write_text('{"old": 1}')
    with pytest.raises(RuntimeError):
        with atomic_path(str(target), "json") as tmp:
            Path(tmp).write_text("{")
            raise RuntimeError("stopped half-way")
    assert target.read_text() == '{"old": 1}'
    assert sorted(os.listdir(tmp_path)) == ["r.json"]


def test_read_only_parent_fails_fast(tmp_path):
    ro = _read_only_folder(tmp_path)
    with pytest.raises(IFSegError, match="cannot write there"):
        check_output_file(os.path.join(ro, "sub", "m.onnx"), "--out")
    with pytest.raises(IFSegError, match="cannot write there"):
        ResultFolder(os.path.join(ro, "runs"), "--out")
    with pytest.raises(IFSegError, match="cannot write there"):
        fileio.check_output_folder(os.path.join(ro, "m_openvino"), "--out", "openvino")


def test_result_folder_refuses_foreign_files_unless_exist_ok(tmp_path):
    user = _user_folder(tmp_path / "user")
    before = _snapshot(user)
    with pytest.raises(IFSegError, match="already holds files ifseg-deploy did not write.*exist_ok=True"):
        ResultFolder(str(user), "--out")
    beside = ResultFolder(str(user), "--out", exist_ok=True)
    write_bytes(beside.file("new_labels.png"), b"\x89PNG\r\n\x1a\n")
    with pytest.raises(IFSegError, match="was not written by ifseg-deploy"):
        beside.file("photo.png")  # never replaced, even by a PNG
    assert {k: v for k, v in _snapshot(user).items() if k != "new_labels.png"} == before
    assert not (user / MARKER).exists()  # the user's folder is not claimed


def test_result_folder_is_created_late_marked_and_reused(tmp_path):
    out = ResultFolder(str(tmp_path / "res"), "--out")
    assert not (tmp_path / "res").exists()  # nothing written yet: no folder
    write_bytes(out.file("x/a_labels.png"), b"\x89PNG\r\n\x1a\n")
    assert json.loads((tmp_path / "res" / MARKER).read_text())["written_by"] == "ifseg-deploy"
    again = ResultFolder(str(tmp_path / "res"), "--out")  # a marked folder: an earlier run's results
    write_bytes(again.file("x/a_labels.png"), b"\x89PNG\r\n\x1a\n2")
    with pytest.raises(IFSegError, match="leaves the output folder"):
        again.file("../escape.png")


def test_numbered_run_folders_are_claimed_exclusively(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folders, barrier = [], threading.Barrier(8)

    def claim():
        barrier.wait()
        folders.append(ResultFolder("runs/segment", numbered=True).create())

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(folders) == sorted(["runs/segment"] + [f"runs/segment{n}" for n in range(2, 9)])


def test_model_folder_replaced_only_when_it_holds_nothing_else(tmp_path, monkeypatch):
    target = tmp_path / "m_openvino"

    def export(text: str) -> None:
        with atomic_folder(str(target), "--out", "openvino") as stage:
            Path(stage, "m.xml").write_text(text)
            os.makedirs(os.path.join(stage, "sub"))
            Path(stage, "sub", "w.bin").write_text(text)

    export("one")
    export("two")  # our own earlier export: replaced
    assert (target / "m.xml").read_text() == "two"
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]
    (target / "sub" / "mine.txt").write_text("user file")
    with pytest.raises(IFSegError, match="not an ifseg-deploy openvino export"):
        export("three")
    assert (target / "sub" / "mine.txt").read_text() == "user file"
    assert (target / "m.xml").read_text() == "two"
    user = _user_folder(tmp_path / "exports")
    before = _snapshot(user)
    with pytest.raises(IFSegError, match="already holds files"):
        with atomic_folder(str(user), "--out", "openvino"):
            raise AssertionError("the check runs before any work")
    assert _snapshot(user) == before
    monkeypatch.chdir(user)
    for here in (".", ".."):
        with pytest.raises(IFSegError, match="the current folder or one above it"):
            fileio.check_output_folder(here, "--out", "triton")
    assert _snapshot(user) == before


def test_symlinked_model_folder_writes_its_target(tmp_path):
    real = tmp_path / "disk" / "ir"
    real.mkdir(parents=True)
    link = tmp_path / "ir_link"
    link.symlink_to(real, target_is_directory=True)
    with atomic_folder(str(link), "--out", "openvino") as stage:
        Path(stage, "m.xml").write_text("x")
    assert link.is_symlink()
    assert (real / "m.xml").read_text() == "x"


def test_result_names_never_collide():
    names = result_names(["x/a.png", "y/a.png", "a_1.png", "a.png", "a.jpg", "A.PNG", "a_png.bmp"])
    assert names[:3] == ["x/a", "y/a", "a_1"]
    assert len({n.casefold() for n in names}) == len(names)
    assert result_names(["photos/1.jpg", "photos/2.jpg"]) == ["1", "2"]
    assert result_names(["/abs/p/q.png", "/abs/r/q.png"]) == ["p/q", "r/q"]


# -- each writer through the CLI ------------------------------------------------------------------------


def test_segment_same_named_inputs_each_keep_their_results(tmp_path, capsys, model, bpe_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for i, p in enumerate(("x/a.png", "y/a.png", "a_1.png", "a.png", "a.jpg")):
        _photo(tmp_path / p, seed=i)
    code = main(
        [
            "segment",
            "x/a.png",
            "y/a.png",
            "a_1.png",
            "a.png",
            "a.jpg",
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
    out = capsys.readouterr().out
    assert code == 0
    labels = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*_labels.png"))
    assert len(labels) == 5
    assert {"x/a_labels.png", "y/a_labels.png", "a_1_labels.png"} <= set(labels)
    for line in (ln for ln in out.splitlines() if ln.startswith("image ")):
        assert "-> " in line  # where each input's results went


def test_segment_refuses_foreign_folders_and_adds_beside_with_exist_ok(tmp_path, capsys, model, bpe_dir, monkeypatch):
    photo = _photo(tmp_path / "in" / "p.png")
    user = _user_folder(tmp_path / "user")
    before = _snapshot(user)
    args = ["segment", str(photo), "--checkpoint", model, "--bpe-dir", bpe_dir, "--device", "cpu", "--knn-iters", "1"]
    _one_error(capsys, main(args + ["--out", str(user)]), "already holds files", "--exist-ok")
    assert _snapshot(user) == before
    assert main(args + ["--out", str(user), "--exist-ok"]) == 0
    after = _snapshot(user)
    assert {k: after[k] for k in before} == before
    assert "p_labels.png" in after
    # run again beside the user's files: our earlier results are not ours to replace there -> a per-image error
    assert main(args + ["--out", str(user), "--exist-ok"]) == 1
    assert "was not written by ifseg-deploy" in capsys.readouterr().err
    monkeypatch.chdir(user)
    for here in (".", ".."):
        _one_error(capsys, main(args + ["--out", here]), "already holds files")
    assert {k: v for k, v in _snapshot(user).items() if k in before} == before


def test_segment_into_symlinked_and_read_only_folders(tmp_path, capsys, model, bpe_dir):
    photo = _photo(tmp_path / "p.png")
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    args = ["segment", str(photo), "--checkpoint", model, "--bpe-dir", bpe_dir, "--device", "cpu", "--knn-iters", "1"]
    assert main(args + ["--out", str(tmp_path / "link")]) == 0
    assert (real / "p_labels.png").is_file()
    assert (tmp_path / "link").is_symlink()
    ro = _read_only_folder(tmp_path)
    _one_error(capsys, main(args + ["--out", os.path.join(ro, "out")]), "cannot write there")


def test_concurrent_segment_runs_get_their_own_folders(tmp_path, model, bpe_dir):
    _photo(tmp_path / "p.png")
    cmd = [
        sys.executable,
        "-m",
        "ifseg_deploy",
        "segment",
        "p.png",
        "--checkpoint",
        model,
        "--bpe-dir",
        bpe_dir,
        "--device",
        "cpu",
        "--knn-iters",
        "1",
    ]
    procs = [
        subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    saved = sorted(
        line.split()[-1] for out, _ in outs for line in out.splitlines() if line.startswith("Results saved to")
    )
    assert saved == ["runs/segment", "runs/segment2"]
    assert all((tmp_path / s / "p_labels.png").is_file() for s in saved)


def test_export_writers_keep_the_users_files(tmp_path, capsys, model, bpe_dir, monkeypatch):
    user = _user_folder(tmp_path / "exports")
    (user / "m.onnx").write_text("my own notes named like a model")
    before = _snapshot(user)
    base = ["export", "--checkpoint", model, "--bpe-dir", bpe_dir, "--imgsz", "64"]
    _one_error(capsys, main(base + ["--out", str(user / "m.onnx")]), "exists and is not an ONNX model")
    _one_error(capsys, main(base + ["--out", str(user) + "/"]), "must end with .onnx")
    _one_error(capsys, main(base + ["--format", "openvino", "--out", str(user)]), "already holds files")
    _one_error(capsys, main(base + ["--format", "triton", "--out", str(user)]), "already holds files")
    monkeypatch.chdir(user)
    for here in (".", ".."):
        _one_error(capsys, main(base + ["--format", "openvino", "--out", here]), "current folder")
        _one_error(capsys, main(base + ["--format", "triton", "--out", here]), "current folder")
    assert _snapshot(user) == before
    ro = _read_only_folder(tmp_path)
    _one_error(capsys, main(base + ["--out", os.path.join(ro, "m.onnx")]), "cannot write there")
    # an ONNX export beside the user's files adds its two files and changes nothing else
    assert main(base + ["--out", str(user / "new.onnx")]) == 0
    after = _snapshot(user)
    assert {k: after[k] for k in before} == before
    assert set(after) - set(before) == {"new.onnx", "new.vocab.safetensors"}


def test_openvino_export_replaces_only_its_own_folder(tmp_path, capsys, model, bpe_dir):
    pytest.importorskip(
        "openvino", reason="the openvino package is not installed (pip install 'ifseg-deploy[openvino]')"
    )
    parent = _user_folder(tmp_path / "exports")
    before = _snapshot(parent)
    real = tmp_path / "disk" / "ir"
    real.mkdir(parents=True)
    link = parent / "ir"
    link.symlink_to(real, target_is_directory=True)
    base = [
        "export",
        "--checkpoint",
        model,
        "--bpe-dir",
        bpe_dir,
        "--imgsz",
        "64",
        "--format",
        "openvino",
        "--out",
        str(link),
    ]
    assert main(base) == 0
    assert main(base) == 0  # a second export replaces the first
    assert sorted(os.listdir(real)) == [MARKER, "ir.bin", "ir.vocab.safetensors", "ir.xml"]
    assert link.is_symlink()
    (real / "notes.txt").write_text("added by the user")
    _one_error(capsys, main(base), "already holds files")
    assert (real / "notes.txt").read_text() == "added by the user"
    assert {k: v for k, v in _snapshot(parent).items() if not k.startswith("ir/")} == before


def test_report_writers_fail_fast_on_bad_paths(tmp_path, capsys, model, bpe_dir):
    (tmp_path / "notes.json").write_text("not json, my notes")
    (tmp_path / "dir").mkdir()
    bench = ["bench", "--checkpoint", model, "--bpe-dir", bpe_dir, "--device", "cpu", "--iters", "1", "--warmup", "0"]
    _one_error(capsys, main(bench + ["--json", str(tmp_path / "notes.json")]), "is not a JSON file")
    _one_error(capsys, main(bench + ["--json", str(tmp_path / "dir")]), "is a folder")
    _one_error(capsys, main(bench + ["--compare", "--json", str(tmp_path / "notes.json")]), "is not a JSON file")
    ev = ["eval", "--pred-dir", str(tmp_path), "--gt-dir", str(tmp_path), "--num-classes", "3"]
    _one_error(capsys, main(ev + ["--out", str(tmp_path / "dir") + "/"]), "is a folder")
    _one_error(capsys, main(ev + ["--out", str(tmp_path / "new") + "/"]), "is a folder")
    _one_error(capsys, main(ev + ["--out", str(tmp_path / "notes.json")]), "is not a JSON file")
    assert (tmp_path / "notes.json").read_text() == "not json, my notes"
    assert os.listdir(tmp_path / "dir") == []
    assert not (tmp_path / "new").exists()


def _png_declaring(path: Path, width: int, height: int) -> Path:
    """A 100-byte PNG whose header declares ``width x height`` pixels (a decompression bomb's shape)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
    return path


def test_a_batch_goes_on_past_every_kind_of_bad_file(tmp_path, capsys, model, bpe_dir):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(photos / "a_good.png")
    _png_declaring(photos / "b_bomb.png", 13500, 13500)
    Image.fromarray(rng.integers(0, 256, (2048, 16, 3), dtype=np.uint8)).save(photos / "c_tall.png")  # 128x1 grid
    good = photos / "d_good.png"
    Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(good)
    (photos / "e_truncated.png").write_bytes(good.read_bytes()[:200])
    Image.fromarray(rng.integers(0, 256, (30, 30), dtype=np.uint8)).convert("LA").save(photos / "f_gray_alpha.png")
    Image.fromarray(rng.integers(0, 65535, (30, 30), dtype=np.uint16)).save(photos / "g_16bit.png")
    Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)).save(
        photos / "h_bad_exif.jpg", exif=b"Exif\0\0garbage"
    )
    Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)).convert("LAB").save(photos / "i_lab.tif")
    (photos / "j_empty.jpg").write_bytes(b"")
    code = main(
        [
            "segment",
            str(photos),
            "--checkpoint",
            model,
            "--bpe-dir",
            bpe_dir,
            "--out",
            str(tmp_path / "out"),
            "--device",
            "cpu",
            "--knn-iters",
            "1",
            "--batch",
            "4",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert "unexpected" not in captured.err
    assert "Traceback" not in captured.err
    err = captured.err.strip().splitlines()
    done = sorted(p.name[: -len("_labels.png")] for p in (tmp_path / "out").glob("*_labels.png"))
    failed = sorted(line.split("photos/")[1].split(".")[0] for line in err[:-1])
    assert set(done) | set(failed) == {p.stem for p in photos.iterdir()}
    assert not set(done) & set(failed)
    assert {"a_good", "c_tall", "d_good", "f_gray_alpha", "g_16bit"} <= set(done)
    assert {"b_bomb", "e_truncated", "j_empty"} <= set(failed)
    assert "megapixels" in next(line for line in err if "b_bomb" in line)
    assert err[-1].endswith(f"{len(failed)} input(s) failed, {len(done)} of 10 image(s) segmented")
    tall = np.asarray(Image.open(tmp_path / "out" / "c_tall_labels.png"))
    assert tall.shape == (2048, 16)


def test_a_grid_too_tall_for_the_position_table_runs_padded(tmp_path, bpe_dir):
    import dataclasses

    import torch
    from conftest import SMALL_ARCH

    from ifseg_deploy.model.encoder import addressable_grid, grid_addressable
    from ifseg_deploy.preprocess import Preprocessing
    from ifseg_deploy.runtime.segmenter import Segmenter

    arch = dataclasses.replace(
        SMALL_ARCH, encoder_grid=32, image_bucket_size=42
    )  # OFA's tables: 32x32 grid, 42 buckets
    assert not grid_addressable(arch, 128, 1)
    assert addressable_grid(arch, 128, 1) == (128, 9)
    assert grid_addressable(arch, 128, 9)
    assert addressable_grid(arch, 1, 128) == (1, 128)
    assert addressable_grid(arch, 32, 43) == (32, 43)
    seg = Segmenter.load(
        save_tiny_bundle(tmp_path / "t.safetensors", bpe_dir=bpe_dir, arch=arch),
        bpe_dir=bpe_dir,
        device="cpu",
        knn_iters=2,
        preprocessing=Preprocessing(512, 2048),
    )
    image = np.random.default_rng(0).integers(0, 256, (2048, 16, 3), dtype=np.uint8)
    batch = seg.preprocess([image])
    assert batch.grid == (128, 1)
    with pytest.raises(IFSegError, match="too elongated"):
        seg.backend.run(batch.images, batch.vocab.prompt_embeds, batch.vocab.class_embeds)
    res = seg.segment(image)
    assert res.labels.shape == (2048, 16)
    assert res.logits.shape == (128, 1, 3)
    assert np.isfinite(res.logits).all()
    padded = torch.nn.functional.pad(batch.images, (0, 9 * 16 - 16))  # the image's cells, as run inside the padded grid
    ref = seg.backend.run(padded, batch.vocab.prompt_embeds, batch.vocab.class_embeds).logits.reshape(128, 9, 3)[:, 0]
    np.testing.assert_allclose(res.logits[:, 0], ref.numpy(), atol=1e-5)


def test_train_out_is_checked_before_training(tmp_path, capsys, bpe_dir):
    notes = tmp_path / "m.safetensors"
    notes.write_text("my notes")
    (tmp_path / "dir.safetensors").mkdir()
    base = [
        "train",
        "--checkpoint",
        str(tmp_path / "never_read.pt"),
        "--bpe-dir",
        bpe_dir,
        "--categories",
        "a, b",
        "--steps",
        "1",
        "--device",
        "cpu",
    ]
    _one_error(capsys, main(base + ["--out", str(notes)]), "is not a safetensors file")
    _one_error(capsys, main(base + ["--out", str(tmp_path / "dir.safetensors")]), "is a folder")
    assert notes.read_text() == "my notes"
    assert sorted(os.listdir(tmp_path)) == ["dir.safetensors", "m.safetensors"]


def test_too_little_free_space_fails_fast(tmp_path, monkeypatch):
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(fileio.shutil, "disk_usage", lambda p: usage._replace(free=10 * 2**20))
    with pytest.raises(IFSegError, match="needs about 100 MiB, 10 MiB free"):
        check_output_file(str(tmp_path / "m.onnx"), "--out", size_hint=100 * 2**20)
    check_output_file(str(tmp_path / "m.onnx"), "--out", size_hint=2**20)


def test_stream_outputs_follow_the_policy(tmp_path, capsys, model, bpe_dir):
    from stream_media import write_avi

    video = write_avi(str(tmp_path / "in.avi"), 3)
    user = _user_folder(tmp_path / "user")
    before = _snapshot(user)
    base = [
        "stream",
        str(video),
        "--checkpoint",
        model,
        "--bpe-dir",
        bpe_dir,
        "--device",
        "cpu",
        "--knn-iters",
        "1",
        "--quiet",
    ]
    _one_error(capsys, main(base + ["--save-json", str(user / "notes.txt")]), "is not a JSON Lines file")
    _one_error(capsys, main(base + ["--save", str(user) + "/"]), "is a folder")
    _one_error(
        capsys,
        main(base + ["--save", str(user / "photo.png.mp4"), "--save-labels", str(user)]),
        "already holds files",
        "--exist-ok",
    )
    assert _snapshot(user) == before
    assert main(base + ["--save-labels", str(user), "--exist-ok"]) == 0
    after = _snapshot(user)
    assert {k: after[k] for k in before} == before
    assert {"000000.png", "000002.png"} <= set(after)
