"""``ifseg-deploy checks``: the machine's facts as installed (versions from the distributions'
metadata, CPU flags from /proc/cpuinfo), install hints of missing packages, the model cache, and
``--self-test``: every available export and backend judged against PyTorch fp32, exit status 1 on a failure."""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import io
import json
import math
import os
import time

import numpy as np
import pytest
import torch

from ifseg_deploy.bench.compare import CompareRow
from ifseg_deploy.checks import environment, selftest
from ifseg_deploy.checks.selftest import FAIL, PASS, SKIPPED, SelfTestReport, SelfTestRow
from ifseg_deploy.cli.main import main

#: Package label as printed -> its distribution here (the ones this machine has, per the project's setup).
INSTALLED = {
    "numpy": "numpy",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "openvino": "openvino",
    "opencv": "opencv-python-headless",
    "av (PyAV)": "av",
    "aiohttp": "aiohttp",
}
#: /proc/cpuinfo flag -> the name printed.
X86 = {"avx2": "AVX2", "avx512f": "AVX-512F", "avx512_vnni": "AVX512-VNNI", "avx512_bf16": "AVX512-BF16"}


def _run(argv) -> tuple:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


def _package_lines(text: str) -> dict:
    lines = text.split("\nPackages\n", 1)[1].splitlines()
    found = {}
    for line in lines:
        for label in list(INSTALLED) + ["tensorrt", "nncf"]:
            if line.startswith(f"  {label} ") and line[2 + len(label)] == " ":
                found[label] = line
    return found


def _proc_flags() -> list:
    with open("/proc/cpuinfo", encoding="utf-8") as fh:
        return next(line.split(":", 1)[1].split() for line in fh if line.startswith("flags"))


@pytest.fixture(scope="module")
def text_output():
    code, text = _run(["checks"])
    assert code == 0
    return text


@pytest.fixture(scope="module")
def json_output():
    code, text = _run(["checks", "--json"])
    assert code == 0
    return json.loads(text)


def test_text_shows_the_installed_versions(text_output):
    lines = _package_lines(text_output)
    for label, dist in INSTALLED.items():
        assert importlib.metadata.version(dist) in lines[label], lines[label]
    assert f"torch          {torch.__version__}" in text_output
    assert f"ifseg-deploy   {importlib.metadata.version('ifseg-deploy')}" in text_output
    import onnxruntime

    assert all(p in lines["onnxruntime"] for p in onnxruntime.get_available_providers())
    assert "CPU (" in lines["openvino"]  # OpenVINO's CPU device with its full name


def test_json_holds_the_installed_versions(json_output):
    packages = {p["name"]: p for p in json_output["packages"]}
    for label, dist in INSTALLED.items():
        assert packages[label]["installed"] is True
        assert packages[label]["version"] == importlib.metadata.version(dist)
        assert packages[label]["distribution"] == dist
    assert json_output["torch"]["version"] == torch.__version__
    assert json_output["torch"]["cuda_build"] == torch.version.cuda
    if importlib.util.find_spec("tensorrt") is None:
        assert packages["tensorrt"] == {
            "name": "tensorrt",
            "installed": False,
            "install": 'pip install "ifseg-deploy[gpu]"',
        }
    assert json_output["opencv_build"]["GUI"]  # read from cv2.getBuildInformation()
    import cv2

    ffmpeg = "FFMPEG:                      YES" in cv2.getBuildInformation()
    assert json_output["opencv_build"]["FFmpeg"].startswith("YES") is ffmpeg


@pytest.mark.skipif(not os.path.isfile("/proc/cpuinfo"), reason="reads /proc/cpuinfo (Linux)")
def test_cpu_flags_match_proc_cpuinfo(json_output, text_output):
    flags = _proc_flags()
    if not flags:
        pytest.skip("no x86 flags line in /proc/cpuinfo (an Arm CPU)")
    for name, label in X86.items():
        assert json_output["cpu"]["flags"][label] is (name in flags)
        assert f"{label} {'yes' if name in flags else 'no'}" in text_output
    assert json_output["cpu"]["native_bf16"] is any(f in flags for f in ("avx512_bf16", "amx_bf16"))
    assert json_output["cpu"]["logical_cores"] == os.cpu_count()
    vnni = any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))
    advice = next(line for line in text_output.splitlines() if line.startswith("CPU int8"))
    assert ("--int8-scope convolutions" in advice) is not vnni


def test_missing_package_shows_the_extra_that_installs_it(monkeypatch):
    """openvino and nncf as if not installed: the lookups (distribution metadata, then the module) find nothing."""
    gone = {"openvino", "nncf"}
    real_version, real_find = importlib.metadata.version, importlib.util.find_spec

    def version(dist):
        if dist in gone:
            raise importlib.metadata.PackageNotFoundError(dist)
        return real_version(dist)

    monkeypatch.setattr(importlib.metadata, "version", version)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in gone else real_find(name, *a))
    code, text = _run(["checks"])
    assert code == 0
    lines = _package_lines(text)
    assert lines["openvino"].split() == ["openvino", "not", "installed:", "pip", "install", '"ifseg-deploy[openvino]"']
    assert lines["nncf"].split()[1:] == ["not", "installed:", "pip", "install", '"ifseg-deploy[openvino]"']
    assert importlib.metadata.version("onnx") in lines["onnx"]


