"""cpp_bench/ (the C++ latency benchmark ``ifseg_bench``): built with CMake into a temporary folder.

Two configurations: one with no backend at all (it must build and refuse to run with one-line errors), and
one with the ONNX Runtime backend, linked against the onnxruntime pip wheel's library with the C++ headers
of Debian's libonnxruntime-dev or an ONNX Runtime release (found in /usr/local/include/onnxruntime or ONNXRUNTIME_ROOT),
run on a tiny ONNX model with the IFSeg model's interface built here with onnx.helper.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import List, Optional

import numpy as np
import pytest

from ifseg_deploy.model import grid_size

CPP_BENCH = Path(__file__).resolve().parents[1] / "cpp_bench"
CLASSES, EMBED, PROMPT_LEN, FEATURES = 4, 16, 5, 1024
BATCH, HEIGHT, WIDTH = 2, 40, 72  # not multiples of 16: the grid is ceil(H/16) x ceil(W/16)
SHAPES = f"images:{BATCH}x3x{HEIGHT}x{WIDTH},prompt_embeds:1x{PROMPT_LEN}x{EMBED},class_embeds:{CLASSES}x{EMBED}"


def _toolchain_missing() -> Optional[str]:
    if shutil.which("cmake") is None:
        return "cmake is not installed"
    if not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        return "no C++ compiler (c++, g++ or clang++) is installed"
    return None


def _ort_headers() -> Optional[Path]:
    """The folder holding onnxruntime_cxx_api.h, from ONNXRUNTIME_ROOT or the usual install locations."""
    roots = [Path(os.environ["ONNXRUNTIME_ROOT"])] if os.environ.get("ONNXRUNTIME_ROOT") else []
    roots += [Path("/usr"), Path("/usr/local")]
    for root in roots:
        for sub in ("include", "include/onnxruntime"):
            if (root / sub / "onnxruntime_cxx_api.h").is_file():
                return root / sub
    return None


def _wheel_library() -> Optional[Path]:
    """libonnxruntime.so.* of the installed onnxruntime wheel (found without importing it)."""
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        return None
    libs = sorted(Path(list(spec.submodule_search_locations)[0], "capi").glob("libonnxruntime.so.*"))
    return libs[0] if libs else None


def _ort_missing(headers: Optional[Path], library: Optional[Path]) -> Optional[str]:
    if headers is None:
        return (
            "ONNX Runtime C++ headers not found "
            "(install libonnxruntime-dev or an ONNX Runtime release's include/ folder, or set ONNXRUNTIME_ROOT)"
        )
    if library is None:
        return "the onnxruntime pip package (its libonnxruntime.so) is not installed"
    api = re.search(r"^#define ORT_API_VERSION (\d+)", (headers / "onnxruntime_c_api.h").read_text(), re.M)
    lib = re.search(r"libonnxruntime\.so\.1\.(\d+)", library.name)
    if api and lib and int(lib.group(1)) < int(api.group(1)):
        return f"the onnxruntime wheel ({library.name}) is older than the C++ headers in {headers}: upgrade onnxruntime"
    return None


TOOLCHAIN_MISSING = _toolchain_missing()
ORT_HEADERS = _ort_headers()
ORT_LIBRARY = _wheel_library()
ORT_MISSING = _ort_missing(ORT_HEADERS, ORT_LIBRARY)

needs_toolchain = pytest.mark.skipif(TOOLCHAIN_MISSING is not None, reason=str(TOOLCHAIN_MISSING))
needs_ort = pytest.mark.skipif(
    TOOLCHAIN_MISSING is not None or ORT_MISSING is not None, reason=str(TOOLCHAIN_MISSING or ORT_MISSING)
)


def _build(build_dir: Path, options: List[str]) -> subprocess.CompletedProcess:
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    configure = subprocess.run(
        ["cmake", "-S", str(CPP_BENCH), "-B", str(build_dir), *generator, *options],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert configure.returncode == 0, configure.stdout + configure.stderr
    build = subprocess.run(["cmake", "--build", str(build_dir), "-j", "2"], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    return configure


def _run(binary: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=120)


def _assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def bare_build(tmp_path_factory):
    build_dir = tmp_path_factory.mktemp("cpp_bench_bare")
    configure = _build(build_dir, ["-DIFSEG_BENCH_WITH_TENSORRT=OFF", "-DIFSEG_BENCH_WITH_ONNXRUNTIME=OFF"])
    return build_dir / "ifseg_bench", configure.stdout


@pytest.fixture(scope="module")
def ort_build(tmp_path_factory):
    build_dir = tmp_path_factory.mktemp("cpp_bench_ort")
    # The wheel ships libonnxruntime.so.1.x.y only; the binary loads it by its soname libonnxruntime.so.1.
    lib_dir = build_dir / "onnxruntime_lib"
    lib_dir.mkdir()
    (lib_dir / "libonnxruntime.so.1").symlink_to(ORT_LIBRARY)
    (lib_dir / "libonnxruntime.so").symlink_to("libonnxruntime.so.1")
    configure = _build(
        build_dir,
        [
            "-DIFSEG_BENCH_WITH_TENSORRT=OFF",
            "-DIFSEG_BENCH_REQUIRE_ONNXRUNTIME=ON",
            f"-DONNXRUNTIME_INCLUDE_DIR={ORT_HEADERS}",
            f"-DONNXRUNTIME_LIBRARY={lib_dir / 'libonnxruntime.so'}",
        ],
    )
    return build_dir / "ifseg_bench", configure.stdout


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    """An ONNX model with SegOFA's interface: stride-16 patch features (B, hw, 1024) and class logits (B, hw, N)."""
    onnx = pytest.importorskip("onnx", reason="the onnx package (extra 'cpu') builds the test model")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = {"w_patch": (8, 3, 16, 16), "w_feat": (FEATURES, 8, 1, 1), "w_proj": (FEATURES, EMBED)}
    inits = [numpy_helper.from_array((0.1 * rng.standard_normal(s)).astype(np.float32), n) for n, s in weights.items()]
    inits.append(numpy_helper.from_array(np.array([0, FEATURES, -1], dtype=np.int64), "flat_shape"))
    nodes = [
        helper.make_node(
            "Conv", ["images", "w_patch"], ["patch"], strides=[16, 16], kernel_shape=[16, 16], auto_pad="SAME_UPPER"
        ),
        helper.make_node("Conv", ["patch", "w_feat"], ["fmap"]),
        helper.make_node("Reshape", ["fmap", "flat_shape"], ["flat"]),
        helper.make_node("Transpose", ["flat"], ["features"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["features", "w_proj"], ["tokens"]),
        helper.make_node("ReduceMean", ["prompt_embeds"], ["prompt"], axes=[1], keepdims=1),
        helper.make_node("Add", ["tokens", "prompt"], ["mixed"]),
        helper.make_node("Transpose", ["class_embeds"], ["classes_t"], perm=[1, 0]),
        helper.make_node("MatMul", ["mixed", "classes_t"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_ifseg",
        [
            helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, "height", "width"]),
            helper.make_tensor_value_info("prompt_embeds", TensorProto.FLOAT, [1, "prompt_len", EMBED]),
            helper.make_tensor_value_info("class_embeds", TensorProto.FLOAT, ["classes", EMBED]),
        ],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "cells", "classes"]),
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", "cells", FEATURES]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path_factory.mktemp("tiny_onnx") / "tiny_ifseg.onnx"
    onnx.save(model, str(path))
    return path


