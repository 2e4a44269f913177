"""``ifseg-deploy train`` as a user runs it: the fixture OFA checkpoint, bad inputs, kill / Ctrl-C and resume,
torchrun."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch
from conftest import tiny_checkpoint
from safetensors.torch import load_file

from ifseg_deploy.checkpoint import load_model
from ifseg_deploy.cli.main import main
from ifseg_deploy.train import state_path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    return tiny_checkpoint(tmp_path_factory.mktemp("tiny_cli"))


def _tiny_args(ckpt: str, out, *extra: str) -> list:
    return [
        "train",
        "--checkpoint",
        ckpt,
        "--categories",
        "grass, cat",
        "--out",
        str(out),
        "--batch-size",
        "4",
        "--max-cells",
        "4",
        "--holdout-size",
        "2",
        "--no-progress",
        *extra,
    ]


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ifseg_deploy", *args], capture_output=True, text=True, timeout=timeout
    )


def test_train_fixture_ofa_checkpoint_then_segment(ofa_checkpoint, dev_dir, bpe_dir, tmp_path, capsys):
    out = tmp_path / "model.safetensors"
    rc = main(
        [
            "train",
            "--checkpoint",
            ofa_checkpoint,
            "--categories",
            "grass, cat, concrete wall",
            "--out",
            str(out),
            "--steps",
            "2",
            "--batch-size",
            "1",
            "--holdout-size",
            "1",
            "--no-progress",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "Bundle saved to" in printed
    assert "pixel accuracy" in printed
    loaded = load_model(str(out))
    assert loaded.kind == "bundle"
    assert loaded.categories == ["grass", "cat", "concrete wall"]
    assert loaded.metadata["provenance"]["base_kind"] == "ofa"
    stored = loaded.metadata["holdout"]
    assert set(stored) == {"pixel_acc", "miou"}
    shown = re.search(r"pixel accuracy (\d+\.\d{4}), mIoU (\d+\.\d{4})", printed)
    assert shown, printed
    assert shown.group(1) == f"{stored['pixel_acc']:.4f}", (printed, stored)  # what train printed is what it stored
    assert shown.group(2) == f"{stored['miou']:.4f}", (printed, stored)
    seg_dir = tmp_path / "seg"
    rc = main(
        [
            "segment",
            str(dev_dir / "image_eval0.png"),
            "--checkpoint",
            str(out),
            "--bpe-dir",
            bpe_dir,
            "--out",
            str(seg_dir),
            "--knn-iters",
            "0",
        ]
    )
    assert rc == 0
    labels = cv2.imread(str(seg_dir / "image_eval0_labels.png"), cv2.IMREAD_UNCHANGED)
    assert labels.shape == (512, 512)
    assert labels.max() < 3


def _bad_case(ckpt: str, tmp_path, case: str) -> list:
    out = tmp_path / "bad.safetensors"
    if case == "no categories":
        return ["train", "--checkpoint", ckpt, "--categories", " , ", "--out", str(out)]
    if case == "one category":
        return ["train", "--checkpoint", ckpt, "--categories", "grass", "--out", str(out)]
    if case == "duplicate":
        return ["train", "--checkpoint", ckpt, "--categories", "cat, dog, Cat", "--out", str(out)]
    if case == "no tokens":
        return ["train", "--checkpoint", ckpt, "--categories", "grass, \u3000", "--out", str(out)]
    if case == "class without words":
        (tmp_path / "c.txt").write_text("grass\nanimal:\n")
        return ["train", "--checkpoint", ckpt, "--categories-file", str(tmp_path / "c.txt"), "--out", str(out)]
    if case == "not ofa":
        bogus = tmp_path / "bogus.pt"
        torch.save({"model": {"weight": torch.zeros(3)}}, bogus)
        return ["train", "--checkpoint", str(bogus), "--categories", "grass, cat", "--out", str(out)]
    if case == "not a checkpoint":
        (tmp_path / "notes.pt").write_text("hello")
        return ["train", "--checkpoint", str(tmp_path / "notes.pt"), "--categories", "grass, cat", "--out", str(out)]
    if case == "unwritable":
        (tmp_path / "file").write_text("x")
        return [
            "train",
            "--checkpoint",
            ckpt,
            "--categories",
            "grass, cat",
            "--out",
            str(tmp_path / "file" / "m.safetensors"),
        ]
    if case == "fp16 on cpu":
        return ["train", "--checkpoint", ckpt, "--categories", "grass, cat", "--out", str(out), "--precision", "fp16"]
    if case == "uneven batch":
        return [
            "train",
            "--checkpoint",
            ckpt,
            "--categories",
            "grass, cat",
            "--out",
            str(out),
            "--batch-size",
            "6",
            "--grad-accum",
            "4",
        ]
    if case == "not a bundle name":
        return ["train", "--checkpoint", ckpt, "--categories", "grass, cat", "--out", str(tmp_path / "m.pt")]
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case,msg",
    [
        ("no categories", "no categories"),
        ("one category", "only one category ('grass') to train"),
        ("duplicate", "listed twice"),
        ("no tokens", "empty category"),
        ("class without words", "lists no words"),
        ("not ofa", "not an OFA/IFSeg checkpoint"),
        ("not a checkpoint", "not a PyTorch checkpoint"),
        ("unwritable", "cannot"),
        ("not a bundle name", "must name a .safetensors"),
        ("fp16 on cpu", "needs a CUDA device"),
        ("uneven batch", "not divisible"),
    ],
)
def test_bad_inputs_fail_fast_with_one_line(ckpt, tmp_path, capsys, case, msg):
    args = _bad_case(ckpt, tmp_path, case)
    t0 = time.perf_counter()
    assert main(args) == 2
    assert time.perf_counter() - t0 < 10
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: "), err
    assert "\n" not in err, err
    assert msg in err, err
    out = args[args.index("--out") + 1]
    assert not os.path.exists(out)
    assert not os.path.exists(state_path(out))
    assert not [f for f in os.listdir(tmp_path) if f.endswith((".safetensors", ".tmp", ".state.pt"))]


def _wait_for(path: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Poll until ``path`` exists while ``proc`` is still running."""
    end = time.time() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < end, "no training state written in time"
        time.sleep(0.01)