def test_install_hint_lists_every_extra_but_dev():
    requires = ['onnx>=1.15; extra == "cpu"', 'onnx>=1.15; extra == "gpu"', 'onnx>=1.15; extra == "dev"', "numpy>=1.23"]
    extras = environment.extras_of(requires)
    assert extras == {"onnx": ["cpu", "gpu"]}
    onnx = next(p for p in environment.PACKAGES if p.label == "onnx")
    assert environment.install_hint(onnx, extras) == 'pip install "ifseg-deploy[cpu]" (or [gpu])'


def test_install_hints_on_a_jetson():
    """pyproject's jetson extra first; TensorRT and onnxruntime-gpu are NVIDIA's JetPack builds, not the gpu extra's."""
    extras = environment.extras_of(['onnx>=1.15; extra == "cpu"', 'onnx>=1.15; extra == "jetson"'])
    packages = {p.label: p for p in environment.PACKAGES}
    assert (
        environment.install_hint(packages["onnx"], extras, jetson=True)
        == 'pip install "ifseg-deploy[jetson]" (or [cpu])'
    )
    assert environment.install_hint(packages["onnx"], extras) == 'pip install "ifseg-deploy[cpu]" (or [jetson])'
    assert "JetPack" in environment.install_hint(packages["tensorrt"], environment.extras_of(), jetson=True)
    assert "JetPack" in environment.install_hint(packages["onnxruntime"], environment.extras_of(), jetson=True)


def test_cache_lists_the_named_models_it_holds(tmp_path, monkeypatch):
    (tmp_path / "ofa_tiny.pt").write_bytes(b"\0" * 1_960_000)  # 1.96 MB = 1.87 MiB: the units differ in print
    (tmp_path / ".ofa_base.pt.part").write_bytes(b"\0")  # a partial download is not a model
    (tmp_path / "notes.pt").write_bytes(b"\0")  # nor a file the cache did not download
    monkeypatch.setenv("IFSEG_CACHE", str(tmp_path))
    code, text = _run(["checks", "--json"])
    cache = json.loads(text)["cache"]
    path = str(tmp_path / "ofa_tiny.pt")
    assert cache == {
        "folder": str(tmp_path),
        "models": [{"name": "ofa-tiny", "path": path, "bytes": 1_960_000, "size": "2.0 MB"}],
    }
    # The text and `info`'s listing give one size for one file (decimal MB, as the download messages).
    assert f"ofa-tiny  {path}  2.0 MB" in _run(["checks"])[1]
    assert f"{path} (2.0 MB)" in _run(["info"])[1]


def test_jetson_release_and_driver_version(tmp_path, monkeypatch):
    release = tmp_path / "nv_tegra_release"
    release.write_text("# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, DATE: Fri\n")
    model = tmp_path / "model"
    model.write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\0")
    monkeypatch.setattr(environment, "TEGRA_RELEASE", str(release))
    monkeypatch.setattr(environment, "DEVICE_TREE_MODEL", str(model))
    assert environment.jetson_facts() == {"board": "NVIDIA Jetson AGX Orin Developer Kit", "l4t": "R36.4.0"}
    driver = tmp_path / "version"
    driver.write_text(
        "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  550.54.14  Release Build  (dvs-builder@U16)\n"
        "GCC version:  gcc version 12.2.0\n"
    )
    monkeypatch.setattr(environment, "NVIDIA_DRIVER", str(driver))
    assert environment.nvidia_driver() == "550.54.14"
    monkeypatch.setattr(environment, "TEGRA_RELEASE", str(tmp_path / "absent"))
    assert environment.jetson_facts() is None


def test_gates_are_the_export_gates():
    ref = np.array([3.0, -4.0])
    # fp32: the ONNX check's element-wise tolerance 2e-4 + 1e-4 * max|ref|, over the RMS of ref
    assert selftest.gate("fp32", ref) == pytest.approx((2e-4 + 1e-4 * 4.0) / math.sqrt(12.5))
    assert selftest.gate("fp16", ref) == 2e-2
    assert selftest.gate("bf16", ref) == 2e-2
    assert selftest.gate("int8", ref) == 1e-1
    variants = {(v.name, v.precision): v for v in selftest.CPU_VARIANTS + selftest.CUDA_VARIANTS}
    assert selftest.computes_in(variants[("OpenVINO", "int8")]) == "int8"
    assert selftest.computes_in(variants[("OpenVINO", "bf16")]) == "bf16"
    assert selftest.computes_in(variants[("ONNX Runtime TensorRT EP", "fp16")]) == "fp16"


