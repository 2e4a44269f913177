"""An install without an optional package (here onnx, as without the cpu / gpu / jetson extra): the CLI
still starts and runs PyTorch models, and a command that needs the package says which extra installs it."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
from conftest import save_tiny_bundle

from ifseg_deploy.checks.environment import module_install_hint


def _cli_without_onnx(*args: str) -> subprocess.CompletedProcess:
    code = (
        "import sys; sys.modules['onnx'] = None\n"  # what a missing package looks like to import
        "from ifseg_deploy.cli.main import main\n"
        f"sys.exit(main({list(args)!r}))\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_install_hint_names_the_extra():
    assert module_install_hint("onnx.helper").startswith('pip install "ifseg-deploy[cpu]"')
    assert module_install_hint("not_a_known_package.sub") == "pip install not_a_known_package"


def test_cli_starts_and_segments_without_onnx(tmp_path, bpe_dir):
    assert _cli_without_onnx("--help").returncode == 0
    bundle = save_tiny_bundle(tmp_path / "tiny.safetensors", bpe_dir=bpe_dir)
    image = tmp_path / "scene.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8))
    run = _cli_without_onnx(
        "segment", str(image), "--checkpoint", bundle, "--bpe-dir", bpe_dir, "--out", str(tmp_path / "out")
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "out").is_dir()


def test_export_without_onnx_is_one_line_naming_the_extra(tmp_path, bpe_dir):
    bundle = save_tiny_bundle(tmp_path / "tiny.safetensors", bpe_dir=bpe_dir)
    out = tmp_path / "tiny.onnx"
    run = _cli_without_onnx("export", "--checkpoint", bundle, "--bpe-dir", bpe_dir, "--out", str(out), "--imgsz", "64")
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        'error: this needs the onnx package: pip install "ifseg-deploy[cpu]" (or [gpu] or [jetson])'
    ]
    assert not out.exists()