# ---------------------------------------------------------------------------------------------------------
# Build with no backend


@needs_toolchain
def test_bare_build_reports_no_backend(bare_build):
    binary, configure_log = bare_build
    assert "ifseg_bench backends compiled in: none" in configure_log
    help_run = _run(binary, "--help")
    assert help_run.returncode == 0
    assert "Compiled-in backends: none" in help_run.stdout
    onnx_run = _run(binary, "--onnx=model.onnx")
    _assert_one_line_error(onnx_run, "without the ONNX Runtime backend", "compiled-in backends: none")
    assert onnx_run.stdout == ""
    _assert_one_line_error(_run(binary, "--engine=model.engine"), "without the TensorRT backend")


@needs_toolchain
@pytest.mark.parametrize(
    "args, fragment",
    [
        ([], "give exactly one model"),
        (["--onnx=a.onnx", "--engine=b.engine"], "give exactly one model"),
        (["--onnx=a.onnx", "--frobnicate"], "unknown argument '--frobnicate'"),
        (["--onnx=a.onnx", "--iterations=0"], "--iterations expects an integer"),
        (["--onnx=a.onnx", "--duration=abc"], "--duration expects seconds"),
        (["--onnx=a.onnx", "--warmup"], "--warmup needs a value"),
        (["--onnx=a.onnx", "--shapes=images:1x3x0x16"], "bad dimension '0'"),
        (["--onnx=a.onnx", "--shapes=images"], "bad --shapes item 'images'"),
        (["--onnx=a.onnx", "--ep=gpu"], "--ep must be cpu, cuda or tensorrt"),
        (["--onnx=a.onnx", "--no-transfers"], "--no-transfers applies to TensorRT"),
        (["--engine=a.engine", "--threads=2"], "apply to ONNX Runtime"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(bare_build, args, fragment):
    proc = _run(bare_build[0], *args)
    _assert_one_line_error(proc, fragment)
    assert proc.stdout == ""


# ---------------------------------------------------------------------------------------------------------
# ONNX Runtime backend


def _printed_summary(stdout: str) -> dict:
    line = next(ln for ln in stdout.splitlines() if ln.startswith("[I] Latency: "))
    pairs = re.findall(r"(min|max|mean|median|percentile\((\d+)%\)) = ([0-9.eE+-]+) ms", line)
    return {("p" + pct if pct else key): float(value) for key, pct, value in pairs}


@needs_ort
def test_onnxruntime_benchmark_report_and_json(ort_build, tiny_onnx, tmp_path):
    binary, configure_log = ort_build
    assert "ifseg_bench backends compiled in: ONNX Runtime" in configure_log
    out = tmp_path / "times.json"
    proc = _run(
        binary,
        f"--onnx={tiny_onnx}",
        f"--shapes={SHAPES}",
        "--warmup=2",
        "--iterations=37",
        "--threads=1",
        f"--export-times={out}",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""

    h, w = grid_size(HEIGHT, WIDTH)
    cells = h * w
    assert cells == math.ceil(HEIGHT / 16) * math.ceil(WIDTH / 16)
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("&&&& RUNNING ifseg_bench")
    assert lines[-1].startswith("&&&& PASSED ifseg_bench")
    assert "[I] Backend: ONNX Runtime" in proc.stdout
    assert "(CPUExecutionProvider)" in proc.stdout
    assert f"[I] Input images: float32 {BATCH}x3x{HEIGHT}x{WIDTH}" in lines
    assert f"[I] Input class_embeds: float32 {CLASSES}x{EMBED}" in lines
    assert f"[I] Output logits: float32 {BATCH}x{cells}x{CLASSES}" in lines
    assert f"[I] Output features: float32 {BATCH}x{cells}x{FEATURES}" in lines
    assert "[I] Timed iterations: 37" in lines

    # Written atomically: the JSON file and no temporary left beside it.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["times.json"]
    data = json.loads(out.read_text())
    assert data["iterations"] == 37
    assert data["warmup"] == 2
    assert data["batch"] == BATCH
    assert data["outputs"]["logits"] == {"dtype": "float32", "shape": [BATCH, cells, CLASSES]}
    assert data["inputs"]["prompt_embeds"]["shape"] == [1, PROMPT_LEN, EMBED]
    times = np.array([t["latency_ms"] for t in data["times"]])
    assert len(times) == 37
    assert (times > 0).all()

    # The summary, recomputed here from the per-iteration times (nearest-rank percentiles).
    expected = {
        "min": times.min(),
        "max": times.max(),
        "mean": times.mean(),
        "median": np.median(times),
        **{f"p{p}": np.percentile(times, p, method="inverted_cdf") for p in (90, 95, 99)},
    }
    summary = data["summary"]["latency_ms"]
    printed = _printed_summary(proc.stdout)
    for key, value in expected.items():
        assert summary[key] == pytest.approx(value, rel=1e-6), key
        assert printed[key] == pytest.approx(value, rel=1e-5), key
    assert data["throughput_qps"] == pytest.approx(37 / data["total_host_walltime_s"], rel=1e-6)
    assert data["total_host_walltime_s"] * 1000 >= times.sum()


@needs_ort
def test_onnxruntime_duration_extends_iterations(ort_build, tiny_onnx, tmp_path):
    out = tmp_path / "times.json"
    proc = _run(
        ort_build[0],
        f"--onnx={tiny_onnx}",
        f"--shapes={SHAPES}",
        "--warmup=0",
        "--iterations=1",
        "--duration=0.3",
        f"--export-times={out}",
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["total_host_walltime_s"] >= 0.3
    assert data["iterations"] == len(data["times"]) > 1


@needs_ort
@pytest.mark.parametrize(
    "shapes, fragments",
    [
        (None, ["input 'images' has dynamic shape -1x3x-1x-1", "--shapes=images:Nx3xNxN"]),
        (SHAPES.replace("x3x", "x4x", 1), ["model fixes dimension 1 to 3"]),
        (SHAPES.replace(f"{CLASSES}x{EMBED}", f"{CLASSES}x{EMBED}x1"), ["'class_embeds' 3 dimensions"]),
        (SHAPES + ",text:1x2", ["'text', which is not an input", "images, prompt_embeds, class_embeds"]),
    ],
)
def test_onnxruntime_shape_errors(ort_build, tiny_onnx, shapes, fragments):
    args = [f"--onnx={tiny_onnx}"] + ([f"--shapes={shapes}"] if shapes else [])
    proc = _run(ort_build[0], *args)
    _assert_one_line_error(proc, *fragments)
    assert proc.stdout == ""


@needs_ort
def test_onnxruntime_bad_files(ort_build, tiny_onnx, tmp_path):
    binary = ort_build[0]
    _assert_one_line_error(_run(binary, f"--onnx={tmp_path / 'missing.onnx'}"), "does not exist")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a protobuf")
    _assert_one_line_error(_run(binary, f"--onnx={garbage}", f"--shapes={SHAPES}"), "cannot load ONNX model")
    target = tmp_path / "no_such_dir" / "times.json"
    proc = _run(binary, f"--onnx={tiny_onnx}", f"--shapes={SHAPES}", f"--export-times={target}")
    _assert_one_line_error(proc, "does not exist; create it")
    assert not target.parent.exists()