def test_judge_passes_fails_and_skips():
    ov = next(v for v in selftest.CPU_VARIANTS if (v.name, v.precision) == ("OpenVINO", "int8"))
    ref = np.ones(4)
    ok = selftest._judge(
        "cpu", ov, CompareRow("OpenVINO", "int8", logits_rel_rms=0.05, label_agreement=1.0, p50_ms=1.0), ref
    )
    assert (ok.status, ok.reason, ok.gate) == (PASS, None, 0.1)
    bad = selftest._judge(
        "cpu", ov, CompareRow("OpenVINO", "int8", logits_rel_rms=0.2, label_agreement=0.9, p50_ms=1.0), ref
    )
    assert bad.status == FAIL
    assert "2.00e-01 above the int8 gate 1.00e-01" in bad.reason
    refused = selftest._judge(
        "cpu", ov, CompareRow("OpenVINO", "int8", skipped="export refused: rel-RMS 0.2 (gate 1e-01)"), ref
    )
    assert (refused.status, refused.reason) == (FAIL, "export refused: rel-RMS 0.2 (gate 1e-01)")
    skipped = selftest._judge("cpu", ov, CompareRow("OpenVINO", "int8", skipped="openvino is not installed"), ref)
    assert (skipped.status, skipped.reason) == (SKIPPED, "openvino is not installed")


def test_exit_status_is_1_when_a_row_fails(monkeypatch):
    rows = [
        SelfTestRow("cpu", "PyTorch", "fp32", PASS, None, 0.0, 1e-3, 1.0, 2.0),
        SelfTestRow(
            "cpu", "OpenVINO", "int8", FAIL, "logits rel-RMS 2.00e-01 above the int8 gate 1.00e-01", 0.2, 0.1, 0.9, 2.0
        ),
        SelfTestRow("cuda", "TensorRT", "fp16", SKIPPED, "no CUDA device: a CPU build"),
    ]
    model = {"embed_dim": 32, "layers": [1, 1]}
    failing = SelfTestReport(rows, [128, 160], 128, 1.0, model)
    monkeypatch.setattr(selftest, "run_selftest", lambda progress=None: failing)
    code, text = _run(["checks", "--self-test"])
    assert code == 1
    assert "FAIL" in next(line for line in text.splitlines() if line.startswith("cpu     OpenVINO"))
    assert "1 row(s) failed" in text
    passing = SelfTestReport([rows[0], rows[2]], [128, 160], 128, 1.0, model)
    monkeypatch.setattr(selftest, "run_selftest", lambda progress=None: passing)
    code, text = _run(["checks", "--self-test", "--json"])
    assert code == 0
    assert json.loads(text)["self_test"]["ok"] is True


def test_self_test_runs_every_cpu_backend_here():
    """The real self-test: ONNX Runtime and OpenVINO rows pass on this CPU, bf16 rows follow the
    CPU's flags, CUDA / TensorRT rows are skipped with their reason where there is no CUDA."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    start = time.perf_counter()
    code, text = _run(["checks", "--self-test", "--json"])
    print(f"checks --self-test --json: {time.perf_counter() - start:.0f} s")  # loosely watched, not asserted
    doc = json.loads(text)
    assert code == 0
    assert doc["self_test"]["ok"] is True
    assert doc["packages"]  # the facts come in the same document
    rows = {(r["device"], r["backend"], r["precision"]): r for r in doc["self_test"]["rows"]}
    for key in [("cpu", "PyTorch", "fp32"), ("cpu", "ONNX Runtime", "fp32"), ("cpu", "ONNX Runtime", "int8"),
                ("cpu", "OpenVINO", "fp32"), ("cpu", "OpenVINO", "int8")]:  # fmt: skip
        row = rows[key]
        assert row["status"] == PASS, row
        assert row["logits_rel_rms"] <= row["gate"]
        assert 0.0 <= row["label_agreement"] <= 1.0
        assert row["p50_ms"] > 0
    assert rows[("cpu", "ONNX Runtime", "fp32")]["gate"] < 2e-2  # the fp32 gate is tighter than fp16's
    assert rows[("cpu", "ONNX Runtime", "int8")]["gate"] == 1e-1
    native_bf16 = any(f in _proc_flags() for f in ("avx512_bf16", "amx_bf16"))
    for key in [("cpu", "PyTorch", "bf16"), ("cpu", "OpenVINO", "bf16")]:
        assert rows[key]["status"] == (PASS if native_bf16 else SKIPPED), rows[key]
    if not torch.cuda.is_available():
        cuda = [r for r in doc["self_test"]["rows"] if r["device"] == "cuda"]
        assert {r["backend"] for r in cuda} >= {"PyTorch", "TensorRT"}
        assert all(r["status"] == SKIPPED and r["reason"].startswith("no CUDA device: ") for r in cuda)
        if importlib.util.find_spec("tensorrt") is None:
            assert "tensorrt is not installed" in rows[("cuda", "TensorRT", "fp16")]["reason"]


def test_facts_need_no_optional_package():
    """``checks`` reports missing runtimes, so its facts and report import none of them (PyTorch only)."""
    import subprocess
    import sys

    code = (
        "import sys, ifseg_deploy.checks.environment, ifseg_deploy.checks.report, ifseg_deploy.cli.checks\n"
        "print(sorted(m for m in ('onnx', 'onnxruntime', 'openvino', 'onnxslim', 'tensorrt') if m in sys.modules))"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.strip() == "[]"