def test_kill_interrupt_and_resume_match_uninterrupted_run(ckpt, tmp_path):
    steps = ["--steps", "40", "--save-every", "3"]
    ref = tmp_path / "ref.safetensors"
    assert _cli(*_tiny_args(ckpt, ref, *steps)).returncode == 0

    out = tmp_path / "run.safetensors"
    state = state_path(str(out))
    cmd = [sys.executable, "-m", "ifseg_deploy", *_tiny_args(ckpt, out, *steps)]
    # 1. a crash: SIGKILL as soon as a state exists.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(state, proc)
    proc.kill()
    proc.communicate()
    assert not out.exists()
    killed_at = torch.load(state, weights_only=True)["step"]
    assert 3 <= killed_at < 40
    # 2. resume (from the killed run's state), then Ctrl-C once it has saved a later state:
    #    the current update finishes, the state is saved, one-line message.
    proc = subprocess.Popen(cmd + ["--resume"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    end = time.time() + 60
    while torch.load(state, weights_only=True)["step"] <= killed_at:
        assert proc.poll() is None, proc.communicate()
        assert time.time() < end, "the resumed run saved no new state in time"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.fail("the resumed run finished before it could be interrupted")
    assert proc.returncode == 130, err
    assert "stopped by SIGINT after update" in err, err
    assert "--resume" in err, err
    assert not out.exists()
    # 3. resume to the end.
    done = _cli(*_tiny_args(ckpt, out, *steps, "--resume"))
    assert done.returncode == 0, done.stderr
    assert "resuming from" in done.stdout
    a, b = load_file(str(ref)), load_file(str(out))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not os.path.exists(state)


def test_torchrun_two_processes_match_one_process(ckpt, tmp_path):
    """torchrun (Gloo on CPU) splits each global batch across processes: same update as one process,
    dropout and drop-path on (masks drawn per global sample). Equal up to float summation order
    (rtol 1e-4): the two halves' gradients are averaged by an all-reduce instead of one batched sum."""
    common = ["--steps", "3", "--batch-size", "4"]
    single = tmp_path / "single.safetensors"
    assert main(_tiny_args(ckpt, single, *common, "--grad-accum", "2")) == 0
    ddp = tmp_path / "ddp.safetensors"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "ifseg_deploy",
            *_tiny_args(ckpt, ddp, *common),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("Bundle saved to") == 1  # only the main process reports
    meta = load_model(str(ddp)).metadata["training"]
    assert meta["world_size"] == 2
    a, b = load_file(str(single)), load_file(str(ddp))
    for k in a:
        if not k.endswith(("k_proj.bias", "pos_k_linear.bias")):
            np.testing.assert_allclose(a[k].numpy(), b[k].numpy(), rtol=1e-4, atol=1e-6, err_msg=k)


@pytest.mark.parametrize(
    "source", [("--categories", "animal: cat, zebra; grass, sky"), ("--categories-file", "coco-stuff-27")]
)
def test_word_lists_from_the_string_or_the_builtin_file(ckpt, tmp_path, capsys, source):
    """`name: words` works in --categories as in a file; the shipped COCO-Stuff-27 list trains as is."""
    import json

    from conftest import SHARED

    out = tmp_path / "h.safetensors"
    args = _tiny_args(ckpt, out, "--steps", "1")
    at = args.index("--categories")
    args[at : at + 2] = list(source)
    assert main(args) == 0, capsys.readouterr().err
    meta = load_model(str(out)).metadata
    if source[0] == "--categories":
        expected = [("animal", ["cat", "zebra"]), ("grass", ["grass"]), ("sky", ["sky"])]
    else:
        table = json.loads((SHARED / "data" / "coco_stuff_27_table15.json").read_text(encoding="utf-8"))["classes"]
        expected = [(c["coarse"], c["words"]) for c in table]
    assert meta["categories"] == [name for name, _ in expected]
    assert meta["training"]["hierarchy"] == {name: words for name, words in expected if words != [name]}
